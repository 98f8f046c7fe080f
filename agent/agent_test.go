package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tetherd/tether/agent/agenttest"
	"github.com/tetherd/tether/credprovider/iotcredtest"
	"github.com/tetherd/tether/store"
)

// harness is one agent, in process, in an agenttest.Env.
type harness struct {
	*agenttest.Env
	t      testing.TB
	cancel context.CancelFunc
	done   chan error
	reload chan struct{}
}

func newHarness(t testing.TB, lifetime time.Duration, extra string) *harness {
	return &harness{Env: agenttest.New(t, lifetime, extra), t: t, reload: make(chan struct{}, 1)}
}

// start runs the agent and waits for READY=1.
func (h *harness) start() {
	h.t.Helper()
	cfg, err := LoadConfig(h.Config)
	require.NoError(h.t, err)
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	h.done = make(chan error, 1)
	go func() { h.done <- Run(ctx, cfg, Options{Reload: h.reload, Version: "test"}) }()
	h.WaitNotify("READY=1")
	h.t.Cleanup(h.stop)
}

// stop cancels the agent and returns what Run returned.
func (h *harness) stop() {
	if h.cancel == nil {
		return
	}
	h.cancel()
	h.cancel = nil
	select {
	case err := <-h.done:
		assert.NoError(h.t, err)
	case <-time.After(30 * time.Second):
		h.t.Error("agent did not stop within 30 s of cancellation")
	}
}

// get asks the socket and returns status and body.
func (h *harness) get(path string) (int, []byte, http.Header) {
	h.t.Helper()
	resp, err := SocketClient(h.Socket).Get("http://tether" + path)
	require.NoError(h.t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(h.t, err)
	return resp.StatusCode, b, resp.Header
}

// validRoles lists the roles /v1/status shows, in its order, failing the
// test for each that has no valid credentials.
func (h *harness) validRoles() []string {
	h.t.Helper()
	code, body, _ := h.get("/v1/status")
	require.Equal(h.t, http.StatusOK, code)
	var st Status
	require.NoError(h.t, json.Unmarshal(body, &st))
	var names []string
	for _, r := range st.Roles {
		names = append(names, r.Name)
		assert.True(h.t, r.Valid, r.Name)
	}
	return names
}

func (h *harness) credentials(path string) Credentials {
	h.t.Helper()
	code, body, _ := h.get(path)
	require.Equal(h.t, http.StatusOK, code, string(body))
	var c Credentials
	require.NoError(h.t, json.Unmarshal(body, &c))
	return c
}

// TestAgentServesDeviceCredentials ensures that the device role's credentials from the simulator are served on the socket in the container credentials shape.
func TestAgentServesDeviceCredentials(t *testing.T) {
	h := newHarness(t, time.Hour, "")
	h.start()

	c := h.credentials("/v1/credentials")
	grants := h.Sim.Grants()
	require.Len(t, grants, 1, "one fetch at start-up")
	assert.Equal(t, grants[0].AccessKeyID, c.AccessKeyID)
	assert.Equal(t, "gw-0001", grants[0].ThingName)
	exp, err := time.Parse(time.RFC3339, c.Expiration)
	require.NoError(t, err)
	// Served with the mandatory window taken off, so clients that cache
	// until Expiration never use them in the last 30 s.
	assert.WithinDuration(t, grants[0].Expiration.Add(-30*time.Second), exp, time.Second)

	st, err := os.Stat(h.Socket)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o660), st.Mode().Perm(), "socket mode")

	code, body, _ := h.get("/v1/credentials/nope")
	assert.Equal(t, http.StatusNotFound, code)
	assert.Contains(t, string(body), `"code":"unknown_role"`)

	code, body, _ = h.get("/v1/status")
	require.Equal(t, http.StatusOK, code)
	var s Status
	require.NoError(t, json.Unmarshal(body, &s))
	assert.Equal(t, "gw-0001", s.Identity.ThingName)
	require.Len(t, s.Roles, 1)
	assert.True(t, s.Roles[0].Valid)
	assert.NotContains(t, string(body), grants[0].AccessKeyID, "status carries no credential")
}

