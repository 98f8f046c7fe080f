package fleetprov_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tetherd/tether/credprovider"
	"github.com/tetherd/tether/credprovider/iotcredtest"
	"github.com/tetherd/tether/mqtt/fleetprov"
	"github.com/tetherd/tether/mqtt/fleetprov/fleetprovtest"
	"github.com/tetherd/tether/mqtt/mqtttest"
)

// world is mosquitto (mTLS, MQTT v5, CRL), the credentials-provider
// simulator and the provisioning simulator, wired as in production.
type world struct {
	broker *mqtttest.Broker
	creds  *iotcredtest.Server
	sim    *fleetprovtest.Server
	claim  tls.Certificate
}

func newWorld(t *testing.T) *world {
	t.Helper()
	b := mqtttest.NewBroker(t, mqtttest.Options{CRL: true})
	cs, err := iotcredtest.NewServer(iotcredtest.WithRoleAlias("gateway-role", time.Hour))
	require.NoError(t, err)
	t.Cleanup(cs.Close)
	cs.TrustCA(b.PKI.CA)
	sim := fleetprovtest.NewWithBroker(t, b, fleetprovtest.Options{
		Templates: map[string]fleetprovtest.Template{
			"fleet": {Parameters: []string{"SerialNumber"}, ThingName: func(p map[string]string) (string, error) {
				return "gw-" + p["SerialNumber"], nil
			}},
			"rotate": {Parameters: []string{"ThingName"}, Existing: true},
		},
		RetiredTopic: "tether/retired",
	}, cs)
	return &world{broker: b, creds: cs, sim: sim, claim: mqtttest.Device(t, b.PKI, "claim").TLSCertificate()}
}

func (w *world) dial(t *testing.T, cert tls.Certificate, id string) (*fleetprov.DirectConn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	c, err := fleetprov.Dial(ctx, fleetprov.DialConfig{Endpoint: w.broker.Addr, ClientID: id, Certificate: cert, RootCAs: w.broker.PKI.Pool()})
	if err == nil {
		t.Cleanup(func() { c.Close() })
	}
	return c, err
}

func newCSR(t *testing.T) (*ecdsa.PrivateKey, []byte) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	require.NoError(t, err)
	return key, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}

func tlsCert(t *testing.T, certPEM string, key *ecdsa.PrivateKey) tls.Certificate {
	b, _ := pem.Decode([]byte(certPEM))
	require.NotNil(t, b)
	leaf, err := x509.ParseCertificate(b.Bytes)
	require.NoError(t, err)
	return tls.Certificate{Certificate: [][]byte{leaf.Raw}, PrivateKey: key, Leaf: leaf}
}

func (w *world) fetch(t *testing.T, cert tls.Certificate, thing string) error {
	p, err := credprovider.NewIoT(credprovider.IoTOptions{Endpoint: w.creds.Endpoint, RoleAlias: "gateway-role", ThingName: thing,
		Certificate: cert, RootCAs: w.creds.Pool()})
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	_, err = p.Retrieve(ctx)
	return err
}

