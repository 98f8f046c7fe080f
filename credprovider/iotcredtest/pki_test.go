package iotcredtest_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tetherd/tether/credprovider/iotcredtest"
)

// opaqueSigner hides the key type, like a PKCS#11 key does.
type opaqueSigner struct{ k *ecdsa.PrivateKey }

func (s opaqueSigner) Public() crypto.PublicKey { return s.k.Public() }
func (s opaqueSigner) Sign(r io.Reader, d []byte, o crypto.SignerOpts) ([]byte, error) {
	return s.k.Sign(r, d, o)
}

// TestPKI ensures that the test PKI issues device certificates for software and opaque keys and writes them with safe modes.
func TestPKI(t *testing.T) {
	p, err := iotcredtest.NewPKI()
	require.NoError(t, err)
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)

	for _, tc := range []struct {
		name    string
		dev     func() (*iotcredtest.Device, error)
		wantKey bool
	}{
		{"software EC", func() (*iotcredtest.Device, error) { return p.NewDevice("ec", iotcredtest.ECDSAP256) }, true},
		{"software RSA", func() (*iotcredtest.Device, error) { return p.NewDevice("rsa", iotcredtest.RSA2048) }, true},
		{"opaque signer", func() (*iotcredtest.Device, error) { return p.IssueDevice("hsm", opaqueSigner{k}) }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, err := tc.dev()
			require.NoError(t, err)
			_, err = d.Cert.Verify(x509.VerifyOptions{Roots: p.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
			require.NoError(t, err)
			dir := t.TempDir()
			certFile, keyFile, err := d.WriteFiles(dir)
			require.NoError(t, err)
			assert.FileExists(t, certFile)
			if !tc.wantKey {
				assert.Empty(t, keyFile)
				assert.Nil(t, d.KeyPEM)
				return
			}
			st, err := os.Stat(keyFile)
			require.NoError(t, err)
			assert.Equal(t, os.FileMode(0o600), st.Mode().Perm())
		})
	}
	_, err = p.IssueDevice("nil", nil)
	require.Error(t, err)

	dir := t.TempDir()
	require.NoError(t, p.WriteFiles(dir))
	st, err := os.Stat(filepath.Join(dir, "server.key"))
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), st.Mode().Perm())
	_, err = p.Server.Leaf.Verify(x509.VerifyOptions{Roots: p.Pool(), DNSName: "localhost"})
	require.NoError(t, err)
}

// TestFailReplacesQueuedFaults ensures that Fail replaces the faults still queued and Fail(0) clears them.
func TestFailReplacesQueuedFaults(t *testing.T) {
	s, err := iotcredtest.NewServer(iotcredtest.WithRoleAlias("r", 0))
	require.NoError(t, err)
	defer s.Close()
	dev, err := s.PKI.NewDevice("gw", iotcredtest.ECDSAP256)
	require.NoError(t, err)
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{
		RootCAs: s.Pool(), Certificates: []tls.Certificate{dev.TLSCertificate()},
	}}}
	defer client.CloseIdleConnections()
	get := func() int {
		req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, s.URL+"/role-aliases/r/credentials", nil)
		require.NoError(t, err)
		req.Header.Set("x-amzn-iot-thingname", "gw")
		resp, err := client.Do(req)
		require.NoError(t, err)
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	s.Fail(5, iotcredtest.FaultInternalError)
	assert.Equal(t, 500, get())
	s.Fail(1, iotcredtest.FaultThrottled)
	assert.Equal(t, 429, get())
	assert.Equal(t, 200, get(), "the earlier faults were replaced")
	s.Fail(3, iotcredtest.FaultUnavailable)
	s.Fail(0, iotcredtest.FaultUnavailable)
	assert.Equal(t, 200, get())
	assert.Equal(t, 4, s.Requests())
	assert.Len(t, s.Grants(), 2)
}

// TestWithPKI ensures that two simulators given one PKI present its server
// certificate and accept its devices, so one identity works against both.
func TestWithPKI(t *testing.T) {
	p, err := iotcredtest.NewPKI()
	require.NoError(t, err)
	dev, err := p.NewDevice("gw-shared", iotcredtest.ECDSAP256)
	require.NoError(t, err)
	for range 2 {
		s, err := iotcredtest.NewServer(iotcredtest.WithPKI(p), iotcredtest.WithRoleAlias("r", time.Hour))
		require.NoError(t, err)
		t.Cleanup(s.Close)
		assert.Same(t, p, s.PKI)
		client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{
			RootCAs: p.Pool(), Certificates: []tls.Certificate{dev.TLSCertificate()}}}}
		req, err := http.NewRequest(http.MethodGet, s.URL+"/role-aliases/r/credentials", nil)
		require.NoError(t, err)
		req.Header.Set("x-amzn-iot-thingname", "gw-shared")
		resp, err := client.Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		assert.Equal(t, http.StatusOK, resp.StatusCode)
	}
}