// TestAgentMalformedHTTPDoesNotHurt ensures that garbage on the socket gets a 4xx and leaves the agent serving.
func TestAgentMalformedHTTPDoesNotHurt(t *testing.T) {
	h := newHarness(t, time.Hour, "")
	h.start()
	for _, garbage := range []string{"\x00\x01\x02garbage\r\n\r\n", "GET /v1/credentials HTTP/9.9\r\nHost: x\r\n\r\n", strings.Repeat("A", 70000) + "\r\n\r\n", "POST /v1/credentials HTTP/1.1\r\nContent-Length: -5\r\n\r\n"} {
		c, err := net.Dial("unix", h.Socket)
		require.NoError(t, err)
		c.Write([]byte(garbage))
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		io.Copy(io.Discard, c)
		c.Close()
	}
	h.credentials("/v1/credentials")
}

// TestAgentRefusesPeerOutsideAllowList ensures that a peer outside serve.allow_uids/allow_gids (or a role's own lists) is refused with 403 and logged.
func TestAgentRefusesPeerOutsideAllowList(t *testing.T) {
	setpriv, err := exec.LookPath("setpriv")
	require.NoError(t, err, "setpriv missing: install the Debian package util-linux")
	if os.Geteuid() != 0 {
		t.Fatal("this test runs the client as another user with setpriv and needs root (make test runs as root)")
	}
	h := newHarness(t, time.Hour, "")
	// Only root may ask; the role "narrow" is for uid 0 alone as well.
	h.WriteConfig("", "[serve]\n", "[serve]\nallow_uids = [0]\n")
	// t.TempDir's folders are 0700: open them to the other user.
	require.NoError(t, os.Chmod(h.Dir, 0o755))
	require.NoError(t, os.Chmod(filepath.Dir(h.Dir), 0o755))
	h.start()
	require.NoError(t, os.Chmod(h.Socket, 0o666), "let the other user reach the socket: the allow list, not the file mode, must refuse it")

	// Debian's python3 as uid 65534 (nobody), a real other process.
	script := `import socket,sys
s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])
s.sendall(b"GET /v1/credentials HTTP/1.1\r\nHost: tether\r\nConnection: close\r\n\r\n")
out=b""
while True:
    b=s.recv(65536)
    if not b: break
    out+=b
print(out.decode())`
	out, err := exec.Command(setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", "/usr/bin/python3", "-c", script, h.Socket).CombinedOutput()
	require.NoError(t, err, string(out))
	assert.Contains(t, string(out), "403 Forbidden")
	assert.Contains(t, string(out), "uid 65534")
	assert.NotContains(t, string(out), "SecretAccessKey")

	// Root still gets its credentials.
	h.credentials("/v1/credentials")
}

// TestAgentWarmRestartWithSimulatorDown ensures that a restarted agent serves the sealed cached credentials while the credentials endpoint is down.
func TestAgentWarmRestartWithSimulatorDown(t *testing.T) {
	h := newHarness(t, time.Hour, "")
	h.start()
	first := h.credentials("/v1/credentials")
	h.stop()
	h.Sim.Close()

	raw, err := os.ReadFile(filepath.Join(h.Dir, "state.db"))
	require.NoError(t, err)
	require.NotEmpty(t, first.SecretAccessKey)
	assert.False(t, bytes.Contains(raw, []byte(first.SecretAccessKey)), "the state file holds the secret key in plaintext")
	assert.False(t, bytes.Contains(raw, []byte(first.Token)), "the state file holds the session token in plaintext")

	h.start()
	again := h.credentials("/v1/credentials")
	assert.Equal(t, first, again, "cached credentials served at once with the simulator down")
}

// TestAgentNoCredentialsYet ensures that a request before any credentials exist gets 503 with Retry-After, never an expired credential.
func TestAgentNoCredentialsYet(t *testing.T) {
	h := newHarness(t, time.Hour, "")
	h.Sim.Fail(1000, iotcredtest.FaultUnavailable)
	h.start()
	code, body, hdr := h.get("/v1/credentials")
	assert.Equal(t, http.StatusServiceUnavailable, code, string(body))
	assert.NotEmpty(t, hdr.Get("Retry-After"))
	assert.Contains(t, string(body), `"code":"no_credentials"`)
}

// TestAgentContainerEndpoint ensures that the container endpoint serves SDKs with the right token and refuses a wrong token, a forwarded request and a non-loopback Host.
func TestAgentContainerEndpoint(t *testing.T) {
	port := agenttest.FreePort(t)
	h := newHarness(t, time.Hour, "")
	h.WriteConfig("", "[serve]\n", fmt.Sprintf("[serve]\ncontainer_endpoint = \"127.0.0.1:%d\"\n", port))
	h.start()
	token, err := os.ReadFile(filepath.Join(h.Dir, "token"))
	require.NoError(t, err)
	st, err := os.Stat(filepath.Join(h.Dir, "token"))
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o640), st.Mode().Perm())

	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	tests := []struct {
		name    string
		path    string
		headers map[string]string
		host    string
		want    int
	}{
		{"token, TES path", "/2016-11-01/credentialprovider/", map[string]string{"Authorization": string(token)}, "", 200},
		{"token, v1 path", "/v1/credentials/device", map[string]string{"Authorization": string(token)}, "", 200},
		{"no token", "/2016-11-01/credentialprovider/", nil, "", 401},
		{"wrong token", "/2016-11-01/credentialprovider/", map[string]string{"Authorization": strings.Repeat("0", len(token))}, "", 401},
		{"forwarded", "/2016-11-01/credentialprovider/", map[string]string{"Authorization": string(token), "X-Forwarded-For": "10.0.0.1"}, "", 403},
		{"rebinding host", "/2016-11-01/credentialprovider/", map[string]string{"Authorization": string(token)}, "evil.example.com", 403},
		{"unknown role", "/v1/credentials/nope", map[string]string{"Authorization": string(token)}, "", 404},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := http.NewRequest(http.MethodGet, base+tt.path, nil)
			require.NoError(t, err)
			for k, v := range tt.headers {
				req.Header.Set(k, v)
			}
			if tt.host != "" {
				req.Host = tt.host
			}
			resp, err := http.DefaultClient.Do(req)
			require.NoError(t, err)
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			assert.Equal(t, tt.want, resp.StatusCode, string(body))
			if tt.want != 200 {
				assert.NotContains(t, string(body), "SecretAccessKey")
			}
		})
	}
}

