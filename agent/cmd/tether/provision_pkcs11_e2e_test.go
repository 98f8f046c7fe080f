//go:build cgo && !nopkcs11

package main

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tetherd/tether/hsm/hsmtest"
	"github.com/tetherd/tether/mqtt/fleetprov/fleetprovtest"
)

// TestProvisionIntoSoftHSM ensures that provisioning generates the device
// key inside a PKCS#11 token (SoftHSM2) and that a kill -9 at every step
// boundary ends, after another run, in one working identity whose key is
// the one generated (never a second key in the token).
func TestProvisionIntoSoftHSM(t *testing.T) {
	for _, point := range []string{"", "provision:certificate", "provision:register", "provision:commit", "provision:done"} {
		name := point
		if name == "" {
			name = "no crash"
		}
		t.Run(name, func(t *testing.T) {
			tk := hsmtest.NewToken(t, "tether")
			f := newFleet(t, tk.URI("device"))
			if point != "" {
				code, _, stderr := tether(t, []string{"TETHER_FAILPOINT=" + point}, "provision", "-c", f.Config)
				require.Equal(t, -1, code, stderr)
			}
			code, out, stderr := tether(t, nil, "provision", "-c", f.Config)
			require.Equal(t, 0, code, stderr)
			if point != "provision:done" {
				assert.Contains(t, out, "provisioned thing "+provisionedThing)
			}
			f.directFetch(t)
			code, list, stderr := tether(t, nil, "hsm", "list", "--module", tk.Module, "--key", tk.URI("device"))
			require.Equal(t, 0, code, stderr)
			assert.Equal(t, 1, countPrivate(list), list)
			active := 0
			for _, c := range f.prov.Certificates() {
				if c.Status == fleetprovtest.Active {
					active++
				}
			}
			assert.Equal(t, 1, active)
		})
	}
}
