// Package agent is tether's daemon: it reads the configuration, opens the
// device identity and the state store, keeps every role's credentials fresh,
// and serves them to local programs. It wires the other packages together;
// none of them imports it.
package agent

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/tetherd/tether/credprovider"
	"github.com/tetherd/tether/hsm"
	"github.com/tetherd/tether/mqtt"
	"github.com/tetherd/tether/platform"
	"github.com/tetherd/tether/store"
)

// Options are what the binary passes to the agent besides its configuration.
type Options struct {
	// Logger receives the daemon's log; never a secret.
	Logger *slog.Logger
	// Version is shown by tether status.
	Version string
	// NotBefore is the build date: a clock reading earlier is not trusted.
	NotBefore time.Time
	// Listener, when set, is the Unix socket inherited from the service
	// manager (socket activation); the agent then does not create one.
	Listener net.Listener
	// Reload delivers a value each time the configuration should be re-read
	// (SIGHUP).
	Reload <-chan struct{}
}

// ExitError carries the exit status a failure of Run should produce: 2 for
// configuration, 1 for runtime.
type ExitError struct {
	Code int
	Err  error
}

func (e *ExitError) Error() string { return e.Err.Error() }
func (e *ExitError) Unwrap() error { return e.Err }

func configFailure(format string, args ...any) error {
	return &ExitError{Code: 2, Err: fmt.Errorf(format, args...)}
}

func runtimeFailure(format string, args ...any) error {
	return &ExitError{Code: 1, Err: fmt.Errorf(format, args...)}
}

// Agent is one running configuration: identity, store, roles and servers.
type Agent struct {
	cfg  *Config
	opts Options
	log  *slog.Logger

	id    *hsm.Identity
	db    *store.DB
	roles roleSet
	refs  map[string]*credprovider.Refresher
	// cacheKeys maps each role to the store key of its credentials.
	cacheKeys map[string]string
	// closing guards closed: OnRefresh writes only while the store is open.
	closing sync.RWMutex
	closed  bool
	outbox  *store.Outbox
	mqtt    *mqtt.Session
	// containerLn and token are the container endpoint's, when configured.
	containerLn net.Listener
	token       []byte

	started time.Time
	ready   atomic.Bool
	// rot rotates the certificate (rotate.go).
	rot *rotator
}

// Run runs the agent with cfg until ctx is done. SIGHUP (opts.Reload) re-reads
// cfg.File; an invalid new configuration is logged and the old one kept. The
// Unix socket stays open across reloads, so clients never see it vanish;
// changing serve.socket takes effect at the next restart.
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
	shared := newSharedListener(ln)
	defer shared.Close()
	good := cfg
	for {
		a, err := start(ctx, cfg, opts)
		if err != nil {
			if cfg == good {
				return err
			}
			log.Error("the reloaded configuration cannot start; going back to the previous one", "err", err)
			cfg = good
			continue
		}
		good = cfg
		next, err := a.serve(ctx, shared.child())
		if err != nil || next == nil {
			return err
		}
		if next.Serve.Socket != cfg.Serve.Socket {
			log.Warn("serve.socket changed; the new path takes effect when tether restarts", "socket", cfg.Serve.Socket)
		}
		cfg = next
		log.Info("configuration reloaded", "file", cfg.File)
	}
}

// start opens everything a configuration needs. On error, whatever was
// opened is closed again.
func start(ctx context.Context, cfg *Config, opts Options) (_ *Agent, err error) {
	a := &Agent{cfg: cfg, opts: opts, log: opts.Logger, started: time.Now()}
	defer func() {
		if err != nil {
			a.close()
		}
	}()
	a.id, err = hsm.Open(ctx, cfg.Identity.Certificate, cfg.Identity.PrivateKey, hsm.WithLogger(a.log))
	if err != nil {
		if errors.Is(err, hsm.ErrTokenUnavailable) {
			return nil, runtimeFailure("identity: %w", err)
		}
		return nil, configFailure("identity: %w", err)
	}
	sealer, err := a.id.Sealer(ctx, "tether-state")
	if err != nil {
		// Without a sealer the store keeps no credentials; say so and go on:
		// the cache is a convenience, not a reason not to start.
		a.log.Warn("credentials will not be cached across restarts", "err", err)
	}
	a.db, err = store.Open(cfg.State.Path, store.Options{Sealer: sealer, Logger: a.log})
	if err != nil {
		return nil, runtimeFailure("state: %w", err)
	}
	if err := a.buildRoles(); err != nil {
		return nil, err
	}
	if err := a.startMQTT(ctx); err != nil {
		return nil, err
	}
	a.rot = newRotator(a)
	if ep := cfg.Serve.ContainerEndpoint; ep != "" {
		// Opened here rather than when serving, so a reload that cannot
		// open them goes back to the running configuration.
		if a.containerLn, err = net.Listen("tcp", ep); err != nil {
			return nil, runtimeFailure("serve.container_endpoint: cannot listen on %s: %w; choose a free loopback port", ep, unwrapSyscall(err))
		}
		if a.token, err = writeToken(cfg.Serve.TokenFile); err != nil {
			return nil, err
		}
	}
	return a, nil
}

