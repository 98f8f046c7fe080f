package platform

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestCanAccess ensures that an account's access follows the owner, group
// and other bits of the file and of every directory above it.
func TestCanAccess(t *testing.T) {
	dir := t.TempDir()
	for _, d := range []string{filepath.Dir(dir), dir} { // t.TempDir's parent is 0700
		require.NoError(t, os.Chmod(d, 0o755))
	}
	file := filepath.Join(dir, "f")
	require.NoError(t, os.WriteFile(file, nil, 0o600))
	closed := filepath.Join(dir, "closed")
	require.NoError(t, os.Mkdir(closed, 0o700))
	inner := filepath.Join(closed, "g")
	require.NoError(t, os.WriteFile(inner, nil, 0o644))
	st, err := os.Stat(file)
	require.NoError(t, err)
	owner, group := fileIDs(t, st)

	for _, tc := range []struct {
		name string
		acct Account
		path string
		mode os.FileMode
		want Access
		ok   bool
	}{
		{"owner reads 0600", Account{Name: "o", UID: owner, GIDs: []int{group}}, file, 0o600, Read, true},
		{"stranger cannot read 0600", Account{Name: "s", UID: 54321, GIDs: []int{54321}}, file, 0o600, Read, false},
		{"group reads 0640", Account{Name: "g", UID: 54321, GIDs: []int{54321, group}}, file, 0o640, Read, true},
		{"group cannot write 0640", Account{Name: "g", UID: 54321, GIDs: []int{group}}, file, 0o640, Write, false},
		{"others read 0644", Account{Name: "s", UID: 54321, GIDs: []int{54321}}, file, 0o644, Read, true},
		{"root reads 0000", Account{Name: "root", UID: 0}, file, 0o000, Read, true},
		{"a closed directory stops a stranger", Account{Name: "s", UID: 54321, GIDs: []int{54321}}, inner, 0o644, Read, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.path == file {
				require.NoError(t, os.Chmod(file, tc.mode))
			}
			err := tc.acct.CanAccess(tc.path, tc.want)
			if tc.ok {
				assert.NoError(t, err)
				return
			}
			require.Error(t, err)
			assert.Contains(t, err.Error(), "user "+tc.acct.Name+" cannot")
		})
	}
}

// TestLookupAccount ensures that root is found with uid 0 and its primary group.
func TestLookupAccount(t *testing.T) {
	a, err := LookupAccount("root")
	require.NoError(t, err)
	assert.Equal(t, 0, a.UID)
	assert.Contains(t, a.GIDs, 0)
}

// TestReadTimeSync ensures that the kernel answers adjtimex read-only.
func TestReadTimeSync(t *testing.T) {
	_, err := ReadTimeSync()
	assert.NoError(t, err)
}

func fileIDs(t *testing.T, st os.FileInfo) (uid, gid int) {
	t.Helper()
	s, ok := st.Sys().(*syscall.Stat_t)
	require.True(t, ok)
	return int(s.Uid), int(s.Gid)
}
