// Package iotcredtest runs an AWS IoT Core credentials provider in process,
// over real mutual TLS, in the style of net/http/httptest, plus a test PKI to
// issue its server and device certificates.
//
// The server answers GET /role-aliases/{alias}/credentials like the real
// service: the client certificate must chain to a CA registered with TrustCA
// (otherwise 403 {"message":"Access Denied"}; WithHandshakeVerification fails
// the handshake instead), x-amzn-iot-thingname is required (400 when
// missing), unknown aliases get 404, x-amzn-iot-credential-duration-seconds
// is honoured from 900 to 43200 (400 otherwise). Fail injects faults into the
// next requests.
package iotcredtest

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"
)

// DefaultLifetime is a role alias's credential duration when none is given
// (the service's default, 3600 s).
const DefaultLifetime = time.Hour

// Fault is a failure the server injects into a request.
type Fault int

const (
	// FaultInternalError answers 500 {"message":"Internal Server Error"}.
	FaultInternalError Fault = iota + 1
	// FaultUnavailable answers 503 {"message":"Service Unavailable"}.
	FaultUnavailable
	// FaultThrottled answers 429 {"message":"Rate exceeded"} with Retry-After: 1.
	FaultThrottled
	// FaultMalformed answers 200 with a truncated credentials document.
	FaultMalformed
	// FaultDrop closes the connection without answering.
	FaultDrop
	// FaultSlow holds the request until Release, the client gives up, or
	// Close; then answers normally.
	FaultSlow
)

func (f Fault) String() string {
	switch f {
	case FaultInternalError:
		return "internal-error"
	case FaultUnavailable:
		return "unavailable"
	case FaultThrottled:
		return "throttled"
	case FaultMalformed:
		return "malformed"
	case FaultDrop:
		return "drop"
	case FaultSlow:
		return "slow"
	}
	return fmt.Sprintf("Fault(%d)", int(f))
}

// Grant records credentials the server issued.
type Grant struct {
	RoleAlias   string
	ThingName   string
	CommonName  string // of the client certificate
	AccessKeyID string
	Expiration  time.Time
}

// Option configures a Server.
type Option func(*Server)

// WithPKI uses p for the server certificate and trusts p's CA for devices.
// Without it the server generates its own PKI (Server.PKI).
func WithPKI(p *PKI) Option { return func(s *Server) { s.PKI = p } }

// WithServerCertificate presents cert instead of the PKI's server
// certificate (e.g. one made by softhsm-test/pki.sh).
func WithServerCertificate(cert tls.Certificate) Option {
	return func(s *Server) { s.serverCert = &cert }
}

// WithAddr listens on addr instead of 127.0.0.1:0.
func WithAddr(addr string) Option { return func(s *Server) { s.addr = addr } }

// WithRoleAlias registers a role alias (see AddRoleAlias).
func WithRoleAlias(name string, lifetime time.Duration) Option {
	return func(s *Server) { s.aliases[name] = lifetime }
}

// WithClock makes the server compute expirations, and the Date header of
// its answers, from now instead of time.Now: a skewed now is a server whose
// clock disagrees with the device's.
func WithClock(now func() time.Time) Option { return func(s *Server) { s.now = now } }

// WithHandshakeVerification rejects client certificates that do not chain to
// a trusted CA during the TLS handshake rather than with HTTP 403.
func WithHandshakeVerification() Option { return func(s *Server) { s.verifyInHandshake = true } }

// WithLogger logs every request (never a secret) and server errors.
func WithLogger(l *slog.Logger) Option { return func(s *Server) { s.log = l } }

// Server is an in-process credentials provider.
type Server struct {
	// URL is https://host:port; Endpoint is host:port, for
	// IoTOptions.Endpoint. Both are set once started.
	URL, Endpoint string
	// PKI issued the server certificate (unless WithServerCertificate) and
	// its CA is trusted for devices.
	PKI *PKI

	addr              string
	serverCert        *tls.Certificate
	now               func() time.Time
	verifyInHandshake bool
	log               *slog.Logger
	srv               *http.Server
	closed            chan struct{}
	closeOnce         sync.Once

	mu          sync.Mutex
	aliases     map[string]time.Duration
	trusted     []*x509.Certificate
	faults      []Fault
	gate        chan struct{}
	blocked     int
	changed     chan struct{}
	requests    int
	connections int
	things      []string
	grants      []Grant
	refused     map[string]bool // serial numbers (decimal) answered 403
}

// NewUnstartedServer configures a server; call Start.
func NewUnstartedServer(opts ...Option) (*Server, error) {
	s := &Server{
		addr:    "127.0.0.1:0",
		now:     time.Now,
		aliases: map[string]time.Duration{},
		closed:  make(chan struct{}),
		gate:    make(chan struct{}),
		changed: make(chan struct{}),
		log:     slog.New(slog.DiscardHandler),
	}
	for _, o := range opts {
		o(s)
	}
	if s.PKI == nil {
		p, err := NewPKI()
		if err != nil {
			return nil, err
		}
		s.PKI = p
	}
	if s.serverCert == nil {
		s.serverCert = &s.PKI.Server
	}
	s.trusted = append(s.trusted, s.PKI.CA)
	return s, nil
}

