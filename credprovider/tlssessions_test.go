package credprovider_test

import (
	"context"
	"crypto/tls"
	"net/http/httptrace"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tetherd/tether/credprovider"
	"github.com/tetherd/tether/credprovider/iotcredtest"
)

// TestIoTResumesTLSSessions ensures that a refresh over a new connection
// resumes the last TLS session (no certificate chain, no signature), and
// that a new device identity is presented in a full handshake, never hidden
// behind a session of the old one.
func TestIoTResumesTLSSessions(t *testing.T) {
	s, err := iotcredtest.NewServer(iotcredtest.WithRoleAlias("gw-role", time.Hour))
	require.NoError(t, err)
	t.Cleanup(s.Close)
	dev1, err := s.PKI.NewDevice("gw-0001", iotcredtest.ECDSAP256)
	require.NoError(t, err)
	dev2, err := s.PKI.NewDevice("gw-0001-rotated", iotcredtest.ECDSAP256)
	require.NoError(t, err)
	p, err := credprovider.NewIoT(credprovider.IoTOptions{Endpoint: s.Endpoint, RoleAlias: "gw-role", ThingName: "gw-0001",
		Certificate: dev1.TLSCertificate(), RootCAs: s.Pool()})
	require.NoError(t, err)

	fetch := func() (resumed bool) {
		t.Helper()
		ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{
			TLSHandshakeDone: func(cs tls.ConnectionState, _ error) { resumed = cs.DidResume },
		})
		p.CloseIdleConnections() // a refresh 45 minutes later finds no open connection
		_, err := p.Retrieve(ctx)
		require.NoError(t, err)
		return resumed
	}
	assert.False(t, fetch(), "the first fetch makes a full handshake")
	assert.True(t, fetch(), "the next one resumes")
	assert.True(t, fetch())
	p.SetCertificate(dev2.TLSCertificate())
	assert.False(t, fetch(), "a new identity: a full handshake")
	assert.True(t, fetch())
	g := s.Grants()
	require.Len(t, g, 5)
	assert.Equal(t, []string{"gw-0001", "gw-0001", "gw-0001", "gw-0001-rotated", "gw-0001-rotated"},
		[]string{g[0].CommonName, g[1].CommonName, g[2].CommonName, g[3].CommonName, g[4].CommonName})

	// An identity function may change between handshakes unseen: no resumption.
	q, err := credprovider.NewIoT(credprovider.IoTOptions{Endpoint: s.Endpoint, RoleAlias: "gw-role", ThingName: "gw-0001",
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			c := dev1.TLSCertificate()
			return &c, nil
		},
		RootCAs: s.Pool()})
	require.NoError(t, err)
	p = q
	assert.False(t, fetch())
	assert.False(t, fetch())
}
