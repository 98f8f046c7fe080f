package agent

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"reflect"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tetherd/tether/credprovider"
	"github.com/tetherd/tether/hsm"
	"github.com/tetherd/tether/hsm/tpm"
	"github.com/tetherd/tether/mqtt"
	"github.com/tetherd/tether/platform"
	"github.com/tetherd/tether/store"
)

// A reload builds the next generation (an Agent) while the running one keeps
// serving, reusing what did not change: the identity when its files are the
// same, the state store, the outbox and the MQTT session, the container
// endpoint's socket and token. Only when everything the new configuration
// needs is open and checked does the daemon switch to it; until then nothing
// the running generation holds is touched, so a reload that fails (a
// half-written certificate, a key that does not match, a port in use) leaves
// the agent exactly as it was, with the identity it holds in memory.
//
// The HTTP servers outlive generations: each request is handed to the
// generation current when it arrives, so a reload never closes a connection
// or drops a request (closing a server would drop requests read during its
// shutdown).

// daemon is what lives for the whole of Run, across generations.
type daemon struct {
	opts Options
	log  *slog.Logger
	cur  atomic.Pointer[Agent]
	// reqCtx is the base of every request's context; it ends when Run stops.
	reqCtx context.Context
	// refusals logs what local clients can cause at will (refused peers,
	// tokens, connections over the limits), rate-limited.
	refusals *slog.Logger
	// refused counts the endpoints' refusals for GET /v1/metrics.
	refused refusals
	errc    chan error
	// statusDue carries a request for a status line to systemd (see
	// notifyStatus).
	statusDue chan struct{}
}

// Agent is one generation: a configuration with what it opened.
type Agent struct {
	cfg  *Config
	opts Options
	log  *slog.Logger
	d    *daemon

	id *hsm.Identity
	// idDigest identifies the files id was opened from (see identityDigest).
	idDigest [32]byte
	// sealer is the new identity's, installed in a store borrowed from the
	// previous generation once this one takes over (when setSealer).
	sealer    hsm.Sealer
	setSealer bool
	db        *store.DB
	roles     roleSet
	iot       *credprovider.IoT // the device role's provider
	// workloads finds the [[workload]] of a peer (workload.go).
	workloads *workloadSet
	// inherit holds the previous generation's refreshers by cache key, to
	// seed this one's from memory.
	inherit map[string]*credprovider.Refresher
	// closing guards closed: OnRefresh writes only while the store is open.
	closing sync.RWMutex
	closed  bool
	outbox  *store.Outbox
	// mqttMu guards mqtt, which a failed reload may restart.
	mqttMu sync.Mutex
	mqtt   *mqtt.Session
	// container and token are the container endpoint's, when configured.
	container *endpoint
	token     []byte
	// imds is the IMDS endpoint's, when configured (imds.go).
	imds *imdsEndpoint
	// borrowed marks what belongs to the previous generation until this one
	// takes over; close leaves it alone.
	borrowed borrowed

	// Set by launch.
	api, containerAPI http.Handler
	gate              gate
	streams           context.Context
	endStreams        context.CancelFunc
	endRun            context.CancelFunc
	wg                sync.WaitGroup
	// imdsAPI is set by launch too.
	imdsAPI http.Handler

	started time.Time
	ready   atomic.Bool
	// rot rotates the certificate (rotate.go).
	rot *rotator
}

type borrowed struct{ id, db, outbox, mqtt, container, imds bool }

// endpoint is the container endpoint's socket and server; the server is
// started by the first generation that launches with it.
type endpoint struct {
	addr string
	ln   net.Listener
	srv  *http.Server
}

