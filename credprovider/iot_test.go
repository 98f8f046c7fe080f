package credprovider_test

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tetherd/tether/credprovider"
	"github.com/tetherd/tether/credprovider/clocktest"
	"github.com/tetherd/tether/credprovider/iotcredtest"
)

// sim starts a simulator with role alias "gw-role" and returns it with a
// device identity its CA issued.
func sim(t *testing.T, opts ...iotcredtest.Option) (*iotcredtest.Server, *iotcredtest.Device) {
	t.Helper()
	opts = append([]iotcredtest.Option{iotcredtest.WithRoleAlias("gw-role", time.Hour)}, opts...)
	s, err := iotcredtest.NewServer(opts...)
	require.NoError(t, err)
	t.Cleanup(s.Close)
	dev, err := s.PKI.NewDevice("gw-0001", iotcredtest.ECDSAP256)
	require.NoError(t, err)
	return s, dev
}

func iotOpts(s *iotcredtest.Server, dev *iotcredtest.Device) credprovider.IoTOptions {
	return credprovider.IoTOptions{
		Endpoint: s.Endpoint, RoleAlias: "gw-role", ThingName: "gw-0001",
		Certificate: dev.TLSCertificate(), RootCAs: s.Pool(),
	}
}

func newIoT(t *testing.T, o credprovider.IoTOptions) *credprovider.IoT {
	t.Helper()
	p, err := credprovider.NewIoT(o)
	require.NoError(t, err)
	t.Cleanup(p.CloseIdleConnections)
	return p
}

// TestAmazonRootCAs ensures that the embedded Amazon Root CA 1 and 3 are what IoT trusts by default.
func TestAmazonRootCAs(t *testing.T) {
	// SHA-256 fingerprints published at https://www.amazontrust.com/repository/
	want := map[string]string{
		"Amazon Root CA 1": "8ecde6884f3d87b1125ba31ac3fcb13d7016de7f57cc904fe1cb97c6ae98196e",
		"Amazon Root CA 3": "18ce6cfe7bf14e60b2e347b8df e868cb31d02ebb3ada271569f50343b46db3a4",
	}
	for name, fp := range want {
		want[name] = strings.ReplaceAll(fp, " ", "")
	}
	pool := credprovider.AmazonRootCAs()
	//nolint:staticcheck // Subjects is fine for a pool we built from PEM.
	require.Len(t, pool.Subjects(), 2)
	for _, f := range []string{"roots/AmazonRootCA1.pem", "roots/AmazonRootCA3.pem"} {
		data, err := os.ReadFile(f)
		require.NoError(t, err)
		ca, err := credprovider.LoadCAFile(f)
		require.NoError(t, err)
		require.NotNil(t, ca)
		c := parsePEM(t, data)
		sum := sha256.Sum256(c.Raw)
		assert.Equal(t, want[c.Subject.CommonName], hex.EncodeToString(sum[:]), f)
	}
}

// TestIoTRetrieve ensures that the IoT provider exchanges the device certificate for credentials over mTLS with the role alias and thing name.
func TestIoTRetrieve(t *testing.T) {
	issued := time.Date(2027, 5, 1, 10, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name     string
		duration time.Duration
		keyType  iotcredtest.KeyType
		want     time.Duration
	}{
		{"alias default, EC key", 0, iotcredtest.ECDSAP256, time.Hour},
		{"duration header, RSA key", 2 * time.Hour, iotcredtest.RSA2048, 2 * time.Hour},
		{"minimum", 15 * time.Minute, iotcredtest.ECDSAP256, 15 * time.Minute},
		{"maximum", 12 * time.Hour, iotcredtest.ECDSAP256, 12 * time.Hour},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, _ := sim(t, iotcredtest.WithClock(func() time.Time { return issued }))
			dev, err := s.PKI.NewDevice("gw-0001", tc.keyType)
			require.NoError(t, err)
			o := iotOpts(s, dev)
			o.Duration = tc.duration
			p := newIoT(t, o)
			c, err := p.Retrieve(t.Context())
			require.NoError(t, err)
			g := s.Grants()
			require.Len(t, g, 1)
			assert.Equal(t, g[0].AccessKeyID, c.AccessKeyID)
			assert.NotEmpty(t, c.SecretAccessKey)
			assert.NotEmpty(t, c.SessionToken)
			assert.True(t, c.CanExpire)
			assert.Equal(t, issued.Add(tc.want), c.Expires)
			assert.Equal(t, credprovider.IoTCredentialSource, c.Source)
			assert.Equal(t, []string{"gw-0001"}, s.ThingNames())
			assert.Equal(t, "gw-0001", g[0].CommonName)
			assert.NotContains(t, p.String(), c.SecretAccessKey)
		})
	}
}