// NewServer starts a server on 127.0.0.1 with a fresh PKI unless options say
// otherwise.
func NewServer(opts ...Option) (*Server, error) {
	s, err := NewUnstartedServer(opts...)
	if err != nil {
		return nil, err
	}
	if err := s.Start(); err != nil {
		return nil, err
	}
	return s, nil
}

// Start listens and serves in the background.
func (s *Server) Start() error {
	if s.srv != nil {
		return errors.New("iotcredtest: server already started")
	}
	ln, err := net.Listen("tcp", s.addr)
	if err != nil {
		return fmt.Errorf("iotcredtest: listen on %s: %w", s.addr, err)
	}
	base := &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{*s.serverCert},
		ClientAuth:   tls.RequireAnyClientCert,
	}
	if s.verifyInHandshake {
		base.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
			c := base.Clone()
			c.GetConfigForClient = nil
			c.ClientAuth = tls.RequireAndVerifyClientCert
			c.ClientCAs = s.trustPool()
			return c, nil
		}
	}
	s.srv = &http.Server{
		Handler:           http.HandlerFunc(s.handle),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          log.New(&slogWriter{s.log}, "", 0),
		ConnState: func(_ net.Conn, st http.ConnState) {
			if st == http.StateNew {
				s.mu.Lock()
				s.connections++
				s.mu.Unlock()
			}
		},
	}
	s.Endpoint = ln.Addr().String()
	s.URL = "https://" + s.Endpoint
	go func() { _ = s.srv.Serve(tls.NewListener(ln, base)) }()
	return nil
}

// Close stops the server, unblocks slow requests and closes all connections.
func (s *Server) Close() {
	s.closeOnce.Do(func() {
		close(s.closed)
		if s.srv != nil {
			_ = s.srv.Close()
		}
	})
}

// AddRoleAlias registers a role alias whose credentials last lifetime unless
// the request asks for another duration; 0 means DefaultLifetime.
func (s *Server) AddRoleAlias(name string, lifetime time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.aliases[name] = lifetime
}

// TrustCA accepts device certificates issued by ca.
func (s *Server) TrustCA(ca *x509.Certificate) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.trusted = append(s.trusted, ca)
}

// RefuseCertificates answers 403 Access Denied, from the next request on,
// to device certificates with these serial numbers, as the service does for
// a certificate that is not ACTIVE; it replaces the previous list.
func (s *Server) RefuseCertificates(serials []*big.Int) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.refused = map[string]bool{}
	for _, n := range serials {
		s.refused[n.String()] = true
	}
	return nil
}

// Fail makes the next n requests fail with f, replacing any faults still
// queued; Fail(0, f) clears them.
func (s *Server) Fail(n int, f Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = s.faults[:0]
	for range n {
		s.faults = append(s.faults, f)
	}
}

// Release lets every request held by FaultSlow go on.
func (s *Server) Release() {
	s.mu.Lock()
	defer s.mu.Unlock()
	close(s.gate)
	s.gate = make(chan struct{})
}

// WaitBlocked waits until at least n requests are held by FaultSlow.
func (s *Server) WaitBlocked(ctx context.Context, n int) error {
	for {
		s.mu.Lock()
		if s.blocked >= n {
			s.mu.Unlock()
			return nil
		}
		ch := s.changed
		s.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Requests returns the number of HTTP requests received.
func (s *Server) Requests() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.requests
}

// Connections returns the number of connections accepted.
func (s *Server) Connections() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.connections
}

// ThingNames returns the x-amzn-iot-thingname of every request, in order
// ("" when absent).
func (s *Server) ThingNames() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.things...)
}

// Grants returns the credentials issued so far, in order.
func (s *Server) Grants() []Grant {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Grant(nil), s.grants...)
}

// Pool returns a pool trusting the server's certificate.
func (s *Server) Pool() *x509.CertPool { return s.PKI.Pool() }

func (s *Server) trustPool() *x509.CertPool {
	s.mu.Lock()
	defer s.mu.Unlock()
	pool := x509.NewCertPool()
	for _, c := range s.trusted {
		pool.AddCert(c)
	}
	return pool
}

var thingNameRE = regexp.MustCompile(`^[a-zA-Z0-9:_-]{1,128}$`)