// close stops the endpoint's server, or closes its socket when no server
// started.
func (e *endpoint) close() {
	if e.srv == nil {
		e.ln.Close()
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	shutdown(ctx, e.srv)
}

// Run runs the agent with cfg until ctx is done. SIGHUP (opts.Reload) re-reads
// cfg.File; a configuration that is invalid or cannot start is logged and the
// running one kept. The Unix socket stays open across reloads, so clients
// never see it vanish; changing serve.socket takes effect at the next restart.
func Run(ctx context.Context, cfg *Config, opts Options) error {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	log := opts.Logger
	ln := opts.Listener
	if ln == nil {
		var err error
		if ln, err = listenUnix(cfg.Serve.Socket, log); err != nil {
			return err
		}
	}
	defer ln.Close()
	reqCtx, endRequests := context.WithCancel(context.Background())
	defer endRequests()
	d := &daemon{opts: opts, log: log, reqCtx: reqCtx, errc: make(chan error, 4),
		refusals: slog.New(platform.RateLimit(log.Handler(), time.Second, 10)), statusDue: make(chan struct{}, 1)}
	statusCtx, endStatus := context.WithCancel(ctx)
	defer endStatus()
	go d.sendStatus(statusCtx)

	a, err := start(ctx, d, cfg, nil)
	if err != nil {
		return err
	}
	a.pruneCache()
	if err := a.startSession(ctx); err != nil {
		a.close()
		return err
	}
	a.launch(ctx)
	d.cur.Store(a)
	a.ready.Store(true)
	unixSrv := d.newServer(func(a *Agent) http.Handler { return a.api })
	unixSrv.ConnContext = d.connContext
	uln := newLimitListener(ln, ucredOf, d.refusals)
	uln.overLimit = &d.refused.socket[refusedOverLimit]
	go d.serve(unixSrv, uln)
	a.serveContainer()
	a.serveIMDS()
	platform.Ready(a.statusLine())
	log.Info("tether is ready", "socket", ln.Addr().String(), "container_endpoint", cfg.Serve.ContainerEndpoint, "imds_endpoint", cfg.Serve.IMDSEndpoint, "thing", cfg.Identity.ThingName)
	go trimResident(ctx, log)

	var runErr error
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case err := <-d.errc:
			runErr = runtimeFailure("serving: %w", err)
			break loop
		case <-a.rot.switched:
			// A rotation committed or rolled back: the next generation
			// opens the identity the certificate file now names.
			next, err := a.reload(ctx)
			if err != nil {
				log.Error("the identity the rotation left cannot start; the running one is kept", "err", err)
				a.rot.rollback(err)
				continue
			}
			a = next
			log.Info("switched to the rotated identity", "certificate", a.cfg.Identity.Certificate)
			platform.Ready(a.statusLine())
		case <-opts.Reload:
			platform.Reloading()
			next, err := a.reload(ctx)
			if err != nil {
				log.Error("reload failed; the running configuration and identity are unchanged", "file", a.cfg.File, "err", ErrorLine(err))
				platform.Ready(a.statusLine())
				continue
			}
			if next.cfg.Serve.Socket != a.cfg.Serve.Socket {
				log.Warn("serve.socket changed; the new path takes effect when tether restarts", "socket", a.cfg.Serve.Socket)
			}
			a = next
			log.Info("configuration reloaded", "file", a.cfg.File)
			platform.Ready(a.statusLine())
		}
	}
	platform.Stopping()
	a.ready.Store(false)
	a.endStreams()
	endRequests()
	shutdownCtx, done := context.WithTimeout(context.Background(), 10*time.Second)
	defer done()
	shutdown(shutdownCtx, unixSrv)
	a.stop()
	a.close()
	log.Info("tether stopped")
	return runErr
}

// newServer returns a server that hands each request to the current
// generation's handler, as pick chooses it.
func (d *daemon) newServer(pick func(*Agent) http.Handler) *http.Server {
	srv := newHTTPServer(bodyDeadline(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for {
			a := d.cur.Load()
			if !a.gate.enter() {
				// Retired between Load and enter: the next one is current.
				continue
			}
			defer a.gate.leave()
			h := pick(a)
			if h == nil {
				writeError(w, http.StatusServiceUnavailable, "reloading", "this endpoint is not served by the running configuration")
				return
			}
			h.ServeHTTP(w, r)
			return
		}
	})), d.log)
	srv.BaseContext = func(net.Listener) context.Context { return d.reqCtx }
	return srv
}

func (d *daemon) serve(srv *http.Server, ln net.Listener) {
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		d.errc <- err
	}
}

// shutdown stops srv gracefully, or cuts what still runs at ctx's end so
// nothing uses the store after close.
func shutdown(ctx context.Context, srv *http.Server) {
	if err := srv.Shutdown(ctx); err != nil {
		srv.Close()
	}
}

