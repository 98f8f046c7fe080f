package main

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tetherd/tether/agent"
	"github.com/tetherd/tether/agent/agenttest"
	"github.com/tetherd/tether/mqtt/mqtttest"
)

// TestMQTTThroughTheAgent ensures that the agent's one MQTT session carries a publish from tether mqtt publish to tether mqtt subscribe.
//
// Mosquitto with mTLS and MQTT v5; the agent's one
// session carries a publish from `tether mqtt publish` back to
// `tether mqtt subscribe`, with the same device identity that fetches the
// credentials.
func TestMQTTThroughTheAgent(t *testing.T) {
	e := agenttest.New(t, time.Hour, "")
	// One test PKI for both: the broker trusts the simulator's device.
	broker := mqtttest.NewBroker(t, mqtttest.Options{PKI: e.Sim.PKI})
	e.WriteConfig(fmt.Sprintf("\n[mqtt]\nendpoint = %q\nca_file = %q\n", broker.Addr, broker.CAFile))
	proc := startAgent(t, e)

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	sub := exec.CommandContext(ctx, tetherBin, "mqtt", "subscribe", "--socket", e.Socket, "--topic", "dt/gw-0001/#", "--count", "1")
	out, err := sub.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, sub.Start())
	// Wait until the agent holds the local subscriber and is connected.
	waitStatus(t, e.Socket, func(st *agent.Status) bool {
		return st.MQTT != nil && st.MQTT.Subscribers == 1 && st.MQTT.State == "connected"
	})

	code, _, stderr := tether(t, nil, "mqtt", "publish", "--socket", e.Socket, "--topic", "dt/gw-0001/echo", "--qos", "1", "--message", "hello")
	require.Equal(t, 0, code, stderr)

	line, err := bufio.NewReader(out).ReadString('\n')
	require.NoError(t, err)
	var msg struct {
		Topic   string `json:"topic"`
		Payload string `json:"payload"`
	}
	require.NoError(t, json.Unmarshal([]byte(line), &msg), line)
	assert.Equal(t, "dt/gw-0001/echo", msg.Topic)
	p, _ := base64.StdEncoding.DecodeString(msg.Payload)
	assert.Equal(t, "hello", string(p))
	require.NoError(t, sub.Wait())

	t.Run("bad topics are refused with the rule", func(t *testing.T) {
		for _, topic := range []string{"a/#", strings.Repeat("x", 257), "a/b/c/d/e/f/g/h/i"} {
			code, _, stderr := tether(t, nil, "mqtt", "publish", "--socket", e.Socket, "--topic", topic, "--message", "x")
			assert.NotEqual(t, 0, code)
			assert.Equal(t, 1, strings.Count(stderr, "\n"), stderr)
		}
	})
	code, status, _ := tether(t, nil, "status", "--socket", e.Socket)
	require.Equal(t, 0, code)
	assert.Contains(t, status, "connected since")
	assert.Contains(t, status, "outbox")

	// A reload that leaves [mqtt] and the identity alone keeps the session;
	// one that changes [mqtt] replaces it, and delivery goes on.
	t.Run("reload", func(t *testing.T) {
		require.NoError(t, proc.cmd.Process.Signal(syscall.SIGHUP))
		e.WaitNotify("READY=1")
		st, err := agent.FetchStatus(context.Background(), e.Socket)
		require.NoError(t, err)
		require.NotNil(t, st.MQTT)
		assert.Equal(t, uint64(1), st.MQTT.Connects, "an unchanged session is not reconnected by a reload")

		e.WriteConfig(fmt.Sprintf("\n[mqtt]\nendpoint = %q\nca_file = %q\nkeep_alive = \"45s\"\n", broker.Addr, broker.CAFile))
		require.NoError(t, proc.cmd.Process.Signal(syscall.SIGHUP))
		e.WaitNotify("READY=1")
		waitStatus(t, e.Socket, func(st *agent.Status) bool {
			return st.MQTT != nil && st.MQTT.State == "connected" && st.MQTT.Outbox.Depth == 0
		})
		code, _, stderr := tether(t, nil, "mqtt", "publish", "--socket", e.Socket, "--topic", "dt/gw-0001/after-reload", "--qos", "1", "--message", "x")
		require.Equal(t, 0, code, stderr)
		waitStatus(t, e.Socket, func(st *agent.Status) bool { return st.MQTT.Outbox.Depth == 0 && st.MQTT.Inflight == 0 })
	})
}

// waitStatus polls the agent's status until ok holds, for at most 30 s.
func waitStatus(t testing.TB, socket string, ok func(*agent.Status) bool) {
	t.Helper()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(30 * time.Second)
	for {
		st, err := agent.FetchStatus(context.Background(), socket)
		require.NoError(t, err)
		if ok(st) {
			return
		}
		select {
		case <-tick.C:
		case <-deadline:
			b, _ := json.Marshal(st)
			t.Fatalf("status never reached the expected state: %s", b)
		}
	}
}