func (s *Server) handle(w http.ResponseWriter, r *http.Request) {
	thing := r.Header.Get("x-amzn-iot-thingname")
	s.mu.Lock()
	s.requests++
	s.things = append(s.things, thing)
	var fault Fault
	if len(s.faults) > 0 {
		fault, s.faults = s.faults[0], s.faults[1:]
	}
	s.mu.Unlock()
	s.log.Info("request", "path", r.URL.Path, "thing", thing, "fault", fault)
	w.Header().Set("Date", s.now().UTC().Format(http.TimeFormat))

	switch fault {
	case FaultInternalError:
		writeJSON(w, http.StatusInternalServerError, "Internal Server Error")
		return
	case FaultUnavailable:
		writeJSON(w, http.StatusServiceUnavailable, "Service Unavailable")
		return
	case FaultThrottled:
		w.Header().Set("Retry-After", "1")
		writeJSON(w, http.StatusTooManyRequests, "Rate exceeded")
		return
	case FaultMalformed:
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"credentials":{"accessKeyId":"ASIA`)
		return
	case FaultDrop:
		if conn, _, err := http.NewResponseController(w).Hijack(); err == nil {
			_ = conn.Close()
		}
		return
	case FaultSlow:
		s.mu.Lock()
		gate := s.gate
		s.blocked++
		s.signalLocked()
		s.mu.Unlock()
		select {
		case <-gate:
		case <-r.Context().Done():
		case <-s.closed:
		}
		s.mu.Lock()
		s.blocked--
		s.signalLocked()
		s.mu.Unlock()
		if r.Context().Err() != nil {
			// The client gave up; returning normally would send an
			// empty 200 if the connection is still writable.
			panic(http.ErrAbortHandler)
		}
	}

	alias, ok := strings.CutPrefix(r.URL.Path, "/role-aliases/")
	alias, ok2 := strings.CutSuffix(alias, "/credentials")
	if !ok || !ok2 || alias == "" || strings.Contains(alias, "/") {
		writeJSON(w, http.StatusNotFound, "Not Found")
		return
	}
	if r.Method != http.MethodGet {
		writeJSON(w, http.StatusMethodNotAllowed, "Method Not Allowed")
		return
	}
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		writeJSON(w, http.StatusForbidden, "Access Denied")
		return
	}
	leaf := r.TLS.PeerCertificates[0]
	inter := x509.NewCertPool()
	for _, c := range r.TLS.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{
		Roots: s.trustPool(), Intermediates: inter,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}); err != nil {
		s.log.Info("client certificate rejected", "cn", leaf.Subject.CommonName, "error", err)
		writeJSON(w, http.StatusForbidden, "Access Denied")
		return
	}
	s.mu.Lock()
	refused := s.refused[leaf.SerialNumber.String()]
	s.mu.Unlock()
	if refused {
		s.log.Info("client certificate not active", "cn", leaf.Subject.CommonName, "serial", leaf.SerialNumber)
		writeJSON(w, http.StatusForbidden, "Access Denied")
		return
	}
	if thing == "" {
		writeJSON(w, http.StatusBadRequest, "Missing required header: x-amzn-iot-thingname")
		return
	}
	if !thingNameRE.MatchString(thing) {
		writeJSON(w, http.StatusBadRequest, "Invalid thing name")
		return
	}
	s.mu.Lock()
	lifetime, known := s.aliases[alias]
	s.mu.Unlock()
	if !known {
		writeJSON(w, http.StatusNotFound, "Role alias does not exist")
		return
	}
	if lifetime == 0 {
		lifetime = DefaultLifetime
	}
	if h := r.Header.Get("x-amzn-iot-credential-duration-seconds"); h != "" {
		n, err := strconv.Atoi(h)
		if err != nil || n < 900 || n > 43200 {
			writeJSON(w, http.StatusBadRequest, "Invalid credential duration: must be between 900 and 43200 seconds")
			return
		}
		lifetime = time.Duration(n) * time.Second
	}

	g := Grant{
		RoleAlias:   alias,
		ThingName:   thing,
		CommonName:  leaf.Subject.CommonName,
		AccessKeyID: "ASIA" + randomString(12),
		Expiration:  s.now().Add(lifetime).UTC().Truncate(time.Second),
	}
	body, _ := json.Marshal(map[string]any{"credentials": map[string]string{
		"accessKeyId":     g.AccessKeyID,
		"secretAccessKey": randomString(30),
		"sessionToken":    randomString(240),
		"expiration":      g.Expiration.Format(time.RFC3339),
	}})
	s.mu.Lock()
	s.grants = append(s.grants, g)
	s.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(body)
}

func (s *Server) signalLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}

func writeJSON(w http.ResponseWriter, code int, msg string) {
	body, _ := json.Marshal(map[string]string{"message": msg})
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, _ = w.Write(body)
}

// randomString returns 4n/3 base64 characters without padding, uppercase for
// key IDs so that they look like the real thing.
func randomString(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return strings.ToUpper(strings.NewReplacer("+", "A", "/", "B", "-", "C", "_", "D").Replace(base64.RawURLEncoding.EncodeToString(b)))
}

// slogWriter adapts http.Server's error log to slog.
type slogWriter struct{ l *slog.Logger }

func (w *slogWriter) Write(p []byte) (int, error) {
	w.l.Warn(strings.TrimSpace(string(p)))
	return len(p), nil
}
