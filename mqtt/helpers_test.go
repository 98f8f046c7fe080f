package mqtt

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tetherd/tether/mqtt/mqtttest"
	"github.com/tetherd/tether/store"
)

// waitLimit bounds waits for things that happen by themselves; it is not a
// performance assertion, only a guard against a hung test.
const waitLimit = 60 * time.Second

func openOutbox(t testing.TB, path string, opts store.OutboxOptions) (*store.DB, *store.Outbox) {
	t.Helper()
	db, err := store.Open(path, store.Options{})
	require.NoError(t, err)
	ob, err := db.Outbox(opts)
	require.NoError(t, err)
	t.Cleanup(func() {
		_ = ob.Close()
		_ = db.Close()
	})
	return db, ob
}

func tempOutbox(t testing.TB) *store.Outbox {
	_, ob := openOutbox(t, filepath.Join(t.TempDir(), "state.db"), store.OutboxOptions{})
	return ob
}

// newSession connects a session with a fresh device certificate from the
// broker's PKI; mod adjusts the config.
func newSession(t testing.TB, b *mqtttest.Broker, clientID string, ob *store.Outbox, mod func(*Config)) *Session {
	t.Helper()
	cert := mqtttest.Device(t, b.PKI, clientID).TLSCertificate()
	cfg := Config{
		Endpoint:    b.Addr,
		ThingName:   clientID,
		Certificate: &cert,
		RootCAs:     b.PKI.Pool(),
		Outbox:      ob,
		MinBackoff:  20 * time.Millisecond,
		MaxBackoff:  200 * time.Millisecond,
	}
	if mod != nil {
		mod(&cfg)
	}
	s, err := New(context.Background(), cfg)
	require.NoError(t, err)
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func awaitConnected(t testing.TB, s *Session) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	require.NoError(t, s.AwaitConnection(ctx), "session never connected: %+v", s.Status())
}

func awaitDrained(t testing.TB, s *Session) {
	t.Helper()
	require.Eventually(t, func() bool { return s.Status().Outbox.Depth == 0 }, waitLimit, 5*time.Millisecond,
		"outbox never drained")
}

// receive reads one message or fails.
func receive(t testing.TB, sub *Subscription) Message {
	t.Helper()
	select {
	case m, ok := <-sub.C:
		require.True(t, ok, "subscription closed")
		return m
	case <-time.After(waitLimit):
		t.Fatalf("no message on %s", sub.Filter())
		return Message{}
	}
}
