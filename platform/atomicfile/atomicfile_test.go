package atomicfile_test

import (
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tetherd/tether/platform/atomicfile"
)

// entries lists dir's names, so a test sees any temporary file left behind.
func entries(t *testing.T, dir string) []string {
	t.Helper()
	des, err := os.ReadDir(dir)
	require.NoError(t, err)
	var names []string
	for _, de := range des {
		names = append(names, de.Name())
	}
	return names
}

// TestWriteFile ensures that WriteFile creates or replaces a file with the
// data and mode asked for and leaves nothing else beside it.
func TestWriteFile(t *testing.T) {
	for _, tc := range []struct {
		name   string
		before []byte // nil: no file before
		perm   os.FileMode
	}{
		{"new, secret", nil, 0o600},
		{"new, public", nil, 0o644},
		{"replaces", []byte("old content, longer than the new"), 0o640},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			p := filepath.Join(dir, "cert.pem")
			if tc.before != nil {
				require.NoError(t, os.WriteFile(p, tc.before, 0o644))
			}
			require.NoError(t, atomicfile.WriteFile(p, []byte("new"), tc.perm))
			b, err := os.ReadFile(p)
			require.NoError(t, err)
			assert.Equal(t, "new", string(b))
			fi, err := os.Stat(p)
			require.NoError(t, err)
			assert.Equal(t, tc.perm, fi.Mode().Perm())
			assert.Equal(t, []string{"cert.pem"}, entries(t, dir))
		})
	}
}

// TestWriteFileFails ensures that a write that cannot be done leaves the
// target as it was and no temporary file behind.
func TestWriteFileFails(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "key.pem")
	require.NoError(t, os.WriteFile(p, []byte("old"), 0o600))
	// A directory where the file should go: the rename over it fails
	// after the temporary file was written.
	sub := filepath.Join(dir, "sub")
	require.NoError(t, os.Mkdir(sub, 0o700))
	require.NoError(t, os.WriteFile(filepath.Join(sub, "x"), nil, 0o600))
	assert.Error(t, atomicfile.WriteFile(sub, []byte("new"), 0o600))
	assert.ElementsMatch(t, []string{"key.pem", "sub"}, entries(t, dir))

	// A directory that does not exist.
	assert.ErrorIs(t, atomicfile.WriteFile(filepath.Join(dir, "absent", "f"), []byte("new"), 0o600), fs.ErrNotExist)
	b, err := os.ReadFile(p)
	require.NoError(t, err)
	assert.Equal(t, "old", string(b))
}

// TestCreate ensures that Create writes a new file and refuses, with
// fs.ErrExist, to replace one, leaving it and the directory as they were.
func TestCreate(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "device.key")
	require.NoError(t, atomicfile.Create(p, []byte("first"), 0o600))
	assert.ErrorIs(t, atomicfile.Create(p, []byte("second"), 0o600), fs.ErrExist)
	b, err := os.ReadFile(p)
	require.NoError(t, err)
	assert.Equal(t, "first", string(b))
	fi, err := os.Stat(p)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), fi.Mode().Perm())
	assert.Equal(t, []string{"device.key"}, entries(t, dir))
}

// TestSyncDir ensures that SyncDir accepts a directory and names a missing
// one in its error.
func TestSyncDir(t *testing.T) {
	assert.NoError(t, atomicfile.SyncDir(t.TempDir()))
	err := atomicfile.SyncDir(filepath.Join(t.TempDir(), "absent"))
	assert.ErrorIs(t, err, fs.ErrNotExist)
	assert.ErrorContains(t, err, "absent")
}
