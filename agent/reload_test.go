package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tetherd/tether/agent/agenttest"
	"github.com/tetherd/tether/credprovider/iotcredtest"
)

// logBuffer is a goroutine-safe log sink for reading the agent's log in tests.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// startLogged runs the agent like harness.start, with its log in the
// returned buffer.
func (h *harness) startLogged() *logBuffer {
	h.t.Helper()
	logs := &logBuffer{}
	cfg, err := LoadConfig(h.Config)
	require.NoError(h.t, err)
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	h.done = make(chan error, 1)
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	go func() { h.done <- Run(ctx, cfg, Options{Reload: h.reload, Version: "test", Logger: log}) }()
	h.WaitNotify("READY=1")
	h.t.Cleanup(h.stop)
	return logs
}

// reloadAndWait sends SIGHUP's equivalent and waits until the agent says it
// is ready again, failing the test if Run returned meanwhile.
func (h *harness) reloadAndWait() {
	h.t.Helper()
	h.reload <- struct{}{}
	h.WaitNotify("RELOADING=1")
	h.WaitNotify("READY=1")
	select {
	case err := <-h.done:
		h.cancel = nil
		h.t.Fatalf("the agent exited on a reload: %v", err)
	default:
	}
}

func (h *harness) status() Status {
	h.t.Helper()
	code, body, _ := h.get("/v1/status")
	require.Equal(h.t, http.StatusOK, code, string(body))
	var st Status
	require.NoError(h.t, json.Unmarshal(body, &st))
	return st
}

// TestAgentReloadDuringCertificateSwap ensures that a reload while the
// device certificate or key is being replaced (half-written, or belonging to
// another key) leaves the running configuration and its identity in memory
// untouched and never ends the agent, and that the completed swap is then
// taken by the next reload, which is only logged as done once it serves.
func TestAgentReloadDuringCertificateSwap(t *testing.T) {
	h := newHarness(t, time.Hour, "")
	logs := h.startLogged()
	before := h.credentials("/v1/credentials")
	oldSubject := h.status().Identity.Subject
	goodCert, err := os.ReadFile(h.CertFile)
	require.NoError(t, err)
	goodKey, err := os.ReadFile(h.KeyFile)
	require.NoError(t, err)

	other, err := h.Sim.PKI.NewDevice("gw-0001-rotated", iotcredtest.ECDSAP256)
	require.NoError(t, err)
	steps := []struct {
		name       string
		cert, key  []byte
		wantReason string
	}{
		{"half-written certificate", goodCert[:len(goodCert)/2], goodKey, "identity"},
		{"certificate of another key", other.CertPEM, goodKey, "identity"},
		{"half-written key", goodCert, goodKey[:len(goodKey)/2], "identity"},
		{"new key, old certificate", goodCert, other.KeyPEM, "identity"},
		{"empty certificate", nil, goodKey, "identity"},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			require.NoError(t, os.WriteFile(h.CertFile, s.cert, 0o644))
			require.NoError(t, os.WriteFile(h.KeyFile, s.key, 0o600))
			h.reloadAndWait()
			assert.Equal(t, before, h.credentials("/v1/credentials"), "the running identity's credentials keep being served")
			assert.Equal(t, oldSubject, h.status().Identity.Subject)
			assert.Contains(t, logs.String(), "reload failed")
			assert.NotContains(t, logs.String(), "configuration reloaded")
		})
	}

	// A second failed reload in a row must not fall back to re-reading the
	// changed files either: the agent is still up (checked by reloadAndWait).
	h.reloadAndWait()

	// The swap completes: certificate and key of the new identity.
	require.NoError(t, os.WriteFile(h.KeyFile, other.KeyPEM, 0o600))
	require.NoError(t, os.WriteFile(h.CertFile, other.CertPEM, 0o644))
	h.reloadAndWait()
	assert.Contains(t, logs.String(), "configuration reloaded")
	after := h.credentials("/v1/credentials")
	assert.NotEqual(t, before.AccessKeyID, after.AccessKeyID, "the new identity fetched its own credentials")
	grants := h.Sim.Grants()
	require.NotEmpty(t, grants)
	assert.Equal(t, "gw-0001-rotated", grants[len(grants)-1].CommonName, "the last fetch used the new certificate")
	assert.NotEqual(t, oldSubject, h.status().Identity.Subject)
}