// start opens everything cfg needs, reusing from prev (the running
// generation, nil at start-up) what cfg did not change. On error, whatever
// it opened is closed again and prev is untouched.
func start(ctx context.Context, d *daemon, cfg *Config, prev *Agent) (_ *Agent, err error) {
	a := &Agent{cfg: cfg, opts: d.opts, log: d.log, d: d, started: time.Now()}
	if prev != nil {
		a.started = prev.started
	}
	defer func() {
		if err != nil {
			a.close()
		}
	}()
	digest, digestOK := identityDigest(cfg)
	if prev != nil && digestOK && digest == prev.idDigest {
		a.id, a.idDigest, a.borrowed.id = prev.id, digest, true
	} else {
		a.idDigest = digest
		if a.id, err = openIdentity(ctx, cfg, a.log); err != nil {
			return nil, err
		}
		if a.sealer, err = a.id.Sealer(ctx, "tether-state"); err != nil {
			// Without a sealer the store keeps no credentials; say so and go
			// on: the cache is a convenience, not a reason not to start.
			a.log.Warn("credentials will not be cached across restarts", "err", err)
		}
	}
	if prev != nil && prev.cfg.State.Path == cfg.State.Path {
		a.db, a.borrowed.db = prev.db, true
		a.setSealer = !a.borrowed.id
	} else {
		a.db, err = openStore(ctx, cfg.State.Path, store.Options{Sealer: a.sealer, Logger: a.log})
		if err != nil {
			return nil, runtimeFailure("state: %w", err)
		}
	}
	if prev != nil {
		a.inherit = map[string]*credprovider.Refresher{}
		for _, rl := range prev.roles {
			a.inherit[rl.cacheKey] = rl.ref
		}
	}
	err = a.buildRoles()
	a.inherit = nil
	if err != nil {
		return nil, err
	}
	if err := a.openOutbox(prev); err != nil {
		return nil, err
	}
	if ep := cfg.Serve.ContainerEndpoint; ep != "" {
		if prev != nil && prev.container != nil && prev.container.addr == ep {
			a.container, a.borrowed.container = prev.container, true
		} else {
			ln, err := net.Listen("tcp", ep)
			if err != nil {
				return nil, runtimeFailure("serve.container_endpoint: cannot listen on %s: %w; choose a free loopback port", ep, unwrapSyscall(err))
			}
			a.container = &endpoint{addr: ep, ln: ln}
		}
		var old []byte
		if prev != nil && prev.cfg.Serve.TokenFile == cfg.Serve.TokenFile {
			old = prev.token
		}
		if a.token, err = keepToken(cfg.Serve.TokenFile, old); err != nil {
			return nil, err
		}
	}
	if err := a.openIMDS(prev); err != nil {
		return nil, err
	}
	a.rot = newRotator(a)
	return a, nil
}

// openStore is store.Open, given up when ctx ends: waiting for the file
// lock another tether holds takes up to store.DefaultTimeout, and SIGTERM
// must not wait for it. A store opened after that is closed again.
func openStore(ctx context.Context, path string, opts store.Options) (*store.DB, error) {
	type result struct {
		db  *store.DB
		err error
	}
	done := make(chan result, 1)
	go func() {
		db, err := store.Open(path, opts)
		done <- result{db, err}
	}()
	select {
	case r := <-done:
		return r.db, r.err
	case <-ctx.Done():
		go func() {
			if r := <-done; r.db != nil {
				r.db.Close()
			}
		}()
		return nil, fmt.Errorf("stopped while waiting for the state file %s: %w", path, context.Cause(ctx))
	}
}

// identityDigest is a digest of the identity's files as they are now (the
// certificate, the key reference, and a PEM key's content), so a reload can
// tell whether the identity it holds is still the configured one. ok is
// false when a file cannot be read: the identity is then opened anew, which
// reports what is wrong.
func identityDigest(cfg *Config) (sum [32]byte, ok bool) {
	h := sha256.New()
	cert, err := os.ReadFile(cfg.Identity.Certificate)
	if err != nil {
		return sum, false
	}
	h.Write(cert)
	h.Write([]byte{0})
	h.Write([]byte(cfg.Identity.PrivateKey))
	h.Write([]byte{0})
	keyFile := cfg.Identity.PrivateKey // a PEM key, or a TPM key file
	switch {
	case tpm.IsURI(keyFile):
		u, err := tpm.ParseURI(keyFile)
		if err != nil {
			return sum, false
		}
		keyFile = u.File // "" for a persistent handle
	case hsm.IsURI(keyFile):
		keyFile = ""
	}
	if keyFile != "" {
		key, err := os.ReadFile(keyFile)
		if err != nil {
			return sum, false
		}
		h.Write(key)
		clear(key)
	}
	h.Sum(sum[:0])
	return sum, true
}

// keepToken returns the container endpoint's token: old, when the previous
// generation had one for the same file, so clients that were handed the
// token itself keep working across reloads; otherwise a new random one. The
// file is (re)written only when it does not hold the token.
func keepToken(path string, old []byte) ([]byte, error) {
	if old == nil {
		return writeToken(path)
	}
	if b, err := os.ReadFile(path); err == nil && bytes.Equal(b, old) {
		return old, nil
	}
	if err := writeTokenFile(path, old); err != nil {
		return nil, err
	}
	return old, nil
}

