package main

import (
	"context"
	"os"
	"regexp"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tetherd/tether/agent"
	"github.com/tetherd/tether/hsm/hsmtest"
)

// countPrivate counts the private keys `tether hsm list` shows.
func countPrivate(list string) int {
	return len(regexp.MustCompile(`(?m)^\s*private +label=`).FindAllString(list, -1))
}

// TestRotationThroughP11Kit ensures that a device whose token key is
// reached through p11-kit (`p11-kit remote` and a `p11-kit server` socket:
// what the static build uses for every token) rotates inside the token and
// that the committed rotation leaves one key there, as with the in-process
// module; a kill -9 at the end of the fallback (the previous key's removal)
// ends the same way after a restart.
func TestRotationThroughP11Kit(t *testing.T) {
	if testing.Short() {
		t.Skip("SoftHSM, p11-kit and mosquitto integration test")
	}
	keys := func(t *testing.T, tk *hsmtest.Token, uri string) int {
		t.Helper()
		code, list, stderr := tether(t, nil, "hsm", "list", "--module", tk.Module, "--key", uri)
		require.Equal(t, 0, code, stderr)
		return countPrivate(list)
	}
	cases := []struct {
		name, failpoint string
		uri             func(t *testing.T, tk *hsmtest.Token) string
	}{
		{"p11-kit remote", "", func(_ *testing.T, tk *hsmtest.Token) string { return tk.RemoteURI("device") }},
		{"p11-kit server", "", func(t *testing.T, tk *hsmtest.Token) string { return tk.ServerURI(t, "device") }},
		{"p11-kit remote, kill -9 at rotation:fallback", "rotation:fallback", func(_ *testing.T, tk *hsmtest.Token) string { return tk.RemoteURI("device") }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tk := hsmtest.NewToken(t, "tether")
			uri := tc.uri(t, tk)
			f := provisionedWith(t, uri)
			require.Equal(t, 1, keys(t, tk, uri))
			oldCert, _ := os.ReadFile(f.cert)
			var env []string
			if tc.failpoint != "" {
				env = append(env, "TETHER_FAILPOINT="+tc.failpoint)
			}
			_, exited := startAgentEnv(t, f, env...)
			waitStatus(t, f.Socket, func(st *agent.Status) bool { return st.MQTT != nil && st.MQTT.State == "connected" })
			require.True(t, status(t, f.Socket).Rotation.Enabled, status(t, f.Socket).Rotation.Disabled)
			before := time.Now()
			code, _, stderr := tether(t, nil, "identity", "rotate", "--socket", f.Socket)
			require.Equal(t, 0, code, stderr)
			if tc.failpoint != "" {
				select {
				case <-exited:
				case <-time.After(60 * time.Second):
					t.Fatalf("the agent did not reach %s", tc.failpoint)
				}
				startAgentEnv(t, f)
			}
			rotated(t, f.Socket, before)
			newCert, _ := os.ReadFile(f.cert)
			assert.NotEqual(t, oldCert, newCert)
			assert.Equal(t, 1, keys(t, tk, uri), "the previous key is destroyed in the token")
			_, err := agent.FetchCredentials(context.Background(), f.Socket, "")
			require.NoError(t, err)
			f.directFetch(t)
		})
	}
}
