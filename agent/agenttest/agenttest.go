// Package agenttest sets up what a tether agent needs in tests, in the
// style of net/http/httptest: the IoT Core simulator over real TLS on
// 127.0.0.1, a test PKI, a device identity, a configuration file in a
// private directory, and a real NOTIFY_SOCKET to observe READY=1 on.
package agenttest

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tetherd/tether/credprovider/iotcredtest"
)

// RoleAlias is the role alias the simulator grants.
const RoleAlias = "gateway-role"

// ThingName is the device's thing name.
const ThingName = "gw-0001"

// Env is one agent's surroundings. Everything lives in Dir and is removed
// with the test.
type Env struct {
	Dir string
	Sim *iotcredtest.Server
	// Config is the configuration file; Socket, State and Token the paths
	// it names.
	Config, Socket, State, Token string
	// CertFile and KeyFile are the device identity (PEM, key mode 0600).
	CertFile, KeyFile string
	// NotifySocket is the datagram socket NOTIFY_SOCKET names.
	NotifySocket string

	t      testing.TB  // the test New was given, failed by the methods
	notify chan string // datagrams read from NotifySocket
	base   string
}

// New starts the simulator with a role alias whose credentials live for
// lifetime and writes a configuration for it; extra is appended to the TOML.
// It sets NOTIFY_SOCKET with t.Setenv, so tests using it cannot be parallel.
func New(t testing.TB, lifetime time.Duration, extra string) *Env {
	t.Helper()
	dir := t.TempDir()
	sim, err := iotcredtest.NewServer(iotcredtest.WithRoleAlias(RoleAlias, lifetime))
	if err != nil {
		t.Fatalf("agenttest: simulator: %v", err)
	}
	t.Cleanup(sim.Close)
	if err := sim.PKI.WriteFiles(dir); err != nil {
		t.Fatal(err)
	}
	dev, err := sim.PKI.NewDevice(ThingName, iotcredtest.ECDSAP256)
	if err != nil {
		t.Fatal(err)
	}
	e := &Env{t: t, Dir: dir, Sim: sim,
		Config: filepath.Join(dir, "tether.toml"), Socket: filepath.Join(dir, "tether.sock"),
		State: filepath.Join(dir, "state.db"), Token: filepath.Join(dir, "token")}
	if e.CertFile, e.KeyFile, err = dev.WriteFiles(dir); err != nil {
		t.Fatal(err)
	}
	e.base = fmt.Sprintf(`
[identity]
thing_name  = %q
certificate = %q
private_key = %q

[aws]
region              = "eu-west-1"
credential_endpoint = %q
role_alias          = %q
ca_file             = %q

[serve]
socket     = %q
token_file = %q

[state]
path = %q
`, ThingName, e.CertFile, e.KeyFile, sim.Endpoint, RoleAlias, filepath.Join(dir, "ca.crt"), e.Socket, e.Token, e.State)
	e.WriteConfig(extra)
	e.listenNotify()
	return e
}

// WriteConfig rewrites the configuration: the base, edited by each
// old→new pair in edits, then extra appended.
func (e *Env) WriteConfig(extra string, edits ...string) {
	e.t.Helper()
	s := e.base
	for i := 0; i+1 < len(edits); i += 2 {
		s = strings.Replace(s, edits[i], edits[i+1], 1)
	}
	if err := os.WriteFile(e.Config, []byte(s+extra), 0o600); err != nil {
		e.t.Fatal(err)
	}
}

// listenNotify opens NOTIFY_SOCKET and reads it all the time, as systemd
// does: the socket's queue holds 10 datagrams, and an agent whose status
// lines nobody reads would see its sd_notify writes refused.
func (e *Env) listenNotify() {
	e.NotifySocket = filepath.Join(e.Dir, "notify.sock")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: e.NotifySocket, Net: "unixgram"})
	if err != nil {
		e.t.Fatal(err)
	}
	e.notify = make(chan string, 1024)
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 4096)
		for {
			n, err := c.Read(buf)
			if err != nil {
				return
			}
			select {
			case e.notify <- string(buf[:n]):
			default: // nobody waits for this many: keep the oldest
			}
		}
	}()
	e.t.Cleanup(func() { c.Close(); <-done })
	e.t.Setenv("NOTIFY_SOCKET", e.NotifySocket)
}

// WaitNotify reads sd_notify datagrams until one contains want, and returns
// it. It fails the test after 30 s.
func (e *Env) WaitNotify(want string) string {
	e.t.Helper()
	timeout := time.After(30 * time.Second)
	for {
		select {
		case msg := <-e.notify:
			if strings.Contains(msg, want) {
				return msg
			}
		case <-timeout:
			e.t.Fatalf("agenttest: no %q on NOTIFY_SOCKET within 30 s", want)
		}
	}
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}
