package main

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/tetherd/tether/hsm"
	"github.com/tetherd/tether/hsm/tpm"
)

// tpmFlagDefault lets --tpm stand alone for the default device: the flag
// package has no optional values, so a bare --tpm (last, or followed by
// another flag) gets DefaultDevice.
func tpmFlagDefault(args []string) []string {
	out := make([]string, 0, len(args)+1)
	for i, a := range args {
		out = append(out, a)
		if (a == "--tpm" || a == "-tpm") && (i+1 == len(args) || strings.HasPrefix(args[i+1], "-")) {
			out = append(out, tpm.DefaultDevice)
		}
	}
	return out
}

func hsmListTPM(ctx context.Context, device string, stdout, stderr io.Writer) int {
	info, err := hsm.ListTPM(ctx, device)
	if err != nil {
		return hsmExit(stderr, "list", err)
	}
	lockout := "not in lockout"
	if info.InLockout {
		lockout = fmt.Sprintf("IN LOCKOUT (recovers after %d s, or tpm2_dictionarylockout --clear-lockout)", info.LockoutRecovery)
	}
	fmt.Fprintf(stdout, "TPM %s: manufacturer %q firmware %s\n", info.Device, info.Manufacturer, info.Firmware)
	fmt.Fprintf(stdout, "  authorisation failures %d of %d before lockout; %s\n", info.LockoutCounter, info.MaxAuthFail, lockout)
	if len(info.Persistent) == 0 {
		fmt.Fprintln(stdout, "  no persistent objects")
	}
	for _, p := range info.Persistent {
		fmt.Fprintf(stdout, "  persistent %#x: %s\n", p.Handle, p.Type)
	}
	return exitOK
}

func hsmKeygenTPM(ctx context.Context, key string, kt hsm.KeyType, stdout, stderr io.Writer) int {
	pub, err := hsm.GenerateTPMKey(ctx, key, kt)
	if err != nil {
		return hsmExit(stderr, "keygen", err)
	}
	u, _ := tpm.ParseURI(key)
	where := "key file " + u.File + " (usable by this TPM only)"
	if u.File == "" {
		where = fmt.Sprintf("persistent handle %#x", u.Handle)
	}
	fmt.Fprintf(stderr, "generated %s key in the TPM at %s, %s; private_key = %q\n", kt, u.Device, where, u.String())
	return printPublicKey(stdout, stderr, pub)
}