func (a *Agent) buildRoles() error {
	cfg := a.cfg
	iot, err := NewDeviceProvider(cfg, a.id)
	if err != nil {
		return err
	}
	a.roles = roleSet{}
	a.refs = map[string]*credprovider.Refresher{}
	a.cacheKeys = map[string]string{}
	leaf := sha256.Sum256(a.id.Leaf().Raw)
	dev, err := a.refresher(DeviceRole, deviceFingerprint(cfg, leaf), iot)
	if err != nil {
		return err
	}
	a.roles[DeviceRole] = &role{name: DeviceRole, provider: dev, retryAfter: retryAfter(dev)}
	if err := a.buildExtraRoles(dev); err != nil {
		return err
	}
	a.pruneCache()
	return nil
}

// deviceFingerprint is what decides the device role's credentials; leaf is
// the SHA-256 of the device certificate.
func deviceFingerprint(cfg *Config, leaf [32]byte) string {
	return fmt.Sprintf("%q %q %q %x %s", cfg.AWS.CredentialEndpoint, cfg.AWS.RoleAlias, cfg.Identity.ThingName, leaf, cfg.AWS.Duration.Duration)
}

// cacheKey is where a role's credentials are persisted: its name and a
// digest of everything that decides what credentials it gets, so that
// after a change of role ARN, alias, source or identity the old
// credentials are never served again.
func cacheKey(name, fingerprint string) string {
	sum := sha256.Sum256([]byte(fingerprint))
	return name + "#" + hex.EncodeToString(sum[:8])
}

// pruneCache deletes persisted credentials of roles that are gone or changed.
func (a *Agent) pruneCache() {
	keys, err := a.db.CredentialKeys()
	if err != nil {
		a.log.Warn("could not list cached credentials", "err", err)
		return
	}
	current := map[string]bool{}
	for _, k := range a.cacheKeys {
		current[k] = true
	}
	for _, k := range keys {
		if !current[k] {
			if err := a.db.DeleteCredentials(k); err != nil {
				a.log.Warn("could not delete stale cached credentials", "key", k, "err", err)
			}
		}
	}
}

// NewDeviceProvider returns the device role's IoT credentials provider for
// cfg, without refresh: the daemon wraps it in the refresh engine, `tether
// credential-process --direct` uses it as it is.
func NewDeviceProvider(cfg *Config, id *hsm.Identity) (*credprovider.IoT, error) {
	p, err := credprovider.NewIoT(credprovider.IoTOptions{
		Endpoint:    cfg.AWS.CredentialEndpoint,
		RoleAlias:   cfg.AWS.RoleAlias,
		ThingName:   cfg.Identity.ThingName,
		Certificate: id.Certificate(),
		CAFile:      cfg.AWS.CAFile,
		Duration:    cfg.AWS.Duration.Duration,
	})
	if err != nil {
		return nil, configFailure("aws: %w", err)
	}
	return p, nil
}

// refresher wraps p in the refresh engine with the configured rules,
// persists what it fetches and seeds it with what was persisted.
// fingerprint describes what decides the credentials (see cacheKey).
func (a *Agent) refresher(name, fingerprint string, p aws.CredentialsProvider) (*credprovider.Refresher, error) {
	key := cacheKey(name, fingerprint)
	a.cacheKeys[name] = key
	mode, err := credprovider.ParseMode(a.cfg.AWS.Refresh)
	if err != nil {
		return nil, configFailure("aws.refresh: %w", err)
	}
	r, err := credprovider.NewRefresher(p, credprovider.RefreshOptions{
		Mode:            mode,
		AdvisoryWindow:  a.cfg.AWS.AdvisoryWindow.Duration,
		MandatoryWindow: a.cfg.AWS.MandatoryWindow.Duration,
		NotBefore:       a.opts.NotBefore,
		Logger:          a.log,
		Name:            name,
		OnRefresh: func(c aws.Credentials) {
			// A fetch may outlive its generation (it runs detached from
			// callers); never write into a store that close() has closed.
			a.closing.RLock()
			defer a.closing.RUnlock()
			if a.closed {
				return
			}
			if err := a.db.PutCredentials(key, c); err != nil && !errors.Is(err, store.ErrNoSealer) {
				a.log.Warn("could not cache credentials", "role", name, "err", err)
			}
		},
		OnChange: func(credprovider.Status) { a.notifyStatus() },
	})
	if err != nil {
		return nil, configFailure("role %s: %w", name, err)
	}
	if c, ok, err := a.db.Credentials(key); err != nil {
		a.log.Warn("could not read cached credentials", "role", name, "err", err)
	} else if ok {
		if err := r.Seed(c); err == nil {
			a.log.Info("serving cached credentials", "role", name, "expires", c.Expires.UTC().Format(time.RFC3339))
		}
	}
	a.refs[name] = r
	return r, nil
}