// reload builds the next generation from the configuration file and, once
// it is ready, switches to it and retires a. On error a keeps running as it
// was.
func (a *Agent) reload(ctx context.Context) (*Agent, error) {
	cfg, err := LoadConfig(a.cfg.File)
	if err != nil {
		return nil, err
	}
	next, err := start(ctx, a.d, cfg, a)
	if err != nil {
		return nil, err
	}
	// The device has one MQTT session: a new one (new identity or
	// settings) replaces the running one, whose client id it shares.
	restarting := !next.borrowed.mqtt && a.session() != nil
	if restarting {
		a.stopSession()
	}
	if err := next.startSession(ctx); err != nil {
		next.close()
		if restarting {
			// The running settings started a session before; they start
			// one again.
			if rerr := a.startSession(ctx); rerr != nil {
				a.log.Error("the running MQTT session could not be restarted", "err", rerr)
			}
		}
		return nil, err
	}
	next.launch(ctx)
	a.d.cur.Store(next)
	next.serveContainer()
	next.serveIMDS()
	next.ready.Store(true)
	a.ready.Store(false)
	a.retire()
	a.stop()
	a.handOver(next)
	a.close()
	next.borrowed = borrowed{}
	if next.setSealer {
		next.db.SetSealer(next.sealer)
		next.setSealer = false
	}
	next.pruneCache()
	return next, nil
}

// openOutbox opens the durable outbox for [mqtt], or takes the running one
// when the store is the same (one Outbox per store).
func (a *Agent) openOutbox(prev *Agent) error {
	m := a.cfg.MQTT
	if m.Endpoint == "" {
		return nil
	}
	if _, err := a.mqttRoots(); err != nil {
		return err
	}
	if a.borrowed.db && prev.outbox != nil {
		a.outbox, a.borrowed.outbox = prev.outbox, true
		if prev.cfg.MQTT.OutboxMaxMessages != m.OutboxMaxMessages || prev.cfg.MQTT.OutboxMaxBytes != m.OutboxMaxBytes {
			a.log.Warn("mqtt outbox limits changed; they take effect when tether restarts")
		}
		// The running session carries on when nothing it depends on changed.
		if s := prev.session(); s != nil && a.borrowed.id && reflect.DeepEqual(prev.cfg.MQTT, m) && prev.cfg.Identity.ThingName == a.cfg.Identity.ThingName {
			a.mqtt, a.borrowed.mqtt = s, true
		}
		return nil
	}
	ob, err := a.db.Outbox(store.OutboxOptions{MaxMessages: m.OutboxMaxMessages, MaxBytes: m.OutboxMaxBytes})
	if err != nil {
		return runtimeFailure("mqtt outbox: %w", err)
	}
	a.outbox = ob
	return nil
}

// launch starts the refresh loops and builds the handlers; the daemon's
// servers send requests to them once a is current.
func (a *Agent) launch(ctx context.Context) {
	runCtx, cancel := context.WithCancel(ctx)
	a.endRun = cancel
	a.streams, a.endStreams = context.WithCancel(context.Background())
	for name, rl := range a.roles {
		a.wg.Add(1)
		go func() {
			defer a.wg.Done()
			if err := rl.ref.Run(runCtx); err != nil && !errors.Is(err, context.Canceled) {
				a.log.Error("refresh loop stopped", "role", name, "err", err)
			}
		}()
	}
	roles := func() roleSet { return a.roles }
	api := &api{
		roles:   roles,
		allow:   func() AllowList { return AllowList{UIDs: a.cfg.Serve.AllowUIDs, GIDs: a.cfg.Serve.AllowGIDs} },
		status:  a.Status,
		metrics: a.metrics,
		refused: &a.d.refused.socket,
		log:     a.d.refusals,
	}
	api.roleFor = a.roleFor
	if a.outbox != nil {
		api.mqtt, api.streams = a.session, a.streams
	}
	api.identity = a.rot.handler()
	a.wg.Add(1)
	go func() { defer a.wg.Done(); a.rot.run(runCtx) }()
	a.api = api.routes()
	if a.container != nil {
		c := &containerAPI{roleFor: a.roleFor, allow: api.allow, token: a.token, log: a.d.refusals, refused: &a.d.refused.container}
		a.containerAPI = c.routes()
	}
	if a.imds != nil {
		a.imdsAPI = a.imdsRoutes(api.allow)
	}
	if iv, err := platform.WatchdogInterval(); err != nil {
		a.log.Warn("watchdog disabled", "err", err)
	} else if iv > 0 {
		wd := platform.NewWatchdog(iv, a.healthy, a.log)
		a.wg.Add(1)
		go func() { defer a.wg.Done(); wd.Run(runCtx) }()
	}
}

