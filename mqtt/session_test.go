package mqtt

import (
	"context"
	"crypto/tls"
	"fmt"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tetherd/tether/mqtt/mqtttest"
)

// TestValidatePublish ensures that publishes are checked against the MQTT 5 and AWS IoT rules, each refusal naming its rule.
func TestValidatePublish(t *testing.T) {
	tests := []struct {
		name    string
		topic   string
		payload int
		qos     byte
		code    string
	}{
		{"ok", "dt/gw-0001/temp", 10, 1, ""},
		{"ok at limits", strings.Repeat("a/", 7) + strings.Repeat("b", 256-14), MaxPayloadBytes, 0, ""},
		{"empty topic", "", 1, 1, "topic_empty"},
		{"plus wildcard", "a/+/c", 1, 1, "topic_wildcard"},
		{"hash wildcard", "a/#", 1, 1, "topic_wildcard"},
		{"too long", strings.Repeat("x", 257), 1, 1, "topic_too_long"},
		{"eight slashes", "a/b/c/d/e/f/g/h/i", 1, 1, "topic_too_deep"},
		{"not utf8", "a/\xff", 1, 1, "topic_not_utf8"},
		{"nul", "a\x00b", 1, 1, "topic_invalid"},
		{"newline", "a\nb", 1, 1, "topic_invalid"},
		{"tab", "a\tb", 1, 1, "topic_invalid"},
		{"control 0x01", "a\x01b", 1, 1, "topic_invalid"},
		{"DEL", "a\x7fb", 1, 1, "topic_invalid"},
		{"C1 control", "a\u0085b", 1, 1, "topic_invalid"},
		{"C1 control last", "a\u009fb", 1, 1, "topic_invalid"},
		{"non-character U+FFFF", "a\uffffb", 1, 1, "topic_invalid"},
		{"non-character U+FFFE", "a\ufffeb", 1, 1, "topic_invalid"},
		{"non-character U+FDD0", "a\ufdd0b", 1, 1, "topic_invalid"},
		{"non-character U+10FFFF", "a\U0010ffffb", 1, 1, "topic_invalid"},
		{"surrogate bytes", "a\xed\xa0\x80b", 1, 1, "topic_not_utf8"},
		{"printable unicode", "dt/gw-0001/température/€/😀", 1, 1, ""},
		{"U+00A0 is allowed", "a\u00a0b", 1, 1, ""},
		{"payload too large", "a", MaxPayloadBytes + 1, 1, "payload_too_large"},
		{"qos 2", "a", 1, 2, "qos_unsupported"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := ValidatePublish(tc.topic, make([]byte, tc.payload), tc.qos)
			if tc.code == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorIs(t, err, ErrInvalid)
			var re *RuleError
			require.ErrorAs(t, err, &re)
			assert.Equal(t, tc.code, re.Code)
			assert.NotEmpty(t, re.Message)
		})
	}
}

// TestValidateFilterAndMatch ensures that topic filters are checked and matched as MQTT 5 does.
func TestValidateFilterAndMatch(t *testing.T) {
	filters := []struct {
		filter string
		ok     bool
	}{
		{"a/b", true}, {"a/+/c", true}, {"a/#", true}, {"#", true}, {"+", true},
		{"a/#/c", false}, {"a/b#", false}, {"a+/b", false}, {"", false}, {"a/b/c/d/e/f/g/h/i", false},
		{"$share", false}, {"$share/", false}, {"$share/g", false}, {"$share//a", false}, {"$share/+/a", false}, {"$share/g/", false},
		{"$share/g/a/#", true}, {"$share/g/+", true}, {"$sharex/a", true}, {"$share/g/a/#/b", false},
		{"a/\n/#", false}, {"a/\x01", false}, {"\uffff/+", false}, {"a/\u0090", false},
	}
	for _, tc := range filters {
		err := ValidateFilter(tc.filter)
		assert.Equal(t, tc.ok, err == nil, "filter %q: %v", tc.filter, err)
	}
	matches := []struct {
		filter, topic string
		want          bool
	}{
		{"a/b", "a/b", true}, {"a/b", "a/c", false}, {"a/+", "a/b", true}, {"a/+", "a/b/c", false},
		{"a/#", "a", true}, {"a/#", "a/b/c", true}, {"#", "x/y", true}, {"+/b", "a/b", true},
		{"#", "$aws/things", false}, {"$aws/#", "$aws/things", true}, {"a/b/c", "a/b", false}, {"a", "a/b", false},
		{"+", "", true}, {"a/+/c", "a//c", true},
	}
	for _, tc := range matches {
		assert.Equal(t, tc.want, Match(tc.filter, tc.topic), "Match(%q, %q)", tc.filter, tc.topic)
	}
}

