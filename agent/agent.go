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
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/tetherd/tether/credprovider"
	"github.com/tetherd/tether/hsm"
	"github.com/tetherd/tether/platform"
	"github.com/tetherd/tether/platform/atomicfile"
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

func (a *Agent) buildRoles() error {
	cfg := a.cfg
	iot, err := NewDeviceProvider(cfg, a.id)
	if err != nil {
		return err
	}
	a.roles, a.iot = roleSet{}, iot
	leaf := sha256.Sum256(a.id.Leaf().Raw)
	dev, err := a.addRole(DeviceRole, deviceCredentialsKey(cfg, leaf), iot, Source{}, AllowList{})
	if err != nil {
		return err
	}
	return a.buildExtraRoles(dev.ref)
}

// deviceCredentialsKey is what decides the device role's credentials; leaf
// is the SHA-256 of the device certificate.
func deviceCredentialsKey(cfg *Config, leaf [32]byte) credentialsKey {
	return credentialsKey{
		Endpoint: cfg.AWS.CredentialEndpoint, RoleAlias: cfg.AWS.RoleAlias, ThingName: cfg.Identity.ThingName,
		Certificate: hex.EncodeToString(leaf[:]), Duration: cfg.AWS.Duration.Duration,
	}
}

// credentialsKey lists exactly what decides the credentials a role gets, and
// nothing else: after a change of any of these the old credentials are
// never served again, while editing what does not decide them (allow lists,
// an MFA command, the STS endpoint) keeps them.
type credentialsKey struct {
	// The device role's.
	Endpoint    string `json:",omitempty"`
	RoleAlias   string `json:",omitempty"`
	ThingName   string `json:",omitempty"`
	Certificate string `json:",omitempty"` // SHA-256 of the leaf

	// A [[role]]'s.
	RoleARN              string            `json:",omitempty"`
	SessionName          string            `json:",omitempty"`
	ExternalID           string            `json:",omitempty"`
	Policy               string            `json:",omitempty"`
	PolicyARNs           []string          `json:",omitempty"`
	Tags                 map[string]string `json:",omitempty"`
	TransitiveTagKeys    []string          `json:",omitempty"`
	SourceIdentity       string            `json:",omitempty"`
	MFASerial            string            `json:",omitempty"`
	WebIdentityTokenFile string            `json:",omitempty"`
	CredentialCommand    []string          `json:",omitempty"`
	// Source is the cache key of the source role, or the profile's name.
	Source string `json:",omitempty"`

	Duration time.Duration `json:",omitempty"`
}

