package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/tetherd/tether/agent"
	"github.com/tetherd/tether/hsm"
	"github.com/tetherd/tether/platform"
)

// keyLocation shows a key reference without any PIN it carries.
func keyLocation(ref string) string {
	if !hsm.IsURI(ref) {
		return ref
	}
	u, err := hsm.ParseURI(ref)
	if err != nil {
		return "pkcs11:(unparsable URI)"
	}
	return u.String()
}

// runProvision implements `tether provision [-c FILE]`: fleet provisioning
// by claim, resumable (see docs/identity.md).
func runProvision(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("provision", stderr)
	file := fs.String("c", agent.DefaultConfigPath, "configuration `file` with [provision] and the [identity] to create")
	timeout := fs.Duration("timeout", 30*time.Second, "bound on each request to AWS IoT")
	verbose := fs.Bool("v", false, "log each step to stderr")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "tether provision: unexpected argument %q\n", fs.Arg(0))
		return exitUsage
	}
	cfg, err := agent.LoadProvisionConfig(*file)
	if err != nil {
		reportConfigError(stderr, err)
		return exitUsage
	}
	log := slog.New(slog.DiscardHandler)
	if *verbose {
		log = platform.NewLogger(os.Stderr, slog.LevelInfo)
	}
	res, err := agent.Provision(ctx, cfg, agent.ProvisionOptions{Logger: log, Timeout: *timeout})
	if err != nil {
		return exitStatus(stderr, fmt.Errorf("provision: %w", err))
	}
	if res.Already {
		fmt.Fprintf(stdout, "nothing to do: %s already holds the identity of thing %s (certificate valid until %s)\n",
			*file, res.ThingName, res.NotAfter.UTC().Format(time.RFC3339))
		return exitOK
	}
	fmt.Fprintf(stdout, "provisioned thing %s: certificate %s (id %.12s…, valid until %s), key %s; %s is ready for tether run\n",
		res.ThingName, cfg.Identity.Certificate, res.CertificateID, res.NotAfter.UTC().Format(time.RFC3339), keyLocation(cfg.Identity.PrivateKey), *file)
	return exitOK
}