func retryAfter(r *credprovider.Refresher) func() time.Duration {
	return func() time.Duration {
		if n := r.Status().NextRefresh; !n.IsZero() {
			return time.Until(n)
		}
		return 0
	}
}

// serve listens, runs the refreshers and answers until ctx is done (nil, nil)
// or a valid new configuration arrives (it is returned).
func (a *Agent) serve(ctx context.Context, unixLn net.Listener) (*Config, error) {
	defer a.close()

	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	for name, r := range a.refs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := r.Run(runCtx); err != nil && !errors.Is(err, context.Canceled) {
				a.log.Error("refresh loop stopped", "role", name, "err", err)
			}
		}()
	}
	roles := func() roleSet { return a.roles }
	api := &api{
		roles:  roles,
		allow:  func() AllowList { return AllowList{UIDs: a.cfg.Serve.AllowUIDs, GIDs: a.cfg.Serve.AllowGIDs} },
		status: a.Status,
		log:    a.log,
	}
	if a.mqtt != nil {
		api.mqtt = mqtt.NewHTTPHandler(a.mqtt)
	}
	api.identity = a.rot.handler()
	wg.Add(1)
	go func() { defer wg.Done(); a.rot.run(runCtx) }()
	// Requests see a context that ends when this generation stops, so a
	// subscription stream ends with it instead of holding Shutdown up.
	reqCtx, endRequests := context.WithCancel(context.Background())
	defer endRequests()
	baseCtx := func(net.Listener) context.Context { return reqCtx }
	servers := []*http.Server{newHTTPServer(api.routes(), a.log)}
	listeners := []net.Listener{unixLn}
	if a.containerLn != nil {
		c := &containerAPI{roles: roles, token: a.token, log: a.log}
		srv := newHTTPServer(c.routes(), a.log)
		srv.ConnContext = nil
		servers = append(servers, srv)
		listeners = append(listeners, a.containerLn)
	}
	for _, srv := range servers {
		srv.BaseContext = baseCtx
	}
	errc := make(chan error, len(servers))
	for i, srv := range servers {
		go func() {
			if err := srv.Serve(listeners[i]); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- err
			}
		}()
	}
	a.ready.Store(true)
	platform.Ready(a.statusLine())
	a.log.Info("tether is ready", "socket", unixLn.Addr().String(), "container_endpoint", a.cfg.Serve.ContainerEndpoint, "thing", a.cfg.Identity.ThingName)

	if iv, err := platform.WatchdogInterval(); err != nil {
		a.log.Warn("watchdog disabled", "err", err)
	} else if iv > 0 {
		wd := platform.NewWatchdog(iv, a.healthy, a.log)
		wg.Add(1)
		go func() { defer wg.Done(); wd.Run(runCtx) }()
	}
	var next *Config
	var runErr error
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case err := <-errc:
			runErr = runtimeFailure("serving: %w", err)
			break loop
		case <-a.rot.switched:
			// A rotation committed or rolled back: a new generation opens
			// the identity the certificate file now names.
			a.log.Info("switching to the device identity the rotation left", "certificate", a.cfg.Identity.Certificate)
			cfg, err := LoadConfig(a.cfg.File)
			if err != nil {
				cfg = a.cfg
			}
			next = cfg
			break loop
		case <-a.opts.Reload:
			platform.Reloading()
			cfg, err := LoadConfig(a.cfg.File)
			if err != nil {
				a.log.Error("keeping the running configuration: the new one is invalid", "file", a.cfg.File, "err", strings.ReplaceAll(err.Error(), "\n", "; "))
				platform.Ready(a.statusLine())
				continue
			}
			next = cfg
			break loop
		}
	}
	if next == nil {
		platform.Stopping()
	}
	a.ready.Store(false)
	endRequests()
	shutdownCtx, done := context.WithTimeout(context.Background(), 10*time.Second)
	defer done()
	for _, srv := range servers {
		if err := srv.Shutdown(shutdownCtx); err != nil {
			// Requests still running after the grace period are cut, so
			// nothing uses the store after close().
			srv.Close()
		}
	}
	cancel()
	wg.Wait()
	if next != nil {
		// Ready again once the next generation is serving.
		return next, nil
	}
	a.log.Info("tether stopped")
	return nil, runErr
}

