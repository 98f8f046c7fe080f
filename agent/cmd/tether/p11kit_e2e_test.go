package main

import (
	"encoding/json"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/tetherd/tether/agent/agenttest"
	"github.com/tetherd/tether/hsm"
	"github.com/tetherd/tether/hsm/hsmtest"
)

// TestCredentialsWithTokenKeyThroughP11Kit ensures that the binary under
// test (static under CGO_ENABLED=0) fetches credentials from the simulator
// over mutual TLS with a SoftHSM key reached through `p11-kit remote` and
// through a `p11-kit server` socket, and that config check accepts both.
func TestCredentialsWithTokenKeyThroughP11Kit(t *testing.T) {
	if testing.Short() {
		t.Skip("SoftHSM and p11-kit integration test")
	}
	for _, via := range []string{"p11-kit remote", "p11-kit server"} {
		t.Run(via, func(t *testing.T) {
			e := agenttest.New(t, time.Hour, "")
			tk := hsmtest.NewToken(t, "e2e")
			uri := tk.RemoteURI("device")
			if via == "p11-kit server" {
				uri = tk.ServerURI(t, "device")
			}
			pub, err := hsm.GenerateKey(t.Context(), uri, hsm.KeyECP256)
			require.NoError(t, err)
			cert, err := e.Sim.PKI.Sign(agenttest.ThingName, pub)
			require.NoError(t, err)
			certFile := filepath.Join(e.Dir, "token-device.crt")
			require.NoError(t, os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}), 0o644))
			e.WriteConfig("", `certificate = "`+e.CertFile+`"`, `certificate = "`+certFile+`"`,
				`private_key = "`+e.KeyFile+`"`, `private_key = "`+uri+`"`)

			code, out, stderr := tether(t, nil, "config", "check", "-c", e.Config)
			require.Equal(t, 0, code, stderr)
			assert.Contains(t, out, "x-p11-kit=")

			code, out, stderr = tether(t, nil, "credential-process", "--direct", "-c", e.Config)
			require.Equal(t, 0, code, stderr)
			var pc processCredentials
			require.NoError(t, json.Unmarshal([]byte(out), &pc))
			grants := e.Sim.Grants()
			require.Len(t, grants, 1)
			assert.Equal(t, grants[0].AccessKeyID, pc.AccessKeyID)
			assert.NotContains(t, out+stderr, strings.TrimSpace(readFile(t, tk.PINFile)))
		})
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	return string(b)
}
