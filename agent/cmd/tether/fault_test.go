package main

import (
	"context"
	"crypto/rand"
	"os"
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
