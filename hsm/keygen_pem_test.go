package hsm_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tetherd/tether/hsm"
)

// TestGeneratePEMKey ensures that a generated key file is 0600, opens as a
// key of the requested type, and is never overwritten.
func TestGeneratePEMKey(t *testing.T) {
	dir := t.TempDir()
	for _, kt := range []hsm.KeyType{hsm.KeyECP256, hsm.KeyECP384, hsm.KeyRSA2048} {
		path := filepath.Join(dir, string(kt)+".key")
		pub, err := hsm.GeneratePEMKey(path, kt)
		require.NoError(t, err)
		st, err := os.Stat(path)
		require.NoError(t, err)
		assert.Equal(t, os.FileMode(0o600), st.Mode().Perm())
		k, err := hsm.OpenKey(context.Background(), path)
		require.NoError(t, err)
		assert.Equal(t, pub, k.Public())
		_, err = hsm.GeneratePEMKey(path, kt)
		assert.ErrorContains(t, err, "already exists")
	}
	_, err := hsm.GeneratePEMKey(filepath.Join(dir, "x.key"), "dsa")
	assert.ErrorContains(t, err, "want ec-p256")
	entries, _ := os.ReadDir(dir)
	assert.Len(t, entries, 3, "no temporary file is left behind")
}

// TestPEMKeyFileWithTwoKeys ensures that a key file holding two keys (as
// during a certificate rotation) opens with whichever key the certificate
// is for, so that replacing the certificate file alone switches identity.
func TestPEMKeyFileWithTwoKeys(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a.key"), filepath.Join(dir, "b.key")
	pubA, err := hsm.GeneratePEMKey(a, hsm.KeyECP256)
	require.NoError(t, err)
	_, err = hsm.GeneratePEMKey(b, hsm.KeyECP256)
	require.NoError(t, err)
	ka, _ := os.ReadFile(a)
	kb, _ := os.ReadFile(b)
	both := filepath.Join(dir, "both.key")
	require.NoError(t, os.WriteFile(both, append(ka, kb...), 0o600))
	now := time.Now()
	for _, f := range []string{a, b} {
		signer, err := hsm.OpenKey(context.Background(), f)
		require.NoError(t, err)
		certFile := writeFile(t, "cert.pem", selfSigned(t, signer, now.Add(-time.Hour), now.Add(time.Hour)), 0o644)
		id, err := hsm.Open(context.Background(), certFile, both)
		require.NoError(t, err)
		assert.Equal(t, signer.Public(), id.Key().Public())
		id.Close()
	}
	k, err := hsm.OpenKey(context.Background(), both)
	require.NoError(t, err)
	assert.Equal(t, pubA, k.Public(), "without a certificate the first key is used")
}