// TestAgentReload ensures that SIGHUP applies a valid new configuration and keeps the running one when the new one is invalid.
func TestAgentReload(t *testing.T) {
	h := newHarness(t, time.Hour, "")
	h.start()
	// An invalid configuration is refused and the old one keeps serving.
	h.WriteConfig("bogus = 1\n")
	h.reload <- struct{}{}
	h.WaitNotify("RELOADING=1")
	h.WaitNotify("READY=1")
	h.credentials("/v1/credentials")

	// A valid one that cannot start (its port is taken) is logged, and the
	// running configuration comes back.
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer busy.Close()
	h.WriteConfig("", "[serve]\n", fmt.Sprintf("[serve]\ncontainer_endpoint = %q\n", busy.Addr().String()))
	h.reload <- struct{}{}
	h.WaitNotify("READY=1")
	h.credentials("/v1/credentials")

	// A valid one is taken.
	h.WriteConfig("", "[aws]\n", "[aws]\nrefresh = \"deferred\"\n")
	h.reload <- struct{}{}
	h.WaitNotify("READY=1")
	code, body, _ := h.get("/v1/status")
	require.Equal(t, http.StatusOK, code)
	assert.Contains(t, string(body), `"mode":"deferred"`)
}

// TestAgentStartupErrors ensures that what keeps the agent from starting is one clear error with the exit status it deserves.
func TestAgentStartupErrors(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(h *harness, cfg string) string
		code   int
		want   string
	}{
		{"socket directory missing", func(h *harness, cfg string) string {
			return strings.Replace(cfg, h.Socket, filepath.Join(h.Dir, "nope", "t.sock"), 1)
		}, 2, "does not exist"},
		{"container port in use", func(h *harness, cfg string) string {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			require.NoError(h.t, err)
			h.t.Cleanup(func() { ln.Close() })
			return strings.Replace(cfg, "[serve]\n", fmt.Sprintf("[serve]\ncontainer_endpoint = %q\n", ln.Addr().String()), 1)
		}, 1, "address already in use"},
		{"regular file at the socket path", func(h *harness, cfg string) string {
			require.NoError(h.t, os.WriteFile(h.Socket, []byte("x"), 0o600))
			return cfg
		}, 2, "is not a socket"},
		{"token file not writable", func(h *harness, cfg string) string {
			return strings.Replace(cfg, "[serve]\n", fmt.Sprintf("[serve]\ncontainer_endpoint = \"127.0.0.1:%d\"\n", agenttest.FreePort(h.t)), 1) +
				"" // token dir replaced below
		}, 1, "serve.token_file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, time.Hour, "")
			b, _ := os.ReadFile(h.Config)
			cfg := tt.mutate(h, string(b))
			if tt.name == "token file not writable" {
				cfg = strings.Replace(cfg, filepath.Join(h.Dir, "token"), "/proc/tether-token", 1)
			}
			require.NoError(t, os.WriteFile(h.Config, []byte(cfg), 0o600))
			c, err := LoadConfig(h.Config)
			require.NoError(t, err)
			err = Run(context.Background(), c, Options{})
			require.Error(t, err)
			var ee *ExitError
			require.ErrorAs(t, err, &ee)
			assert.Equal(t, tt.code, ee.Code, err.Error())
			assert.Contains(t, err.Error(), tt.want)
			assert.NotContains(t, err.Error(), "\n")
		})
	}
}

