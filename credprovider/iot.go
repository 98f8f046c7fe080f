package credprovider

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/aws/aws-sdk-go-v2/aws"
)

// IoTCredentialSource is the Source of credentials returned by IoT.
const IoTCredentialSource = "IoTCredentialProvider"

// Limits of the x-amzn-iot-credential-duration-seconds header.
const (
	MinIoTDuration = 900 * time.Second
	MaxIoTDuration = 43200 * time.Second
)

// DefaultIoTTimeout bounds one credentials request when IoTOptions.Timeout is 0.
const DefaultIoTTimeout = 30 * time.Second

// IoTOptions configures an IoT credentials provider.
type IoTOptions struct {
	// Endpoint is the account's credentials endpoint, host or host:port
	// (port 443 by default), without a scheme: see
	// `aws iot describe-endpoint --endpoint-type iot:CredentialProvider`.
	Endpoint string
	// RoleAlias names the IoT role alias to assume.
	RoleAlias string
	// ThingName is sent as x-amzn-iot-thingname. The service needs it when
	// the policy uses thing variables; empty omits the header.
	ThingName string
	// Certificate is the device identity (chain plus a crypto.Signer key,
	// which may live in a PKCS#11 token). Ignored if GetClientCertificate is
	// set.
	Certificate tls.Certificate
	// GetClientCertificate supplies the identity per handshake, for
	// identities that rotate. See also IoT.SetCertificate.
	GetClientCertificate func(*tls.CertificateRequestInfo) (*tls.Certificate, error)
	// RootCAs verify the endpoint. Nil: the roots in CAFile, or if that is
	// empty the embedded Amazon Root CA 1 and 3. The system trust store and
	// the SSL_CERT_FILE, SSL_CERT_DIR and AWS_CA_BUNDLE variables are never
	// consulted.
	RootCAs *x509.CertPool
	// CAFile is a PEM bundle of roots, used when RootCAs is nil, and named in
	// verification errors.
	CAFile string
	// Duration requests a credential lifetime (900 s to 43200 s, whole
	// seconds); 0 takes the role alias's configured duration.
	Duration time.Duration
	// Timeout bounds one request including connecting. Default 30 s.
	Timeout time.Duration
}

// IoT is an aws.CredentialsProvider that exchanges a device certificate for
// temporary credentials at the AWS IoT Core credentials provider. It keeps one
// connection alive between requests. Wrap it in a Refresher (or let
// config.LoadDefaultConfig wrap it in aws.CredentialsCache) to avoid fetching
// per request.
type IoT struct {
	endpoint, roleAlias, thingName string
	url                            string
	duration                       string // header value, "" for none
	caDesc                         string
	timeout                        time.Duration
	transport                      *http.Transport
	client                         *http.Client
	getCert                        atomic.Pointer[func(*tls.CertificateRequestInfo) (*tls.Certificate, error)]
	sessions                       *SessionCache
	clock                          atomic.Pointer[ServerClock]
}

// ServerClock is the credentials endpoint's clock as the Date header of its
// last answer told it: on a gateway without a battery-backed clock, the
// first witness of what time it is.
type ServerClock struct {
	// Date is the answer's Date header (one-second resolution).
	Date time.Time `json:"date"`
	// Received is the local clock when the answer arrived.
	Received time.Time `json:"received"`
}

// Skew is how far the local clock is ahead of the endpoint's (negative:
// behind), give or take the Date header's second and the request's latency.
func (c ServerClock) Skew() time.Duration { return c.Received.Sub(c.Date) }

var _ aws.CredentialsProvider = (*IoT)(nil)

// NewIoT validates opts (see IoTOptions.Validate) and returns the provider.
// Errors are *OptionError, which match ErrInvalidConfig.
func NewIoT(opts IoTOptions) (*IoT, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	host, _ := endpointHost(opts.Endpoint)
	p := &IoT{
		endpoint:  opts.Endpoint,
		roleAlias: opts.RoleAlias,
		thingName: opts.ThingName,
		url:       "https://" + opts.Endpoint + "/role-aliases/" + url.PathEscape(opts.RoleAlias) + "/credentials",
		timeout:   opts.Timeout,
		sessions:  NewSessionCache(),
	}
	if p.timeout == 0 {
		p.timeout = DefaultIoTTimeout
	}
	if d := opts.Duration; d != 0 {
		p.duration = strconv.FormatInt(int64(d/time.Second), 10)
	}

	switch {
	case opts.GetClientCertificate != nil:
		p.getCert.Store(&opts.GetClientCertificate)
		// The function may change identities between handshakes, which
		// a resumed session would not notice: full handshakes only.
		p.sessions = nil
	case len(opts.Certificate.Certificate) > 0 && opts.Certificate.PrivateKey != nil:
		p.SetCertificate(opts.Certificate)
	default:
		return nil, &OptionError{Field: "IoTOptions.Certificate", Issue: "no device certificate: set Certificate (certificate and private key) or GetClientCertificate"}
	}

	roots, desc, err := opts.Roots()
	if err != nil {
		return nil, err
	}
	p.caDesc = desc

	p.transport = &http.Transport{
		Proxy: http.ProxyFromEnvironment,
		// No TCP keepalive probes: a refresh is one request every 40
		// minutes, and its connection is closed soon after.
		DialContext: (&net.Dialer{KeepAlive: -1}).DialContext,
		TLSClientConfig: &tls.Config{
			MinVersion: tls.VersionTLS12,
			ServerName: host, // SNI and the name verified
			RootCAs:    roots,
			GetClientCertificate: func(cri *tls.CertificateRequestInfo) (*tls.Certificate, error) {
				return (*p.getCert.Load())(cri)
			},
		},
		TLSHandshakeTimeout: p.timeout,
		MaxIdleConns:        2,
		MaxIdleConnsPerHost: 2,
		// Long enough for the retries and roles of one refresh burst, short
		// enough that an idle gateway holds no connection (and its probes
		// and FIN exchange happen while the radio is still up).
		IdleConnTimeout: 10 * time.Second,
	}
	if p.sessions != nil {
		p.transport.TLSClientConfig.ClientSessionCache = p.sessions
	}
	p.client = &http.Client{
		Transport: p.transport,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse // the service never redirects; do not follow elsewhere
		},
	}
	return p, nil
}

