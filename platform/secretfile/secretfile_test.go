package secretfile_test

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tetherd/tether/platform/secretfile"
)

// TestCheck ensures that only a regular file its owner alone may access
// passes, and that each refusal names the file and what to do.
func TestCheck(t *testing.T) {
	dir := t.TempDir()
	file := func(mode os.FileMode) string {
		p := filepath.Join(dir, mode.String())
		require.NoError(t, os.WriteFile(p, []byte("secret"), 0o600))
		require.NoError(t, os.Chmod(p, mode))
		return p
	}
	for _, mode := range []os.FileMode{0o600, 0o400, 0o700} {
		assert.NoError(t, secretfile.Check(file(mode)), "mode %04o", mode)
	}
	for _, mode := range []os.FileMode{0o640, 0o604, 0o644, 0o660, 0o601} {
		p := file(mode)
		err := secretfile.Check(p)
		require.ErrorIs(t, err, secretfile.ErrTooOpen, "mode %04o", mode)
		assert.Contains(t, err.Error(), "chmod 600 "+p)
		assert.NotContains(t, err.Error(), "secret\n")
	}
	err := secretfile.Check(filepath.Join(dir, "missing"))
	assert.True(t, errors.Is(err, fs.ErrNotExist), "%v", err)
	assert.ErrorContains(t, secretfile.Check(dir), "not a regular file")
}
