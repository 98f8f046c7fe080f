package mqtt

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tetherd/tether/mqtt/mqtttest"
	"github.com/tetherd/tether/store"
)

const childEnv = "TETHER_MQTT_KILL_CHILD"

// TestKill9Child ensures that nothing in a normal run: it is the agent stand-in TestKill9 runs and kills.
//
// TestKill9Child is the agent stand-in that TestKill9 runs as a separate
// process and kills with SIGKILL. It does nothing in a normal run.
func TestKill9Child(t *testing.T) {
	if os.Getenv(childEnv) == "" {
		t.Skip("helper process for TestKill9")
	}
	s, _ := childSession(t)
	w := bufio.NewWriter(os.Stdout)
	for i := 0; ; i++ {
		if _, err := s.Publish(context.Background(), "k9/x", []byte(strconv.Itoa(i)), 1); err != nil {
			fmt.Fprintf(os.Stderr, "publish: %v\n", err)
			os.Exit(3)
		}
		// Only now is the message acknowledged to the "local program".
		fmt.Fprintf(w, "ok %d\n", i)
		w.Flush()
	}
}

func childSession(t *testing.T) (*Session, *store.Outbox) {
	cert, err := tls.LoadX509KeyPair(os.Getenv("K9_CERT"), os.Getenv("K9_KEY"))
	require.NoError(t, err)
	caPEM, err := os.ReadFile(os.Getenv("K9_CA"))
	require.NoError(t, err)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	db, err := store.Open(os.Getenv("K9_STATE"), store.Options{})
	require.NoError(t, err)
	ob, err := db.Outbox(store.OutboxOptions{})
	require.NoError(t, err)
	s, err := New(context.Background(), Config{
		Endpoint: os.Getenv("K9_ADDR"), ThingName: "gw-k9", Certificate: &cert, RootCAs: pool, Outbox: ob,
		MinBackoff: 20e6, MaxBackoff: 200e6,
	})
	require.NoError(t, err)
	return s, ob
}

// TestKill9 ensures that every message acknowledged by an agent killed with SIGKILL is delivered after a restart.
//
// The agent is killed with SIGKILL while publishing, with the
// broker down so messages pile up in the outbox. After a restart on the same
// state file the outbox drains and every message the dead agent had
// acknowledged to its caller reaches the subscriber.
func TestKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("re-executes the test binary")
	}
	b := mqtttest.NewBroker(t, mqtttest.Options{})
	rx := newSession(t, b, "gw-k9-rx", tempOutbox(t), func(c *Config) { c.SubscriberBuffer = 1 << 16 })
	awaitConnected(t, rx)
	sub, err := rx.Subscribe(context.Background(), "k9/#")
	require.NoError(t, err)

	certFile, keyFile := mqtttest.DeviceFiles(t, b.PKI, "gw-k9")
	state := filepath.Join(t.TempDir(), "state.db")
	env := append(os.Environ(), childEnv+"=1", "K9_CERT="+certFile, "K9_KEY="+keyFile, "K9_CA="+b.CAFile,
		"K9_STATE="+state, "K9_ADDR="+b.Addr)
	cmd := exec.Command(os.Args[0], "-test.run=^TestKill9Child$", "-test.count=1")
	cmd.Env = env
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	cmd.Stderr = os.Stderr
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })

	acked := map[int]bool{}
	sc := bufio.NewScanner(out)
	stopped := false
	for sc.Scan() {
		var i int
		if _, err := fmt.Sscanf(sc.Text(), "ok %d", &i); err != nil {
			continue // test framework chatter
		}
		acked[i] = true
		if len(acked) == 300 && !stopped {
			require.NoError(t, b.Stop())
			stopped = true
		}
		if len(acked) == 800 {
			require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
		}
	}
	_ = cmd.Wait()
	require.GreaterOrEqual(t, len(acked), 800)

	require.NoError(t, b.Start())
	_, ob := openOutbox(t, state, store.OutboxOptions{})
	left := ob.Stats().Depth
	require.Positive(t, left, "the outbox kept what the broker had not acknowledged")
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	require.NoError(t, err)
	s, err := New(context.Background(), Config{
		Endpoint: b.Addr, ThingName: "gw-k9", Certificate: &cert, RootCAs: b.PKI.Pool(), Outbox: ob,
		MinBackoff: 20e6, MaxBackoff: 200e6,
	})
	require.NoError(t, err)
	t.Cleanup(func() { _ = s.Close() })

	got := map[int]int{}
	missing := func() int {
		n := 0
		for i := range acked {
			if got[i] == 0 {
				n++
			}
		}
		return n
	}
	for missing() > 0 {
		m := receive(t, sub)
		i, err := strconv.Atoi(strings.TrimSpace(string(m.Payload)))
		require.NoError(t, err)
		got[i]++
	}
	dups := 0
	for _, n := range got {
		dups += n - 1
	}
	t.Logf("%d acknowledged before SIGKILL, %d left in the outbox, all delivered; %d duplicates", len(acked), left, dups)
	awaitDrained(t, s)
	assert.Zero(t, missing())
}
