package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tetherd/tether/agent"
	"github.com/tetherd/tether/agent/agenttest"
	"github.com/tetherd/tether/credprovider/iotcredtest"
	"github.com/tetherd/tether/mqtt/mqtttest"
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

// TestFaultReloadDuringFileSwaps ensures that a reload at any moment of an
// identity or configuration swap — each of certificate, key and
// configuration unchanged, new, half-written or wrong, in every
// combination — either takes the new configuration whole or keeps the
// running one with its identity, and never ends or stalls the agent.
func TestFaultReloadDuringFileSwaps(t *testing.T) {
	e := agenttest.New(t, time.Hour, "")
	p := startAgent(t, e)
	readFile := func(path string) []byte {
		b, err := os.ReadFile(path)
		require.NoError(t, err)
		return b
	}
	origCert, origKey, origConfig := readFile(e.CertFile), readFile(e.KeyFile), readFile(e.Config)
	next, err := e.Sim.PKI.NewDevice("gw-0001-next", iotcredtest.ECDSAP256)
	require.NoError(t, err)
	other, err := e.Sim.PKI.NewDevice("gw-0001-other", iotcredtest.ECDSAP256)
	require.NoError(t, err)
	newConfig := append(append([]byte{}, origConfig...), []byte("\n[log]\nlevel = \"debug\"\n")...)
	states := []string{"unchanged", "new", "half-written", "wrong"}
	content := map[string]map[string][]byte{
		"cert":   {"unchanged": origCert, "new": next.CertPEM, "half-written": next.CertPEM[:len(next.CertPEM)/2], "wrong": other.CertPEM},
		"key":    {"unchanged": origKey, "new": next.KeyPEM, "half-written": next.KeyPEM[:len(next.KeyPEM)/2], "wrong": []byte("-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n")},
		"config": {"unchanged": origConfig, "new": newConfig, "half-written": newConfig[:len(newConfig)/3], "wrong": append(append([]byte{}, origConfig...), []byte("\n[aws]\nduration = 3600\n")...)},
	}
	subject := func() string {
		st, err := agent.FetchStatus(context.Background(), e.Socket)
		require.NoError(t, err)
		return st.Identity.Subject
	}
	write := func(cert, key, config []byte) {
		require.NoError(t, os.WriteFile(e.CertFile, cert, 0o644))
		require.NoError(t, os.WriteFile(e.KeyFile, key, 0o600))
		require.NoError(t, os.WriteFile(e.Config, config, 0o600))
	}
	reload := func() {
		require.NoError(t, p.cmd.Process.Signal(syscall.SIGHUP))
		e.WaitNotify("READY=1")
		require.Nil(t, p.cmd.ProcessState, "the agent exited on a reload")
	}
	origSubject := subject()
	for _, cs := range states {
		for _, ks := range states {
			for _, fs := range states {
				// Back to the original identity first (a no-op when it is
				// already running).
				write(origCert, origKey, origConfig)
				reload()
				require.Equal(t, origSubject, subject())

				write(content["cert"][cs], content["key"][ks], content["config"][fs])
				reload()
				configOK := fs == "unchanged" || fs == "new"
				want := origSubject
				switch {
				case configOK && cs == "new" && ks == "new":
					want = "CN=gw-0001-next"
				}
				got := subject()
				if want == "CN=gw-0001-next" {
					assert.Contains(t, got, "gw-0001-next", "cert %s, key %s, config %s: the complete swap is taken", cs, ks, fs)
				} else {
					assert.Equal(t, origSubject, got, "cert %s, key %s, config %s: the running identity stays", cs, ks, fs)
				}
				served(t, e.Socket, "")
			}
		}
	}
}

