// Package fleetprovtest simulates the AWS IoT Core certificate and fleet
// provisioning MQTT APIs (CreateCertificateFromCsr and RegisterThing) on a
// real MQTT broker, in the style of net/http/httptest: a Server is an MQTT
// client of the broker (mosquitto from mqtt/mqtttest in tests) that answers
// requests the way the service does, so devices are tested over real TLS
// and MQTT v5.
//
// It signs CSRs with a test CA, hands out ownership tokens, runs templates
// (required parameters, thing naming, rotation templates that attach a
// certificate to an existing thing) and keeps the certificate registry: a
// certificate is PENDING_ACTIVATION until RegisterThing activates it, and
// INACTIVE once a retirement notice deactivates it. Gates enforce the
// registry where the device uses its certificate: the broker
// (mqtttest.Broker.RefuseCertificates, through a CRL that mosquitto reloads)
// and the credentials provider (iotcredtest.Server.RefuseCertificates)
// refuse every certificate that is not ACTIVE.
//
// The real service sends a reply only to the client that asked; a broker
// cannot tell the simulator who asked, so replies go to every subscriber of
// the reply topic. Tests run one device per simulator.
package fleetprovtest

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/tetherd/tether/mqtt/fleetprov"
	"github.com/tetherd/tether/mqtt/mqtttest"
)

// Certificate statuses, as the AWS IoT registry names them.
const (
	PendingActivation = "PENDING_ACTIVATION"
	Active            = "ACTIVE"
	Inactive          = "INACTIVE"
)

// PendingLifetime is how long AWS keeps a PENDING_ACTIVATION certificate
// (and its ownership token) before deleting it.
const PendingLifetime = time.Hour

// API names one of the simulated calls, for Fail and Requests.
type API string

// The simulated APIs.
const (
	CreateFromCSR API = "CreateCertificateFromCsr"
	RegisterThing API = "RegisterThing"
)

// Fault is a failure injected into a request.
type Fault int

const (
	// FaultRejected answers /rejected 400 InvalidRequest.
	FaultRejected Fault = iota + 1
	// FaultThrottled answers /rejected 429 ThrottlingException.
	FaultThrottled
	// FaultNoReply drops the request.
	FaultNoReply
	// FaultHold keeps the reply until Release (a slow service).
	FaultHold
	// FaultUntrusted signs the certificate (CreateCertificateFromCsr only)
	// with a CA neither the broker nor the credentials provider trusts: it
	// is accepted and activated, and then refused wherever it is used.
	FaultUntrusted
)

// Template is a provisioning template.
type Template struct {
	// Parameters must all be present in a RegisterThing request.
	Parameters []string
	// ThingName names the thing from the parameters; nil uses the
	// "ThingName" parameter.
	ThingName func(params map[string]string) (string, error)
	// Existing requires the thing to exist already and attaches the
	// certificate to it: a rotation template. Otherwise the thing is
	// created when missing.
	Existing bool
	// DeviceConfiguration is returned with every registration.
	DeviceConfiguration map[string]string
}

// Gate refuses device certificates by serial number.
type Gate interface {
	RefuseCertificates(serials []*big.Int) error
}

