package agent

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tetherd/tether/agent/agenttest"
	"github.com/tetherd/tether/credprovider/iotcredtest"
	"github.com/tetherd/tether/mqtt/mqtttest"
	"github.com/tetherd/tether/platform/openmetrics"
	"github.com/tetherd/tether/platform/openmetrics/openmetricstest"
)

// scrape fetches GET /v1/metrics in the Text format and parses it with the
// Python client's parser and promtool.
func (h *harness) scrape() map[string]openmetricstest.Family {
	h.t.Helper()
	c := SocketClient(h.Socket)
	// Polling must not pile up kept-alive connections (32 per uid).
	defer c.CloseIdleConnections()
	resp, err := c.Get("http://tether/v1/metrics")
	require.NoError(h.t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(h.t, err)
	require.Equal(h.t, http.StatusOK, resp.StatusCode, string(body))
	require.Equal(h.t, openmetrics.TextContentType, resp.Header.Get("Content-Type"))
	return openmetricstest.Parse(h.t, openmetrics.Text, body)
}

// scrapeUntil scrapes until ok accepts a scrape, or fails t after a minute.
func (h *harness) scrapeUntil(what string, ok func(map[string]openmetricstest.Family) bool) map[string]openmetricstest.Family {
	h.t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		fams := h.scrape()
		if ok(fams) {
			return fams
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("waiting a minute for %s; last scrape: %v", what, fams)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// metric is one sample of a scrape, or -1 when it is absent.
func metric(fams map[string]openmetricstest.Family, family, sample string) float64 {
	if v, ok := fams[family].Samples[sample]; ok {
		return v
	}
	return -1
}

// TestAgentMetrics ensures that GET /v1/metrics, read by the Python
// client's parser, promtool and curl, follows the agent: a failed refresh
// counts under its reason and a refresh increments, refused peers count by
// reason, a publish while the broker is down moves the outbox's depth and
// bytes and, once delivered, the publish latency and the reconnects; and
// that the route follows /v1/status's peer rule.
func TestAgentMetrics(t *testing.T) {
	curl, err := exec.LookPath("curl")
	require.NoError(t, err, "curl missing: apt-get install curl (make deps)")

	// Short-lived credentials, so that the agent refreshes within seconds.
	h := newHarness(t, 12*time.Second, "")
	broker := mqtttest.NewBroker(t, mqtttest.Options{PKI: h.Sim.PKI})
	h.WriteConfig(fmt.Sprintf(`
[[role]]
name       = "narrow"
role_arn   = "arn:aws:iam::123456789012:role/narrow"
sts_endpoint = "https://127.0.0.1:1"
allow_uids = [0]

[mqtt]
endpoint = %q
ca_file  = %q
`, broker.Addr, broker.CAFile), "[serve]\n", "[serve]\nallow_uids = [0, 65533]\n")
	require.NoError(t, os.Chmod(h.Dir, 0o755))
	require.NoError(t, os.Chmod(filepath.Dir(h.Dir), 0o755))
	// The first fetch fails: the service is unavailable.
	h.Sim.Fail(1, iotcredtest.FaultUnavailable)
	h.start()
	require.NoError(t, os.Chmod(h.Socket, 0o666), "the allow list, not the file mode, must refuse")

	const device = `{role="device"}`
	fams := h.scrapeUntil("the device role refreshed after its failure and MQTT connected", func(f map[string]openmetricstest.Family) bool {
		return metric(f, "tether_credentials_refreshes", "tether_credentials_refreshes_total"+device) >= 1 &&
			metric(f, "tether_mqtt_connected", "tether_mqtt_connected") == 1
	})
	assert.Equal(t, 1.0, metric(fams, "tether_credentials_refresh_failures", `tether_credentials_refresh_failures_total{reason="server",role="device"}`),
		"the simulator's 503 counts as a server failure")
	assert.Equal(t, 0.0, metric(fams, "tether_credentials_refresh_failures", `tether_credentials_refresh_failures_total{reason="throttled",role="device"}`))
	assert.Equal(t, 1.0, metric(fams, "tether_credentials_valid", "tether_credentials_valid"+device))
	exp := metric(fams, "tether_credentials_expiry_seconds", "tether_credentials_expiry_seconds"+device)
	assert.True(t, exp > 0 && exp <= 12, "expiry %v s of a 12 s credential", exp)
	last := metric(fams, "tether_credentials_last_success_timestamp_seconds", "tether_credentials_last_success_timestamp_seconds"+device)
	assert.InDelta(t, float64(time.Now().Unix()), last, 60)
	assert.Equal(t, 0.0, metric(fams, "tether_credentials_valid", `tether_credentials_valid{role="narrow"}`), "no STS answers for narrow")
	assert.Greater(t, metric(fams, "tether_certificate_expiry_seconds", "tether_certificate_expiry_seconds"), 86400.0)
	assert.Greater(t, metric(fams, "process_resident_memory_bytes", "process_resident_memory_bytes"), 1e6)
	assert.Greater(t, metric(fams, "go_goroutines", "go_goroutines"), 1.0)
	assert.Equal(t, 1.0, metric(fams, "tether_build_info", `tether_build_info{version="test"}`), "an info is a gauge in the Text format")
	assert.NotContains(t, fams, "tether_peers_refused_container", "no container endpoint configured")

	// narrow's first failure is its source's (the device role's 503);
	// then its STS endpoint refuses the connection.
	h.scrapeUntil("narrow's STS endpoint refused the connection: a network failure", func(f map[string]openmetricstest.Family) bool {
		return metric(f, "tether_credentials_refresh_failures", `tether_credentials_refresh_failures_total{reason="network",role="narrow"}`) > 0
	})

	// A refresh increments.
	before := metric(fams, "tether_credentials_refreshes", "tether_credentials_refreshes_total"+device)
	h.scrapeUntil("a scheduled refresh", func(f map[string]openmetricstest.Family) bool {
		return metric(f, "tether_credentials_refreshes", "tether_credentials_refreshes_total"+device) > before
	})

	// Refused peers count by reason; the metrics follow /v1/status's rule.
	get := func(uid int, path string) string {
		t.Helper()
		return asUser(t, uid, `import socket,sys
s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])
s.sendall(("GET %s HTTP/1.1\r\nHost: tether\r\nConnection: close\r\n\r\n" % sys.argv[2]).encode())
print(s.makefile("rb").readline().decode())`, h.Socket, path)
	}
	assert.Contains(t, get(65534, "/v1/metrics"), "403", "a peer outside the allow list reads no metrics")
	assert.Contains(t, get(65534, "/v1/credentials"), "403")
	assert.Contains(t, get(65533, "/v1/credentials/narrow"), "403")
	assert.Contains(t, get(65533, "/v1/metrics"), "200", "a peer the socket serves reads them")
	fams = h.scrape()
	assert.Equal(t, 2.0, metric(fams, "tether_peers_refused", `tether_peers_refused_total{endpoint="socket",reason="not_allowed"}`))
	assert.Equal(t, 1.0, metric(fams, "tether_peers_refused", `tether_peers_refused_total{endpoint="socket",reason="role_not_allowed"}`))
	assert.Equal(t, 0.0, metric(fams, "tether_peers_refused", `tether_peers_refused_total{endpoint="socket",reason="over_limit"}`))

	// A publish while the broker is down waits in the outbox.
	require.NoError(t, broker.Stop())
	h.scrapeUntil("the session noticed the broker went", func(f map[string]openmetricstest.Family) bool {
		return metric(f, "tether_mqtt_connected", "tether_mqtt_connected") == 0
	})
	resp, err := SocketClient(h.Socket).Post("http://tether/v1/mqtt/publish?topic=dt/gw-0001/m&qos=1", "application/octet-stream", bytes.NewReader([]byte("hello")))
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusAccepted, resp.StatusCode)
	fams = h.scrape()
	assert.Equal(t, 1.0, metric(fams, "tether_mqtt_outbox_messages", "tether_mqtt_outbox_messages"))
	assert.Greater(t, metric(fams, "tether_mqtt_outbox_bytes", "tether_mqtt_outbox_bytes"), 5.0)
	assert.Equal(t, 1.0, metric(fams, "tether_mqtt_outbox_log", "tether_mqtt_outbox_log"), "the outbox commits to its log")
	assert.Equal(t, 0.0, metric(fams, "tether_mqtt_publish_latency_seconds", "tether_mqtt_publish_latency_seconds_count"))

	require.NoError(t, broker.Start())
	fams = h.scrapeUntil("the message delivered after the reconnect", func(f map[string]openmetricstest.Family) bool {
		return metric(f, "tether_mqtt_publish_latency_seconds", "tether_mqtt_publish_latency_seconds_count") == 1
	})
	assert.Equal(t, 0.0, metric(fams, "tether_mqtt_outbox_messages", "tether_mqtt_outbox_messages"))
	// The acknowledged message leaves the file with the outbox's next
	// commit, which an ack schedules.
	h.scrapeUntil("the outbox's bytes freed", func(f map[string]openmetricstest.Family) bool {
		return metric(f, "tether_mqtt_outbox_bytes", "tether_mqtt_outbox_bytes") == 0
	})
	assert.GreaterOrEqual(t, metric(fams, "tether_mqtt_reconnects", "tether_mqtt_reconnects_total"), 1.0)
	assert.Equal(t, 1.0, metric(fams, "tether_mqtt_publish_latency_seconds", `tether_mqtt_publish_latency_seconds_bucket{le="+Inf"}`))
	assert.Greater(t, metric(fams, "tether_mqtt_publish_latency_seconds", "tether_mqtt_publish_latency_seconds_sum"), 0.0,
		"the time offline counts")

	// curl, as a textfile collector's timer runs it, asking for OpenMetrics.
	out, err := exec.Command(curl, "-sS", "--fail", "--unix-socket", h.Socket, "-H", "Accept: application/openmetrics-text; version=1.0.0",
		"-D", "-", "http://localhost/v1/metrics").Output()
	require.NoError(t, err, string(out))
	head, body, ok := strings.Cut(string(out), "\r\n\r\n")
	require.True(t, ok)
	assert.Contains(t, head, "Content-Type: "+openmetrics.OpenMetricsContentType)
	assert.True(t, strings.HasSuffix(body, "# EOF\n"))
	om := openmetricstest.Parse(t, openmetrics.OpenMetrics, []byte(body))
	assert.Equal(t, "seconds", om["tether_mqtt_publish_latency_seconds"].Unit)
	assert.Equal(t, 1.0, metric(om, "tether_mqtt_publish_latency_seconds", "tether_mqtt_publish_latency_seconds_count"))
}

// TestAgentMetricsContainerRefusals ensures that the container endpoint's
// refusals (a wrong token, a forwarded request, a Host that is not
// loopback) count under their reasons.
func TestAgentMetricsContainerRefusals(t *testing.T) {
	port := agenttest.FreePort(t)
	h := newHarness(t, time.Hour, "")
	h.WriteConfig("", "[serve]\n", fmt.Sprintf("[serve]\ncontainer_endpoint = \"127.0.0.1:%d\"\n", port))
	h.start()
	token, err := os.ReadFile(h.Token)
	require.NoError(t, err)
	for _, hdr := range []map[string]string{
		{"Authorization": "wrong"},
		{"Authorization": "wrong"},
		{"Authorization": string(token), "X-Forwarded-For": "10.0.0.1"},
		{"Authorization": string(token), "Host": "evil.example.com"},
		{"Authorization": string(token)},
	} {
		req, err := http.NewRequest(http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d/v1/credentials", port), nil)
		require.NoError(t, err)
		for k, v := range hdr {
			if k == "Host" {
				req.Host = v
			} else {
				req.Header.Set(k, v)
			}
		}
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		resp.Body.Close()
	}
	// Connections over the per-uid limit are closed at once, and counted.
	_, each := connLimits()
	var conns []net.Conn
	for range each + 4 {
		c, err := net.Dial("unix", h.Socket)
		require.NoError(t, err)
		conns = append(conns, c)
	}
	// The last one is over the limit: closed once the agent took it.
	conns[len(conns)-1].SetReadDeadline(time.Now().Add(time.Minute))
	_, err = conns[len(conns)-1].Read(make([]byte, 1))
	require.ErrorIs(t, err, io.EOF)
	for _, c := range conns {
		c.Close()
	}
	// The agent releases them as it notices; until then a scrape is over
	// the limit too, and counted.
	retries := 0
	for ; retries < 100; retries++ {
		c := SocketClient(h.Socket)
		resp, err := c.Get("http://tether/v1/status")
		c.CloseIdleConnections()
		if err == nil {
			resp.Body.Close()
			break
		}
		time.Sleep(10 * time.Millisecond)
	}

	fams := h.scrape()
	assert.Equal(t, float64(4+retries), metric(fams, "tether_peers_refused", `tether_peers_refused_total{endpoint="socket",reason="over_limit"}`))
	for reason, want := range map[string]float64{"bad_token": 2, "forwarded": 1, "bad_host": 1, "not_allowed": 0, "unknown_peer": 0} {
		assert.Equal(t, want, metric(fams, "tether_peers_refused", `tether_peers_refused_total{endpoint="container",reason="`+reason+`"}`), reason)
	}
	assert.Equal(t, 0.0, metric(fams, "tether_peers_refused", `tether_peers_refused_total{endpoint="socket",reason="not_allowed"}`))
	assert.Equal(t, -1.0, metric(fams, "tether_mqtt_connected", "tether_mqtt_connected"), "no [mqtt]: no MQTT metrics")
}

// BenchmarkMetrics: one GET /v1/metrics through the socket, against GET
// /v1/status (the JSON an operator's `tether status` reads) on the same
// agent, alternately in the same run; reported as time per scrape, the
// ratio between them and the size of the exposition.
func BenchmarkMetrics(b *testing.B) {
	h := newHarness(b, time.Hour, "")
	h.start()
	c := SocketClient(h.Socket)
	defer c.CloseIdleConnections()
	get := func(path string) int {
		resp, err := c.Get("http://tether" + path)
		if err != nil {
			b.Fatal(err)
		}
		n, _ := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			b.Fatalf("%s: %s", path, resp.Status)
		}
		return int(n)
	}
	var metricsTime, statusTime time.Duration
	size, n := 0, 0
	for b.Loop() {
		t0 := time.Now()
		size = get("/v1/metrics")
		t1 := time.Now()
		get("/v1/status")
		metricsTime += t1.Sub(t0)
		statusTime += time.Since(t1)
		n++
	}
	b.ReportMetric(float64(metricsTime.Microseconds())/float64(n), "metrics-µs/scrape")
	b.ReportMetric(float64(statusTime.Microseconds())/float64(n), "status-µs/request")
	b.ReportMetric(float64(metricsTime)/float64(statusTime), "ratio-to-status")
	b.ReportMetric(float64(size), "metrics-bytes")
}
