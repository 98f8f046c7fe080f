package mqtt

import (
	"context"
	"crypto/tls"
	"math/rand/v2"
	"net"
	"net/url"
	"time"

	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/packets"
	"github.com/eclipse/paho.golang/paho"
)

// ReconnectDelay is the session's reconnect rule: after failures
// consecutive failed attempts, a delay drawn uniformly (from r, or the global
// source when r is nil) from [0, min(maxBackoff, minBackoff·2^failures)).
// It is exported so that a fleet's reconnect storm can be simulated with the
// rule the agent runs (softhsm-test/fleetsim).
func ReconnectDelay(minBackoff, maxBackoff time.Duration, failures int, r *rand.Rand) time.Duration {
	ceiling := maxBackoff
	if failures < 30 {
		ceiling = min(maxBackoff, minBackoff<<failures)
	}
	if ceiling <= 0 {
		return 0
	}
	if r == nil {
		return rand.N(ceiling)
	}
	return time.Duration(r.Int64N(int64(ceiling)))
}

// receiveMaximum is how many QoS 1 messages the broker may have in flight to
// the session at once (MQTT v5 Receive Maximum). AWS IoT Core sends at most
// 100; paho sizes a buffer by it (65,535 when unset: 512 KiB of heap).
const receiveMaximum = 100

// withReceiveMaximum sets receiveMaximum on every CONNECT.
func withReceiveMaximum(cp *paho.Connect, _ *url.URL) (*paho.Connect, error) {
	if cp.Properties == nil {
		cp.Properties = &paho.ConnectProperties{}
	}
	rm := uint16(receiveMaximum)
	cp.Properties.ReceiveMaximum = &rm
	return cp, nil
}

// dialer connects with TLS and without TCP keepalive probes: the MQTT
// keep-alive already proves the connection alive, and Go's default probes
// every 15 s of idleness would double an idle session's traffic on a metered
// link. autopaho hands AttemptConnection its parent context, so the connect
// timeout is applied here. The connection is wrapped as autopaho's own
// dialers wrap theirs (packets.NewThreadSafeConn): paho writes a packet in
// several Writes and holds the connection's lock around them only when it
// is a sync.Locker, and its pinger, the acknowledgements and the publishes
// write from different goroutines; a bare tls.Conn let a PINGREQ land
// inside a PUBLISH.
func dialer(tlsCfg *tls.Config, timeout time.Duration) func(context.Context, autopaho.ClientConfig, *url.URL) (net.Conn, error) {
	return func(ctx context.Context, _ autopaho.ClientConfig, u *url.URL) (net.Conn, error) {
		ctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		d := tls.Dialer{NetDialer: &net.Dialer{KeepAlive: -1}, Config: tlsCfg}
		conn, err := d.DialContext(ctx, "tcp", u.Host)
		if err != nil {
			return nil, err
		}
		return packets.NewThreadSafeConn(conn), nil
	}
}