// TestProvisioningByClaim ensures that the documented flow works against
// mosquitto: the claim gets a certificate for a CSR, which neither the
// broker nor the credentials provider accepts until RegisterThing activated
// it; then both do, and the template named the thing from the parameters.
func TestProvisioningByClaim(t *testing.T) {
	w := newWorld(t)
	conn, err := w.dial(t, w.claim, "claim-1")
	require.NoError(t, err)
	c := &fleetprov.Client{Conn: conn, Timeout: 10 * time.Second}
	ctx := context.Background()

	key, csr := newCSR(t)
	cert, err := c.CreateCertificateFromCSR(ctx, csr)
	require.NoError(t, err)
	assert.Equal(t, fleetprovtest.PendingActivation, w.sim.Status(cert.CertificateID))
	dev := tlsCert(t, cert.CertificatePEM, key)

	_, err = w.dial(t, dev, "gw-42")
	require.Error(t, err, "the broker must refuse a PENDING_ACTIVATION certificate")
	require.Error(t, w.fetch(t, dev, "gw-42"), "the credentials provider must refuse a PENDING_ACTIVATION certificate")

	reg, err := c.RegisterThing(ctx, "fleet", cert.CertificateOwnershipToken, map[string]string{"SerialNumber": "42"})
	require.NoError(t, err)
	assert.Equal(t, "gw-42", reg.ThingName)
	assert.Equal(t, fleetprovtest.Active, w.sim.Status(cert.CertificateID))
	assert.Equal(t, []string{cert.CertificateID}, w.sim.Things("gw-42"))

	devConn, err := w.dial(t, dev, "gw-42")
	require.NoError(t, err, "the broker must accept the activated certificate")
	require.NoError(t, w.fetch(t, dev, "gw-42"))

	t.Run("a retried RegisterThing gets the same answer", func(t *testing.T) {
		reg, err := c.RegisterThing(ctx, "fleet", cert.CertificateOwnershipToken, map[string]string{"SerialNumber": "42"})
		require.NoError(t, err)
		assert.Equal(t, "gw-42", reg.ThingName)
	})

	t.Run("rotation template attaches a second certificate to the thing", func(t *testing.T) {
		dc := &fleetprov.Client{Conn: devConn, Timeout: 10 * time.Second}
		key2, csr2 := newCSR(t)
		cert2, err := dc.CreateCertificateFromCSR(ctx, csr2)
		require.NoError(t, err)
		_, err = dc.RegisterThing(ctx, "rotate", cert2.CertificateOwnershipToken, map[string]string{"ThingName": "gw-42"})
		require.NoError(t, err)
		assert.Len(t, w.sim.Things("gw-42"), 2)
		require.NoError(t, w.fetch(t, tlsCert(t, cert2.CertificatePEM, key2), "gw-42"))

		// The retirement notice deactivates the old certificate everywhere.
		require.NoError(t, devConn.Publish(ctx, "tether/retired", fmt.Appendf(nil, `{"certificateId":%q}`, cert.CertificateID)))
		require.Eventually(t, func() bool { return w.sim.Status(cert.CertificateID) == fleetprovtest.Inactive }, 10*time.Second, 10*time.Millisecond)
		_, err = w.dial(t, dev, "gw-42-old")
		require.Error(t, err)
		require.Error(t, w.fetch(t, dev, "gw-42"))
	})
	assert.Empty(t, w.sim.Errors())
}

// TestRejections ensures that each refusal arrives as a *fleetprov.Error
// whose one-line message names the call and AWS's reason.
func TestRejections(t *testing.T) {
	w := newWorld(t)
	conn, err := w.dial(t, w.claim, "claim-2")
	require.NoError(t, err)
	c := &fleetprov.Client{Conn: conn, Timeout: 10 * time.Second}
	ctx := context.Background()
	_, csr := newCSR(t)
	cert, err := c.CreateCertificateFromCSR(ctx, csr)
	require.NoError(t, err)

	cases := []struct {
		name, template, token string
		params                map[string]string
		status                int
		code                  string
		temporary             bool
	}{
		{"unknown template", "nope", cert.CertificateOwnershipToken, nil, 404, "ResourceNotFoundException", false},
		{"missing parameter", "fleet", cert.CertificateOwnershipToken, nil, 400, "InvalidParameters", false},
		{"bad ownership token", "fleet", "forged", map[string]string{"SerialNumber": "1"}, 400, "InvalidCertificateOwnershipToken", false},
		{"rotation of an unknown thing", "rotate", cert.CertificateOwnershipToken, map[string]string{"ThingName": "ghost"}, 400, "InvalidParameters", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := c.RegisterThing(ctx, tc.template, tc.token, tc.params)
			var e *fleetprov.Error
			require.ErrorAs(t, err, &e)
			assert.Equal(t, tc.status, e.StatusCode)
			assert.Equal(t, tc.code, e.ErrorCode)
			assert.Equal(t, tc.temporary, e.Temporary())
			assert.NotContains(t, err.Error(), "\n")
			assert.Contains(t, err.Error(), "RegisterThing rejected")
		})
	}

	t.Run("a bad CSR", func(t *testing.T) {
		_, err := c.CreateCertificateFromCSR(ctx, []byte("not a csr"))
		var e *fleetprov.Error
		require.ErrorAs(t, err, &e)
		assert.Equal(t, "InvalidCertificateSigningRequest", e.ErrorCode)
	})
	assert.Equal(t, fleetprovtest.PendingActivation, w.sim.Status(cert.CertificateID), "no rejection activates the certificate")
}

