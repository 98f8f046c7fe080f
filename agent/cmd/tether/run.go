package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"time"

	"github.com/tetherd/tether/agent"
	"github.com/tetherd/tether/platform"
)

// runAgent implements `tether run [-c FILE]`.
func runAgent(ctx context.Context, args []string, _, stderr io.Writer) int {
	fs := newFlagSet("run", stderr)
	file := fs.String("c", agent.DefaultConfigPath, "configuration `file`")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "tether run: unexpected argument %q\n", fs.Arg(0))
		return exitUsage
	}
	cfg, err := agent.LoadConfig(*file)
	if err != nil {
		reportConfigError(stderr, err)
		return exitUsage
	}
	tuneMemory()
	log := platform.NewLogger(os.Stderr, cfg.Log.Level.Level)
	ctx, reload, stop := platform.HandleSignals(ctx)
	defer stop()
	// Restore default handling once stopping: a second SIGTERM or Ctrl-C
	// ends a shutdown that hangs.
	go func() { <-ctx.Done(); stop() }()
	err = agent.Run(ctx, cfg, agent.Options{
		Logger:    log,
		Version:   version,
		NotBefore: notBefore(),
		Reload:    reload,
	})
	return exitStatus(stderr, err)
}

// exitStatus prints err as one line and maps it to an exit status.
func exitStatus(stderr io.Writer, err error) int {
	if err == nil {
		return exitOK
	}
	fmt.Fprintf(stderr, "tether: %s\n", agent.ErrorLine(err))
	var ee *agent.ExitError
	if errors.As(err, &ee) {
		return ee.Code
	}
	var ce *agent.ConfigError
	if errors.As(err, &ce) {
		return exitUsage
	}
	return exitRuntime
}

// notBefore is the build date: a clock that reads earlier is not trusted.
func notBefore() time.Time {
	t, err := time.Parse(time.RFC3339, buildDate)
	if err != nil {
		return time.Time{}
	}
	return t
}

// tuneMemory trades a little CPU for a smaller, steadier footprint, which
// matters more on a gateway: collect at half the default heap growth while
// idle (the default while busy, see gcTuner) and return memory to the
// system early once the Go runtime holds 16 MiB. GOGC and GOMEMLIMIT in
// the environment still win.
func tuneMemory() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(gcIdle)
		newGCTuner().arm()
	}
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(16 << 20)
	}
}