// healthy reports whether every eager refresh loop keeps its schedule, which
// is what the watchdog stands for: a hung agent is restarted, an offline one
// (failing fetches, retried on schedule) is not.
func (a *Agent) healthy(context.Context) error {
	now := time.Now()
	for name, r := range a.refs {
		st := r.Status()
		if st.Mode == credprovider.Eager && !st.NextRefresh.IsZero() && now.Sub(st.NextRefresh) > overdue {
			return fmt.Errorf("the refresh of role %s is %s overdue", name, now.Sub(st.NextRefresh).Round(time.Second))
		}
	}
	return nil
}

// overdue is how late a scheduled refresh may start before the agent counts
// as hung; a fetch itself is bounded by the engine's fetch timeout.
const overdue = 2 * time.Minute

func (a *Agent) notifyStatus() {
	if a.ready.Load() {
		platform.Status(a.statusLine())
	}
}

// statusLine is the one-line credential state systemctl status shows.
func (a *Agent) statusLine() string {
	var parts []string
	names := make([]string, 0, len(a.refs))
	for n := range a.refs {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		st := a.refs[n].Status()
		switch {
		case st.Valid:
			parts = append(parts, fmt.Sprintf("%s valid until %s", n, st.Expires.UTC().Format("15:04:05Z")))
		case st.LastError != nil:
			parts = append(parts, n+" failing")
		default:
			parts = append(parts, n+" pending")
		}
	}
	if a.mqtt != nil {
		ms := a.mqtt.Status()
		parts = append(parts, fmt.Sprintf("mqtt %s, outbox %d", ms.State, ms.Outbox.Depth))
	}
	return strings.Join(parts, ", ")
}

func (a *Agent) close() {
	a.closing.Lock()
	a.closed = true
	a.closing.Unlock()
	if a.containerLn != nil {
		a.containerLn.Close()
	}
	if a.mqtt != nil {
		if err := a.mqtt.Close(); err != nil {
			a.log.Warn("closing the MQTT session", "err", err)
		}
	}
	if a.outbox != nil {
		a.outbox.Close()
	}
	if a.db != nil {
		if err := a.db.Close(); err != nil {
			a.log.Warn("closing the state store", "err", err)
		}
	}
	if a.id != nil {
		a.id.Close()
	}
}

// listenUnix returns the API socket: the one systemd passed (socket
// activation, FileDescriptorName=api) or a new one with mode 0660.
func listenUnix(path string, log *slog.Logger) (net.Listener, error) {
	if ln, err := platform.ActivatedListener("api"); err != nil || ln != nil {
		if err != nil {
			return nil, runtimeFailure("socket activation: %w", err)
		}
		log.Info("using the socket passed by the service manager", "addr", ln.Addr().String())
		return ln, nil
	}
	dir := filepath.Dir(path)
	if st, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) || (err == nil && !st.IsDir()) {
		return nil, configFailure("serve.socket: directory %s does not exist; create it (systemd: RuntimeDirectory=tether) or set serve.socket", dir)
	} else if err != nil {
		return nil, runtimeFailure("serve.socket: directory %s: %w", dir, unwrapSyscall(err))
	}
	if st, err := os.Lstat(path); err == nil && st.Mode().Type() != os.ModeSocket {
		return nil, configFailure("serve.socket: %s exists and is not a socket; remove it or set serve.socket", path)
	}
	ln, _, err := platform.UnixListener("api", path, 0o660)
	if err != nil {
		return nil, runtimeFailure("serve.socket: %w", err)
	}
	return ln, nil
}

// writeToken makes a fresh random token for the container endpoint and
// writes it where AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE will point (0640).
func writeToken(path string) ([]byte, error) {
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return nil, runtimeFailure("serve.token_file: %w", err)
	}
	token := []byte(hex.EncodeToString(raw))
	tmp, err := os.CreateTemp(filepath.Dir(path), ".token-*")
	if err != nil {
		return nil, runtimeFailure("serve.token_file: cannot write in %s: %w; make it writable or set serve.token_file", filepath.Dir(path), unwrapSyscall(err))
	}
	defer os.Remove(tmp.Name())
	if err = tmp.Chmod(0o640); err == nil {
		_, err = tmp.Write(token)
		if err == nil {
			err = tmp.Close()
		}
		if err == nil {
			err = os.Rename(tmp.Name(), path)
		}
		if err == nil {
			return token, nil
		}
	}
	tmp.Close()
	return nil, runtimeFailure("serve.token_file: cannot write %s: %w; make its directory writable or set serve.token_file", path, unwrapSyscall(err))
}

func unwrapSyscall(err error) error {
	var se *os.SyscallError
	if errors.As(err, &se) {
		return se.Err
	}
	return err
}