// TestAgentNotifiesSystemd ensures that the agent tells systemd it is ready, what its credentials are, that it is healthy and that it stops.
//
// READY=1 with the credential state in STATUS=,
// watchdog pings while healthy, STOPPING=1 on the way out — all read from a
// real NOTIFY_SOCKET.
func TestAgentNotifiesSystemd(t *testing.T) {
	h := newHarness(t, time.Hour, "")
	t.Setenv("WATCHDOG_USEC", "200000")
	t.Setenv("WATCHDOG_PID", strconv.Itoa(os.Getpid()))
	cfg, err := LoadConfig(h.Config)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, cfg, Options{}) }()
	ready := h.WaitNotify("READY=1")
	assert.Contains(t, ready, "STATUS=")
	h.WaitNotify("WATCHDOG=1")
	h.WaitNotify("WATCHDOG=1")
	cancel()
	h.WaitNotify("STOPPING=1")
	require.NoError(t, <-done)
}

// TestAgentCacheFollowsConfiguration ensures that credentials cached for one role alias are never served once the configuration names another.
func TestAgentCacheFollowsConfiguration(t *testing.T) {
	h := newHarness(t, time.Hour, "")
	h.start()
	first := h.credentials("/v1/credentials")
	h.stop()

	h.Sim.AddRoleAlias("other-role", time.Hour)
	h.WriteConfig("", `role_alias          = "gateway-role"`, `role_alias          = "other-role"`)
	h.start()
	second := h.credentials("/v1/credentials")
	assert.NotEqual(t, first.AccessKeyID, second.AccessKeyID, "credentials of the old role alias served after the change")
	grants := h.Sim.Grants()
	require.Len(t, grants, 2)
	assert.Equal(t, "other-role", grants[1].RoleAlias)
	h.stop()

	db, err := store.Open(h.State, store.Options{})
	require.NoError(t, err)
	defer db.Close()
	keys, err := db.CredentialKeys()
	require.NoError(t, err)
	assert.Len(t, keys, 1, "the old alias's entry is deleted: %v", keys)
}
