package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/tetherd/tether/agent/greengrass"
)

// runConfigImport implements `tether config import greengrass FILE`: it
// prints the tether configuration that uses the identity of the Greengrass
// core device FILE configures.
func runConfigImport(args []string, stdout, stderr io.Writer) int {
	const usageLine = "usage: tether config import greengrass [--pin-file PATH] [--write-pin] [--pkcs11-module PATH] [--certificate FILE] GREENGRASS-CONFIG"
	if len(args) == 0 || args[0] != "greengrass" {
		fmt.Fprintln(stderr, usageLine)
		return exitUsage
	}
	flags := newFlagSet("config import greengrass", stderr)
	var o greengrass.Options
	flags.StringVar(&o.PINFile, "pin-file", greengrass.DefaultPINFile, "`file` tether reads a PKCS#11 token's PIN from")
	writePIN := flags.Bool("write-pin", false, "write the PIN Greengrass's file holds to --pin-file (mode 0600; never overwrites)")
	flags.StringVar(&o.PKCS11Module, "pkcs11-module", "", "PKCS#11 module `path` (nucleus lite names none in its file)")
	flags.StringVar(&o.Certificate, "certificate", "", "certificate `file` when Greengrass keeps it in the token")
	if err := flags.Parse(args[1:]); err != nil {
		return exitUsage
	}
	if flags.NArg() != 1 {
		fmt.Fprintln(stderr, usageLine)
		return exitUsage
	}
	file, err := filepath.Abs(flags.Arg(0))
	if err != nil {
		fmt.Fprintf(stderr, "tether: %s: %v\n", flags.Arg(0), err)
		return exitUsage
	}
	b, err := os.ReadFile(file)
	if err != nil {
		fmt.Fprintf(stderr, "tether: %s: cannot read it: %v; pass Greengrass's effectiveConfig.yaml (classic, /greengrass/v2/config/) or config.yaml (lite, /etc/greengrass/)\n", file, unwrapPathErr(err))
		return exitUsage
	}
	dev, err := greengrass.Parse(file, b)
	if err != nil {
		fmt.Fprintf(stderr, "tether: %v\n", err)
		return exitUsage
	}
	im, err := dev.Config(o)
	if err != nil {
		fmt.Fprintf(stderr, "tether: %v\n", err)
		return exitUsage
	}
	if im.PINFile != "" {
		switch {
		case im.PIN != "" && *writePIN:
			if err := writeSecretFile(im.PINFile, im.PIN); err != nil {
				fmt.Fprintf(stderr, "tether: --write-pin: %v\n", err)
				return exitRuntime
			}
			fmt.Fprintf(stderr, "tether: wrote the token PIN from %s to %s (mode 0600)\n", file, im.PINFile)
		case im.PIN != "":
			fmt.Fprintf(stderr, "tether: note: %s holds the token PIN; it is not printed: put it in %s (mode 0600), or run again with --write-pin\n", file, im.PINFile)
		default:
			fmt.Fprintf(stderr, "tether: note: put the token PIN in %s (mode 0600)\n", im.PINFile)
		}
	}
	stdout.Write(im.TOML)
	return exitOK
}

// writeSecretFile creates path with mode 0600 and data; it never replaces a file.
func writeSecretFile(path, data string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("%s exists; tether does not overwrite it (remove it or pass another --pin-file)", path)
		}
		return fmt.Errorf("%s: %w", path, unwrapPathErr(err))
	}
	if _, err := f.WriteString(data + "\n"); err != nil {
		f.Close()
		os.Remove(path)
		return fmt.Errorf("%s: %w", path, err)
	}
	return f.Close()
}

func unwrapPathErr(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
