//go:build cgo && !nopkcs11

package mqtt

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tetherd/tether/hsm"
	"github.com/tetherd/tether/hsm/hsmtest"
	"github.com/tetherd/tether/mqtt/mqtttest"
)

// TestRoundTripSoftHSM: the device key never leaves a SoftHSM token; the
// TLS handshake with mosquitto signs through PKCS#11.
func TestRoundTripSoftHSM(t *testing.T) {
	b := mqtttest.NewBroker(t, mqtttest.Options{})
	tok := hsmtest.NewToken(t, "tether-mqtt")
	uri, pub := tok.GenerateKey(t, "device", hsm.KeyECP256)
	certFile, _ := hsmtest.Certificate(t, "gw-hsm", pub, b.PKI.CA, b.PKI.CAKey, time.Now().Add(-time.Hour), time.Now().Add(time.Hour))
	id, err := hsm.Open(context.Background(), certFile, uri)
	require.NoError(t, err)
	t.Cleanup(func() { _ = id.Close() })
	cert := id.Certificate()

	s := newSession(t, b, "gw-hsm", tempOutbox(t), func(c *Config) { c.Certificate = &cert })
	awaitConnected(t, s)
	sub, err := s.Subscribe(context.Background(), "hsm/echo")
	require.NoError(t, err)
	_, err = s.Publish(context.Background(), "hsm/echo", []byte("signed by the token"), 1)
	require.NoError(t, err)
	assert.Equal(t, "signed by the token", string(receive(t, sub).Payload))
}