// TestFaultReloadUnderLoad ensures that reloads while local programs keep
// asking — on new connections, as credential-process does — fail no
// request.
func TestFaultReloadUnderLoad(t *testing.T) {
	e := agenttest.New(t, time.Hour, "")
	p := startAgent(t, e)
	var ok, failed atomic.Int64
	var mu sync.Mutex
	var errs []string
	done := make(chan struct{})
	var wg sync.WaitGroup
	for range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-done:
					return
				default:
				}
				if _, err := agent.FetchCredentials(context.Background(), e.Socket, ""); err != nil {
					failed.Add(1)
					mu.Lock()
					errs = append(errs, err.Error())
					mu.Unlock()
					continue
				}
				ok.Add(1)
			}
		}()
	}
	const reloads = 20
	for i := range reloads {
		e.WriteConfig([]string{"", "\n[log]\nlevel = \"debug\"\n"}[i%2])
		before := ok.Load()
		require.NoError(t, p.cmd.Process.Signal(syscall.SIGHUP))
		e.WaitNotify("READY=1")
		for ok.Load() < before+6 {
			time.Sleep(time.Millisecond)
		}
	}
	// And the real client, between reloads.
	code, _, stderr := tether(t, nil, "credential-process", "--socket", e.Socket)
	assert.Equal(t, 0, code, stderr)
	close(done)
	wg.Wait()
	t.Logf("%d requests during %d reloads, %d failed", ok.Load()+failed.Load(), reloads, failed.Load())
	assert.Zero(t, failed.Load(), "failed requests: %v", errs)
}

// TestFaultBrokerRefusesOneMessage ensures that a message the broker refuses
// (mosquitto's ACL: PUBACK 0x87) is set aside as a dead letter, shown by
// `tether status`, and that the message behind it is delivered.
func TestFaultBrokerRefusesOneMessage(t *testing.T) {
	acl := filepath.Join(t.TempDir(), "acl")
	require.NoError(t, os.WriteFile(acl, []byte("pattern readwrite ok/#\n"), 0o644))
	e := agenttest.New(t, time.Hour, "")
	broker := mqtttest.NewBroker(t, mqtttest.Options{PKI: e.Sim.PKI, ExtraConfig: "acl_file " + acl + "\n"})
	e.WriteConfig(fmt.Sprintf("\n[mqtt]\nendpoint = %q\nca_file = %q\n", broker.Addr, broker.CAFile))
	startAgent(t, e)

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	sub := exec.CommandContext(ctx, tetherBin, "mqtt", "subscribe", "--socket", e.Socket, "--topic", "ok/#", "--count", "1")
	out, err := sub.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, sub.Start())
	waitStatus(t, e.Socket, func(st *agent.Status) bool {
		return st.MQTT != nil && st.MQTT.Subscribers == 1 && st.MQTT.State == "connected"
	})
	for _, topic := range []string{"denied/x", "ok/x"} {
		code, _, stderr := tether(t, nil, "mqtt", "publish", "--socket", e.Socket, "--topic", topic, "--qos", "1", "--message", topic)
		require.Equal(t, 0, code, stderr)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	require.NoError(t, err)
	assert.Contains(t, line, `"ok/x"`)
	require.NoError(t, sub.Wait())
	waitStatus(t, e.Socket, func(st *agent.Status) bool { return st.MQTT.Outbox.DeadLetters == 1 && st.MQTT.Outbox.Depth == 0 })
	code, status, _ := tether(t, nil, "status", "--socket", e.Socket)
	require.Equal(t, 0, code)
	assert.Contains(t, status, "dead letters")
	assert.Contains(t, status, "0x87")
}

// TestFaultDescriptorExhaustion ensures that an agent with few descriptors
// (RLIMIT_NOFILE 40) flooded by several users, with more connections than
// it has descriptors, keeps running and keeps serving others: its
// connection limits scale down to its descriptor limit.
func TestFaultDescriptorExhaustion(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("this test runs the flood as another user with setpriv and needs root (make test runs as root)")
	}
	e := agenttest.New(t, time.Hour, "")
	require.NoError(t, os.Chmod(e.Dir, 0o755))
	require.NoError(t, os.Chmod(filepath.Dir(e.Dir), 0o755))
	cmd := exec.Command("prlimit", "--nofile=40:40", tetherBin, "run", "-c", e.Config)
	var logs lockedBuffer
	cmd.Stderr = &logs
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
		if t.Failed() {
			t.Logf("agent log:\n%s", logs.String())
		}
	})
	e.WaitNotify("READY=1")
	require.NoError(t, os.Chmod(e.Socket, 0o666))
	before := served(t, e.Socket, "")
	// Eight users, 300 connections each: together more than the agent has
	// descriptors.
	for uid := 65527; uid <= 65534; uid++ {
		flooder := exec.Command("setpriv", fmt.Sprintf("--reuid=%d", uid), fmt.Sprintf("--regid=%d", uid), "--clear-groups", "/usr/bin/python3", "-c", flood, e.Socket, "300")
		stdin, err := flooder.StdinPipe()
		require.NoError(t, err)
		out, err := flooder.StdoutPipe()
		require.NoError(t, err)
		require.NoError(t, flooder.Start())
		defer func() { stdin.Close(); flooder.Wait() }()
		_, err = bufio.NewReader(out).ReadString('\n')
		require.NoError(t, err)
	}
	for range 10 {
		assert.Equal(t, before, served(t, e.Socket, ""))
	}
	assert.NotContains(t, logs.String(), "goroutine ")
}