// serveContainer starts the container endpoint's server, unless a previous
// generation started it on the same socket; a must be current.
func (a *Agent) serveContainer() {
	if a.container == nil || a.container.srv != nil {
		return
	}
	a.serveTCP(a.container, a.container.ln, &a.d.refused.container, func(a *Agent) http.Handler { return a.containerAPI })
}

// serveTCP starts e's server on ln (e's socket, or a listener around it)
// with the limits of a loopback TCP endpoint, for the handler pick chooses;
// refused counts the connections over them.
func (a *Agent) serveTCP(e *endpoint, ln net.Listener, refused *refusalCounts, pick func(*Agent) http.Handler) {
	srv := a.d.newServer(pick)
	srv.ConnContext = tcpConnContext
	e.srv = srv
	tln := newLimitListener(ln, tcpPeer, a.d.refusals)
	tln.overLimit = &refused[refusedOverLimit]
	go a.d.serve(srv, tln)
}

// retire waits, at most 10 s, for the requests a is answering, after
// ending its subscription streams; the current generation takes new ones.
func (a *Agent) retire() {
	a.endStreams()
	select {
	case <-a.gate.close():
	case <-time.After(10 * time.Second):
		a.log.Warn("requests still running 10 s after a reload are left to finish on their own")
	}
}

// stop ends the refresh loops and the watchdog.
func (a *Agent) stop() {
	a.endRun()
	a.wg.Wait()
}

// handOver marks what next took from a, so a's close leaves it open.
func (a *Agent) handOver(next *Agent) {
	a.borrowed = borrowed{
		id:        next.id == a.id,
		db:        next.db == a.db,
		outbox:    next.outbox == a.outbox,
		mqtt:      next.session() == a.session(),
		container: next.container == a.container,
		imds:      next.imds == a.imds,
	}
}

// close closes what a opened and still owns.
func (a *Agent) close() {
	a.closing.Lock()
	a.closed = true
	a.closing.Unlock()
	if a.container != nil && !a.borrowed.container {
		a.container.close()
	}
	a.closeIMDS()
	if !a.borrowed.mqtt {
		a.stopSession()
	}
	if a.outbox != nil && !a.borrowed.outbox {
		a.outbox.Close()
	}
	if a.db != nil && !a.borrowed.db {
		if err := a.db.Close(); err != nil {
			a.log.Warn("closing the state store", "err", err)
		}
	}
	if a.id != nil && !a.borrowed.id {
		a.id.Close()
	}
}

func (a *Agent) session() *mqtt.Session {
	a.mqttMu.Lock()
	defer a.mqttMu.Unlock()
	return a.mqtt
}

// stopSession closes the MQTT session, if any; unsent messages stay in the
// outbox.
func (a *Agent) stopSession() {
	a.mqttMu.Lock()
	s := a.mqtt
	a.mqtt = nil
	a.mqttMu.Unlock()
	if s != nil {
		if err := s.Close(); err != nil {
			a.log.Warn("closing the MQTT session", "err", err)
		}
	}
}

// gate counts the requests a generation answers, so it can be retired once
// they are done. Every request enters and leaves it, so it takes no lock:
// the count and the closed flag share one word.
type gate struct {
	state atomic.Int64 // requests in flight, plus gateClosed once closed
	mu    sync.Mutex   // serialises close
	idle  chan struct{}
	once  sync.Once
}

const gateClosed = 1 << 62

// enter admits a request, unless the gate is closed.
func (g *gate) enter() bool {
	if g.state.Add(1)&gateClosed != 0 {
		g.leave()
		return false
	}
	return true
}

func (g *gate) leave() {
	if g.state.Add(-1) == gateClosed {
		g.once.Do(func() { close(g.idle) })
	}
}

// close admits no more requests; the channel is closed once none is left.
func (g *gate) close() <-chan struct{} {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.idle == nil {
		// Written before the flag is set: a leave that sees the flag sees
		// the channel.
		g.idle = make(chan struct{})
		if g.state.Or(gateClosed) == 0 {
			g.once.Do(func() { close(g.idle) })
		}
	}
	return g.idle
}
