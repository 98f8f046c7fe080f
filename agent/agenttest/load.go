package agenttest

import (
	"context"
	"io"
	"net"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"
)

// LoadResult is what a load run measured.
type LoadResult struct {
	Requests int
	RPS      float64
	P50, P99 time.Duration
}

// Load runs clients concurrent keep-alive HTTP clients against GET path on
// the Unix socket until d has passed or n requests were made (n ≤ 0: no
// limit), and measures throughput and latency. Any answer but 200 fails tb.
func Load(tb testing.TB, socket, path string, clients int, d time.Duration, n int) LoadResult {
	limit := -1
	if n > 0 {
		limit = n
	}
	var mu sync.Mutex
	var lat []time.Duration
	var wg sync.WaitGroup
	start := time.Now()
	deadline := start.Add(d)
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				var dl net.Dialer
				return dl.DialContext(ctx, "unix", socket)
			}}
			c := &http.Client{Transport: tr}
			defer tr.CloseIdleConnections()
			mine := make([]time.Duration, 0, 1024)
			for time.Now().Before(deadline) {
				if limit >= 0 {
					mu.Lock()
					if limit == 0 {
						mu.Unlock()
						break
					}
					limit--
					mu.Unlock()
				}
				t0 := time.Now()
				resp, err := c.Get("http://tether" + path)
				if err != nil {
					tb.Error(err)
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					tb.Errorf("GET %s: status %d", path, resp.StatusCode)
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
	elapsed := time.Since(start)
	slices.Sort(lat)
	if len(lat) == 0 {
		return LoadResult{}
	}
	return LoadResult{
		Requests: len(lat),
		RPS:      float64(len(lat)) / elapsed.Seconds(),
		P50:      lat[len(lat)/2],
		P99:      lat[len(lat)*99/100],
	}
}
