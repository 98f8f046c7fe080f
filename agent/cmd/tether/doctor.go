package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/tetherd/tether/agent"
)

// runDoctor implements `tether doctor [-c FILE] [--json]`.
func runDoctor(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("doctor", stderr)
	file := fs.String("c", agent.DefaultConfigPath, "configuration `file`")
	asJSON := fs.Bool("json", false, "print the findings as JSON")
	var o agent.DoctorOptions
	fs.StringVar(&o.Socket, "socket", "", "the running agent's Unix socket `path` (default: the configuration's)")
	fs.StringVar(&o.ServiceUser, "user", "", "the `user` the service runs as, whose access to each file is checked (default: tether, if it exists; - for none)")
	fs.StringVar(&o.DeviceCA, "ca", "", "PEM `file` of the CA that issued the device certificate, to verify it against")
	fs.DurationVar(&o.Timeout, "timeout", 10*time.Second, "bound of each network step")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	cfg, err := agent.LoadConfig(*file)
	if err != nil {
		reportConfigError(stderr, err)
		return exitUsage
	}
	diag := agent.Doctor(ctx, cfg, o)
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		enc.Encode(diag)
	} else {
		printDiagnosis(stdout, diag)
	}
	if !diag.OK {
		return exitRuntime
	}
	return exitOK
}

// marks are the verdicts' symbols.
var marks = map[agent.Verdict]string{agent.Pass: "✓", agent.Fail: "✗", agent.Warn: "!"}

func printDiagnosis(w io.Writer, d *agent.Diagnosis) {
	fmt.Fprintf(w, "tether doctor: %s\n", d.Config)
	area := ""
	counts := map[agent.Verdict]int{}
	for _, f := range d.Findings {
		if f.Area != area {
			area = f.Area
			fmt.Fprintf(w, "%s\n", area)
		}
		counts[f.Verdict]++
		fmt.Fprintf(w, "  %s %s: %s\n", marks[f.Verdict], f.Check, f.Detail)
		if f.Fix != "" {
			fmt.Fprintf(w, "      fix: %s\n", f.Fix)
		}
	}
	verdict := "everything passes"
	if !d.OK {
		verdict = "credentials will not work until each ✗ is fixed"
	}
	fmt.Fprintf(w, "%d passed, %d warnings, %d failed: %s\n", counts[agent.Pass], counts[agent.Warn], counts[agent.Fail], verdict)
}
