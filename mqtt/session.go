// Package mqtt keeps one auto-reconnecting MQTT v5 session to AWS IoT Core
// (or any MQTT v5 broker) for the whole device, over mutual TLS with the
// device identity, with a durable outbox: a publication is accepted only
// once it is committed to the state file, and deleted only once the broker
// acknowledged it.
//
// It is built on github.com/eclipse/paho.golang/autopaho. See docs/mqtt.md
// for the delivery guarantees.
package mqtt

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/packets"
	"github.com/eclipse/paho.golang/paho"
	"github.com/eclipse/paho.golang/paho/session/state"
	"github.com/eclipse/paho.golang/paho/store/memory"

	"github.com/tetherd/tether/platform/endpoint"
	"github.com/tetherd/tether/platform/openmetrics"
	"github.com/tetherd/tether/store"
)

// Defaults for Config.
const (
	DefaultPort             = 8883
	DefaultKeepAlive        = 4 * time.Minute // AWS IoT Core allows 30 s to 1200 s; below common 5-minute NAT timeouts (docs/mqtt.md)
	DefaultSessionExpiry    = time.Hour       // AWS IoT Core's default persistent session expiry
	DefaultMinBackoff       = time.Second
	DefaultMaxBackoff       = 2 * time.Minute
	DefaultConnectTimeout   = 10 * time.Second
	DefaultStableAfter      = time.Second
	DefaultSubscriberBuffer = 256
	// ALPNProtocol is what AWS IoT Core expects for MQTT with X.509 on port 443.
	ALPNProtocol = "x-amzn-mqtt-ca"
)

// NextProtos is the ALPN a connection to the broker's port offers: AWS IoT
// Core takes MQTT on port 443 only with "x-amzn-mqtt-ca".
func NextProtos(port int) []string {
	if port == 443 {
		return []string{ALPNProtocol}
	}
	return nil
}

// Config configures a Session.
type Config struct {
	// Endpoint is the broker host, or host:port (then Port is ignored),
	// e.g. a1abc-ats.iot.eu-west-1.amazonaws.com.
	Endpoint string
	// Port defaults to 8883; 443 selects ALPN "x-amzn-mqtt-ca".
	Port int
	// ServerName is the TLS server name (SNI); default: the endpoint host.
	ServerName string
	// ThingName is the default client id.
	ThingName string
	// ClientID overrides ThingName as MQTT client id.
	ClientID string
	// Certificate is the device certificate with its private key (a PEM
	// key or a PKCS#11 crypto.Signer). Alternatively set GetClientCertificate.
	Certificate *tls.Certificate
	// GetClientCertificate is called on every handshake instead of using
	// Certificate (e.g. to pick up a renewed certificate).
	GetClientCertificate func(*tls.CertificateRequestInfo) (*tls.Certificate, error)
	// RootCAs verifies the broker; nil uses the system pool.
	RootCAs *x509.CertPool
	// KeepAlive defaults to DefaultKeepAlive.
	KeepAlive time.Duration
	// SessionExpiry asks the broker to keep the session (subscriptions and
	// in-flight messages) this long after a disconnect; default DefaultSessionExpiry.
	SessionExpiry time.Duration
	// MinBackoff is the base of the reconnect backoff: the first retry
	// happens within it. Default DefaultMinBackoff.
	MinBackoff time.Duration
	// MaxBackoff caps the reconnect backoff. Default DefaultMaxBackoff.
	MaxBackoff time.Duration
	// StableAfter is how long a connection must last to reset the backoff;
	// a broker that accepts and then drops us at once is backed off from
	// like one that refuses. Default DefaultStableAfter.
	StableAfter time.Duration
	// ConnectTimeout bounds one connection attempt; default DefaultConnectTimeout.
	ConnectTimeout time.Duration
	// Outbox holds messages until the broker acknowledges them. Required.
	Outbox *store.Outbox
	// SubscriberBuffer is the number of messages buffered per local
	// subscriber before messages for it are dropped; default DefaultSubscriberBuffer.
	SubscriberBuffer int
	// Logger receives connection events; nil discards them.
	Logger *slog.Logger
}

