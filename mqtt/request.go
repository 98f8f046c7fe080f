package mqtt

import (
	"context"
	"fmt"

	"github.com/eclipse/paho.golang/paho"
)

// PublishNow sends payload to topic at QoS 1 over the current connection,
// bypassing the outbox, and returns once the broker acknowledged it. It is
// for requests of request/reply APIs (certificate rotation), which must not
// be replayed by a later connection after their caller gave up. It fails at
// once when the session is not connected.
func (s *Session) PublishNow(ctx context.Context, topic string, payload []byte) error {
	if err := ValidatePublish(topic, payload, 1); err != nil {
		return err
	}
	pr, err := s.cm.Publish(ctx, &paho.Publish{Topic: topic, QoS: 1, Payload: payload})
	if err != nil {
		return fmt.Errorf("mqtt: publish to %q at %s: %w", topic, s.endpoint, err)
	}
	if pr != nil && pr.ReasonCode >= 0x80 {
		return fmt.Errorf("mqtt: broker refused the message to %q (PUBACK 0x%02x): check the device policy allows iot:Publish on it", topic, pr.ReasonCode)
	}
	return nil
}
