package main

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tetherd/tether/agent"
	"github.com/tetherd/tether/hsm/tpm/tpmtest"
)

// TestProvisionIntoTPM ensures that provisioning generates the device key
// in a TPM 2.0 (swtpm) as a TSS2 key file, staged beside its final name
// until the certificate is active, and that a kill -9 at the step
// boundaries ends, after another run, in a working identity.
func TestProvisionIntoTPM(t *testing.T) {
	for _, point := range []string{"", "provision:certificate", "provision:commit"} {
		name := point
		if name == "" {
			name = "no crash"
		}
		t.Run(name, func(t *testing.T) {
			sim := tpmtest.Start(t)
			dir := t.TempDir()
			keyFile := filepath.Join(dir, "device.tss2")
			ref := fmt.Sprintf("tpm:file=%s?device=%s", keyFile, sim.Socket)
			f := newFleet(t, ref)
			if point != "" {
				code, _, stderr := tether(t, []string{"TETHER_FAILPOINT=" + point}, "provision", "-c", f.Config)
				require.Equal(t, -1, code, stderr)
				_, err := os.Stat(keyFile)
				assert.ErrorIs(t, err, os.ErrNotExist, "the key file appears with its certificate")
			}
			code, _, stderr := tether(t, nil, "provision", "-c", f.Config)
			require.Equal(t, 0, code, stderr)
			_, err := os.Stat(keyFile + ".new")
			assert.ErrorIs(t, err, os.ErrNotExist)
			f.directFetch(t)
			cfg, err := agent.LoadConfig(f.Config)
			require.NoError(t, err)
			assert.Equal(t, provisionedThing, cfg.Identity.ThingName)
		})
	}
}