// TestFaults ensures that each injected fault reaches the client as the
// service would produce it.
func TestFaults(t *testing.T) {
	w := newWorld(t)
	conn, err := w.dial(t, w.claim, "claim-3")
	require.NoError(t, err)
	c := &fleetprov.Client{Conn: conn, Timeout: 10 * time.Second}
	ctx := context.Background()

	t.Run("throttled", func(t *testing.T) {
		w.sim.Fail(fleetprovtest.CreateFromCSR, 1, fleetprovtest.FaultThrottled)
		_, csr := newCSR(t)
		_, err := c.CreateCertificateFromCSR(ctx, csr)
		var e *fleetprov.Error
		require.ErrorAs(t, err, &e)
		assert.True(t, e.Throttled())
		assert.True(t, e.Temporary())
		assert.Contains(t, err.Error(), "throttled")
	})
	t.Run("rejected", func(t *testing.T) {
		w.sim.Fail(fleetprovtest.CreateFromCSR, 1, fleetprovtest.FaultRejected)
		_, csr := newCSR(t)
		_, err := c.CreateCertificateFromCSR(ctx, csr)
		var e *fleetprov.Error
		require.ErrorAs(t, err, &e)
		assert.False(t, e.Temporary())
	})
	t.Run("no reply", func(t *testing.T) {
		w.sim.Fail(fleetprovtest.CreateFromCSR, 1, fleetprovtest.FaultNoReply)
		_, csr := newCSR(t)
		short := &fleetprov.Client{Conn: conn, Timeout: 300 * time.Millisecond}
		_, err := short.CreateCertificateFromCSR(ctx, csr)
		require.ErrorIs(t, err, fleetprov.ErrNoReply)
	})
	t.Run("reply after a delay", func(t *testing.T) {
		w.sim.Fail(fleetprovtest.CreateFromCSR, 1, fleetprovtest.FaultHold)
		_, csr := newCSR(t)
		before := w.sim.Requests(fleetprovtest.CreateFromCSR)
		done := make(chan error, 1)
		go func() { _, err := c.CreateCertificateFromCSR(ctx, csr); done <- err }()
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		require.NoError(t, w.sim.WaitRequests(wctx, fleetprovtest.CreateFromCSR, before+1))
		select {
		case err := <-done:
			t.Fatalf("a held reply arrived before Release: %v", err)
		default:
		}
		w.sim.Release()
		require.NoError(t, <-done)
	})
	t.Run("a certificate the broker will not trust", func(t *testing.T) {
		w.sim.Fail(fleetprovtest.CreateFromCSR, 1, fleetprovtest.FaultUntrusted)
		key, csr := newCSR(t)
		cert, err := c.CreateCertificateFromCSR(ctx, csr)
		require.NoError(t, err)
		_, err = c.RegisterThing(ctx, "fleet", cert.CertificateOwnershipToken, map[string]string{"SerialNumber": "7"})
		require.NoError(t, err)
		dev := tlsCert(t, cert.CertificatePEM, key)
		_, err = w.dial(t, dev, "gw-7")
		require.Error(t, err)
		var se *credprovider.ServiceError
		require.ErrorAs(t, w.fetch(t, dev, "gw-7"), &se)
		assert.Equal(t, 403, se.StatusCode)
	})
	assert.Empty(t, w.sim.Errors())
}
