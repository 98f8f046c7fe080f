package agent

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"
)

// loadResult is what a fixed-duration load run measured.
type loadResult struct {
	rps      float64
	p50, p99 time.Duration
}

// load runs clients concurrent keep-alive clients against GET url over the
// Unix socket for d and measures throughput and latency.
func load(tb testing.TB, socket, path string, clients int, d time.Duration) loadResult {
	var mu sync.Mutex
	var lat []time.Duration
	var wg sync.WaitGroup
	deadline := time.Now().Add(d)
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := SocketClient(socket)
			defer c.CloseIdleConnections()
			var mine []time.Duration
			for time.Now().Before(deadline) {
				t0 := time.Now()
				resp, err := c.Get("http://tether" + path)
				if err != nil {
					tb.Error(err)
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					tb.Errorf("status %d", resp.StatusCode)
					return
				}
				mine = append(mine, time.Since(t0))
			}
			mu.Lock()
			lat = append(lat, mine...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	slices.Sort(lat)
	if len(lat) == 0 {
		return loadResult{}
	}
	return loadResult{
		rps: float64(len(lat)) / d.Seconds(),
		p50: lat[len(lat)/2],
		p99: lat[len(lat)*99/100],
	}
}

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
				bl := load(b, base, "/", clients, d)
				ag := load(b, env.Socket, "/v1/credentials", clients, d)
				b.ReportMetric(ag.rps, "agent-req/s")
				b.ReportMetric(bl.rps, "baseline-req/s")
				b.ReportMetric(ag.rps/bl.rps, "throughput-ratio")
				b.ReportMetric(float64(ag.p50.Microseconds()), "agent-p50-µs")
				b.ReportMetric(float64(ag.p99.Microseconds()), "agent-p99-µs")
				b.ReportMetric(float64(bl.p99.Microseconds()), "baseline-p99-µs")
				b.ReportMetric(float64(ag.p99)/float64(bl.p99), "p99-ratio")
			}
		})
	}
}