// TestIoTRetryableFaults ensures that throttling, 5xx, malformed answers and dropped connections are reported as retryable.
func TestIoTRetryableFaults(t *testing.T) {
	for _, tc := range []struct {
		fault    iotcredtest.Fault
		status   int
		sentinel error
		message  string
	}{
		{iotcredtest.FaultInternalError, 500, nil, "Internal Server Error"},
		{iotcredtest.FaultUnavailable, 503, nil, "Service Unavailable"},
		{iotcredtest.FaultThrottled, 429, nil, "Rate exceeded"},
		{iotcredtest.FaultMalformed, 0, credprovider.ErrMalformedResponse, "not the credentials JSON"},
		{iotcredtest.FaultDrop, 0, nil, "EOF"},
		{iotcredtest.FaultSlow, 0, context.DeadlineExceeded, "no answer within 200ms"},
	} {
		t.Run(tc.fault.String(), func(t *testing.T) {
			s, dev := sim(t)
			o := iotOpts(s, dev)
			o.Timeout = 200 * time.Millisecond // only FaultSlow runs into it
			p := newIoT(t, o)
			s.Fail(1, tc.fault)
			_, err := p.Retrieve(t.Context())
			require.Error(t, err)
			assert.True(t, credprovider.IsRetryable(err), "%v", err)
			assert.Contains(t, err.Error(), tc.message)
			assert.Contains(t, err.Error(), s.Endpoint, "the error names the peer")
			if tc.status != 0 {
				var se *credprovider.ServiceError
				require.ErrorAs(t, err, &se)
				assert.Equal(t, tc.status, se.StatusCode)
				if tc.status == 429 {
					assert.Equal(t, time.Second, se.RetryAfter)
				}
			}
			if tc.sentinel != nil {
				require.ErrorIs(t, err, tc.sentinel)
			}
			if tc.fault == iotcredtest.FaultDrop || tc.fault == iotcredtest.FaultSlow {
				var ce *credprovider.ConnError
				require.ErrorAs(t, err, &ce)
			}
			s.Release()
			_, err = p.Retrieve(t.Context())
			require.NoError(t, err, "the next request succeeds")
		})
	}
}

// TestIoTPermanentErrors ensures that refused certificates, unknown aliases and untrusted servers are reported as permanent, naming the peer.
func TestIoTPermanentErrors(t *testing.T) {
	other, err := iotcredtest.NewPKI()
	require.NoError(t, err)
	stranger, err := other.NewDevice("gw-0001", iotcredtest.ECDSAP256)
	require.NoError(t, err)

	for _, tc := range []struct {
		name    string
		simOpts []iotcredtest.Option
		edit    func(*credprovider.IoTOptions)
		status  int
		problem credprovider.TLSProblem
		message string
	}{
		{"unknown role alias", nil, func(o *credprovider.IoTOptions) { o.RoleAlias = "nope" }, 404, 0, "Role alias does not exist"},
		{"missing thing name", nil, func(o *credprovider.IoTOptions) { o.ThingName = "" }, 400, 0, "x-amzn-iot-thingname"},
		{"client certificate from an unregistered CA", nil, func(o *credprovider.IoTOptions) { o.Certificate = stranger.TLSCertificate() }, 403, 0, "Access Denied"},
		{"client certificate refused in handshake", []iotcredtest.Option{iotcredtest.WithHandshakeVerification()},
			func(o *credprovider.IoTOptions) { o.Certificate = stranger.TLSCertificate() }, 0, credprovider.TLSClientCertRejected, "rejected the device certificate"},
		{"server not trusted", nil, func(o *credprovider.IoTOptions) { o.RootCAs = other.Pool(); o.CAFile = "/etc/tether/ca.pem" },
			0, credprovider.TLSUntrustedServer, "the credentials endpoint's certificate is not signed by a trusted CA (ca_file=/etc/tether/ca.pem)"},
		{"embedded Amazon roots do not trust a test server", nil, func(o *credprovider.IoTOptions) { o.RootCAs = nil },
			0, credprovider.TLSUntrustedServer, "not signed by a trusted CA (ca_file=embedded Amazon Root CA 1 and 3)"},
		{"server name mismatch", []iotcredtest.Option{iotcredtest.WithAddr("127.0.0.2:0")}, nil,
			0, credprovider.TLSServerNameMismatch, "not valid for this host name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, dev := sim(t, tc.simOpts...)
			o := iotOpts(s, dev)
			if tc.edit != nil {
				tc.edit(&o)
			}
			_, err := newIoT(t, o).Retrieve(t.Context())
			require.Error(t, err)
			assert.False(t, credprovider.IsRetryable(err), "%v", err)
			assert.Contains(t, err.Error(), tc.message)
			if tc.status != 0 {
				var se *credprovider.ServiceError
				require.ErrorAs(t, err, &se)
				assert.Equal(t, tc.status, se.StatusCode)
			} else {
				var te *credprovider.TLSError
				require.ErrorAs(t, err, &te)
				assert.Equal(t, tc.problem, te.Problem)
			}
		})
	}
}

