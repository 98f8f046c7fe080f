package mqtt

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tetherd/tether/mqtt/mqtttest"
)

// TestPoisonMessageDoesNotBlockDelivery ensures that a queued message that
// mosquitto answers by closing the connection (a topic with a control
// character, as queued by an older tether whose validation let it through)
// is moved to the dead letters after a few attempts, is counted in the
// status, and that every message behind it is delivered.
func TestPoisonMessageDoesNotBlockDelivery(t *testing.T) {
	for _, topic := range []string{"dt/bad\x01topic", "dt/bad\ntopic", "dt/bad\uffff", "dt/bad\u0085"} {
		t.Run(fmt.Sprintf("%q", topic), func(t *testing.T) {
			b := mqtttest.NewBroker(t, mqtttest.Options{})
			sub := newSession(t, b, "gw-sub", tempOutbox(t), nil)
			awaitConnected(t, sub)
			got, err := sub.Subscribe(context.Background(), "dt/#")
			require.NoError(t, err)

			ob := tempOutbox(t)
			// Queued before the session starts, bypassing Publish's checks,
			// as a state file written by an older build would hold it.
			_, err = ob.Enqueue(context.Background(), topic, []byte("poison"), 1)
			require.NoError(t, err)
			for i := range 3 {
				_, err := ob.Enqueue(context.Background(), "dt/good", fmt.Appendf(nil, "m%d", i), 1)
				require.NoError(t, err)
			}
			pub := newSession(t, b, "gw-pub", ob, nil)
			for i := range 3 {
				assert.Equal(t, fmt.Sprintf("m%d", i), string(receive(t, got).Payload))
			}
			awaitDrained(t, pub)
			st := pub.Status()
			assert.Equal(t, 1, st.Outbox.DeadLetters)
			assert.Equal(t, uint64(1), st.Rejected)
			assert.Contains(t, st.Outbox.LastDeadLetter, "closed the connection")
			dls, err := ob.DeadLetters()
			require.NoError(t, err)
			require.Len(t, dls, 1)
			assert.Equal(t, topic, dls[0].Topic)

			// Delivery goes on afterwards, too.
			_, err = pub.Publish(context.Background(), "dt/good", []byte("after"), 1)
			require.NoError(t, err)
			assert.Equal(t, "after", string(receive(t, got).Payload))
		})
	}
}

// TestRefusedPublishGoesToDeadLetters ensures that a message mosquitto
// refuses with a PUBACK reason code >= 0x80 (its ACL denies the topic) is
// kept in the dead letters with the reason, and the next one is delivered.
func TestRefusedPublishGoesToDeadLetters(t *testing.T) {
	acl := filepath.Join(t.TempDir(), "acl")
	require.NoError(t, os.WriteFile(acl, []byte("pattern readwrite ok/#\n"), 0o644))
	b := mqtttest.NewBroker(t, mqtttest.Options{ExtraConfig: "acl_file " + acl + "\n"})
	sub := newSession(t, b, "gw-sub", tempOutbox(t), nil)
	awaitConnected(t, sub)
	got, err := sub.Subscribe(context.Background(), "ok/#")
	require.NoError(t, err)

	ob := tempOutbox(t)
	pub := newSession(t, b, "gw-pub", ob, nil)
	awaitConnected(t, pub)
	_, err = pub.Publish(context.Background(), "denied/x", []byte("refused"), 1)
	require.NoError(t, err)
	_, err = pub.Publish(context.Background(), "ok/x", []byte("delivered"), 1)
	require.NoError(t, err)
	assert.Equal(t, "delivered", string(receive(t, got).Payload))
	awaitDrained(t, pub)
	st := pub.Status()
	assert.Equal(t, 1, st.Outbox.DeadLetters, "%+v", st)
	assert.Contains(t, st.Outbox.LastDeadLetter, "PUBACK reason 0x87")
	dls, err := ob.DeadLetters()
	require.NoError(t, err)
	require.Len(t, dls, 1)
	assert.Equal(t, "denied/x", dls[0].Topic)
	assert.Equal(t, []byte("refused"), dls[0].Payload)
}
