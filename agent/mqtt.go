package agent

import (
	"context"
	"crypto/x509"

	"github.com/tetherd/tether/credprovider"
	"github.com/tetherd/tether/mqtt"
)

// mqttRoots returns the CAs that verify the broker.
func (a *Agent) mqttRoots() (*x509.CertPool, error) { return brokerRoots(a.cfg) }

// brokerRoots returns the CAs that verify cfg's broker: mqtt.ca_file, or
// Amazon's roots.
func brokerRoots(cfg *Config) (*x509.CertPool, error) {
	if f := cfg.MQTT.CAFile; f != "" {
		p, err := credprovider.LoadCAFile(f)
		if err != nil {
			return nil, configFailure("mqtt.ca_file: %w", err)
		}
		return p, nil
	}
	return credprovider.AmazonRootCAs(), nil
}

// sessionOptions are the [mqtt] settings of the session but what needs the
// identity, the store or a logger: what validation checks and startSession
// uses.
func sessionOptions(cfg *Config) mqtt.Config {
	m := cfg.MQTT
	return mqtt.Config{
		Endpoint:      m.Endpoint,
		Port:          m.Port,
		ThingName:     cfg.Identity.ThingName,
		ClientID:      m.ClientID,
		KeepAlive:     m.KeepAlive.Duration,
		SessionExpiry: m.SessionExpiry.Duration,
		MaxBackoff:    m.BackoffCap.Duration,
	}
}

// startSession starts the device's one MQTT session on the outbox, when
// [mqtt] names an endpoint and the session is not the previous generation's.
func (a *Agent) startSession(ctx context.Context) error {
	if a.outbox == nil || a.borrowed.mqtt {
		return nil
	}
	m := a.cfg.MQTT
	roots, err := a.mqttRoots()
	if err != nil {
		return err
	}
	cert := a.id.Certificate()
	o := sessionOptions(a.cfg)
	o.Certificate, o.RootCAs, o.Outbox, o.Logger = &cert, roots, a.outbox, a.log
	s, err := mqtt.New(ctx, o)
	if err != nil {
		return configFailure("%w", optionsError("", mqttKeys, err))
	}
	a.mqttMu.Lock()
	a.mqtt = s
	a.mqttMu.Unlock()
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