// TestIoTTrustIgnoresEnvironment ensures that the IoT provider trusts only its own roots, whatever SSL_CERT_FILE, SSL_CERT_DIR and AWS_CA_BUNDLE say.
//
// The provider's trust is its own pool,
// whatever SSL_CERT_FILE, SSL_CERT_DIR and AWS_CA_BUNDLE say; even pointing
// them at the simulator's CA must not make the embedded roots trust it.
func TestIoTTrustIgnoresEnvironment(t *testing.T) {
	s, dev := sim(t)
	dir := t.TempDir()
	require.NoError(t, s.PKI.WriteFiles(dir))
	caFile := filepath.Join(dir, "ca.crt")
	envs := map[string]map[string]string{
		"unset":         {"SSL_CERT_FILE": "", "SSL_CERT_DIR": "", "AWS_CA_BUNDLE": ""},
		"system bundle": {"SSL_CERT_FILE": "/etc/ssl/certs/ca-certificates.crt", "SSL_CERT_DIR": "/etc/ssl/certs", "AWS_CA_BUNDLE": "/etc/ssl/certs/ca-certificates.crt"},
		"simulator CA":  {"SSL_CERT_FILE": caFile, "SSL_CERT_DIR": dir, "AWS_CA_BUNDLE": caFile},
	}
	roots := []struct {
		name string
		edit func(*credprovider.IoTOptions)
		ok   bool
	}{
		{"embedded", func(o *credprovider.IoTOptions) { o.RootCAs = nil }, false},
		{"RootCAs", func(*credprovider.IoTOptions) {}, true},
		{"CAFile", func(o *credprovider.IoTOptions) { o.RootCAs = nil; o.CAFile = caFile }, true},
	}
	for envName, env := range envs {
		for _, root := range roots {
			t.Run(envName+"/"+root.name, func(t *testing.T) {
				for k, v := range env {
					t.Setenv(k, v)
					if v == "" {
						require.NoError(t, os.Unsetenv(k))
					}
				}
				o := iotOpts(s, dev)
				root.edit(&o)
				_, err := newIoT(t, o).Retrieve(t.Context())
				if root.ok {
					require.NoError(t, err)
					return
				}
				var te *credprovider.TLSError
				require.ErrorAs(t, err, &te)
				assert.Equal(t, credprovider.TLSUntrustedServer, te.Problem)
			})
		}
	}
}

// TestIoTKeepAliveAndCertificateRotation ensures that the provider keeps one connection alive and presents a rotated certificate on the next request.
func TestIoTKeepAliveAndCertificateRotation(t *testing.T) {
	s, dev := sim(t)
	p := newIoT(t, iotOpts(s, dev))
	for range 3 {
		_, err := p.Retrieve(t.Context())
		require.NoError(t, err)
	}
	assert.Equal(t, 1, s.Connections(), "one kept-alive connection")

	rotated, err := s.PKI.NewDevice("gw-0001-rotated", iotcredtest.RSA2048)
	require.NoError(t, err)
	p.SetCertificate(rotated.TLSCertificate())
	_, err = p.Retrieve(t.Context())
	require.NoError(t, err)
	g := s.Grants()
	assert.Equal(t, "gw-0001-rotated", g[len(g)-1].CommonName)
	assert.Equal(t, 2, s.Connections())
}