// storeKey is where the credentials of role name with key k are persisted:
// the name and a digest of k.
func (k credentialsKey) storeKey(name string) string {
	// A struct of strings, string slices and a string map always marshals,
	// and map keys are sorted, so equal keys give equal digests.
	b, _ := json.Marshal(k)
	sum := sha256.Sum256(b)
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
	for _, rl := range a.roles {
		current[rl.cacheKey] = true
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
	o := deviceOptions(cfg)
	o.Certificate = id.Certificate()
	p, err := credprovider.NewIoT(o)
	if err != nil {
		return nil, configFailure("%w", optionsError("", iotKeys, err))
	}
	return p, nil
}

// refreshOptions are the [aws] refresh settings every role is refreshed
// with: what validation checks and addRole uses.
func refreshOptions(cfg *Config) credprovider.RefreshOptions {
	return credprovider.RefreshOptions{
		Mode:            cfg.AWS.Refresh,
		AdvisoryWindow:  cfg.AWS.AdvisoryWindow.Duration,
		MandatoryWindow: cfg.AWS.MandatoryWindow.Duration,
	}
}

// deviceOptions are the device role's IoT options but the certificate: what
// validation checks and NewDeviceProvider uses.
func deviceOptions(cfg *Config) credprovider.IoTOptions {
	return credprovider.IoTOptions{
		Endpoint:  cfg.AWS.CredentialEndpoint,
		RoleAlias: cfg.AWS.RoleAlias,
		ThingName: cfg.Identity.ThingName,
		CAFile:    cfg.AWS.CAFile,
		Duration:  cfg.AWS.Duration.Duration,
	}
}

// optionsError is err (from a credprovider constructor) with the options it
// refuses named by their TOML keys, after prefix, as validation names them.
func optionsError(prefix string, keys map[string]string, err error) error {
	v := &validator{}
	v.options(prefix, keys, err)
	if len(v.errs) == 0 {
		return err
	}
	var parts []string
	for _, fe := range v.errs {
		parts = append(parts, fe.Key+": "+fe.Issue)
	}
	return errors.New(strings.Join(parts, "; "))
}

// addRole wraps p in the refresh engine with the configured rules, persists
// what it fetches under ck's key, seeds it with what was persisted there, and
// records the role.
func (a *Agent) addRole(name string, ck credentialsKey, p aws.CredentialsProvider, source Source, allow AllowList) (*role, error) {
	key := ck.storeKey(name)
	o := refreshOptions(a.cfg)
	o.NotBefore, o.Logger, o.Name = a.opts.NotBefore, a.log, name
	o.OnChange = func(credprovider.Status) { a.notifyStatus() }
	o.OnRefresh = func(c aws.Credentials, lifetime time.Duration) {
		// A fetch may outlive its generation (it runs detached from
		// callers); never write into a store that close() has closed.
		a.closing.RLock()
		defer a.closing.RUnlock()
		if a.closed {
			return
		}
		if err := a.db.PutCredentials(key, store.Cached{Credentials: c, Lifetime: lifetime}); err != nil && !errors.Is(err, store.ErrNoSealer) {
			a.log.Warn("could not cache credentials", "role", name, "err", err)
		}
	}
	r, err := credprovider.NewRefresher(p, o)
	if err != nil {
		return nil, configFailure("role %s: %w", name, err)
	}
	if prev, ok := a.inherit[key]; ok {
		// The running generation's credentials for the same role and
		// identity: a reload never loses what is in memory, whatever the
		// store or the network say.
		if c, lifetime, ok := prev.Current(); ok {
			_ = r.Seed(c, lifetime)
		}
	}
	cache := a.db
	if a.setSealer && a.sealer != nil {
		// A new identity reads what a rotation sealed for it.
		cache = a.db.WithSealer(a.sealer)
	}
	if c, ok, err := cache.Credentials(key); err != nil {
		a.log.Warn("could not read cached credentials", "role", name, "err", err)
	} else if ok {
		if err := r.Seed(c.Credentials, c.Lifetime); err != nil {
			a.log.Info("cached credentials not used; fetching new ones", "role", name, "reason", err)
		} else {
			a.log.Info("serving cached credentials", "role", name, "expires", c.Expires.UTC().Format(time.RFC3339))
		}
	}
	rl := &role{name: name, ref: r, cacheKey: key, source: source, allow: allow}
	a.roles[name] = rl
	return rl, nil
}

// healthy reports whether every eager refresh loop keeps its schedule, which
// is what the watchdog stands for: a hung agent is restarted, an offline one
// (failing fetches, retried on schedule) is not.
func (a *Agent) healthy(context.Context) error {
	now := time.Now()
	for name, rl := range a.roles {
		st := rl.ref.Status()
		if st.Mode == credprovider.Eager && !st.NextRefresh.IsZero() && now.Sub(st.NextRefresh) > overdue {
			return fmt.Errorf("the refresh of role %s is %s overdue", name, now.Sub(st.NextRefresh).Round(time.Second))
		}
	}
	return nil
}

// overdue is how late a scheduled refresh may start before the agent counts
// as hung; a fetch itself is bounded by the engine's fetch timeout.
const overdue = 2 * time.Minute

// notifyStatus asks for the status line to be sent to systemd. It never
// waits: it runs inside a refresher's change callback, and systemd may be
// slow to read its socket; sendStatus sends the latest line aside.
func (a *Agent) notifyStatus() {
	if a.ready.Load() {
		select {
		case a.d.statusDue <- struct{}{}:
		default: // one is due already; it will read the state then
		}
	}
}

// sendStatus sends the current generation's status line to systemd each
// time one is due, until ctx ends.
func (d *daemon) sendStatus(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-d.statusDue:
			if a := d.cur.Load(); a != nil {
				platform.Status(a.statusLine())
			}
		}
	}
}

// statusLine is the one-line credential state systemctl status shows.
func (a *Agent) statusLine() string {
	var parts []string
	names := make([]string, 0, len(a.roles))
	for n := range a.roles {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		st := a.roles[n].ref.Status()
		switch {
		case st.Valid:
			parts = append(parts, fmt.Sprintf("%s valid until %s", n, st.Expires.UTC().Format("15:04:05Z")))
		case st.LastError != nil:
			parts = append(parts, n+" failing")
		default:
			parts = append(parts, n+" pending")
		}
	}
	if s := a.session(); s != nil {
		ms := s.Status()
		parts = append(parts, fmt.Sprintf("mqtt %s, outbox %d", ms.State, ms.Outbox.Depth))
	}
	return strings.Join(parts, ", ")
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
	if err := writeTokenFile(path, token); err != nil {
		return nil, err
	}
	return token, nil
}

// writeTokenFile replaces path with token, atomically, mode 0640.
func writeTokenFile(path string, token []byte) error {
	if err := atomicfile.WriteFile(path, token, 0o640); err != nil {
		return runtimeFailure("serve.token_file: cannot write %s: %w; make its directory writable or set serve.token_file", path, unwrapSyscall(err))
	}
	return nil
}

func unwrapSyscall(err error) error {
	var se *os.SyscallError
	if errors.As(err, &se) {
		return se.Err
	}
	return err
}
