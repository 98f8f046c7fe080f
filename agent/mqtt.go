package agent

import (
	"context"

	"github.com/tetherd/tether/mqtt"
	"github.com/tetherd/tether/store"
)

// startMQTT opens the durable outbox and the device's one MQTT session,
// when [mqtt] names an endpoint.
func (a *Agent) startMQTT(ctx context.Context) error {
	m := a.cfg.MQTT
	if m.Endpoint == "" {
		return nil
	}
	roots, err := mqttRoots(a.cfg)
	if err != nil {
		return err
	}
	ob, err := a.db.Outbox(store.OutboxOptions{MaxMessages: m.OutboxMaxMessages, MaxBytes: m.OutboxMaxBytes})
	if err != nil {
		return runtimeFailure("mqtt outbox: %w", err)
	}
	a.outbox = ob
	cert := a.id.Certificate()
	s, err := mqtt.New(ctx, mqtt.Config{
		Endpoint:      m.Endpoint,
		Port:          m.Port,
		ThingName:     a.cfg.Identity.ThingName,
		ClientID:      m.ClientID,
		Certificate:   &cert,
		RootCAs:       roots,
		KeepAlive:     m.KeepAlive.Duration,
		SessionExpiry: m.SessionExpiry.Duration,
		MaxBackoff:    m.BackoffCap.Duration,
		Outbox:        ob,
		Logger:        a.log,
	})
	if err != nil {
		return configFailure("mqtt: %w", err)
	}
	a.mqtt = s
	for _, sub := range m.Subscribe {
		// The agent holds these for the device, so the broker keeps queuing
		// their messages while it is away; local programs receive them
		// through GET /v1/mqtt/subscribe.
		h, err := s.Subscribe(ctx, sub.Topic)
		if err != nil {
			// The filter was validated with the configuration: this is the
			// broker refusing it (a policy), which must not stop the
			// credentials from being served.
			a.log.Warn("mqtt subscription refused; check the device's IoT policy", "topic", sub.Topic, "err", err)
			continue
		}
		go func() {
			for msg := range h.C {
				a.log.Debug("mqtt message", "topic", msg.Topic, "bytes", len(msg.Payload))
			}
		}()
	}
	return nil
}
