package mqtt

import (
	"context"
	"errors"
	"fmt"
	"math/big"
	"net"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/autopaho"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tetherd/tether/mqtt/mqtttest"
)

// tlsAlert is what crypto/tls returns for an alert from the peer: a
// *net.OpError "remote error" around the alert, whose text is its name.
type tlsAlert string

func (a tlsAlert) Error() string { return string(a) }

// TestIdentityRefused ensures that a refusal of the device's identity (a
// CONNACK "not authorized", a TLS alert about the client certificate) is
// told apart from a broker that is down or misbehaves.
func TestIdentityRefused(t *testing.T) {
	remote := func(alert string) error {
		return fmt.Errorf("failed to connect: %w", &net.OpError{Op: "remote error", Err: tlsAlert(alert)})
	}
	cases := []struct {
		name string
		err  error
		want bool
	}{
		{"CONNACK not authorized", &autopaho.ConnackError{ReasonCode: 0x87}, true},
		{"CONNACK bad user name or password", fmt.Errorf("x: %w", &autopaho.ConnackError{ReasonCode: 0x86}), true},
		{"CONNACK banned", &autopaho.ConnackError{ReasonCode: 0x8A}, true},
		{"CONNACK server busy", &autopaho.ConnackError{ReasonCode: 0x89}, false},
		{"CONNACK server unavailable", &autopaho.ConnackError{ReasonCode: 0x88}, false},
		{"revoked certificate", remote("tls: revoked certificate"), true},
		{"bad certificate", remote("tls: bad certificate"), true},
		{"unknown certificate authority", remote("tls: unknown certificate authority"), true},
		{"internal error alert", remote("tls: internal error"), false},
		{"connection refused", &net.OpError{Op: "dial", Err: errors.New("connect: connection refused")}, false},
		{"timeout", context.DeadlineExceeded, false},
		{"nil", nil, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.want, IdentityRefused(tc.err))
		})
	}
}

// TestSessionCountsIdentityRefusals ensures that a session whose
// certificate the broker revoked (mosquitto with a CRL) counts the refused
// attempts in its status, and that attempts against a broker that is down
// reset the count: only a refusal of the identity is counted.
func TestSessionCountsIdentityRefusals(t *testing.T) {
	b := mqtttest.NewBroker(t, mqtttest.Options{CRL: true})
	dev := mqtttest.Device(t, b.PKI, "revoked-device")
	require.NoError(t, b.RefuseCertificates([]*big.Int{dev.Cert.SerialNumber}))
	cert := dev.TLSCertificate()
	s := newSession(t, b, "revoked-device", tempOutbox(t), func(c *Config) { c.Certificate = &cert })
	require.Eventually(t, func() bool { return s.Status().IdentityRefused >= 2 }, waitLimit, 10*time.Millisecond,
		"refusals not counted: %+v", s.Status())
	assert.Equal(t, StateDisconnected, s.Status().State)
	require.NoError(t, b.Stop())
	require.Eventually(t, func() bool { return s.Status().IdentityRefused == 0 }, waitLimit, 10*time.Millisecond,
		"a broker that is down is not a refusal: %+v", s.Status())
}