// Options configures a Server.
type Options struct {
	// Broker is the broker's host:port; RootCAs verifies it.
	Broker  string
	RootCAs *x509.CertPool
	// Identity is the simulator's own client certificate at the broker.
	Identity tls.Certificate
	// CA and CAKey sign the certificates CreateCertificateFromCsr issues;
	// the broker and the credentials provider trust CA.
	CA    *x509.Certificate
	CAKey crypto.Signer
	// Gates refuse every certificate the registry does not hold as ACTIVE.
	Gates []Gate
	// Templates by name.
	Templates map[string]Template
	// Validity of issued certificates; default one year.
	Validity time.Duration
	// RetiredTopic, when set, is subscribed to: a message {"certificateId":
	// ID} there deactivates that certificate, as the IoT rule of
	// docs/identity.md does.
	RetiredTopic string
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// Record is a certificate in the simulated registry.
type Record struct {
	ID     string
	Cert   *x509.Certificate
	PEM    string
	Status string
	Thing  string
	// Issued is when CreateCertificateFromCsr made it.
	Issued time.Time
	token  string
}

// Server is the simulated service.
type Server struct {
	opts  Options
	conn  *fleetprov.DirectConn
	rogue *x509.Certificate
	rkey  crypto.Signer
	stop  []func()
	done  chan struct{}
	wg    sync.WaitGroup

	// gateMu is held from a change of the registry until the gates
	// enforce it, so that Status never reports what the gates do not yet.
	gateMu sync.Mutex

	mu       sync.Mutex
	certs    map[string]*Record // by certificate id
	things   map[string][]string
	faults   map[API][]Fault
	requests map[API]int
	gate     chan struct{}
	changed  chan struct{}
	errs     []error
}

// New connects the simulator to the broker and subscribes to the request
// topics; it returns once the broker granted the subscriptions. It is
// closed when the test ends.
func New(t testing.TB, opts Options) *Server {
	t.Helper()
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Validity <= 0 {
		opts.Validity = 365 * 24 * time.Hour
	}
	if opts.Templates == nil {
		opts.Templates = map[string]Template{}
	}
	s := &Server{opts: opts, done: make(chan struct{}), certs: map[string]*Record{}, things: map[string][]string{},
		faults: map[API][]Fault{}, requests: map[API]int{}, gate: make(chan struct{}), changed: make(chan struct{})}
	s.rogue, s.rkey = rogueCA(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := fleetprov.Dial(ctx, fleetprov.DialConfig{Endpoint: opts.Broker, ClientID: "fleetprovtest-" + hex.EncodeToString(randBytes(4)),
		Certificate: opts.Identity, RootCAs: opts.RootCAs})
	if err != nil {
		t.Fatalf("fleetprovtest: %v", err)
	}
	s.conn = conn
	t.Cleanup(s.Close)
	filters := []string{fleetprov.CreateFromCSRTopic, fleetprov.ProvisionTopic("+")}
	if opts.RetiredTopic != "" {
		filters = append(filters, opts.RetiredTopic)
	}
	for _, f := range filters {
		ch, stop, err := conn.Subscribe(ctx, f)
		if err != nil {
			t.Fatalf("fleetprovtest: subscribe %s: %v", f, err)
		}
		s.stop = append(s.stop, stop)
		s.wg.Add(1)
		go s.serve(ch)
	}
	return s
}

// NewWithBroker is New for a broker from mqtttest created with
// Options{CRL: true}: it signs with the broker's CA, connects with a
// certificate from it, and gates the broker and the extra gates (e.g. the
// credentials-provider simulator).
func NewWithBroker(t testing.TB, b *mqtttest.Broker, opts Options, gates ...Gate) *Server {
	t.Helper()
	opts.Broker, opts.RootCAs = b.Addr, b.PKI.Pool()
	opts.Identity = mqtttest.Device(t, b.PKI, "fleet-provisioning-service").TLSCertificate()
	opts.CA, opts.CAKey = b.PKI.CA, b.PKI.CAKey
	opts.Gates = append([]Gate{b}, gates...)
	return New(t, opts)
}

// Close disconnects the simulator.
func (s *Server) Close() {
	select {
	case <-s.done:
		return
	default:
	}
	close(s.done)
	for _, f := range s.stop {
		f()
	}
	_ = s.conn.Close()
	s.mu.Lock()
	close(s.gate)
	s.gate = make(chan struct{})
	s.mu.Unlock()
	s.wg.Wait()
}

// Fail makes the next n requests to api fail with f, replacing any faults
// still queued for it; Fail(api, 0, 0) clears them.
func (s *Server) Fail(api API, n int, f Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults[api] = nil
	for range n {
		s.faults[api] = append(s.faults[api], f)
	}
}

// Release sends every reply FaultHold keeps.
func (s *Server) Release() {
	s.mu.Lock()
	defer s.mu.Unlock()
	close(s.gate)
	s.gate = make(chan struct{})
}

// Requests counts the requests received for api.
func (s *Server) Requests(api API) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.requests[api]
}

// WaitRequests waits until at least n requests for api arrived.
func (s *Server) WaitRequests(ctx context.Context, api API, n int) error {
	for {
		s.mu.Lock()
		got, ch := s.requests[api], s.changed
		s.mu.Unlock()
		if got >= n {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("fleetprovtest: %d of %d %s requests: %w", got, n, api, ctx.Err())
		}
	}
}

// Errors returns what went wrong inside the simulator (failed replies,
// gates that could not be updated).
func (s *Server) Errors() []error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]error(nil), s.errs...)
}

