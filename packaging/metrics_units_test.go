package packaging

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestMetricsUnitsVerifyClean ensures that systemd-analyze verify finds
// nothing wrong with the example timer and service that write tether's
// metrics for node_exporter's textfile collector (docs/metrics.md), and
// that the service writes beside the file and renames it.
func TestMetricsUnitsVerifyClean(t *testing.T) {
	dir := t.TempDir()
	for _, name := range []string{"tether-metrics.service", "tether-metrics.timer"} {
		b, err := os.ReadFile(filepath.Join("systemd", name))
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(dir, name), b, 0o644))
	}
	cmd := exec.Command(tool(t, "systemd-analyze"), "verify",
		filepath.Join(dir, "tether-metrics.service"), filepath.Join(dir, "tether-metrics.timer"))
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, string(out))
	assert.Empty(t, strings.TrimSpace(string(out)))

	svc, err := os.ReadFile("systemd/tether-metrics.service")
	require.NoError(t, err)
	assert.Contains(t, string(svc), "--unix-socket /run/tether/tether.sock -o /var/lib/prometheus/node-exporter/tether.prom.tmp http://localhost/v1/metrics")
	assert.Contains(t, string(svc), "/bin/mv -f /var/lib/prometheus/node-exporter/tether.prom.tmp /var/lib/prometheus/node-exporter/tether.prom")
}
