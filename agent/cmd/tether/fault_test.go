package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tetherd/tether/agent"
	"github.com/tetherd/tether/agent/agenttest"
)

// The fault suite: the real binary against what a broken disk or an
// operator's mistake does to it while it runs.

// TestFaultStateDamagedWhileRunning ensures that a state file overwritten in
// place or truncated under a running agent neither crashes it (bbolt's panic,
// SIGBUS) nor stops it: the credentials it holds keep being served, the
// damaged file is moved aside, a fresh one is used, and status says so.
func TestFaultStateDamagedWhileRunning(t *testing.T) {
	damages := map[string]func(path string) error{
		"overwritten in place": func(path string) error {
			f, err := os.OpenFile(path, os.O_WRONLY, 0)
			if err != nil {
				return err
			}
			garbage := make([]byte, 64<<10)
			rand.Read(garbage)
			if _, err := f.WriteAt(garbage, 0); err != nil {
				return err
			}
			return f.Close()
		},
		"truncated": func(path string) error { return os.Truncate(path, 0) },
	}
	for name, damage := range damages {
		t.Run(name, func(t *testing.T) {
			e := agenttest.New(t, time.Hour, "")
			p := startAgent(t, e)
			before := served(t, e.Socket, "")
			require.NoError(t, damage(e.State))
			// A reload reads the store (cached credentials, keys to prune),
			// as a refresh would write it.
			require.NoError(t, p.cmd.Process.Signal(syscall.SIGHUP))
			e.WaitNotify("READY=1")
			assert.Equal(t, before, served(t, e.Socket, ""), "the credentials in memory are still served")
			st, err := agent.FetchStatus(context.Background(), e.Socket)
			require.NoError(t, err)
			assert.NotEmpty(t, st.Store.MovedAside, "status names where the damaged file went")
			_, err = os.Stat(st.Store.MovedAside)
			assert.NoError(t, err)
			// Still alive, and it stops cleanly with status 0.
			require.NoError(t, p.cmd.Process.Signal(syscall.SIGTERM))
			err = p.cmd.Wait()
			assert.NoError(t, err, "exit status after the damage; log:\n%s", p.stderr)
			assert.NotContains(t, p.stderr.String(), "goroutine ", "no panic dump")
		})
	}
}

// flood is a python client that opens n connections to the agent's socket
// as whoever runs it, sends a request on each and keeps them all open until
// its stdin closes. It prints how many connections it opened.
const flood = `import socket,sys,resource
soft,hard=resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE,(hard,hard))
n=int(sys.argv[2]); held=[]
for i in range(n):
    s=socket.socket(socket.AF_UNIX)
    try:
        s.connect(sys.argv[1])
        s.sendall(b"GET /v1/status HTTP/1.1\r\nHost: tether\r\n\r\n")
    except OSError:
        pass
    held.append(s)
print(len(held), flush=True)
sys.stdin.read()`

// TestFaultTenThousandConnections ensures that 10,000 connections held by
// one unprivileged local user neither exhaust the agent nor keep other
// users from being served, and that its memory stays within the bound
// docs/decisions.md states.
func TestFaultTenThousandConnections(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("this test runs the flood as another user with setpriv and needs root (make test runs as root)")
	}
	e := agenttest.New(t, time.Hour, "")
	require.NoError(t, os.Chmod(e.Dir, 0o755))
	require.NoError(t, os.Chmod(filepath.Dir(e.Dir), 0o755))
	p := startAgent(t, e)
	require.NoError(t, os.Chmod(e.Socket, 0o666))
	before := served(t, e.Socket, "")

	cmd := exec.Command("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "/usr/bin/python3", "-c", flood, e.Socket, "10000")
	stdin, err := cmd.StdinPipe()
	require.NoError(t, err)
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	defer func() { stdin.Close(); cmd.Wait() }()
	line, err := bufio.NewReader(out).ReadString('\n')
	require.NoError(t, err)
	assert.Equal(t, "10000\n", line)

	// Root is served while the flood is held.
	for range 20 {
		assert.Equal(t, before, served(t, e.Socket, ""))
	}
	hwm := procStatusKB(t, p.cmd.Process.Pid, "VmHWM")
	t.Logf("agent peak RSS with 10,000 connections held by one user: %d KiB", hwm)
	assert.Less(t, hwm, int64(floodRSSBoundKB), "peak RSS above the documented bound")
}

// floodRSSBoundKB is the bound on the agent's peak RSS under the flood that
// docs/decisions.md states.
const floodRSSBoundKB = 32 << 10

// procStatusKB reads a "kB" field of /proc/PID/status.
func procStatusKB(t *testing.T, pid int, field string) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	require.NoError(t, err)
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, field+":"); ok {
			n, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			require.NoError(t, err)
			return n
		}
	}
	t.Fatalf("no %s in /proc/%d/status", field, pid)
	return 0
}