// State is the connection state.
type State string

// Connection states.
const (
	StateConnecting   State = "connecting"   // first attempt in progress
	StateConnected    State = "connected"    // CONNACK received
	StateDisconnected State = "disconnected" // waiting to retry
	StateClosed       State = "closed"       // Close was called
)

// Status is a snapshot for `tether status`.
type Status struct {
	State      State     `json:"state"`
	Since      time.Time `json:"since"`
	Endpoint   string    `json:"endpoint"`
	ClientID   string    `json:"client_id"`
	Connects   uint64    `json:"connects"`   // successful connections
	Reconnects uint64    `json:"reconnects"` // connects after the first
	Attempts   uint64    `json:"attempts"`   // failed connection attempts
	Failures   int       `json:"failures"`   // consecutive failures driving the backoff
	// IdentityRefused counts the consecutive connection attempts the broker
	// answered by refusing the device's certificate (see IdentityRefused);
	// 0 once a connection is up or an attempt failed otherwise.
	IdentityRefused int               `json:"identity_refused,omitempty"`
	LastError       string            `json:"last_error,omitempty"`
	LastErrorAt     time.Time         `json:"last_error_at,omitzero"`
	Inflight        int               `json:"inflight"`    // QoS 1 messages sent, not yet acknowledged
	Rejected        uint64            `json:"rejected"`    // messages the broker refused (moved to the dead letters)
	Subscribers     int               `json:"subscribers"` // local subscribers
	Dropped         uint64            `json:"dropped"`     // messages dropped for slow local subscribers
	Outbox          store.OutboxStats `json:"outbox"`
	OldestAge       time.Duration     `json:"oldest_age"` // age of the oldest queued message
}

// Session is one MQTT v5 session. It is safe for concurrent use.
type Session struct {
	cfg      Config
	clientID string
	endpoint string
	log      *slog.Logger
	cm       *autopaho.ConnectionManager
	d        *delivery
	cancel   context.CancelFunc
	// latency is lock-free: the delivery path observes into it.
	latency *openmetrics.Histogram

	mu          sync.Mutex
	state       State
	since       time.Time
	upAt        time.Time
	connects    uint64
	attempts    uint64
	failures    int
	refused     int // consecutive attempts refused for the identity
	lastErr     error
	lastErrAt   time.Time
	rejects     uint64
	dropped     uint64
	subs        map[string]map[*Subscription]struct{} // filter → local subscribers
	subIDs      map[string]int                        // filter → MQTT v5 subscription identifier
	nextSubID   int
	closed      bool
	attemptHook func()
}

