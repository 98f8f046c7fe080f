package agent

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/tetherd/tether/hsm"
	"github.com/tetherd/tether/hsm/tpm"
	"github.com/tetherd/tether/hsm/tpm/tpmtest"
)

// Ensures that config check validates a tpm: private_key with the rules of
// hsm/tpm: syntax, key file, device and PIN file, each named in the error.
func TestParseConfigTPMKey(t *testing.T) {
	sim := tpmtest.Start(t)
	dir := writeIdentityFiles(t)
	keyFile := filepath.Join(dir, "device.tss2")
	u, err := tpm.ParseURI("tpm:file=" + keyFile + "?device=" + sim.Socket)
	require.NoError(t, err)
	_, err = tpm.Generate(context.Background(), u, tpm.ECP256, nil)
	require.NoError(t, err)
	openPIN := filepath.Join(dir, "open-pin")
	require.NoError(t, os.WriteFile(openPIN, []byte("1"), 0o644))
	tests := []struct{ key, want string }{
		{"tpm:file=" + keyFile + "?device=" + sim.Socket + "&pin-source=file:" + dir + "/pin", ""},
		{"tpm:handle=0x81000001?device=" + sim.Socket + "&pin-source=credential:tpm-pin", ""},
		{"tpm:file=" + keyFile + "?device=" + sim.Socket + "&pin-source=file:" + openPIN, "chmod 600"},
		{"tpm:file=" + dir + "/none.tss2?device=" + sim.Socket, "none.tss2: no such file"},
		{"tpm:file=" + dir + "/device.key?device=" + sim.Socket, `no "TSS2 PRIVATE KEY" PEM block`},
		{"tpm:file=" + keyFile + "?device=" + dir + "/tpmrm9", "tpmrm9: no such file"},
		{"tpm:handle=0x40000001", "not a persistent handle"},
		{"tpm:file=" + keyFile + "?pin=x", `unknown query attribute "pin"`},
	}
	for _, tt := range tests {
		t.Run(tt.key, func(t *testing.T) {
			cfg := strings.Replace(minimalConfig(dir), dir+"/device.key", tt.key, 1)
			_, err := ParseConfig("t.toml", []byte(cfg))
			if tt.want == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorContains(t, err, "identity.private_key")
			require.ErrorContains(t, err, tt.want)
		})
	}
}

// TestVerdictTPMKey ensures that config check accepts a tpm: private_key
// exactly when hsm.OpenKey opens it, for the faults a check can see without
// the key (syntax, files, device, PIN file); the key itself is in swtpm.
func TestVerdictTPMKey(t *testing.T) {
	sim := tpmtest.Start(t)
	dir := writeIdentityFiles(t)
	keyFile := filepath.Join(dir, "device.tss2")
	pin := filepath.Join(dir, "tpm-pin")
	require.NoError(t, os.WriteFile(pin, []byte("42"), 0o600))
	u, err := tpm.ParseURI("tpm:file=" + keyFile + "?device=" + sim.Socket)
	require.NoError(t, err)
	_, err = tpm.Generate(context.Background(), u, tpm.ECP256, []byte("42"))
	require.NoError(t, err)
	openPIN := filepath.Join(dir, "open-pin")
	require.NoError(t, os.WriteFile(openPIN, []byte("42"), 0o644))
	base := "tpm:file=" + keyFile + "?device=" + sim.Socket
	for _, ref := range []string{
		base + "&pin-source=file:" + pin,
		base + "&pin-source=" + pin,
		base + "&pin-source=file:" + openPIN,
		base + "&pin-source=file:" + dir + "/no-pin",
		base + "&pin-source=env:PIN",
		base + "&pin-source=credential:a/b",
		base + "&pin-value=42",
		"tpm:file=" + dir + "/none.tss2?device=" + sim.Socket,
		"tpm:file=" + keyFile + "?device=" + dir + "/no-tpm&pin-source=file:" + pin,
		"tpm:fiel=" + keyFile,
	} {
		k, libErr := hsm.OpenKey(context.Background(), ref)
		if k != nil {
			k.Close() // swtpm serves one connection at a time
		}
		text := strings.Replace(minimalConfig(dir), dir+"/device.key", ref, 1)
		sameVerdict(t, ref, libErr, configVerdict(t, text, "identity.private_key"))
	}
}
