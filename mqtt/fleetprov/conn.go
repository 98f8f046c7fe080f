package fleetprov

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/eclipse/paho.golang/packets"
	"github.com/eclipse/paho.golang/paho"

	"github.com/tetherd/tether/mqtt"
)

// DialConfig configures Dial.
type DialConfig struct {
	// Endpoint is host or host:port; Port applies when it has none
	// (default 8883; 443 selects ALPN "x-amzn-mqtt-ca").
	Endpoint string
	Port     int
	// ClientID must be one the certificate's policy allows to connect.
	ClientID string
	// Certificate is the identity of the connection (the claim, or a
	// pending device certificate proving itself).
	Certificate tls.Certificate
	// RootCAs verifies the broker; nil uses the system pool.
	RootCAs *x509.CertPool
	// Timeout bounds the TCP, TLS and MQTT handshakes; default 10 s.
	Timeout time.Duration
}

// DirectConn is one MQTT v5 connection with a clean session, for a few
// requests; it does not reconnect. It implements Conn.
type DirectConn struct {
	c *paho.Client

	mu   sync.Mutex
	subs map[string]map[chan Message]struct{}
}

// Dial connects to the broker with cfg.Certificate and returns once the
// broker accepted the connection (CONNACK success): the proof that the
// broker trusts the certificate.
func Dial(ctx context.Context, cfg DialConfig) (*DirectConn, error) {
	if cfg.ClientID == "" {
		return nil, errors.New("mqtt dial: no client id")
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Second
	}
	host, port := cfg.Endpoint, cfg.Port
	if h, p, err := net.SplitHostPort(cfg.Endpoint); err == nil {
		n, err := strconv.Atoi(p)
		if err != nil {
			return nil, fmt.Errorf("mqtt dial: endpoint %q has an invalid port", cfg.Endpoint)
		}
		host, port = h, n
	}
	if host == "" {
		return nil, errors.New("mqtt dial: no endpoint: set [mqtt] endpoint")
	}
	if port == 0 {
		port = mqtt.DefaultPort
	}
	tcfg := &tls.Config{
		RootCAs:      cfg.RootCAs,
		ServerName:   host,
		Certificates: []tls.Certificate{cfg.Certificate},
		MinVersion:   tls.VersionTLS12,
	}
	if port == 443 {
		tcfg.NextProtos = []string{mqtt.ALPNProtocol}
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	addr := net.JoinHostPort(host, strconv.Itoa(port))
	d := tls.Dialer{Config: tcfg}
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("mqtt dial %s: %w", addr, err)
	}
	dc := &DirectConn{subs: map[string]map[chan Message]struct{}{}}
	dc.c = paho.NewClient(paho.ClientConfig{
		Conn:              packets.NewThreadSafeConn(nc),
		ClientID:          cfg.ClientID,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){dc.route},
	})
	ca, err := dc.c.Connect(ctx, &paho.Connect{ClientID: cfg.ClientID, KeepAlive: 30, CleanStart: true})
	if err != nil {
		nc.Close()
		if ca != nil && ca.ReasonCode >= 0x80 {
			reason := ""
			if ca.Properties != nil {
				reason = ca.Properties.ReasonString
			}
			return nil, fmt.Errorf("mqtt dial %s: broker refused the connection (CONNACK 0x%02x %s)", addr, ca.ReasonCode, reason)
		}
		return nil, fmt.Errorf("mqtt dial %s: %w", addr, err)
	}
	return dc, nil
}

func (dc *DirectConn) route(pr paho.PublishReceived) (bool, error) {
	p := pr.Packet
	dc.mu.Lock()
	defer dc.mu.Unlock()
	for f, chans := range dc.subs {
		if !mqtt.Match(f, p.Topic) {
			continue
		}
		for ch := range chans {
			select {
			case ch <- Message{Topic: p.Topic, Payload: p.Payload}:
			default: // a reply nobody waits for any more
			}
		}
	}
	return true, nil
}

// Subscribe implements Conn.
func (dc *DirectConn) Subscribe(ctx context.Context, filter string) (<-chan Message, func(), error) {
	ch := make(chan Message, 64)
	dc.mu.Lock()
	first := dc.subs[filter] == nil
	if first {
		dc.subs[filter] = map[chan Message]struct{}{}
	}
	dc.subs[filter][ch] = struct{}{}
	dc.mu.Unlock()
	stop := func() {
		dc.mu.Lock()
		delete(dc.subs[filter], ch)
		if len(dc.subs[filter]) == 0 {
			delete(dc.subs, filter)
		}
		dc.mu.Unlock()
	}
	if first {
		sa, err := dc.c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: filter, QoS: 1}}})
		if err == nil && sa != nil && len(sa.Reasons) > 0 && sa.Reasons[0] >= 0x80 {
			err = fmt.Errorf("broker refused the subscription (reason 0x%02x): check the policy allows iot:Subscribe and iot:Receive on it", sa.Reasons[0])
		}
		if err != nil {
			stop()
			return nil, nil, err
		}
	}
	return ch, stop, nil
}

// Publish implements Conn.
func (dc *DirectConn) Publish(ctx context.Context, topic string, payload []byte) error {
	pr, err := dc.c.Publish(ctx, &paho.Publish{Topic: topic, QoS: 1, Payload: payload})
	if err != nil {
		return err
	}
	if pr != nil && pr.ReasonCode >= 0x80 {
		return fmt.Errorf("broker refused the message (PUBACK 0x%02x): check the policy allows iot:Publish on %s", pr.ReasonCode, topic)
	}
	return nil
}

// Close disconnects.
func (dc *DirectConn) Close() error {
	err := dc.c.Disconnect(&paho.Disconnect{ReasonCode: 0})
	select {
	case <-dc.c.Done():
	case <-time.After(5 * time.Second):
	}
	return err
}

// SessionConn carries requests over the device's long-lived session, so a
// rotation needs no second connection (AWS IoT allows one per client id).
func SessionConn(s *mqtt.Session) Conn { return sessionConn{s} }

type sessionConn struct{ s *mqtt.Session }

func (c sessionConn) Subscribe(ctx context.Context, filter string) (<-chan Message, func(), error) {
	sub, err := c.s.Subscribe(ctx, filter)
	if err != nil {
		return nil, nil, err
	}
	ch := make(chan Message, 4)
	done := make(chan struct{})
	go func() {
		defer close(ch)
		for {
			select {
			case m, ok := <-sub.C:
				if !ok {
					return
				}
				select {
				case ch <- Message{Topic: m.Topic, Payload: m.Payload}:
				default:
				}
			case <-done:
				return
			}
		}
	}()
	var once sync.Once
	return ch, func() { once.Do(func() { close(done); sub.Close() }) }, nil
}

func (c sessionConn) Publish(ctx context.Context, topic string, payload []byte) error {
	return c.s.PublishNow(ctx, topic, payload)
}
