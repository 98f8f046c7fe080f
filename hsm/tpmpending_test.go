package hsm_test

import (
	"context"
	"crypto/tls"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tetherd/tether/hsm"
	"github.com/tetherd/tether/hsm/tpm/tpmtest"
)

// TestTPMPendingKeyFile ensures that while a rotation's new TPM key file
// (PendingKey: device.tss2.next) sits beside the configured one, the
// certificate picks between the two: the previous certificate opens the
// configured file, the new certificate the pending one, both keys usable at
// once on a simulator that serves one client (one shared connection).
func TestTPMPendingKeyFile(t *testing.T) {
	sim := tpmtest.Start(t)
	ctx := context.Background()
	ref, oldCert := tpmIdentity(t, sim, "ec-p256")
	next := hsm.PendingKey(ref)
	require.NotEqual(t, ref, next)
	f, _ := hsm.KeyFile(next)
	assert.Regexp(t, `\.tss2\.next$`, f)
	_, err := hsm.Generate(ctx, next, hsm.KeyECP256)
	require.NoError(t, err)
	k, err := hsm.OpenKey(ctx, next)
	require.NoError(t, err)
	now := time.Now()
	newCert := writeFile(t, "new.crt", selfSigned(t, k, now.Add(-time.Hour), now.Add(time.Hour)), 0o644)
	require.NoError(t, k.Close())

	old, err := hsm.Open(ctx, oldCert, ref)
	require.NoError(t, err, "the previous certificate opens the configured file")
	defer old.Close()
	cur, err := hsm.Open(ctx, newCert, ref)
	require.NoError(t, err, "the new certificate picks the pending file")
	defer cur.Close()
	loc, _ := hsm.KeyFile(cur.KeyLocation())
	assert.Equal(t, f, loc)
	for _, id := range []*hsm.Identity{old, cur} {
		require.NoError(t, mutualTLS(t, id, tls.VersionTLS13))
	}

	require.NoError(t, os.Remove(f))
	_, err = hsm.Open(ctx, newCert, ref)
	require.Error(t, err, "without the pending file the new certificate has no key")
}
