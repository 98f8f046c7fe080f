package mqtt

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"time"

	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/paho"
)

// ConnectRefusedError is a CONNACK that refused the connection.
type ConnectRefusedError struct {
	Endpoint, ClientID string
	// Code is the MQTT v5 reason code (0x80 and up).
	Code   byte
	Reason string // the broker's reason string, if any
}

func (e *ConnectRefusedError) Error() string {
	msg := fmt.Sprintf("%s refused the CONNECT of client id %q: reason 0x%02x", e.Endpoint, e.ClientID, e.Code)
	if e.Reason != "" {
		msg += " " + e.Reason
	}
	return msg
}

// ProbeConnect connects once to the broker cfg names, as the session would
// (its identity, client id, CleanStart false and session expiry, so the
// broker keeps the session), and disconnects at once. It acknowledges
// nothing: messages the broker queued for the session stay queued for it.
// The error is a *ConnectRefusedError for a refusal, or the dial's. It must
// not run while a session with the same client id is connected: the broker
// would drop one of the two.
func ProbeConnect(ctx context.Context, cfg Config) error {
	if cfg.Certificate == nil && cfg.GetClientCertificate == nil {
		return errors.New("mqtt: no device certificate")
	}
	host, port := SplitEndpoint(cfg.Endpoint, cfg.Port)
	clientID := cmpOr(cfg.ClientID, cfg.ThingName)
	setDefault(&cfg.KeepAlive, DefaultKeepAlive)
	setDefault(&cfg.SessionExpiry, DefaultSessionExpiry)
	setDefault(&cfg.ConnectTimeout, DefaultConnectTimeout)
	endpoint := net.JoinHostPort(host, strconv.Itoa(port))
	ctx, cancel := context.WithTimeout(ctx, cfg.ConnectTimeout)
	defer cancel()
	conn, err := dialer(cfg.tlsConfig(host, port), cfg.ConnectTimeout)(ctx, autopaho.ClientConfig{}, &url.URL{Host: endpoint})
	if err != nil {
		return fmt.Errorf("connection to %s: %w", endpoint, err)
	}
	defer conn.Close()
	c := paho.NewClient(paho.ClientConfig{ClientID: clientID, Conn: conn, EnableManualAcknowledgment: true})
	expiry := uint32(cfg.SessionExpiry / time.Second)
	ca, err := c.Connect(ctx, &paho.Connect{
		ClientID: clientID, KeepAlive: uint16(min(cfg.KeepAlive/time.Second, 65535)), CleanStart: false,
		Properties: &paho.ConnectProperties{SessionExpiryInterval: &expiry},
	})
	if err != nil {
		if ca != nil && ca.ReasonCode >= 0x80 {
			re := &ConnectRefusedError{Endpoint: endpoint, ClientID: clientID, Code: ca.ReasonCode}
			if ca.Properties != nil {
				re.Reason = ca.Properties.ReasonString
			}
			return re
		}
		return fmt.Errorf("connection to %s: %w", endpoint, err)
	}
	return c.Disconnect(&paho.Disconnect{ReasonCode: 0})
}