// Roots returns the roots that verify the endpoint, by the rule RootCAs
// documents, and describes them for errors ("ca_file=PATH"); the error is
// LoadCAFile's.
func (o IoTOptions) Roots() (*x509.CertPool, string, error) {
	switch {
	case o.RootCAs != nil && o.CAFile != "":
		return o.RootCAs, "ca_file=" + o.CAFile, nil
	case o.RootCAs != nil:
		return o.RootCAs, "ca_file=caller-supplied RootCAs", nil
	case o.CAFile != "":
		roots, err := LoadCAFile(o.CAFile)
		if err != nil {
			return nil, "", err
		}
		return roots, "ca_file=" + o.CAFile, nil
	}
	return AmazonRootCAs(), "ca_file=embedded Amazon Root CA 1 and 3", nil
}

// SetCertificate replaces the device identity, e.g. after certificate
// rotation, and closes idle connections so that the next request presents it.
func (p *IoT) SetCertificate(cert tls.Certificate) {
	f := func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cert, nil }
	p.getCert.Store(&f)
	if p.sessions != nil {
		p.sessions.Reset() // a resumed session would present the old identity
	}
	if p.transport != nil {
		p.transport.CloseIdleConnections()
	}
}

// ServerClock returns the endpoint's clock as its last answer (of any
// status) dated it; false before any answer with a Date header.
func (p *IoT) ServerClock() (ServerClock, bool) {
	if c := p.clock.Load(); c != nil {
		return *c, true
	}
	return ServerClock{}, false
}

// CloseIdleConnections closes the kept-alive connection, if any.
func (p *IoT) CloseIdleConnections() { p.transport.CloseIdleConnections() }

// String describes the provider without any secret.
func (p *IoT) String() string {
	return fmt.Sprintf("IoT credentials provider (endpoint=%s role_alias=%s thing=%s)", p.endpoint, p.roleAlias, p.thingName)
}

// iotResponse is the credentials provider's answer.
type iotResponse struct {
	Credentials *struct {
		AccessKeyID     string `json:"accessKeyId"`
		SecretAccessKey string `json:"secretAccessKey"`
		SessionToken    string `json:"sessionToken"`
		Expiration      string `json:"expiration"`
	} `json:"credentials"`
}

// maxBody bounds what is read from the endpoint; real answers are ~1.5 KiB.
const maxBody = 64 << 10

// Retrieve fetches new credentials. Failures are a *ServiceError (HTTP
// status), a *TLSError (verification, permanent), a *ConnError (network or
// timeout, retryable), or wrap ErrMalformedResponse; see IsRetryable.
func (p *IoT) Retrieve(ctx context.Context) (aws.Credentials, error) {
	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.url, nil)
	if err != nil {
		return aws.Credentials{}, fmt.Errorf("%w: credential_endpoint %q: %v", ErrInvalidConfig, p.endpoint, err)
	}
	if p.thingName != "" {
		req.Header.Set("x-amzn-iot-thingname", p.thingName)
	}
	if p.duration != "" {
		req.Header.Set("x-amzn-iot-credential-duration-seconds", p.duration)
	}
	req.Header.Set("Accept", "application/json")

	resp, err := p.client.Do(req)
	if err != nil {
		return aws.Credentials{}, p.classify(ctx, err)
	}
	defer resp.Body.Close()
	if d, err := http.ParseTime(resp.Header.Get("Date")); err == nil {
		p.clock.Store(&ServerClock{Date: d, Received: time.Now()})
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBody+1))
	if err != nil {
		return aws.Credentials{}, p.classify(ctx, err)
	}
	if len(body) > maxBody {
		return aws.Credentials{}, fmt.Errorf("credentials endpoint %s: %w: body exceeds %d bytes", p.endpoint, ErrMalformedResponse, maxBody)
	}
	if resp.StatusCode != http.StatusOK {
		return aws.Credentials{}, p.serviceError(resp, body)
	}

	return parseIoTResponse(p.endpoint, body)
}

