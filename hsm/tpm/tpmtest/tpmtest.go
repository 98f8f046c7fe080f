// Package tpmtest runs throw-away swtpm TPM 2.0 simulators for tests, in the
// style of net/http/httptest: each simulator keeps its state in
// t.TempDir(), serves the raw TPM command stream on a Unix socket (what a
// "tpm:...?device=SOCKET" reference names) and stops with the test.
//
// Operators make keys with tpm2-tools and OpenSSL's tpm2 provider, which
// reach swtpm over TCP only; Tools stops the simulator, restarts it on a
// free loopback port for the duration of a function, and then brings the
// Unix socket back with the same TPM state.
package tpmtest

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// Simulator is one swtpm instance.
type Simulator struct {
	// Socket is the TPM command socket (Unix).
	Socket string
	// StateDir holds the TPM's persistent state (seeds, NV, persistent
	// objects); it survives Restart.
	StateDir string

	t    testing.TB
	dir  string
	cmd  *exec.Cmd
	logs *bytes.Buffer
}

// Start runs swtpm for the test. It fails the test, naming the Debian
// package, when swtpm is not installed.
func Start(t testing.TB) *Simulator {
	t.Helper()
	return StartIn(t, t.TempDir())
}

// StartIn is Start with the socket (dir/tpm.sock) and state in dir, e.g.
// inside a container's root so that its programs reach the simulator;
// dir must exist. The socket may be used by anyone (mode 0666).
func StartIn(t testing.TB, dir string) *Simulator {
	t.Helper()
	if _, err := exec.LookPath("swtpm"); err != nil {
		t.Fatal("tpmtest: swtpm missing: install the Debian package swtpm (apt-get install swtpm; softhsm-test/deps.sh does)")
	}
	s := &Simulator{t: t, dir: dir, Socket: filepath.Join(dir, "tpm.sock"), StateDir: filepath.Join(dir, "state")}
	if err := os.Mkdir(s.StateDir, 0o700); err != nil {
		t.Fatal(err)
	}
	s.startUnix()
	t.Cleanup(s.stop)
	return s
}

func (s *Simulator) run(server, ctrl string, ready func() bool) {
	s.t.Helper()
	s.logs = new(bytes.Buffer)
	s.cmd = exec.Command("swtpm", "socket", "--tpm2",
		"--tpmstate", "dir="+s.StateDir,
		"--server", server, "--ctrl", ctrl,
		"--flags", "not-need-init,startup-clear")
	s.cmd.Stdout, s.cmd.Stderr = s.logs, s.logs
	if err := s.cmd.Start(); err != nil {
		s.t.Fatalf("tpmtest: starting swtpm: %v", err)
	}
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if ready() {
			return
		}
	}
	s.stop()
	s.t.Fatalf("tpmtest: swtpm did not come up: %s", s.logs)
}

func (s *Simulator) startUnix() {
	s.t.Helper()
	os.Remove(s.Socket)
	ctrl := filepath.Join(s.dir, "ctrl.sock")
	os.Remove(ctrl)
	s.run("type=unixio,path="+s.Socket+",mode=0666", "type=unixio,path="+ctrl, func() bool {
		c, err := net.Dial("unix", s.Socket)
		if err != nil {
			return false
		}
		c.Close()
		return true
	})
}

// stop ends swtpm; TPM2_Shutdown is not needed for its state to persist.
func (s *Simulator) stop() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	s.cmd.Process.Kill()
	s.cmd.Wait()
	s.cmd = nil
}

// Stop ends the simulator, as a TPM that went away would.
func (s *Simulator) Stop() { s.stop() }

// Restart stops the simulator and starts it again on the same state and
// socket: transient objects are gone, persistent ones and the seeds stay.
func (s *Simulator) Restart() {
	s.t.Helper()
	s.stop()
	s.startUnix()
}

// Tools runs f with the simulator reachable over TCP on a free loopback
// port; tcti is the TCTI string for tpm2-tools (TPM2TOOLS_TCTI) and OpenSSL's
// tpm2 provider (TPM2OPENSSL_TCTI). The Unix socket is back when Tools
// returns.
func (s *Simulator) Tools(f func(tcti string)) {
	s.t.Helper()
	s.stop()
	port := freePortPair(s.t)
	addr := "127.0.0.1:" + strconv.Itoa(port)
	s.run(fmt.Sprintf("type=tcp,port=%d,bindaddr=127.0.0.1", port),
		fmt.Sprintf("type=tcp,port=%d,bindaddr=127.0.0.1", port+1), func() bool {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				return false
			}
			c.Close()
			return true
		})
	defer func() {
		s.stop()
		s.startUnix()
	}()
	f(fmt.Sprintf("swtpm:host=127.0.0.1,port=%d", port))
}

// freePortPair finds a loopback port p with p+1 free too (swtpm's control
// channel is the next port, as the swtpm TCTI expects).
func freePortPair(t testing.TB) int {
	t.Helper()
	for range 50 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		p := l.Addr().(*net.TCPAddr).Port
		l2, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p+1))
		l.Close()
		if err == nil {
			l2.Close()
			return p
		}
	}
	t.Fatal("tpmtest: no free pair of loopback ports")
	return 0
}

// Run runs a TPM tool (tpm2_*, openssl) against the simulator inside
// Tools, failing the test with its output when it fails.
func Run(t testing.TB, tcti string, name string, args ...string) []byte {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), "TPM2TOOLS_TCTI="+tcti, "TPM2OPENSSL_TCTI="+tcti)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("tpmtest: %s %v: %v\n%s", name, args, err, out)
	}
	return out
}
