package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/tetherd/tether/agent"
)

// runStatus implements `tether status [--json]`.
func runStatus(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("status", stderr)
	asJSON := fs.Bool("json", false, "print the status as JSON")
	socket := fs.String("socket", defaultSocket, "the agent's Unix socket `path`")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	st, err := agent.FetchStatus(ctx, *socket)
	if err != nil {
		fmt.Fprintf(stderr, "tether status: %v\n", err)
		return exitRuntime
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		enc.Encode(st)
		return exitOK
	}
	printStatus(stdout, st, time.Now())
	return exitOK
}

func printStatus(w io.Writer, st *agent.Status, now time.Time) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	id := st.Identity
	fmt.Fprintf(tw, "tether %s, up %s\n", st.Version, now.Sub(st.Started).Round(time.Second))
	fmt.Fprintf(tw, "identity\t%s\n", id.ThingName)
	fmt.Fprintf(tw, "  subject\t%s\n", id.Subject)
	fmt.Fprintf(tw, "  key\t%s\n", id.Key)
	fmt.Fprintf(tw, "  certificate expires\t%s (%s)\n", id.NotAfter.Format(time.RFC3339), in(now, id.NotAfter))
	printRotation(tw, st.Rotation, now)
	for _, r := range st.Roles {
		state := "no credentials"
		if r.Valid && r.Expires != nil {
			state = "valid, expires " + r.Expires.Format(time.RFC3339) + " (" + in(now, *r.Expires) + ")"
		}
		fmt.Fprintf(tw, "role %s\t%s [%s]\n", r.Name, state, r.Mode)
		if r.LastRefresh != nil {
			fmt.Fprintf(tw, "  last refresh\t%s (%d so far)\n", r.LastRefresh.Format(time.RFC3339), r.Refreshes)
		}
		if r.NextRefresh != nil {
			fmt.Fprintf(tw, "  next refresh\t%s (%s)\n", r.NextRefresh.Format(time.RFC3339), in(now, *r.NextRefresh))
		}
		if r.LastError != "" {
			fmt.Fprintf(tw, "  last error\t%s (%d failures)\n", r.LastError, r.Failures)
		}
		if r.Fix != "" {
			fmt.Fprintf(tw, "  fix\t%s\n", r.Fix)
		}
		if r.ClockError != "" {
			fmt.Fprintf(tw, "  clock\t%s\n", r.ClockError)
		}
	}
	s := st.Store
	health := "ok"
	if s.LastError != "" {
		health = s.LastError
	}
	fmt.Fprintf(tw, "store\t%s (%d bytes, schema %d): %s\n", s.Path, s.Size, s.Schema, health)
	if s.MovedAside != "" {
		fmt.Fprintf(tw, "  moved aside\t%s\n", s.MovedAside)
	}
	if m := st.MQTT; m != nil {
		fmt.Fprintf(tw, "mqtt %s\t%s since %s (%s), %d reconnects\n", m.ClientID, m.State, m.Since.Format(time.RFC3339), in(now, m.Since), m.Reconnects)
		if m.LastError != "" {
			fmt.Fprintf(tw, "  last error\t%s\n", m.LastError)
		}
		oldest := "empty"
		if !m.Outbox.Oldest.IsZero() {
			oldest = "oldest " + now.Sub(m.Outbox.Oldest).Round(time.Second).String() + " old"
		}
		fmt.Fprintf(tw, "  outbox\t%d messages, %d bytes, %s\n", m.Outbox.Depth, m.Outbox.Bytes, oldest)
		if m.Outbox.DeadLetters > 0 || m.Outbox.DeadLettered > 0 {
			fmt.Fprintf(tw, "  dead letters\t%d kept, %d since start", m.Outbox.DeadLetters, m.Outbox.DeadLettered)
			if m.Outbox.LastDeadLetter != "" {
				fmt.Fprintf(tw, "; last: %s", m.Outbox.LastDeadLetter)
			}
			fmt.Fprintln(tw)
		}
	}
	tw.Flush()
}

// in says how far t is from now, "in 5m" or "3m ago".
func in(now, t time.Time) string {
	d := t.Sub(now).Round(time.Second)
	if d <= 0 {
		return (-d).String() + " ago"
	}
	return "in " + d.String()
}