// TestAgentReloadKeepsContainerToken ensures that the container endpoint
// keeps its socket and its token across reloads, so clients given
// AWS_CONTAINER_AUTHORIZATION_TOKEN itself (not the _FILE form) keep working.
func TestAgentReloadKeepsContainerToken(t *testing.T) {
	port := agenttest.FreePort(t)
	h := newHarness(t, time.Hour, "")
	serve := fmt.Sprintf("[serve]\ncontainer_endpoint = \"127.0.0.1:%d\"\n", port)
	h.WriteConfig("", "[serve]\n", serve)
	h.start()
	token, err := os.ReadFile(h.Token)
	require.NoError(t, err)
	get := func() int {
		req, err := http.NewRequest(http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d/2016-11-01/credentialprovider/", port), nil)
		require.NoError(t, err)
		req.Header.Set("Authorization", string(token))
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		return resp.StatusCode
	}
	require.Equal(t, http.StatusOK, get())
	h.reloadAndWait()
	assert.Equal(t, http.StatusOK, get(), "the token given out before the reload still works")
	h.WriteConfig("", "[serve]\n", serve, "[aws]\n", "[aws]\nrefresh = \"deferred\"\n")
	h.reloadAndWait()
	assert.Equal(t, http.StatusOK, get())
	again, err := os.ReadFile(h.Token)
	require.NoError(t, err)
	assert.Equal(t, string(token), string(again))
	assert.Contains(t, string(h.statusBody()), `"mode":"deferred"`, "the new configuration is the one serving")
}

func (h *harness) statusBody() []byte {
	h.t.Helper()
	_, body, _ := h.get("/v1/status")
	return body
}

// TestAgentReloadUnderLoadFailsNoRequest ensures that reloads while clients
// keep asking, on new connections and on kept-alive ones, make no request
// fail: the servers outlive the configuration they serve.
func TestAgentReloadUnderLoadFailsNoRequest(t *testing.T) {
	h := newHarness(t, time.Hour, "")
	h.start()
	const clients, reloads = 8, 10
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		failures []string
		ok       atomic.Int64
	)
	done := make(chan struct{})
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Half the clients open a connection per request, as
			// credential-process does; the others keep theirs alive.
			c := SocketClient(h.Socket)
			c.Transport.(*http.Transport).DisableKeepAlives = i%2 == 0
			for {
				select {
				case <-done:
					return
				default:
				}
				resp, err := c.Get("http://tether/v1/credentials")
				if err == nil {
					_, err = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if err == nil && resp.StatusCode != http.StatusOK {
						err = fmt.Errorf("status %d", resp.StatusCode)
					}
				}
				if err != nil {
					mu.Lock()
					failures = append(failures, err.Error())
					mu.Unlock()
					continue
				}
				ok.Add(1)
			}
		}()
	}
	for i := range reloads {
		// Alternate between two valid configurations, so each reload
		// really builds a new generation.
		mode := []string{"deferred", "eager"}[i%2]
		h.WriteConfig("", "[aws]\n", "[aws]\nrefresh = \""+mode+"\"\n")
		before := ok.Load()
		h.reloadAndWait()
		for ok.Load() < before+clients {
			time.Sleep(time.Millisecond)
		}
	}
	close(done)
	wg.Wait()
	assert.Empty(t, failures, "requests failed during %d reloads (%d succeeded)", reloads, ok.Load())
	assert.Greater(t, ok.Load(), int64(clients*reloads))
}
