// Command tether is the tether agent and its command-line tools: it turns a
// gateway's X.509 identity into fresh AWS credentials for every local program.
//
// See README.md for the commands and the configuration reference.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"syscall"

	"github.com/tetherd/tether/hsm"
)

// Set at link time with -X (see the Makefile).
var (
	version   = "dev"
	commit    = "unknown"
	buildDate = "" // RFC 3339; a clock before it is obviously unsynchronised
)

const usage = `tether — AWS credentials and one MQTT session for an edge gateway

Usage:
  tether run [-c FILE]                       run the agent
  tether credential-process [--role NAME] [--socket PATH]
                                             print credentials from the running agent
  tether credential-process --direct [-c FILE] [--role NAME] [--timeout 10s]
                                             fetch credentials without an agent
  tether status [--json] [--socket PATH]     show the agent's identity, roles and store
  tether config check [-c FILE]              validate a configuration and print it, secrets redacted
  tether config import greengrass FILE       print the configuration for Greengrass's identity
  tether hsm list|keygen|csr|selftest ...    manage keys in a PKCS#11 token
  tether mqtt publish|subscribe ...          use the agent's MQTT session
  tether provision [-c FILE]                 get the device identity by claim (fleet provisioning)
  tether identity rotate [--socket PATH]     have the running agent rotate its certificate now
  tether doctor [-c FILE] [--json]           check why this gateway does or does not get credentials
  tether version                             print the version

The configuration defaults to /etc/tether/tether.toml.
Exit status: 0 ok, 2 usage or configuration error, 1 runtime failure.
`

// Exit statuses shared by every command.
const (
	exitOK      = 0
	exitRuntime = 1
	exitUsage   = 2
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	// After the first signal, a second one ends the process at once.
	go func() { <-ctx.Done(); stop() }()
	code := dispatch(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func dispatch(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "run":
		return runAgent(ctx, rest, stdout, stderr)
	case "credential-process":
		return runCredentialProcess(ctx, rest, stdout, stderr)
	case "status":
		return runStatus(ctx, rest, stdout, stderr)
	case "config":
		return runConfig(ctx, rest, stdout, stderr)
	case "hsm":
		return runHSM(ctx, rest, stdout, stderr)
	case "mqtt":
		return runMQTT(ctx, rest, stdout, stderr)
	case "provision":
		return runProvision(ctx, rest, stdout, stderr)
	case "identity":
		return runIdentity(ctx, rest, stdout, stderr)
	case "doctor":
		return runDoctor(ctx, rest, stdout, stderr)
	case "version", "--version", "-v":
		pkcs11 := "in-process and through p11-kit"
		if !hsm.PKCS11InProcess {
			pkcs11 = "through p11-kit (static build)"
		}
		tpmKeys := "yes"
		if !hsm.TPMAvailable {
			tpmKeys = "no (built with -tags notpm)"
		}
		fmt.Fprintf(stdout, "tether %s (commit %s, built %s, %s, %s/%s, pkcs11 %s, tpm %s)\n",
			version, commit, orUnknown(buildDate), runtime.Version(), runtime.GOOS, runtime.GOARCH, pkcs11, tpmKeys)
		return exitOK
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return exitOK
	default:
		fmt.Fprintf(stderr, "tether: unknown command %q; run 'tether help' for the list\n", cmd)
		return exitUsage
	}
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}
