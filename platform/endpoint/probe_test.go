package endpoint

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestProbe ensures that each stage of the path to a TLS server is reported,
// that the probe stops at the first that fails, and that a server requiring
// a client certificate still passes the TLS step once its own verified.
func TestProbe(t *testing.T) {
	srv := httptest.NewUnstartedServer(http.NotFoundHandler())
	srv.TLS = &tls.Config{ClientAuth: tls.RequireAnyClientCert} // as AWS IoT's endpoints
	srv.StartTLS()
	t.Cleanup(srv.Close)
	ep := mustEndpoint(t, srv.Listener.Addr().String())
	trusted := x509.NewCertPool()
	trusted.AddCert(srv.Certificate())
	closed := mustEndpoint(t, freeAddr(t))
	proxy := connectProxy(t)

	for _, tc := range []struct {
		name     string
		ep       Endpoint
		o        ProbeOptions
		steps    []string // the names of the steps, in order
		failed   string   // the step that fails, "" for none
		contains string   // in the last step's Detail
	}{
		{"trusted", ep, ProbeOptions{TLS: &tls.Config{RootCAs: trusted, ServerName: "example.com"}}, []string{"dns", "tcp", "tls"}, "", "verified"},
		{"untrusted", ep, ProbeOptions{TLS: &tls.Config{RootCAs: x509.NewCertPool(), ServerName: "example.com"}}, []string{"dns", "tcp", "tls"}, "tls", "not signed by a trusted CA"},
		{"refused", closed, ProbeOptions{TLS: &tls.Config{RootCAs: trusted}}, []string{"dns", "tcp"}, "tcp", "cannot connect"},
		{"plain TCP", ep, ProbeOptions{}, []string{"dns", "tcp"}, "", "connected"},
		{"through a proxy", ep, ProbeOptions{TLS: &tls.Config{RootCAs: trusted, ServerName: "example.com"}, Proxy: proxy}, []string{"dns", "tcp", "tls"}, "", "verified"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.o.Timeout = 5 * time.Second
			steps := Probe(context.Background(), tc.ep, tc.o)
			var names []string
			for _, s := range steps {
				names = append(names, s.Name)
			}
			require.Equal(t, tc.steps, names)
			last := steps[len(steps)-1]
			assert.Contains(t, last.Detail, tc.contains)
			for _, s := range steps {
				if s.Name == tc.failed {
					assert.Error(t, s.Err, s.Name)
				} else {
					assert.NoError(t, s.Err, s.Name)
				}
			}
			if tc.o.Proxy != nil {
				assert.Contains(t, steps[1].Detail, "(the proxy ")
			}
		})
	}
}

func mustEndpoint(t *testing.T, s string) Endpoint {
	t.Helper()
	e, err := Parse(s)
	require.NoError(t, err)
	return e
}

func freeAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	return ln.Addr().String()
}

// connectProxy runs an HTTP proxy that answers CONNECT only.
func connectProxy(t *testing.T) *url.URL {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				req, err := http.ReadRequest(br)
				if err != nil || req.Method != http.MethodConnect {
					io.WriteString(c, "HTTP/1.1 405 Method Not Allowed\r\n\r\n")
					return
				}
				up, err := net.Dial("tcp", req.Host)
				if err != nil {
					io.WriteString(c, "HTTP/1.1 502 Bad Gateway\r\n\r\n")
					return
				}
				defer up.Close()
				io.WriteString(c, "HTTP/1.1 200 Connection established\r\n\r\n")
				go io.Copy(up, br)
				io.Copy(c, up)
			}()
		}
	}()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	n, _ := strconv.Atoi(port)
	return &url.URL{Scheme: "http", Host: net.JoinHostPort("127.0.0.1", strconv.Itoa(n))}
}
