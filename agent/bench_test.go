package agent

import (
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/tetherd/tether/agent/agenttest"
)

// baselineServer is the minimal Go HTTP server on a Unix socket serving a
// fixed body of the same size: the ceiling the agent is compared with.
func baselineServer(tb testing.TB, body []byte) string {
	sock := filepath.Join(tb.TempDir(), "baseline.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		tb.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write(body)
	})}
	go srv.Serve(ln)
	tb.Cleanup(func() { srv.Close() })
	return sock
}

// BenchmarkSocketAPI: GET /v1/credentials over the Unix socket against a
// minimal server with a fixed body, same run, 1 and 8 clients. Reported as
// ratios (agent/baseline): throughput (target ≥ 0.8) and p99 (target ≤ 1.25).
func BenchmarkSocketAPI(b *testing.B) {
	env := newHarness(b, time.Hour, "")
	env.start()
	_, body, _ := env.get("/v1/credentials")
	base := baselineServer(b, body)
	for _, clients := range []int{1, 8} {
		b.Run(fmt.Sprintf("clients=%d", clients), func(b *testing.B) {
			d := 2 * time.Second
			for b.Loop() {
				// Interleave so both see the same machine load.
				bl := agenttest.Load(b, base, "/", clients, d, 0)
				ag := agenttest.Load(b, env.Socket, "/v1/credentials", clients, d, 0)
				b.ReportMetric(ag.RPS, "agent-req/s")
				b.ReportMetric(bl.RPS, "baseline-req/s")
				b.ReportMetric(ag.RPS/bl.RPS, "throughput-ratio")
				b.ReportMetric(float64(ag.P50.Microseconds()), "agent-p50-µs")
				b.ReportMetric(float64(ag.P99.Microseconds()), "agent-p99-µs")
				b.ReportMetric(float64(bl.P99.Microseconds()), "baseline-p99-µs")
				b.ReportMetric(float64(ag.P99)/float64(bl.P99), "p99-ratio")
			}
		})
	}
}
