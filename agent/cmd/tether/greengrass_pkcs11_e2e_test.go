//go:build cgo && !nopkcs11

package main

import (
	"context"
	"encoding/pem"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tetherd/tether/agent/agenttest"
	"github.com/tetherd/tether/hsm"
	"github.com/tetherd/tether/hsm/hsmtest"
)

// TestGreengrassImportPKCS11 ensures that Greengrass keys in a SoftHSM token
// — classic's Pkcs11Provider plugin and lite's pkcs11: URI with the PIN in
// it — become a tether key URI that fetches credentials, with the PIN moved
// to a 0600 file by --write-pin and never printed.
func TestGreengrassImportPKCS11(t *testing.T) {
	if testing.Short() {
		t.Skip("SoftHSM integration test")
	}
	e := agenttest.New(t, time.Hour, "")
	tk := hsmtest.NewToken(t, "ggl")
	_, pub := tk.GenerateKey(t, "key", hsm.KeyECP256)
	cert, err := e.Sim.PKI.Sign(agenttest.ThingName, pub)
	require.NoError(t, err)
	certFile := filepath.Join(e.Dir, "token-device.crt")
	require.NoError(t, os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}), 0o644))
	pinBytes, err := os.ReadFile(tk.PINFile)
	require.NoError(t, err)
	pin := strings.TrimSpace(string(pinBytes))

	t.Run("classic Pkcs11Provider", func(t *testing.T) {
		file := greengrassYAML(t, e, "aws.greengrass.Nucleus", certFile, "pkcs11:object=key;type=private", `
  aws.greengrass.crypto.Pkcs11Provider:
    configuration:
      name: "softhsm"
      library: "`+tk.Module+`"
      slot: `+slotOf(t, tk)+`
      userPin: "`+pin+`"
`)
		pinFile := filepath.Join(e.Dir, "classic.pin")
		config, _ := importAndFetch(t, e, file, "--write-pin", "--pin-file", pinFile)
		st, err := os.Stat(pinFile)
		require.NoError(t, err)
		assert.Equal(t, os.FileMode(0o600), st.Mode().Perm())
		b, err := os.ReadFile(config)
		require.NoError(t, err)
		assert.NotContains(t, string(b), pin)
	})
	t.Run("lite pin-value", func(t *testing.T) {
		file := greengrassYAML(t, e, "aws.greengrass.NucleusLite", certFile, "pkcs11:token=ggl;object=key;pin-value="+pin, "")
		pinFile := filepath.Join(e.Dir, "lite.pin")
		code, out, stderr := tether(t, nil, "config", "import", "greengrass", "--pin-file", pinFile, file)
		require.Equal(t, 2, code, "nucleus lite names no module")
		assert.Contains(t, stderr, "--pkcs11-module")
		assert.Empty(t, out)
		assert.NotContains(t, stderr, pin)

		config, _ := importAndFetch(t, e, file, "--write-pin", "--pin-file", pinFile, "--pkcs11-module", tk.Module)
		b, err := os.ReadFile(config)
		require.NoError(t, err)
		assert.NotContains(t, string(b), pin)
		assert.Contains(t, string(b), "pin-source=file:"+pinFile)

		code, _, stderr = tether(t, nil, "config", "import", "greengrass", "--write-pin", "--pin-file", pinFile, "--pkcs11-module", tk.Module, file)
		assert.Equal(t, 1, code)
		assert.Contains(t, stderr, "exists; tether does not overwrite it")
	})
}

// slotOf returns the slot id SoftHSM gave the token, as Greengrass's
// Pkcs11Provider names it.
func slotOf(t *testing.T, tk *hsmtest.Token) string {
	t.Helper()
	slots, err := hsm.List(context.Background(), tk.Module, nil)
	require.NoError(t, err)
	for _, s := range slots {
		if s.Token != nil && s.Token.Label == tk.Label {
			return strconv.FormatUint(uint64(s.ID), 10)
		}
	}
	t.Fatalf("token %q not found", tk.Label)
	return ""
}
