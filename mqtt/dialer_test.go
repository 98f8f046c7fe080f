package mqtt

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/autopaho"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestDialerSerialisesPackets ensures that the connection the dialer hands
// paho is a sync.Locker. paho writes one packet in several Writes (fixed
// header, variable header, properties, payload) and takes the connection's
// lock around them only when it has one; without it the pinger's PINGREQ,
// written from its own goroutine, lands inside a PUBLISH and the broker
// reads a corrupt payload, then a protocol error.
func TestDialerSerialisesPackets(t *testing.T) {
	srv := httptest.NewTLSServer(http.NotFoundHandler())
	t.Cleanup(srv.Close)
	u, err := url.Parse(srv.URL)
	require.NoError(t, err)
	tlsCfg := srv.Client().Transport.(*http.Transport).TLSClientConfig
	conn, err := dialer(tlsCfg, 5*time.Second)(context.Background(), autopaho.ClientConfig{}, u)
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	_, ok := conn.(sync.Locker)
	assert.True(t, ok, "%T serialises no packet writes", conn)
}
