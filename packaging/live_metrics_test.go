package packaging

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tetherd/tether/credprovider/iotcredtest"
	"github.com/tetherd/tether/packaging/nspawntest"
	"github.com/tetherd/tether/platform/openmetrics"
	"github.com/tetherd/tether/platform/openmetrics/openmetricstest"
)

// TestLiveMetricsTimer ensures that the example tether-metrics.timer and
// .service the package ships, installed as docs/metrics.md says in a
// Debian 12 root booted with systemd, write the running agent's metrics
// where node_exporter's textfile collector reads them, as the tether user,
// in a file the Python client's parser and promtool accept.
func TestLiveMetricsTimer(t *testing.T) {
	current, _ := liveDebs(t)
	r := nspawntest.Boot(t, nspawntest.Options{Packages: []string{"curl", "acl"}})
	r.LogJournalOnFailure(t, "tether.service", "tether-metrics.service")
	iot, err := iotcredtest.NewServer(iotcredtest.WithRoleAlias("gateway-role", time.Hour))
	require.NoError(t, err)
	defer iot.Close()
	dev, err := iot.PKI.NewDevice("gw-0001", iotcredtest.ECDSAP256)
	require.NoError(t, err)
	dir := t.TempDir()
	certFile, keyFile, err := dev.WriteFiles(dir)
	require.NoError(t, err)

	r.CopyIn(t, current, "/root/current.deb")
	r.Run(t, "dpkg", "-i", "/root/current.deb")
	r.CopyIn(t, certFile, "/etc/tether/device.crt")
	r.CopyIn(t, keyFile, "/etc/tether/device.key")
	r.Run(t, "chown", "tether:tether", "/etc/tether/device.key")
	r.Run(t, "chmod", "0600", "/etc/tether/device.key")
	r.WriteFile(t, "/etc/tether/ca.crt", iot.PKI.CAPEM, 0o644)
	config := strings.Replace(liveConfig(iot.Endpoint, ""), keyURI, "/etc/tether/device.key", 1)
	r.WriteFile(t, "/etc/tether/tether.toml", []byte(config), 0o644)
	r.Systemctl(t, "enable", "--now", "tether.socket", "tether.service")

	// docs/metrics.md, "node_exporter's textfile collector".
	r.Run(t, "mkdir", "-p", "/var/lib/prometheus/node-exporter")
	r.Run(t, "setfacl", "-m", "u:tether:rwx", "/var/lib/prometheus/node-exporter")
	r.Run(t, "cp", "/usr/share/doc/tether/examples/tether-metrics.service", "/usr/share/doc/tether/examples/tether-metrics.timer", "/etc/systemd/system/")
	r.Systemctl(t, "daemon-reload")
	r.Systemctl(t, "enable", "--now", "tether-metrics.timer")
	assert.Equal(t, "active", r.Show(t, "tether-metrics.timer", "ActiveState"))

	file := r.Path("/var/lib/prometheus/node-exporter/tether.prom")
	var body []byte
	r.WaitFor(t, 2*time.Minute, "the timer to write the device role's valid credentials", func() bool {
		body, _ = os.ReadFile(file)
		return strings.Contains(string(body), `tether_credentials_valid{role="device"} 1`)
	})
	fams := openmetricstest.Parse(t, openmetrics.Text, body)
	assert.Equal(t, 1.0, openmetricstest.Value(t, fams, "tether_credentials_refreshes", `tether_credentials_refreshes_total{role="device"}`))
	st, err := os.Stat(file)
	require.NoError(t, err)
	assert.Equal(t, "tether", strings.TrimSpace(r.Run(t, "stat", "-c", "%U", "/var/lib/prometheus/node-exporter/tether.prom")), "written as the tether user")
	assert.NoFileExists(t, filepath.Join(filepath.Dir(file), "tether.prom.tmp"), "renamed, not left half-written")

	// The timer runs it again: the file is rewritten.
	r.WaitFor(t, 2*time.Minute, "the timer's next run", func() bool {
		next, err := os.Stat(file)
		return err == nil && next.ModTime().After(st.ModTime())
	})
	assert.Equal(t, "success", r.Show(t, "tether-metrics.service", "Result"))
}
