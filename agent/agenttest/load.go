package agenttest

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// LoadResult is what a load run measured.
type LoadResult struct {
	Requests int           `json:"requests"`
	RPS      float64       `json:"rps"`
	P50      time.Duration `json:"p50"`
	P99      time.Duration `json:"p99"`
}

// Load runs clients concurrent keep-alive HTTP clients against GET path on
// the Unix socket until d has passed or n requests were made (n ≤ 0: no
// limit), and measures throughput and latency. Any answer but 200 fails tb.
func Load(tb testing.TB, socket, path string, clients int, d time.Duration, n int) LoadResult {
	r, err := RunLoad(socket, path, clients, d, n)
	if err != nil {
		tb.Error(err)
	}
	return r
}

// RunLoad is Load for programs: the load generator that `make bench` runs
// as a process of its own, so the agent and the baseline it is compared
// with do not share a Go runtime with their client. Each client holds one
// connection and sends the next request when the answer has been read, as
// an SDK's credential provider does; the client side is kept lean (one
// prepared request, http.ReadResponse) so that it costs the machine little.
func RunLoad(socket, path string, clients int, d time.Duration, n int) (LoadResult, error) {
	return RunLoadTarget(LoadTarget{Network: "unix", Address: socket, Path: path}, clients, d, n)
}

// LoadTarget is where a load run sends its GET requests.
type LoadTarget struct {
	// Network is "unix" or "tcp"; Address the socket's path or host:port.
	Network, Address string
	Path             string
	// Header is sent with each request (a token, for example).
	Header http.Header
}

// RunLoadTarget is RunLoad for any target: a Unix socket, or a TCP
// endpoint such as the container or IMDS endpoint, whose Host header is
// the address.
func RunLoadTarget(t LoadTarget, clients int, d time.Duration, n int) (LoadResult, error) {
	var left atomic.Int64
	left.Store(int64(n))
	if n <= 0 {
		left.Store(1 << 62)
	}
	var (
		mu   sync.Mutex
		lat  []time.Duration
		errs []error
		wg   sync.WaitGroup
	)
	host := "tether"
	if t.Network == "tcp" {
		host = t.Address
	}
	var req bytes.Buffer
	req.WriteString("GET " + t.Path + " HTTP/1.1\r\nHost: " + host + "\r\nUser-Agent: tether-load\r\n")
	t.Header.Write(&req)
	req.WriteString("\r\n")
	start := time.Now()
	deadline := start.Add(d)
	for range clients {
		wg.Go(func() {
			mine, err := client(t.Network, t.Address, req.Bytes(), deadline, &left)
			mu.Lock()
			defer mu.Unlock()
			lat = append(lat, mine...)
			if err != nil {
				errs = append(errs, err)
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	if len(lat) == 0 {
		return LoadResult{}, errors.Join(append(errs, fmt.Errorf("agenttest: no request to %s succeeded", t.Address))...)
	}
	slices.Sort(lat)
	return LoadResult{
		Requests: len(lat),
		RPS:      float64(len(lat)) / elapsed.Seconds(),
		P50:      lat[len(lat)/2],
		P99:      lat[len(lat)*99/100],
	}, errors.Join(errs...)
}

// client sends req over one connection until deadline or until left runs
// out, and returns each request's latency.
func client(network, address string, req []byte, deadline time.Time, left *atomic.Int64) ([]time.Duration, error) {
	conn, err := net.Dial(network, address)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	br := bufio.NewReaderSize(conn, 8<<10)
	lat := make([]time.Duration, 0, 1<<14)
	for time.Now().Before(deadline) && left.Add(-1) >= 0 {
		t0 := time.Now()
		if _, err := conn.Write(req); err != nil {
			return lat, err
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			return lat, err
		}
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err != nil {
			return lat, err
		}
		if resp.StatusCode != http.StatusOK {
			return lat, fmt.Errorf("agenttest: GET on %s: status %d", address, resp.StatusCode)
		}
		lat = append(lat, time.Since(t0))
	}
	return lat, nil
}
