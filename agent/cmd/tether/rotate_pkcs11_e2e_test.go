//go:build cgo && !nopkcs11

package main

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tetherd/tether/agent"
	"github.com/tetherd/tether/hsm/hsmtest"
	"github.com/tetherd/tether/mqtt/fleetprov/fleetprovtest"
)

// TestRotationInSoftHSM ensures that a device whose key lives in a PKCS#11
// token (SoftHSM2) rotates inside the token: the new key is generated there
// with the same label and a new id, the certificate picks the key, and at
// the end one key is left; a refused certificate leaves only the old key; a
// kill -9 around the switch ends in a rotated, working identity.
func TestRotationInSoftHSM(t *testing.T) {
	keys := func(t *testing.T, tk *hsmtest.Token) int {
		t.Helper()
		code, list, stderr := tether(t, nil, "hsm", "list", "--module", tk.Module, "--key", tk.URI("device"))
		require.Equal(t, 0, code, stderr)
		return countPrivate(list)
	}
	t.Run("commits", func(t *testing.T) {
		tk := hsmtest.NewToken(t, "tether")
		f := provisionedWith(t, tk.URI("device"))
		oldCert, _ := os.ReadFile(f.cert)
		startAgentEnv(t, f)
		waitStatus(t, f.Socket, func(st *agent.Status) bool { return st.MQTT != nil && st.MQTT.State == "connected" })
		require.True(t, status(t, f.Socket).Rotation.Enabled, status(t, f.Socket).Rotation.Disabled)
		before := time.Now()
		code, _, stderr := tether(t, nil, "identity", "rotate", "--socket", f.Socket)
		require.Equal(t, 0, code, stderr)
		rotated(t, f.Socket, before)
		newCert, _ := os.ReadFile(f.cert)
		assert.NotEqual(t, oldCert, newCert)
		assert.Equal(t, 1, keys(t, tk), "the previous key is deleted from the token")
		_, err := agent.FetchCredentials(context.Background(), f.Socket, "")
		require.NoError(t, err)
		f.directFetch(t)
		old := fleetprovtest.CertificateID(mustParseCert(t, oldCert))
		require.Eventually(t, func() bool { return f.prov.Status(old) == fleetprovtest.Inactive }, 20*time.Second, 20*time.Millisecond)
	})
	t.Run("a refused certificate leaves the token as it was", func(t *testing.T) {
		tk := hsmtest.NewToken(t, "tether")
		f := provisionedWith(t, tk.URI("device"))
		startAgentEnv(t, f)
		waitStatus(t, f.Socket, func(st *agent.Status) bool { return st.MQTT != nil && st.MQTT.State == "connected" })
		f.prov.Fail(fleetprovtest.CreateFromCSR, 1, fleetprovtest.FaultUntrusted)
		code, _, stderr := tether(t, nil, "identity", "rotate", "--socket", f.Socket)
		require.Equal(t, 0, code, stderr)
		waitStatus(t, f.Socket, func(s *agent.Status) bool {
			return s.Rotation != nil && s.Rotation.LastError != "" && s.Rotation.Phase == ""
		})
		assert.Equal(t, 1, keys(t, tk), "the pending key is deleted from the token")
		_, err := agent.FetchCredentials(context.Background(), f.Socket, "")
		require.NoError(t, err)
	})
	for _, point := range []string{"rotation:prove", "rotation:commit-cert", "rotation:fallback"} {
		t.Run("kill -9 at "+point, func(t *testing.T) {
			tk := hsmtest.NewToken(t, "tether")
			f := provisionedWith(t, tk.URI("device"))
			_, exited := startAgentEnv(t, f, "TETHER_FAILPOINT="+point)
			waitStatus(t, f.Socket, func(st *agent.Status) bool { return st.MQTT != nil && st.MQTT.State == "connected" })
			before := time.Now()
			code, _, stderr := tether(t, nil, "identity", "rotate", "--socket", f.Socket)
			require.Equal(t, 0, code, stderr)
			select {
			case <-exited:
			case <-time.After(60 * time.Second):
				t.Fatalf("the agent did not reach %s", point)
			}
			startAgentEnv(t, f)
			rotated(t, f.Socket, before)
			f.directFetch(t)
			assert.Equal(t, 1, keys(t, tk))
		})
	}
}