// New validates cfg and starts connecting in the background; it does not
// wait for the broker. Publish works at once (messages wait in the outbox).
// The session runs until Close or until ctx ends.
func New(ctx context.Context, cfg Config) (*Session, error) {
	if cfg.Outbox == nil {
		return nil, errors.New("mqtt: Config.Outbox is required (open it with store.DB.Outbox)")
	}
	if cfg.Certificate == nil && cfg.GetClientCertificate == nil {
		return nil, errors.New("mqtt: no device certificate: set Config.Certificate or GetClientCertificate ([identity] certificate and private_key)")
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	host, port := SplitEndpoint(cfg.Endpoint, cfg.Port)
	clientID := cmpOr(cfg.ClientID, cfg.ThingName)
	setDefault(&cfg.KeepAlive, DefaultKeepAlive)
	setDefault(&cfg.SessionExpiry, DefaultSessionExpiry)
	setDefault(&cfg.MinBackoff, DefaultMinBackoff)
	setDefault(&cfg.MaxBackoff, DefaultMaxBackoff)
	setDefault(&cfg.StableAfter, DefaultStableAfter)
	setDefault(&cfg.ConnectTimeout, DefaultConnectTimeout)
	if cfg.MaxBackoff < cfg.MinBackoff {
		cfg.MaxBackoff = cfg.MinBackoff
	}
	if cfg.SubscriberBuffer <= 0 {
		cfg.SubscriberBuffer = DefaultSubscriberBuffer
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}

	tlsCfg := cfg.tlsConfig(host, port)
	endpoint := net.JoinHostPort(host, strconv.Itoa(port))
	u := &url.URL{Scheme: "mqtts", Host: endpoint}

	s := &Session{
		cfg:      cfg,
		clientID: clientID,
		endpoint: endpoint,
		log:      cfg.Logger.With("endpoint", endpoint, "client_id", clientID),
		state:    StateConnecting,
		since:    time.Now(),
		subs:     make(map[string]map[*Subscription]struct{}),
		subIDs:   make(map[string]int),
	}
	s.latency, _ = openmetrics.NewHistogram(publishLatencyBounds...) // constant bounds, valid
	s.d = newDelivery(cfg.Outbox, s)
	ctx, s.cancel = context.WithCancel(ctx)
	go s.d.relay(ctx)

	sess := sessionState{State: state.New(clientStore{s.d}, memory.New()), s: s}
	keepAlive := uint16(min(cfg.KeepAlive/time.Second, 65535))
	acfg := autopaho.ClientConfig{
		ServerUrls:                    []*url.URL{u},
		TlsCfg:                        tlsCfg,
		KeepAlive:                     keepAlive,
		CleanStartOnInitialConnection: false,
		SessionExpiryInterval:         uint32(cfg.SessionExpiry / time.Second),
		ReconnectBackoff:              s.backoff,
		ConnectTimeout:                cfg.ConnectTimeout,
		Queue:                         s.d,
		OnConnectionUp:                s.onUp,
		OnConnectionDown:              s.onDown,
		OnConnectError:                s.onConnectError,
		ConnectPacketBuilder:          withReceiveMaximum,
		AttemptConnection:             dialer(tlsCfg, cfg.ConnectTimeout),
		ClientConfig: paho.ClientConfig{
			ClientID:          clientID,
			Session:           sess,
			OnPublishReceived: []func(paho.PublishReceived) (bool, error){s.route},
			OnClientError:     func(err error) { s.setErr(fmt.Errorf("connection to %s: %w", endpoint, err)) },
			OnServerDisconnect: func(d *paho.Disconnect) {
				s.setErr(fmt.Errorf("%s disconnected us: reason %d %s", endpoint, d.ReasonCode, reasonString(d.Properties)))
			},
		},
	}
	cm, err := autopaho.NewConnection(ctx, acfg)
	if err != nil {
		s.cancel()
		return nil, fmt.Errorf("mqtt: %w", err)
	}
	s.cm = cm
	return s, nil
}

// tlsConfig is how the session, and ProbeConnect, meet the broker at host
// and port.
func (cfg *Config) tlsConfig(host string, port int) *tls.Config {
	tlsCfg := &tls.Config{
		RootCAs:              cfg.RootCAs,
		ServerName:           cmpOr(cfg.ServerName, host),
		GetClientCertificate: cfg.GetClientCertificate,
		MinVersion:           tls.VersionTLS12,
	}
	if tlsCfg.GetClientCertificate == nil {
		cert := cfg.Certificate
		tlsCfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil }
		// A fixed identity: a reconnect may resume the TLS session (no
		// certificate chain, no signature by the device key) where the
		// broker allows it. A GetClientCertificate may change identities
		// unseen by a resumed session, so it gets full handshakes.
		tlsCfg.ClientSessionCache = tls.NewLRUClientSessionCache(1)
	}
	tlsCfg.NextProtos = NextProtos(port)
	return tlsCfg
}

