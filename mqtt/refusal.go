package mqtt

import (
	"errors"
	"net"

	"github.com/eclipse/paho.golang/autopaho"
)

// IdentityRefused reports whether err, from a connection attempt, is the
// broker refusing the device's identity rather than a network failure: a
// CONNACK that says the client is not authorised (reason 0x86 bad user name
// or password, 0x87 not authorized, 0x8A banned, 0x8C bad authentication
// method), or a TLS alert the broker sent about the client certificate
// (AWS IoT Core and mosquitto answer an unknown, revoked, expired or
// inactive certificate with one of these). Certificate rotation uses it to
// tell a new certificate the broker will not take from a broker that is
// down.
func IdentityRefused(err error) bool {
	var ce *autopaho.ConnackError
	if errors.As(err, &ce) {
		switch ce.ReasonCode {
		case 0x86, 0x87, 0x8A, 0x8C:
			return true
		}
		return false
	}
	// crypto/tls reports an alert from the peer as a *net.OpError with Op
	// "remote error" wrapping its (unexported) alert type, whose text is
	// the alert's name.
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "remote error" && op.Err != nil {
		_, ok := certificateAlerts[op.Err.Error()]
		return ok
	}
	return false
}

// certificateAlerts are the TLS alerts (RFC 8446 §6.2) a server sends
// about the client's certificate, by crypto/tls's names for them.
var certificateAlerts = map[string]struct{}{
	"tls: bad certificate":               {},
	"tls: unsupported certificate":       {},
	"tls: revoked certificate":           {},
	"tls: expired certificate":           {},
	"tls: unknown certificate":           {},
	"tls: unknown certificate authority": {},
	"tls: access denied":                 {},
	"tls: certificate required":          {},
}
