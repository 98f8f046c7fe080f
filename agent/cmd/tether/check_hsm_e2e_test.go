package main

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tetherd/tether/agent/agenttest"
	"github.com/tetherd/tether/hsm"
	"github.com/tetherd/tether/hsm/hsmtest"
)

// TestConfigCheckOpensTokenKey ensures that `tether config check` logs in
// to the token and checks the key against the certificate, as `tether run`
// does: a matching key passes, a wrong PIN is refused (exit 2) by both with
// the same line, and the check did not lock the token (the right PIN works
// again afterwards).
func TestConfigCheckOpensTokenKey(t *testing.T) {
	if testing.Short() {
		t.Skip("SoftHSM integration test")
	}
	tk := hsmtest.NewToken(t, "check")
	uri, _ := tk.GenerateKey(t, "device", hsm.KeyECP256)
	k, err := hsm.OpenKey(context.Background(), uri)
	require.NoError(t, err)
	now := time.Now()
	certFile, _ := hsmtest.Certificate(t, agenttest.ThingName, k.Public(), nil, k, now.Add(-time.Hour), now.Add(time.Hour))
	require.NoError(t, k.Close())

	e := agenttest.New(t, time.Hour, "")
	e.WriteConfig("", e.CertFile, certFile, `"`+e.KeyFile+`"`, `"`+uri+`"`)
	code, out, stderr := tether(t, nil, "config", "check", "-c", e.Config)
	require.Equal(t, 0, code, stderr)
	assert.Contains(t, out, "configuration OK")

	pin, err := os.ReadFile(tk.PINFile)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(tk.PINFile, []byte("00000000\n"), 0o600))
	code, _, checkErr := tether(t, nil, "config", "check", "-c", e.Config)
	assert.Equal(t, 2, code, checkErr)
	assert.Contains(t, checkErr, "refused the PIN")
	code, _, runErr := tether(t, nil, "run", "-c", e.Config)
	assert.Equal(t, 2, code, runErr)
	assert.Equal(t, lastLine(checkErr), lastLine(runErr))

	require.NoError(t, os.WriteFile(tk.PINFile, pin, 0o600))
	code, _, stderr = tether(t, nil, "config", "check", "-c", e.Config)
	assert.Equal(t, 0, code, "the token is not locked: %s", stderr)
}