func setDefault(d *time.Duration, v time.Duration) {
	if *d <= 0 {
		*d = v
	}
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// SplitEndpoint returns the host and port of a validated Config.Endpoint; a
// port in it wins over Config.Port, and DefaultPort stands in for none.
func SplitEndpoint(ep string, port int) (string, int) {
	e, _ := endpoint.Parse(ep)
	if e.Port != 0 {
		port = e.Port
	}
	if port == 0 {
		port = DefaultPort
	}
	return e.Host, port
}

func reasonString(p *paho.DisconnectProperties) string {
	if p == nil {
		return ""
	}
	return p.ReasonString
}

// backoff implements autopaho's ReconnectBackoff with exponential growth
// and full jitter: a delay drawn uniformly from [0, min(max, min·2^n)),
// where n counts consecutive failures. autopaho restarts its own attempt
// counter at 0 after every dropped connection, so n is kept here instead:
// a broker that accepts the TLS handshake and then drops us at once would
// otherwise be retried in a hot loop.
func (s *Session) backoff(attempt int) time.Duration {
	s.mu.Lock()
	n := s.failures
	hook := s.attemptHook
	s.mu.Unlock()
	if hook != nil {
		hook()
	}
	return ReconnectDelay(s.cfg.MinBackoff, s.cfg.MaxBackoff, n, nil)
}

func (s *Session) onConnectError(err error) {
	s.mu.Lock()
	s.attempts++
	s.failures++
	if IdentityRefused(err) {
		s.refused++
	} else {
		s.refused = 0
	}
	s.lastErr, s.lastErrAt = err, time.Now()
	if s.state != StateDisconnected && s.state != StateClosed {
		s.state, s.since = StateDisconnected, time.Now()
	}
	n := s.failures
	s.mu.Unlock()
	s.log.Warn("mqtt connection attempt failed", "err", err, "consecutive_failures", n)
}

func (s *Session) onUp(cm *autopaho.ConnectionManager, ca *paho.Connack) {
	s.mu.Lock()
	s.connects++
	s.refused = 0
	s.state, s.since, s.upAt = StateConnected, time.Now(), time.Now()
	filters := make([]string, 0, len(s.subs))
	for f := range s.subs {
		filters = append(filters, f)
	}
	s.mu.Unlock()
	upAt := s.upAt
	s.log.Info("mqtt connected", "session_present", ca.SessionPresent)
	// The backoff restarts only once the connection has proved stable, so a
	// broker that accepts and drops us at once is still backed off from.
	time.AfterFunc(s.cfg.StableAfter, func() {
		s.mu.Lock()
		if s.state == StateConnected && s.upAt.Equal(upAt) {
			s.failures = 0
		}
		s.mu.Unlock()
	})
	if len(filters) > 0 {
		// OnConnectionUp must not block: restore subscriptions aside. The
		// broker may have kept them (session present), but re-subscribing is
		// harmless and covers a broker that lost its state.
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), s.cfg.ConnectTimeout)
			defer cancel()
			if err := s.subscribeBroker(ctx, cm, filters...); err != nil {
				s.setErr(err)
				s.log.Error("mqtt: restoring subscriptions failed", "err", err)
			}
		}()
	}
}

func (s *Session) onDown() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if time.Since(s.upAt) >= s.cfg.StableAfter {
		s.failures = 0
	} else {
		s.failures++
	}
	if s.state != StateClosed {
		s.state, s.since = StateDisconnected, time.Now()
	}
	s.log.Warn("mqtt connection lost", "err", s.lastErr)
	return !s.closed
}

func (s *Session) setErr(err error) {
	s.mu.Lock()
	s.lastErr, s.lastErrAt = err, time.Now()
	s.mu.Unlock()
}

// deadLetter moves a message the broker (or paho) refused out of the way
// of the ones behind it, into the outbox's dead letters, and says so.
func (s *Session) deadLetter(seq uint64, topic, why string) {
	if err := s.cfg.Outbox.DeadLetter(seq, why); err != nil {
		// The store failed: acknowledging at least unblocks the queue.
		s.log.Error("mqtt message could not be kept as a dead letter; dropped", "seq", seq, "err", err)
		s.cfg.Outbox.Ack(seq)
	}
	s.mu.Lock()
	s.rejects++
	s.lastErr, s.lastErrAt = fmt.Errorf("message %d to %q moved to the dead letters: %s", seq, topic, why), time.Now()
	s.mu.Unlock()
	s.log.Error("mqtt message moved to the dead letters; delivery goes on with the next", "seq", seq, "topic", topic, "reason", why)
}

