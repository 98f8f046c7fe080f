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

// TestRoundTripSoftHSM ensures that the MQTT handshake with mosquitto signs
// through PKCS#11 with a key that never leaves a SoftHSM token, with the
// module as the URI says (in-process in cgo builds, `p11-kit remote` in
// static ones) and through p11-kit explicitly.
func TestRoundTripSoftHSM(t *testing.T) {
	for _, via := range []string{"default", "p11-kit remote", "p11-kit server"} {
		t.Run(via, func(t *testing.T) { roundTripSoftHSM(t, via) })
	}
}

func roundTripSoftHSM(t *testing.T, via string) {
	b := mqtttest.NewBroker(t, mqtttest.Options{})
	tok := hsmtest.NewToken(t, "tether-mqtt")
	uri := tok.URI("device")
	switch via {
	case "p11-kit remote":
		uri = tok.RemoteURI("device")
	case "p11-kit server":
		uri = tok.ServerURI(t, "device")
	}
	pub, err := hsm.GenerateKey(context.Background(), uri, hsm.KeyECP256)
	require.NoError(t, err)
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