// lockedBuffer is a bytes.Buffer safe for a writer and a reader.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestFaultDiskFull ensures that a full file system under the state file
// is one clear line and exit status 1 at start, and while running refuses
// what cannot be made durable (a publish: 503) without stopping, serving
// credentials or losing what was queued; once space is back, delivery
// goes on.
func TestFaultDiskFull(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("this test mounts a small tmpfs and needs root (make test runs as root)")
	}
	dir := t.TempDir()
	require.NoError(t, exec.Command("mount", "-t", "tmpfs", "-o", "size=4m", "tether-test", dir).Run(), "mount a 4 MiB tmpfs")
	t.Cleanup(func() { exec.Command("umount", "-l", dir).Run() })
	fill := func() string {
		path := filepath.Join(dir, "filler")
		f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		require.NoError(t, err)
		defer f.Close()
		chunk := make([]byte, 4096)
		for {
			if _, err := f.Write(chunk); err != nil {
				require.ErrorIs(t, err, syscall.ENOSPC)
				return path
			}
		}
	}

	t.Run("at start", func(t *testing.T) {
		e := agenttest.New(t, time.Hour, "")
		e.WriteConfig("", e.State, filepath.Join(dir, "start.db"))
		filler := fill()
		defer os.Remove(filler)
		code, _, stderr := tether(t, nil, "run", "-c", e.Config)
		assert.Equal(t, 1, code, stderr)
		assert.Equal(t, 1, strings.Count(stderr, "\n"), stderr)
		assert.Contains(t, stderr, "space")
		assert.Contains(t, stderr, filepath.Join(dir, "start.db"))
	})

	t.Run("while serving", func(t *testing.T) {
		e := agenttest.New(t, time.Hour, "")
		broker := mqtttest.NewBroker(t, mqtttest.Options{PKI: e.Sim.PKI})
		e.WriteConfig(fmt.Sprintf("\n[mqtt]\nendpoint = %q\nca_file = %q\n", broker.Addr, broker.CAFile),
			e.State, filepath.Join(dir, "run.db"))
		startAgent(t, e)
		before := served(t, e.Socket, "")
		waitStatus(t, e.Socket, func(st *agent.Status) bool { return st.MQTT != nil && st.MQTT.State == "connected" })

		// With the broker away the outbox log (512 KiB, allocated when the
		// agent started) fills and must be drained into the full state
		// file; what fits in the log is still accepted, durably.
		require.NoError(t, broker.Stop())
		filler := fill()
		big := strings.Repeat("x", 100<<10)
		refused := 0
		for range 10 {
			code, _, stderr := tether(t, nil, "mqtt", "publish", "--socket", e.Socket, "--topic", "dt/full", "--qos", "1", "--message", big)
			if code != 0 {
				refused++
				assert.Equal(t, 1, strings.Count(stderr, "\n"), stderr)
			}
		}
		assert.Positive(t, refused, "publishes that cannot be made durable are refused")
		assert.Equal(t, before, served(t, e.Socket, ""), "credentials are still served")

		require.NoError(t, os.Remove(filler))
		code, _, stderr := tether(t, nil, "mqtt", "publish", "--socket", e.Socket, "--topic", "dt/after", "--qos", "1", "--message", "x")
		require.Equal(t, 0, code, stderr)
		require.NoError(t, broker.Start())
		waitStatus(t, e.Socket, func(st *agent.Status) bool { return st.MQTT.Outbox.Depth == 0 })
	})
}