// TestNewRefusesBadConfig ensures that mqtt.New refuses a configuration missing what the session needs.
func TestNewRefusesBadConfig(t *testing.T) {
	ob := tempOutbox(t)
	cert := tls.Certificate{}
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"no outbox", Config{Endpoint: "h", ThingName: "x", Certificate: &cert}, "Outbox"},
		{"no certificate", Config{Endpoint: "h", ThingName: "x", Outbox: ob}, "certificate"},
		{"no endpoint", Config{ThingName: "x", Certificate: &cert, Outbox: ob}, "endpoint"},
		{"bad port", Config{Endpoint: "h:99999", ThingName: "x", Certificate: &cert, Outbox: ob}, "port"},
		{"no client id", Config{Endpoint: "h", Certificate: &cert, Outbox: ob}, "client id"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(context.Background(), tc.cfg)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

// TestRoundTripPEM ensures that a message published through the session comes back to a subscriber over a real broker.
func TestRoundTripPEM(t *testing.T) {
	b := mqtttest.NewBroker(t, mqtttest.Options{})
	sub := newSession(t, b, "gw-sub", tempOutbox(t), nil)
	pub := newSession(t, b, "gw-pub", tempOutbox(t), nil)
	awaitConnected(t, sub)
	awaitConnected(t, pub)

	c1, err := sub.Subscribe(context.Background(), "dt/+/temp")
	require.NoError(t, err)
	c2, err := sub.Subscribe(context.Background(), "dt/#")
	require.NoError(t, err)

	for i, qos := range []byte{1, 0, 1} {
		_, err := pub.Publish(context.Background(), "dt/gw-pub/temp", fmt.Appendf(nil, "m%d", i), qos)
		require.NoError(t, err)
	}
	seen := map[string]bool{}
	for range 3 {
		m := receive(t, c1)
		assert.Equal(t, "dt/gw-pub/temp", m.Topic)
		seen[string(m.Payload)] = true
	}
	assert.Equal(t, map[string]bool{"m0": true, "m1": true, "m2": true}, seen)
	// The second local subscriber of an overlapping filter gets them too.
	for range 3 {
		receive(t, c2)
	}
	awaitDrained(t, pub)

	st := pub.Status()
	assert.Equal(t, StateConnected, st.State)
	assert.Equal(t, "gw-pub", st.ClientID)
	assert.Equal(t, b.Addr, st.Endpoint)
	assert.Zero(t, st.Rejected)
	assert.Equal(t, 2, sub.Status().Subscribers)

	c1.Close()
	for m := range c1.C {
		t.Errorf("unexpected extra message %q on %s", m.Payload, c1.Filter())
	}
	assert.Equal(t, 1, sub.Status().Subscribers)
}

// TestSlowSubscriberDoesNotBlockOthers ensures that a subscriber that does not read loses messages (counted) without slowing the others.
func TestSlowSubscriberDoesNotBlockOthers(t *testing.T) {
	b := mqtttest.NewBroker(t, mqtttest.Options{})
	s := newSession(t, b, "gw-slow", tempOutbox(t), func(c *Config) { c.SubscriberBuffer = 2 })
	awaitConnected(t, s)
	slow, err := s.Subscribe(context.Background(), "t/#")
	require.NoError(t, err)
	fast, err := s.Subscribe(context.Background(), "t/#")
	require.NoError(t, err)
	const n = 10
	for i := range n {
		_, err := s.Publish(context.Background(), "t/x", []byte{byte(i)}, 1)
		require.NoError(t, err)
		assert.Equal(t, []byte{byte(i)}, receive(t, fast).Payload)
	}
	// Subscribers are served in map order, so the last message may reach
	// the fast one before the slow one's full buffer has been seen.
	require.Eventually(t, func() bool { return s.Status().Dropped == n-2 }, 10*time.Second, time.Millisecond,
		"dropped: %d", s.Status().Dropped)
	assert.Equal(t, uint64(n-2), slow.Dropped(), "the slow consumer keeps its buffer and loses the rest")
	assert.Equal(t, []byte{0}, receive(t, slow).Payload)
}

// TestRestartStorm ensures that messages published while the broker restarts 20 times all arrive, in order per publisher.
//
// 2,000 QoS 1 messages from 4 publishers while the broker
// is stopped and started 20 times on the same port. Every message arrives,
// in order per publisher; duplicates are allowed (at least once) and logged.
func TestRestartStorm(t *testing.T) {
	if testing.Short() {
		t.Skip("broker restart storm")
	}
	b := mqtttest.NewBroker(t, mqtttest.Options{})
	rx := newSession(t, b, "gw-rx", tempOutbox(t), func(c *Config) { c.SubscriberBuffer = 8192 })
	tx := newSession(t, b, "gw-tx", tempOutbox(t), nil)
	awaitConnected(t, rx)
	sub, err := rx.Subscribe(context.Background(), "storm/#")
	require.NoError(t, err)

	const publishers, each, restarts = 4, 500, 20
	var wg sync.WaitGroup
	for p := range publishers {
		wg.Go(func() {
			for i := range each {
				_, err := tx.Publish(context.Background(), fmt.Sprintf("storm/%d", p), fmt.Appendf(nil, "%d", i), 1)
				if !assert.NoError(t, err) {
					return
				}
			}
		})
	}

	type key struct{ p, i int }
	seen := map[key]int{}
	last := make([]int, publishers)
	for i := range last {
		last[i] = -1
	}
	dups, outOfOrder := 0, 0
	total := publishers * each
	restarted := 0
	deadline := time.After(5 * waitLimit)
	for len(seen) < total {
		// Restart the broker each time another 1/21 of the messages arrived.
		if restarted < restarts && len(seen) >= (restarted+1)*total/(restarts+1) {
			require.NoError(t, b.Stop())
			require.NoError(t, b.Start())
			restarted++
		}
		select {
		case m := <-sub.C:
			var p, i int
			_, err := fmt.Sscanf(m.Topic, "storm/%d", &p)
			require.NoError(t, err)
			_, err = fmt.Sscanf(string(m.Payload), "%d", &i)
			require.NoError(t, err, "message on %s with payload %q", m.Topic, m.Payload)
			k := key{p, i}
			if seen[k] > 0 {
				dups++
			} else if i < last[p] {
				outOfOrder++
			}
			seen[k]++
			if i > last[p] && seen[k] == 1 {
				last[p] = i
			}
		case <-deadline:
			t.Fatalf("only %d of %d distinct messages arrived after %d restarts; tx status %+v", len(seen), total, restarted, tx.Status())
		}
	}
	wg.Wait()
	t.Logf("%d distinct messages, %d duplicates, %d broker restarts, %d reconnects of the publisher",
		len(seen), dups, restarted, tx.Status().Reconnects)
	assert.Equal(t, restarts, restarted)
	assert.Zero(t, outOfOrder, "first deliveries must keep per-publisher order")
	assert.GreaterOrEqual(t, tx.Status().Reconnects, uint64(1))
	assert.Zero(t, rx.Status().Dropped)
	awaitDrained(t, tx)
}

// TestConnectFailuresBackOff ensures that connection failures leave a clear error and a bounded, growing backoff, and a broker that comes back is reconnected.
//
// Refused certificate, wrong CA and a broker
// that is down all leave a clear error in Status and a growing backoff up
// to the cap, without spinning: connection attempts are bounded and the
// process uses little CPU meanwhile. A broker that comes back is reconnected.
func TestConnectFailuresBackOff(t *testing.T) {
	tests := []struct {
		name    string
		setup   func(t *testing.T, b *mqtttest.Broker, c *Config)
		wantErr string
		recover bool
	}{
		{"device certificate from an untrusted CA", func(t *testing.T, b *mqtttest.Broker, c *Config) {
			cert := mqtttest.Device(t, mqtttest.NewPKI(t), "gw-rogue").TLSCertificate()
			c.Certificate = &cert
		}, "", false},
		{"wrong CA for the broker", func(t *testing.T, b *mqtttest.Broker, c *Config) {
			c.RootCAs = mqtttest.NewPKI(t).Pool()
		}, "certificate", false},
		{"broker down", func(t *testing.T, b *mqtttest.Broker, c *Config) {
			require.NoError(t, b.Stop())
		}, "refused", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := mqtttest.NewBroker(t, mqtttest.Options{})
			const minB, maxB = 5 * time.Millisecond, 80 * time.Millisecond
			n := 0
			var mu sync.Mutex
			s := newSession(t, b, "gw-fail", tempOutbox(t), func(c *Config) {
				c.MinBackoff, c.MaxBackoff = minB, maxB
				tc.setup(t, b, c)
			})
			s.mu.Lock()
			s.attemptHook = func() { mu.Lock(); n++; mu.Unlock() }
			s.mu.Unlock()
			count := func() int { mu.Lock(); defer mu.Unlock(); return n }

			// Let the backoff reach the cap (min·2^n ≥ max after 4 failures).
			require.Eventually(t, func() bool { return s.Status().Failures >= 6 }, waitLimit, time.Millisecond)
			st := s.Status()
			assert.Equal(t, StateDisconnected, st.State)
			assert.NotEmpty(t, st.LastError)
			assert.Contains(t, st.LastError, b.Addr, "the error names the broker")
			if tc.wantErr != "" {
				assert.Contains(t, st.LastError, tc.wantErr)
			}
			t.Logf("status error: %s", st.LastError)

			// Over the next 15 attempts: each waits uniformly in [0, cap),
			// so they cannot all be near-instant (P < 1e-12), and the CPU
			// stays mostly idle.
			start, cpu0 := time.Now(), cpuTime(t)
			c0 := count()
			require.Eventually(t, func() bool { return count() >= c0+15 }, waitLimit, time.Millisecond)
			wall, cpu := time.Since(start), cpuTime(t)-cpu0
			assert.Greater(t, wall, 15*maxB/20, "15 attempts at the cap took only %v: backoff not applied", wall)
			assert.Less(t, cpu, wall/2, "CPU %v over %v wall: busy loop", cpu, wall)

			if tc.recover {
				require.NoError(t, b.Start())
				awaitConnected(t, s)
				assert.Equal(t, StateConnected, s.Status().State)
			}
		})
	}
}

func cpuTime(t *testing.T) time.Duration {
	var ru syscall.Rusage
	require.NoError(t, syscall.Getrusage(syscall.RUSAGE_SELF, &ru))
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
