package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tetherd/tether/agent/agenttest"
	"github.com/tetherd/tether/credprovider/iotcredtest"
)

// lastLine is the last line of out, without the "tether: " prefix.
func lastLine(out string) string {
	lines := strings.Split(strings.TrimSpace(out), "\n")
	return strings.TrimPrefix(lines[len(lines)-1], "tether: ")
}

// TestConfigCheckRefusesWhatRunRefuses ensures that `tether config check`
// opens and checks the identity as `tether run` does: a key file or PIN
// file that group or others may read, a garbage certificate, a garbage key
// and a certificate that is not the key's are refused by both, with the
// same line and exit status 2, and the check sends nothing to the
// credentials endpoint.
func TestConfigCheckRefusesWhatRunRefuses(t *testing.T) {
	e := agenttest.New(t, time.Hour, "")
	other, err := e.Sim.PKI.NewDevice("gw-other", iotcredtest.ECDSAP256)
	require.NoError(t, err)
	otherDir := filepath.Join(e.Dir, "other")
	require.NoError(t, os.Mkdir(otherDir, 0o700))
	otherCert, _, err := other.WriteFiles(otherDir)
	require.NoError(t, err)
	write := func(name, content string, mode os.FileMode) string {
		p := filepath.Join(e.Dir, name)
		require.NoError(t, os.WriteFile(p, []byte(content), mode))
		require.NoError(t, os.Chmod(p, mode))
		return p
	}
	openKey := write("open.key", mustRead(t, e.KeyFile), 0o644)
	openPIN := write("open-pin", "1234\n", 0o644)
	garbageCert := write("garbage.crt", "this is not a certificate\n", 0o644)
	garbageKey := write("garbage.key", "-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n", 0o600)

	code, _, stderr := tether(t, nil, "config", "check", "-c", e.Config)
	require.Equal(t, 0, code, "the unedited configuration is fine: %s", stderr)
	for _, tc := range []struct {
		name       string
		from, to   string
		wantInLine string
	}{
		{"key readable by others", e.KeyFile, openKey, "chmod 600 " + openKey},
		{"PIN file readable by others", `"` + e.KeyFile + `"`, `"pkcs11:token=t;object=k?pin-source=file:` + openPIN + `"`, "chmod 600 " + openPIN},
		{"garbage certificate", e.CertFile, garbageCert, "no PEM \"CERTIFICATE\" block"},
		{"garbage key", e.KeyFile, garbageKey, garbageKey},
		{"certificate of another key", e.CertFile, otherCert, "does not match certificate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e.WriteConfig("", tc.from, tc.to)
			before := e.Sim.Requests()
			code, stdout, checkErr := tether(t, nil, "config", "check", "-c", e.Config)
			assert.Equal(t, 2, code, "config check: %s", checkErr)
			assert.NotContains(t, stdout, "configuration OK")
			assert.Contains(t, lastLine(checkErr), tc.wantInLine)
			assert.Equal(t, before, e.Sim.Requests(), "config check never contacts the endpoint")

			code, _, runErr := tether(t, nil, "run", "-c", e.Config)
			assert.Equal(t, 2, code, "run: %s", runErr)
			assert.Equal(t, lastLine(checkErr), lastLine(runErr), "the same line from both")
		})
	}
}

func mustRead(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	return string(b)
}