// TestNewIoTRejectsBadOptions ensures that NewIoT refuses bad options, naming the Go option at fault.
func TestNewIoTRejectsBadOptions(t *testing.T) {
	pki, err := iotcredtest.NewPKI()
	require.NoError(t, err)
	dev, err := pki.NewDevice("gw", iotcredtest.ECDSAP256)
	require.NoError(t, err)
	base := credprovider.IoTOptions{Endpoint: "c1.credentials.iot.eu-west-1.amazonaws.com", RoleAlias: "r", Certificate: dev.TLSCertificate()}
	bad := filepath.Join(t.TempDir(), "bad.pem")
	require.NoError(t, os.WriteFile(bad, []byte("not a certificate"), 0o600))
	for _, tc := range []struct {
		name string
		edit func(*credprovider.IoTOptions)
		want string
	}{
		{"empty endpoint", func(o *credprovider.IoTOptions) { o.Endpoint = "" }, "IoTOptions.Endpoint: is empty"},
		{"scheme", func(o *credprovider.IoTOptions) { o.Endpoint = "https://x.example" }, "without a scheme"},
		{"bad port", func(o *credprovider.IoTOptions) { o.Endpoint = "x.example:99999" }, "port"},
		{"no role alias", func(o *credprovider.IoTOptions) { o.RoleAlias = "" }, "IoTOptions.RoleAlias"},
		{"no certificate", func(o *credprovider.IoTOptions) { o.Certificate = tls.Certificate{} }, "no device certificate"},
		{"duration short", func(o *credprovider.IoTOptions) { o.Duration = 899 * time.Second }, "IoTOptions.Duration"},
		{"duration long", func(o *credprovider.IoTOptions) { o.Duration = 12*time.Hour + time.Second }, "IoTOptions.Duration"},
		{"duration fraction", func(o *credprovider.IoTOptions) { o.Duration = time.Hour + time.Millisecond }, "whole seconds"},
		{"missing ca_file", func(o *credprovider.IoTOptions) { o.CAFile = "/nonexistent/ca.pem" }, "/nonexistent/ca.pem"},
		{"ca_file without certificates", func(o *credprovider.IoTOptions) { o.CAFile = bad }, bad},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := base
			tc.edit(&o)
			_, err := credprovider.NewIoT(o)
			require.ErrorIs(t, err, credprovider.ErrInvalidConfig)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

// TestLoadDefaultConfig ensures that the providers plug into config.LoadDefaultConfig unchanged.
//
// TestLoadDefaultConfig plugs the providers into the SDK unchanged and
// retrieves through cfg.Credentials.
func TestLoadDefaultConfig(t *testing.T) {
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(t.TempDir(), "none"))
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(t.TempDir(), "none"))
	s, dev := sim(t)
	iot := newIoT(t, iotOpts(s, dev))
	ref, err := credprovider.NewRefresher(iot, credprovider.RefreshOptions{Mode: credprovider.Deferred})
	require.NoError(t, err)
	for _, tc := range []struct {
		name string
		p    aws.CredentialsProvider
	}{{"IoT", iot}, {"Refresher", ref}} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := config.LoadDefaultConfig(t.Context(), config.WithRegion("eu-west-1"), config.WithCredentialsProvider(tc.p))
			require.NoError(t, err)
			c, err := cfg.Credentials.Retrieve(t.Context())
			require.NoError(t, err)
			g := s.Grants()
			assert.Equal(t, g[len(g)-1].AccessKeyID, c.AccessKeyID)
			assert.Equal(t, credprovider.IoTCredentialSource, c.Source)
		})
	}
}

// TestRefresherOverIoT ensures that the refresh engine over the simulator retries a 5xx after its backoff and gets the credentials.
//
// TestRefresherOverIoT runs the engine against the simulator over real TLS:
// a 5xx is retried after the backoff, and the credentials come through.
func TestRefresherOverIoT(t *testing.T) {
	s, dev := sim(t)
	clk := clocktest.New(time.Now())
	r, err := credprovider.NewRefresher(newIoT(t, iotOpts(s, dev)), credprovider.RefreshOptions{
		Mode: credprovider.Deferred, Clock: clk, Rand: func() float64 { return 0 },
	})
	require.NoError(t, err)
	s.Fail(1, iotcredtest.FaultUnavailable)
	_, err = r.Retrieve(t.Context())
	require.ErrorIs(t, err, credprovider.ErrNoCredentials)
	assert.True(t, credprovider.IsRetryable(err))
	var se *credprovider.ServiceError
	require.ErrorAs(t, err, &se)
	assert.Equal(t, 503, se.StatusCode)

	clk.Advance(time.Second)
	c, err := r.Retrieve(t.Context())
	require.NoError(t, err)
	assert.Equal(t, s.Grants()[0].AccessKeyID, c.AccessKeyID)
	assert.Equal(t, 2, s.Requests())
}

func parsePEM(t *testing.T, data []byte) *x509.Certificate {
	t.Helper()
	block, _ := pem.Decode(data)
	require.NotNil(t, block)
	c, err := x509.ParseCertificate(block.Bytes)
	require.NoError(t, err)
	return c
}