// Certificates returns the registry, oldest first.
func (s *Server) Certificates() []Record {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Record, 0, len(s.certs))
	for _, r := range s.certs {
		out = append(out, *r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Issued.Before(out[j].Issued) })
	return out
}

// Status returns the status of the certificate with this id ("" when the
// registry does not hold it).
func (s *Server) Status(id string) string {
	s.gateMu.Lock()
	defer s.gateMu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.expireLocked()
	if r := s.certs[id]; r != nil {
		return r.Status
	}
	return ""
}

// Things returns the certificate ids attached to thing.
func (s *Server) Things(thing string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.things[thing]...)
}

// AddThing registers a thing with an active certificate issued elsewhere
// (e.g. by the test PKI), as if it had been provisioned before.
func (s *Server) AddThing(thing string, cert *x509.Certificate) string {
	id := CertificateID(cert)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.certs[id] = &Record{ID: id, Cert: cert, PEM: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw})), Status: Active, Thing: thing, Issued: s.opts.Now()}
	s.things[thing] = append(s.things[thing], id)
	return id
}

// SetStatus changes a certificate's status (ACTIVE, INACTIVE) and updates
// the gates.
func (s *Server) SetStatus(id, status string) error {
	s.gateMu.Lock()
	defer s.gateMu.Unlock()
	s.mu.Lock()
	r := s.certs[id]
	if r == nil {
		s.mu.Unlock()
		return fmt.Errorf("fleetprovtest: no certificate %s", id)
	}
	r.Status = status
	s.mu.Unlock()
	return s.updateGates()
}

// CertificateID is the id AWS IoT gives a certificate: the hex SHA-256 of
// its DER encoding.
func CertificateID(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	return hex.EncodeToString(sum[:])
}

func (s *Server) serve(ch <-chan fleetprov.Message) {
	defer s.wg.Done()
	for {
		select {
		case m, ok := <-ch:
			if !ok {
				return
			}
			s.handle(m)
		case <-s.done:
			return
		}
	}
}

func (s *Server) handle(m fleetprov.Message) {
	var api API
	switch {
	case m.Topic == fleetprov.CreateFromCSRTopic:
		api = CreateFromCSR
	case s.opts.RetiredTopic != "" && m.Topic == s.opts.RetiredTopic:
		s.retire(m.Payload)
		return
	default:
		if _, ok := fleetprov.TemplateOf(m.Topic); !ok {
			return
		}
		api = RegisterThing
	}
	s.mu.Lock()
	s.requests[api]++
	close(s.changed)
	s.changed = make(chan struct{})
	var fault Fault
	if q := s.faults[api]; len(q) > 0 {
		fault, s.faults[api] = q[0], q[1:]
	}
	gate := s.gate
	s.mu.Unlock()

	var reply any
	var rerr *fleetprov.Error
	switch fault {
	case FaultNoReply:
		return
	case FaultRejected:
		rerr = &fleetprov.Error{StatusCode: 400, ErrorCode: "InvalidRequest", ErrorMessage: "injected rejection"}
	case FaultThrottled:
		rerr = &fleetprov.Error{StatusCode: 429, ErrorCode: "ThrottlingException", ErrorMessage: "Rate exceeded"}
	}
	if rerr == nil {
		if api == CreateFromCSR {
			reply, rerr = s.createFromCSR(m.Payload, fault == FaultUntrusted)
		} else {
			tmpl, _ := fleetprov.TemplateOf(m.Topic)
			reply, rerr = s.register(tmpl, m.Payload)
		}
	}
	if fault == FaultHold {
		// Held aside, so later requests are answered meanwhile.
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			select {
			case <-gate:
				s.reply(m.Topic, reply, rerr)
			case <-s.done:
			}
		}()
		return
	}
	s.reply(m.Topic, reply, rerr)
}

