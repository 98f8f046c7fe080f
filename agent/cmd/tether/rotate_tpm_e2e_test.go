package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tetherd/tether/agent"
	"github.com/tetherd/tether/hsm/tpm/tpmtest"
	"github.com/tetherd/tether/mqtt/fleetprov/fleetprovtest"
)

// TestRotationInTPM ensures that a device whose key is a TSS2 key file of a
// TPM 2.0 (swtpm) rotates inside the TPM: the new key is generated as a
// second file beside the first (device.tss2.next), the certificate picks
// between the two, and the end of the fallback renames the new file over the
// previous one, so one key file is left and the agent runs on it; a kill -9
// at each step boundary from the proof to that rename ends, after a restart,
// in the rotated, working identity.
func TestRotationInTPM(t *testing.T) {
	for _, point := range []string{"", "rotation:prove", "rotation:commit-key", "rotation:commit-cert", "rotation:fallback", "rotation:previous-removed"} {
		name := point
		if name == "" {
			name = "no crash"
		}
		t.Run(name, func(t *testing.T) {
			sim := tpmtest.Start(t)
			keyFile := filepath.Join(t.TempDir(), "device.tss2")
			f := provisionedWith(t, fmt.Sprintf("tpm:file=%s?device=%s", keyFile, sim.Socket))
			oldCert, err := os.ReadFile(f.cert)
			require.NoError(t, err)
			oldKey, err := os.ReadFile(keyFile)
			require.NoError(t, err)
			before := rotateThrough(t, f, point)
			rotated(t, f.Socket, before)
			newCert, err := os.ReadFile(f.cert)
			require.NoError(t, err)
			assert.NotEqual(t, oldCert, newCert)
			newKey, err := os.ReadFile(keyFile)
			require.NoError(t, err)
			assert.NotEqual(t, oldKey, newKey, "the new key file was renamed over the previous one")
			_, err = os.Stat(keyFile + ".next")
			assert.ErrorIs(t, err, os.ErrNotExist)
			newID := fleetprovtest.CertificateID(mustParseCert(t, newCert))
			waitStatus(t, f.Socket, func(st *agent.Status) bool {
				return st.Identity.CertificateID == newID && st.MQTT != nil && st.MQTT.State == "connected"
			})
			// Served by the agent with the rotated key (swtpm serves one
			// client at a time: another process could not use it now).
			_, err = agent.FetchCredentials(context.Background(), f.Socket, "")
			require.NoError(t, err)
			require.Eventually(t, func() bool { return activeCount(f) == 1 }, 20*time.Second, 20*time.Millisecond)
		})
	}
}