func (s *Session) pubackRefused(pa *packets.Puback) {
	reason := ""
	if pa.Properties != nil {
		reason = pa.Properties.ReasonString
	}
	why := fmt.Sprintf("the broker refused it (PUBACK reason 0x%02x %s); check that the device policy allows publishing to its topic", pa.ReasonCode, reason)
	seq, ok := s.d.seqOf(pa.PacketID)
	if !ok {
		s.setErr(errors.New(why))
		return
	}
	topic := ""
	if m, ok, _ := s.cfg.Outbox.Next(seq - 1); ok && m.Seq == seq {
		topic = m.Topic
	}
	s.deadLetter(seq, topic, why)
}

// Publish checks topic, payload and QoS against the AWS IoT Core rules and
// commits the message to the outbox. It returns once the message is durable;
// delivery happens in the background, in order. Errors: a *RuleError
// (errors.Is ErrInvalid), store.ErrOutboxFull, store.ErrOutboxUnavailable.
func (s *Session) Publish(ctx context.Context, topic string, payload []byte, qos byte) (uint64, error) {
	if err := ValidatePublish(topic, payload, qos); err != nil {
		return 0, err
	}
	return s.cfg.Outbox.Enqueue(ctx, topic, payload, qos)
}

// AwaitConnection waits until the session is connected or ctx ends.
func (s *Session) AwaitConnection(ctx context.Context) error {
	return s.cm.AwaitConnection(ctx)
}

// Status returns a snapshot of the connection and the outbox.
func (s *Session) Status() Status {
	ob := s.cfg.Outbox.Stats()
	s.mu.Lock()
	defer s.mu.Unlock()
	st := Status{
		State:           s.state,
		Since:           s.since,
		Endpoint:        s.endpoint,
		ClientID:        s.clientID,
		Connects:        s.connects,
		Reconnects:      max(s.connects, 1) - 1,
		Attempts:        s.attempts,
		Failures:        s.failures,
		IdentityRefused: s.refused,
		Rejected:        s.rejects,
		Dropped:         s.dropped,
		Outbox:          ob,
	}
	if s.lastErr != nil {
		st.LastError, st.LastErrorAt = s.lastErr.Error(), s.lastErrAt
	}
	for _, m := range s.subs {
		st.Subscribers += len(m)
	}
	if !ob.Oldest.IsZero() {
		st.OldestAge = time.Since(ob.Oldest)
	}
	st.Inflight = s.d.inflight()
	return st
}

// publishLatencyBounds are the buckets of PublishLatency, in seconds: from
// a broker on the same network to an outbox drained after an hour offline.
var publishLatencyBounds = []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600}

// PublishLatency is the histogram of the time from a message's acceptance
// (Publish returned: it is durable) to its delivery (the broker's PUBACK
// for QoS 1; written to the connection for QoS 0), in seconds, for the
// messages this session delivered. The time a message waits in the outbox
// while the session is offline counts, since that is what its reader
// waits; a message enqueued before a restart counts from its first
// acceptance.
func (s *Session) PublishLatency() openmetrics.HistogramSnapshot {
	return s.latency.Snapshot()
}

// observeLatency records a delivery of a message enqueued at enq. A clock
// stepped back between the two counts as no wait.
func (s *Session) observeLatency(enq, now time.Time) {
	if enq.IsZero() {
		return
	}
	s.latency.Observe(max(0, now.Sub(enq).Seconds()))
}

// Close disconnects cleanly, ends every local subscription and stops the
// session. Unsent messages stay in the outbox for the next session. It
// does not close the outbox.
func (s *Session) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.state, s.since = StateClosed, time.Now()
	subs := s.subs
	s.subs = make(map[string]map[*Subscription]struct{})
	s.mu.Unlock()

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := s.cm.Disconnect(ctx)
	s.cancel()
	<-s.cm.Done()
	for _, m := range subs {
		for sub := range m {
			sub.end()
		}
	}
	if err != nil && !errors.Is(err, autopaho.ConnectionDownError) {
		return fmt.Errorf("mqtt: disconnect from %s: %w", s.endpoint, err)
	}
	return nil
}

// Done is closed once the session has stopped.
func (s *Session) Done() <-chan struct{} { return s.cm.Done() }