func (s *Server) reply(request string, reply any, rerr *fleetprov.Error) {
	topic, body := request+"/accepted", []byte(nil)
	if rerr != nil {
		topic = request + "/rejected"
		body, _ = json.Marshal(rerr)
	} else {
		body, _ = json.Marshal(reply)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.conn.Publish(ctx, topic, body); err != nil {
		s.fault(fmt.Errorf("reply on %s: %w", topic, err))
	}
}

func (s *Server) fault(err error) {
	s.mu.Lock()
	s.errs = append(s.errs, err)
	s.mu.Unlock()
}

func invalid(code, format string, args ...any) *fleetprov.Error {
	return &fleetprov.Error{StatusCode: 400, ErrorCode: code, ErrorMessage: fmt.Sprintf(format, args...)}
}

func (s *Server) createFromCSR(payload []byte, untrusted bool) (any, *fleetprov.Error) {
	var req fleetprov.CreateCertificateRequest
	if err := json.Unmarshal(payload, &req); err != nil {
		return nil, invalid("InvalidPayload", "request is not valid JSON: %v", err)
	}
	b, _ := pem.Decode([]byte(req.CertificateSigningRequest))
	if b == nil || b.Type != "CERTIFICATE REQUEST" {
		return nil, invalid("InvalidCertificateSigningRequest", "certificateSigningRequest is not a PEM CERTIFICATE REQUEST")
	}
	csr, err := x509.ParseCertificateRequest(b.Bytes)
	if err == nil {
		err = csr.CheckSignature()
	}
	if err != nil {
		return nil, invalid("InvalidCertificateSigningRequest", "%v", err)
	}
	now := s.opts.Now()
	tmpl := &x509.Certificate{
		SerialNumber: new(big.Int).SetBytes(randBytes(16)),
		Subject:      pkix.Name{CommonName: "AWS IoT Certificate"},
		NotBefore:    now.Add(-time.Minute),
		NotAfter:     now.Add(s.opts.Validity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	ca, key := s.opts.CA, s.opts.CAKey
	if untrusted {
		ca, key = s.rogue, s.rkey
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, csr.PublicKey, key)
	if err != nil {
		return nil, &fleetprov.Error{StatusCode: 500, ErrorCode: "InternalFailure", ErrorMessage: err.Error()}
	}
	cert, _ := x509.ParseCertificate(der)
	s.gateMu.Lock()
	defer s.gateMu.Unlock()
	rec := &Record{ID: CertificateID(cert), Cert: cert, PEM: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})),
		Status: PendingActivation, Issued: now, token: hex.EncodeToString(randBytes(32))}
	s.mu.Lock()
	s.certs[rec.ID] = rec
	s.mu.Unlock()
	if err := s.updateGates(); err != nil {
		return nil, &fleetprov.Error{StatusCode: 500, ErrorCode: "InternalFailure", ErrorMessage: err.Error()}
	}
	return fleetprov.Certificate{CertificateID: rec.ID, CertificatePEM: rec.PEM, CertificateOwnershipToken: rec.token}, nil
}

