package hsm_test

import (
	"crypto/x509"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tetherd/tether/credprovider/iotcredtest"
	"github.com/tetherd/tether/hsm"
)

// TestCheckChain ensures that a device chain is checked for its order, its
// dates and, when given, against the CA that issued it, with an error
// naming the file.
func TestCheckChain(t *testing.T) {
	pki, err := iotcredtest.NewPKI()
	require.NoError(t, err)
	other, err := iotcredtest.NewPKI()
	require.NoError(t, err)
	dev, err := pki.NewDevice("gw-0001", iotcredtest.ECDSAP256)
	require.NoError(t, err)
	pool := func(c *x509.Certificate) *x509.CertPool { p := x509.NewCertPool(); p.AddCert(c); return p }
	now := time.Now()

	for _, tc := range []struct {
		name  string
		chain []*x509.Certificate
		roots *x509.CertPool
		now   time.Time
		err   string // "" for none
	}{
		{"leaf only", []*x509.Certificate{dev.Cert}, nil, now, ""},
		{"leaf and its CA", []*x509.Certificate{dev.Cert, pki.CA}, pool(pki.CA), now, ""},
		{"out of order", []*x509.Certificate{pki.CA, dev.Cert}, nil, now, "is not signed by certificate 2"},
		{"another CA", []*x509.Certificate{dev.Cert}, pool(other.CA), now, "does not verify against the CA"},
		{"expired", []*x509.Certificate{dev.Cert}, nil, dev.Cert.NotAfter.Add(time.Hour), "expired"},
		{"clock in 1970", []*x509.Certificate{dev.Cert}, nil, time.Unix(0, 0), "not valid yet"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := hsm.CheckChain("/etc/tether/device.crt", tc.chain, tc.roots, tc.now)
			if tc.err == "" {
				assert.NoError(t, err)
				return
			}
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.err)
			assert.Contains(t, err.Error(), "/etc/tether/device.crt")
		})
	}
}
