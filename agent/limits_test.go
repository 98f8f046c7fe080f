package agent

import (
	"bufio"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tetherd/tether/agent/agenttest"
)

// TestLimitListenerClosesWhatIsOverTheLimits ensures that connections over
// the per-uid limit are closed at once, counted per kernel-reported uid, and
// that closing one makes room for the next.
func TestLimitListenerClosesWhatIsOverTheLimits(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.sock")
	raw, err := net.Listen("unix", path)
	require.NoError(t, err)
	defer raw.Close()
	ln := newLimitListener(raw, ucredOf, slog.New(slog.DiscardHandler))
	ln.maxEach = 3
	accepted := make(chan net.Conn, 10)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	var clients []net.Conn
	for range 5 {
		c, err := net.Dial("unix", path)
		require.NoError(t, err)
		defer c.Close()
		clients = append(clients, c)
	}
	var held []net.Conn
	for range 3 {
		held = append(held, <-accepted)
	}
	// The 4th and 5th were closed by the agent: their clients read EOF.
	for _, c := range clients[3:] {
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, err := c.Read(make([]byte, 1))
		assert.ErrorIs(t, err, io.EOF)
	}
	held[0].Close()
	c, err := net.Dial("unix", path)
	require.NoError(t, err)
	defer c.Close()
	select {
	case got := <-accepted:
		got.Close()
	case <-time.After(10 * time.Second):
		t.Fatal("a freed slot was not given to the next connection")
	}
}

// TestWrongTokenFloodIsRateLimitedAndCut ensures that a flood of requests
// with a wrong token writes a bounded number of log lines and that each such
// connection is closed after its answer.
func TestWrongTokenFloodIsRateLimitedAndCut(t *testing.T) {
	port := agenttest.FreePort(t)
	h := newHarness(t, time.Hour, "")
	h.WriteConfig("", "[serve]\n", fmt.Sprintf("[serve]\ncontainer_endpoint = \"127.0.0.1:%d\"\n", port))
	logs := h.startLogged()
	for range 300 {
		req, err := http.NewRequest(http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d/2016-11-01/credentialprovider/", port), nil)
		require.NoError(t, err)
		req.Header.Set("Authorization", "wrong")
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		require.Equal(t, http.StatusUnauthorized, resp.StatusCode)
		assert.True(t, resp.Close, "the refused connection is not kept alive")
	}
	n := strings.Count(logs.String(), "container endpoint refused a request without the right token")
	assert.LessOrEqual(t, n, 15, "log lines for 300 refused requests")
	assert.GreaterOrEqual(t, n, 1)
}

// TestRoutesAnswerWrongMethodsAndPaths ensures that another method on a GET
// endpoint gets 405 with Allow, on the socket and the container endpoint,
// and that a path under the Greengrass TES path is not the TES path.
func TestRoutesAnswerWrongMethodsAndPaths(t *testing.T) {
	port := agenttest.FreePort(t)
	h := newHarness(t, time.Hour, "")
	h.WriteConfig("", "[serve]\n", fmt.Sprintf("[serve]\ncontainer_endpoint = \"127.0.0.1:%d\"\n", port))
	h.start()
	token, err := os.ReadFile(h.Token)
	require.NoError(t, err)
	sock := SocketClient(h.Socket)
	for _, path := range []string{"/v1/credentials", "/v1/credentials/device", "/v1/status"} {
		for _, m := range []string{http.MethodPost, http.MethodPut, http.MethodDelete} {
			req, err := http.NewRequest(m, "http://tether"+path, nil)
			require.NoError(t, err)
			resp, err := sock.Do(req)
			require.NoError(t, err)
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			assert.Equal(t, http.StatusMethodNotAllowed, resp.StatusCode, "%s %s: %s", m, path, body)
			assert.Contains(t, resp.Header.Get("Allow"), "GET")
			assert.Contains(t, string(body), `"code":"method_not_allowed"`)
		}
	}
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	for _, tc := range []struct {
		method, path string
		want         int
	}{
		{http.MethodGet, "/2016-11-01/credentialprovider/", http.StatusOK},
		{http.MethodGet, "/2016-11-01/credentialprovider", http.StatusOK},
		{http.MethodGet, "/2016-11-01/credentialprovider/anything", http.StatusNotFound},
		{http.MethodGet, "/2016-11-01/credentialprovider/a/b", http.StatusNotFound},
		{http.MethodPost, "/2016-11-01/credentialprovider/", http.StatusMethodNotAllowed},
		{http.MethodDelete, "/v1/credentials", http.StatusMethodNotAllowed},
	} {
		req, err := http.NewRequest(tc.method, base+tc.path, nil)
		require.NoError(t, err)
		req.Header.Set("Authorization", string(token))
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		assert.Equal(t, tc.want, resp.StatusCode, "%s %s: %s", tc.method, tc.path, body)
		if tc.want != http.StatusOK {
			assert.NotContains(t, string(body), "SecretAccessKey")
		}
	}
}

// TestBodyDeadlineCutsSlowBodies ensures that a request body sent too
// slowly, with a Content-Length or chunked, is cut off at the body
// deadline, and headers that never end at the header timeout, while a bodyless GET on the same kind of server is answered and
// its connection kept for the next request.
func TestBodyDeadlineCutsSlowBodies(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srv := newHTTPServer(bodyDeadlineAfter(200*time.Millisecond, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, err := io.ReadAll(r.Body); err != nil {
			return
		}
		io.WriteString(w, "ok")
	})), slog.New(slog.DiscardHandler))
	// Through the endpoints' limitListener, as the endpoints serve.
	go srv.Serve(newLimitListener(ln, func(net.Conn) (*Peer, error) { return &Peer{}, nil }, slog.New(slog.DiscardHandler)))
	t.Cleanup(func() { srv.Close() })
	for name, head := range map[string]string{
		"Content-Length": "POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\nx",
		"chunked":        "POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n",
		// ReadHeaderTimeout (5 s) cuts headers that never end.
		"slow headers": "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n",
	} {
		t.Run(name, func(t *testing.T) {
			c, err := net.Dial("tcp", ln.Addr().String())
			require.NoError(t, err)
			defer c.Close()
			_, err = io.WriteString(c, head)
			require.NoError(t, err)
			// The rest of the body never comes: the server must close the
			// connection (the test's own bound is only a guard).
			c.SetReadDeadline(time.Now().Add(30 * time.Second))
			got, err := io.ReadAll(c)
			require.NoError(t, err, "the server did not cut the slow body off")
			assert.NotContains(t, string(got), "ok")
		})
	}
	c, err := net.Dial("tcp", ln.Addr().String())
	require.NoError(t, err)
	defer c.Close()
	br := bufio.NewReader(c)
	for range 2 {
		_, err = io.WriteString(c, "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
		require.NoError(t, err)
		resp, err := http.ReadResponse(br, nil)
		require.NoError(t, err)
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		assert.Equal(t, "ok", string(body), "a bodyless GET is answered on a kept connection")
	}
}