// parseIoTResponse reads the credentials provider's answer. The body holds
// secrets: errors say what is wrong and never quote it.
func parseIoTResponse(endpoint string, body []byte) (aws.Credentials, error) {
	var r iotResponse
	if err := json.Unmarshal(body, &r); err != nil {
		return aws.Credentials{}, fmt.Errorf("credentials endpoint %s: %w: body is not the credentials JSON document", endpoint, ErrMalformedResponse)
	}
	c := r.Credentials
	if c == nil {
		return aws.Credentials{}, fmt.Errorf("credentials endpoint %s: %w: no \"credentials\" object", endpoint, ErrMalformedResponse)
	}
	var missing []string
	for _, f := range []struct{ name, v string }{
		{"accessKeyId", c.AccessKeyID}, {"secretAccessKey", c.SecretAccessKey},
		{"sessionToken", c.SessionToken}, {"expiration", c.Expiration},
	} {
		if f.v == "" {
			missing = append(missing, f.name)
		}
	}
	if len(missing) > 0 {
		return aws.Credentials{}, fmt.Errorf("credentials endpoint %s: %w: credentials lack %s", endpoint, ErrMalformedResponse, strings.Join(missing, ", "))
	}
	exp, err := time.Parse(time.RFC3339, c.Expiration)
	if err != nil {
		return aws.Credentials{}, fmt.Errorf("credentials endpoint %s: %w: expiration %q is not RFC 3339", endpoint, ErrMalformedResponse, c.Expiration)
	}
	return aws.Credentials{
		AccessKeyID:     c.AccessKeyID,
		SecretAccessKey: c.SecretAccessKey,
		SessionToken:    c.SessionToken,
		Source:          IoTCredentialSource,
		CanExpire:       true,
		Expires:         exp,
	}, nil
}

func (p *IoT) serviceError(resp *http.Response, body []byte) error {
	e := &ServiceError{Endpoint: p.endpoint, RoleAlias: p.roleAlias, StatusCode: resp.StatusCode}
	var m struct {
		Message string `json:"message"`
	}
	if json.Unmarshal(body, &m) == nil && m.Message != "" {
		e.Message = m.Message
	} else {
		e.Message = printablePrefix(body, 200)
	}
	if s := resp.Header.Get("Retry-After"); s != "" {
		if n, err := strconv.Atoi(s); err == nil && n > 0 {
			e.RetryAfter = time.Duration(n) * time.Second
		}
	}
	return e
}

// printablePrefix makes an unexpected error body safe to put in an error: at
// most n runes, control characters replaced.
func printablePrefix(b []byte, n int) string {
	var sb strings.Builder
	for i := 0; len(b) > 0 && i < n; i++ {
		r, size := utf8.DecodeRune(b)
		b = b[size:]
		if r < 0x20 || r == 0x7f || r == utf8.RuneError {
			r = ' '
		}
		sb.WriteRune(r)
	}
	return strings.TrimSpace(sb.String())
}

// classify turns a transport error into a TLSError (permanent) or a
// ConnError (retryable).
func (p *IoT) classify(ctx context.Context, err error) error {
	tlsErr := func(problem TLSProblem) error {
		return &TLSError{Endpoint: p.endpoint, Problem: problem, CA: p.caDesc, Err: err}
	}
	var unknownCA x509.UnknownAuthorityError
	var hostErr x509.HostnameError
	var invalid x509.CertificateInvalidError
	var verify *tls.CertificateVerificationError
	switch {
	case errors.As(err, &unknownCA):
		return tlsErr(TLSUntrustedServer)
	case errors.As(err, &hostErr):
		return tlsErr(TLSServerNameMismatch)
	case errors.As(err, &invalid):
		return tlsErr(TLSServerCertInvalid)
	case errors.As(err, &verify):
		return tlsErr(0)
	}
	// A server that refuses the client certificate sends a TLS alert, which
	// surfaces as a "remote error" during the handshake or (TLS 1.3) on the
	// first read.
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "remote error" {
		msg := op.Err.Error()
		if strings.Contains(msg, "certificate") || strings.Contains(msg, "access denied") {
			return tlsErr(TLSClientCertRejected)
		}
		return tlsErr(0)
	}
	var rec tls.RecordHeaderError
	if errors.As(err, &rec) {
		return tlsErr(0) // not TLS at all, e.g. plain HTTP on that port
	}
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return &ConnError{Endpoint: p.endpoint, Err: fmt.Errorf("no answer within %v: %w", p.timeout, context.DeadlineExceeded)}
	}
	return &ConnError{Endpoint: p.endpoint, Err: err}
}
