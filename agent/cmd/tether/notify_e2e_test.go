package main

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tetherd/tether/agent/agenttest"
)

// TestNotifySocketNobodyReads ensures that an agent whose $NOTIFY_SOCKET is
// no longer read (its queue holds 10 datagrams) keeps reloading, serving
// and answering SIGTERM: an sd_notify write that cannot be queued is given
// up, never waited for. (Such a write once hung the agent after a
// rotation's switch, deaf to SIGTERM.)
func TestNotifySocketNobodyReads(t *testing.T) {
	e := agenttest.New(t, time.Hour, "")
	deaf := filepath.Join(e.Dir, "deaf.sock")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: deaf, Net: "unixgram"})
	require.NoError(t, err)
	defer c.Close()
	cmd := exec.Command(tetherBin, "run", "-c", e.Config)
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+deaf, "GOTRACEBACK=all")
	var logs lockedBuffer
	cmd.Stderr = &logs
	require.NoError(t, cmd.Start())
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	defer func() {
		cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("agent log:\n%s", logs.String())
		}
	}()
	require.Eventually(t, func() bool { return strings.Contains(logs.String(), "tether is ready") }, time.Minute, 20*time.Millisecond)
	// Each reload sends RELOADING=1 and READY=1: more than the queue holds.
	const reloads = 8
	for i := 1; i <= reloads; i++ {
		require.NoError(t, cmd.Process.Signal(syscall.SIGHUP))
		require.Eventually(t, func() bool { return strings.Count(logs.String(), "configuration reloaded") >= i }, time.Minute, 20*time.Millisecond,
			"reload %d did not finish", i)
	}
	served(t, e.Socket, "")
	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	select {
	case <-exited:
	case <-time.After(time.Minute):
		cmd.Process.Signal(syscall.SIGQUIT) // this agent's pid: dump its goroutines into the log
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
		}
		t.Fatal("the agent did not stop on SIGTERM")
	}
	require.Contains(t, logs.String(), "tether stopped")
}