func (s *Server) register(name string, payload []byte) (any, *fleetprov.Error) {
	tmpl, ok := s.opts.Templates[name]
	if !ok {
		return nil, &fleetprov.Error{StatusCode: 404, ErrorCode: "ResourceNotFoundException", ErrorMessage: fmt.Sprintf("Template %s not found", name)}
	}
	var req fleetprov.RegisterThingRequest
	if err := json.Unmarshal(payload, &req); err != nil {
		return nil, invalid("InvalidPayload", "request is not valid JSON: %v", err)
	}
	for _, p := range tmpl.Parameters {
		if req.Parameters[p] == "" {
			return nil, invalid("InvalidParameters", "Missing parameter %s required by template %s", p, name)
		}
	}
	thing := req.Parameters["ThingName"]
	if tmpl.ThingName != nil {
		var err error
		if thing, err = tmpl.ThingName(req.Parameters); err != nil {
			return nil, invalid("InvalidParameters", "%v", err)
		}
	}
	if thing == "" {
		return nil, invalid("InvalidParameters", "template %s gives no thing name", name)
	}
	s.gateMu.Lock()
	defer s.gateMu.Unlock()
	s.mu.Lock()
	s.expireLocked()
	var rec *Record
	for _, r := range s.certs {
		if r.token != "" && r.token == req.CertificateOwnershipToken {
			rec = r
		}
	}
	switch {
	case rec == nil:
		s.mu.Unlock()
		return nil, &fleetprov.Error{StatusCode: 400, ErrorCode: "InvalidCertificateOwnershipToken", ErrorMessage: "certificate ownership token is invalid or expired"}
	case rec.Status == Active && rec.Thing == thing:
		// A retried request after a lost reply: the same answer again.
	case rec.Status != PendingActivation:
		s.mu.Unlock()
		return nil, invalid("InvalidCertificateOwnershipToken", "certificate %s is %s, not PENDING_ACTIVATION", rec.ID, rec.Status)
	case tmpl.Existing && len(s.things[thing]) == 0:
		s.mu.Unlock()
		return nil, invalid("InvalidParameters", "thing %s does not exist; template %s only attaches certificates to existing things", thing, name)
	default:
		rec.Status, rec.Thing = Active, thing
		s.things[thing] = append(s.things[thing], rec.ID)
	}
	s.mu.Unlock()
	if err := s.updateGates(); err != nil {
		return nil, &fleetprov.Error{StatusCode: 500, ErrorCode: "InternalFailure", ErrorMessage: err.Error()}
	}
	return fleetprov.Registration{ThingName: thing, DeviceConfiguration: tmpl.DeviceConfiguration}, nil
}

func (s *Server) retire(payload []byte) {
	var msg struct {
		CertificateID string `json:"certificateId"`
	}
	if err := json.Unmarshal(payload, &msg); err != nil || msg.CertificateID == "" {
		s.fault(fmt.Errorf("retirement notice %q has no certificateId", payload))
		return
	}
	if err := s.SetStatus(msg.CertificateID, Inactive); err != nil {
		s.fault(err)
	}
}

// expireLocked deletes pending certificates older than PendingLifetime.
func (s *Server) expireLocked() {
	now := s.opts.Now()
	for id, r := range s.certs {
		if r.Status == PendingActivation && now.Sub(r.Issued) > PendingLifetime {
			delete(s.certs, id)
		}
	}
}

// updateGates tells every gate which issued certificates are not ACTIVE.
// The caller holds gateMu.
func (s *Server) updateGates() error {
	s.mu.Lock()
	var refused []*big.Int
	for _, r := range s.certs {
		if r.Status != Active {
			refused = append(refused, r.Cert.SerialNumber)
		}
	}
	s.mu.Unlock()
	var errs []error
	for _, g := range s.opts.Gates {
		errs = append(errs, g.RefuseCertificates(refused))
	}
	if err := errors.Join(errs...); err != nil {
		s.fault(err)
		return err
	}
	return nil
}

func rogueCA(t testing.TB) (*x509.Certificate, crypto.Signer) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("fleetprovtest: %v", err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "untrusted CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour), IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatalf("fleetprovtest: %v", err)
	}
	c, _ := x509.ParseCertificate(der)
	return c, key
}

func randBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}
