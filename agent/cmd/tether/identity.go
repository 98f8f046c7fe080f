package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/tetherd/tether/agent"
)

const identityUsage = `Usage:
  tether identity rotate [--socket PATH]
        have the running agent rotate the device certificate now (new key,
        CreateCertificateFromCsr, RegisterThing, proof, switch); follow it
        with tether status
`

// runIdentity implements `tether identity ...`.
func runIdentity(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] != "rotate" {
		fmt.Fprint(stderr, identityUsage)
		return exitUsage
	}
	fs := newFlagSet("identity rotate", stderr)
	socket := fs.String("socket", defaultSocket, "the agent's Unix socket `path`")
	if code, stop := parseFlags(fs, args[1:]); stop {
		return code
	}
	if err := agent.RequestRotation(ctx, *socket); err != nil {
		fmt.Fprintf(stderr, "tether identity rotate: %v\n", err)
		if ae, ok := err.(*agent.APIError); ok && ae.Status == 409 {
			return exitUsage
		}
		return exitRuntime
	}
	fmt.Fprintln(stdout, "rotation requested; tether status shows its progress")
	return exitOK
}

// printRotation adds the rotation lines of `tether status`.
func printRotation(w io.Writer, r *agent.RotationStatus, now time.Time) {
	if r == nil {
		return
	}
	if !r.Enabled {
		fmt.Fprintf(w, "  rotation\tdisabled: %s (%.1f days left)\n", r.Disabled, r.DaysLeft)
		return
	}
	state := "idle"
	switch {
	case r.Phase == "fallback":
		state = "committed, previous identity kept until " + r.FallbackUntil.Format(time.RFC3339)
	case r.Phase != "":
		state = "in progress: " + r.Phase
	}
	fmt.Fprintf(w, "  rotation\t%s; %.1f days left, due %s (%s)\n", state, r.DaysLeft, r.Due.Format(time.RFC3339), in(now, r.Due))
	if !r.LastRotation.IsZero() {
		fmt.Fprintf(w, "  last rotation\t%s\n", r.LastRotation.Format(time.RFC3339))
	}
	if r.LastError != "" {
		fmt.Fprintf(w, "  rotation error\t%s (%d attempts; next %s)\n", r.LastError, r.Attempts, in(now, r.NextAttempt))
	}
}
