package platform

import (
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// fileRSS is the resident file-backed memory of this process in kB.
func fileRSS(t *testing.T) int {
	b, err := os.ReadFile("/proc/self/smaps_rollup")
	require.NoError(t, err)
	kB := map[string]int{}
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok && strings.HasSuffix(v, " kB") {
			kB[k], _ = strconv.Atoi(strings.Fields(v)[0])
		}
	}
	require.Contains(t, kB, "Rss")
	return kB["Rss"] - kB["Anonymous"]
}

// TestTrimResident ensures that trimming advises this executable's read-only
// mappings and that their pages leave the process's RSS.
func TestTrimResident(t *testing.T) {
	before := fileRSS(t)
	n, err := TrimResident()
	require.NoError(t, err)
	assert.Greater(t, n, 1<<20, "the test binary's text and read-only data")
	after := fileRSS(t)
	assert.Less(t, after, before*3/4, "file-backed RSS %d kB before, %d kB after", before, after)
}
