package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"

	"github.com/tetherd/tether/agent"
	"github.com/tetherd/tether/platform"
)

// runConfig implements `tether config check -c FILE`: it validates the file,
// reports every error at once, opens the identity and builds every role's
// provider as `tether run` does (agent.Check: nothing is started, nothing
// leaves the device), and prints the resolved configuration with secrets
// redacted. `tether config import greengrass` is in greengrass.go.
func runConfig(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "import" {
		return runConfigImport(args[1:], stdout, stderr)
	}
	if len(args) == 0 || args[0] != "check" {
		fmt.Fprintln(stderr, "usage: tether config check [-c FILE] | tether config import greengrass FILE")
		return exitUsage
	}
	fs := newFlagSet("config check", stderr)
	file := fs.String("c", agent.DefaultConfigPath, "configuration `file`")
	if err := fs.Parse(args[1:]); err != nil {
		return exitUsage
	}
	cfg, err := agent.LoadConfig(*file)
	if err != nil {
		reportConfigError(stderr, err)
		return exitUsage
	}
	if err := agent.Check(ctx, cfg, platform.NewLogger(stderr, slog.LevelWarn)); err != nil {
		return exitStatus(stderr, err)
	}
	b, err := cfg.Redacted().Marshal()
	if err != nil {
		fmt.Fprintf(stderr, "tether: %v\n", err)
		return exitRuntime
	}
	for _, w := range cfg.Warnings() {
		fmt.Fprintf(stderr, "tether: warning: %s\n", w)
	}
	fmt.Fprintf(stdout, "# %s: configuration OK\n%s", *file, b)
	return exitOK
}

// reportConfigError prints one line per problem.
func reportConfigError(stderr io.Writer, err error) {
	var ce *agent.ConfigError
	if errors.As(err, &ce) {
		for _, fe := range ce.Errors {
			fmt.Fprintf(stderr, "tether: %s\n", fe)
		}
		return
	}
	fmt.Fprintf(stderr, "tether: %v\n", err)
}

// newFlagSet returns a flag set that reports errors instead of exiting.
func newFlagSet(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("tether "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}
