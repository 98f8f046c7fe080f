package mqtt

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tetherd/tether/mqtt/mqtttest"
)

// TestPublishLatency ensures that every message mosquitto acknowledges (QoS
// 1) or that is written (QoS 0) is observed once in the publish latency
// histogram, from its acceptance, and that a clock stepped back counts as no
// wait rather than a negative one.
func TestPublishLatency(t *testing.T) {
	b := mqtttest.NewBroker(t, mqtttest.Options{})
	s := newSession(t, b, "gw-latency", tempOutbox(t), nil)
	awaitConnected(t, s)
	assert.Zero(t, s.PublishLatency().Count())

	start := time.Now()
	for _, qos := range []byte{1, 1, 0} {
		_, err := s.Publish(context.Background(), "dt/gw-latency/x", []byte("m"), qos)
		require.NoError(t, err)
	}
	awaitDrained(t, s)
	require.Eventually(t, func() bool { return s.PublishLatency().Count() == 3 }, waitLimit, 5*time.Millisecond)
	h := s.PublishLatency()
	assert.Equal(t, publishLatencyBounds, h.Bounds)
	assert.Greater(t, h.Sum, 0.0)
	assert.LessOrEqual(t, h.Sum, 3*time.Since(start).Seconds())

	now := time.Now()
	s.observeLatency(now.Add(time.Minute), now)
	s.observeLatency(time.Time{}, now) // no acceptance time: not observed
	after := s.PublishLatency()
	assert.Equal(t, h.Count()+1, after.Count())
	assert.Equal(t, h.Counts[0]+1, after.Counts[0], "the stepped-back clock lands in the first bucket")
	assert.Equal(t, h.Sum, after.Sum)
}
