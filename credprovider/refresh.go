// Package credprovider provides aws.CredentialsProvider implementations for
// gateways and the refresh engine that keeps any of them fresh.
//
// IoT exchanges a device X.509 identity for temporary credentials at the AWS
// IoT Core credentials provider. Refresher wraps any aws.CredentialsProvider
// and refreshes ahead of expiry (eagerly in the background or on demand),
// retries with backoff while still serving valid credentials, shares one
// fetch among concurrent callers and never serves credentials in their last
// MandatoryWindow. Both plug into config.LoadDefaultConfig unchanged through
// config.WithCredentialsProvider. docs/refresh.md explains the rules.
package credprovider

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
)

// Mode selects when a Refresher refreshes inside the advisory window.
type Mode int

const (
	// Eager refreshes in the background (Run) once the advisory window is
	// reached; Retrieve never waits while valid credentials exist.
	Eager Mode = iota
	// Deferred refreshes on demand: a Retrieve inside the advisory window
	// waits for a refresh attempt (and falls back to the current
	// credentials if it fails).
	Deferred
)

// String returns "eager" or "deferred", the spelling of the refresh setting.
func (m Mode) String() string {
	switch m {
	case Eager:
		return "eager"
	case Deferred:
		return "deferred"
	}
	return fmt.Sprintf("Mode(%d)", int(m))
}

// ParseMode parses the refresh setting: "eager" or "deferred".
func ParseMode(s string) (Mode, error) {
	switch s {
	case "eager":
		return Eager, nil
	case "deferred":
		return Deferred, nil
	}
	return 0, fmt.Errorf("%w: %w", ErrInvalidConfig, errMode(s))
}

func errMode(s string) error {
	return fmt.Errorf("%q is not a refresh mode; use \"eager\" or \"deferred\"", s)
}

// UnmarshalText parses the refresh setting with ParseMode, so a
// configuration file can hold a Mode; an empty value is the zero Mode,
// Eager.
func (m *Mode) UnmarshalText(b []byte) error {
	if len(b) == 0 {
		*m = Eager
		return nil
	}
	v, err := ParseMode(string(b))
	if err != nil {
		// The caller (a configuration decoder) names the setting.
		return errMode(string(b))
	}
	*m = v
	return nil
}

// MarshalText writes the mode as the refresh setting spells it.
func (m Mode) MarshalText() ([]byte, error) { return []byte(m.String()), nil }

// Defaults of RefreshOptions.
const (
	DefaultAdvisoryWindow  = 15 * time.Minute
	DefaultMandatoryWindow = 30 * time.Second
	DefaultJitter          = 0.1
	DefaultMinBackoff      = time.Second
	DefaultMaxBackoff      = 5 * time.Minute
	DefaultFetchTimeout    = time.Minute
)

// RefreshOptions configures a Refresher. The zero value is usable.
type RefreshOptions struct {
	// Mode is Eager (the zero value) or Deferred.
	Mode Mode
	// AdvisoryWindow: with less than this left, a refresh is attempted
	// but the current credentials stay in use if it fails. Default 15 min.
	AdvisoryWindow time.Duration
	// MandatoryWindow: credentials are never served with less than this
	// left (for credentials issued with less than four times this
	// lifetime, which AWS never issues, a quarter of their lifetime)
	// left. Default and minimum 30 s; must be below AdvisoryWindow.
	MandatoryWindow time.Duration
	// Jitter moves each scheduled refresh earlier by a random fraction,
	// up to Jitter, of the time until it, so a fleet booted together does
	// not refresh together. Default 0.1; negative disables; at most 0.5.
	Jitter float64
	// MinBackoff and MaxBackoff bound the delay between failed attempts
	// (exponential, full jitter). Defaults 1 s and 5 min.
	MinBackoff, MaxBackoff time.Duration
	// FetchTimeout bounds one call of the wrapped provider, which runs on a
	// context detached from the callers'. Default 1 min.
	FetchTimeout time.Duration
	// Clock defaults to SystemClock.
	Clock Clock
	// NotBefore: a clock reading earlier is reported as unsynchronised and
	// not trusted. Default DefaultNotBefore().
	NotBefore time.Time
	// Rand returns a number in [0, 1) for jitter. Default math/rand/v2.
	Rand func() float64
	// Logger receives refreshes, failures and clock problems; never a
	// secret. Default: discard.
	Logger *slog.Logger
	// Name identifies these credentials in log lines, e.g. a role name.
	Name string
	// OnChange is called after every refresh attempt, Seed and clock state
	// change with a snapshot of the Status; a snapshot older than one
	// already delivered is dropped. It must return quickly and must not
	// call Retrieve or Seed (Status is fine).
	OnChange func(Status)
	// OnRefresh is called with the credentials exactly as issued after
	// each successful fetch, before any caller can be served them, e.g. to
	// persist them for Seed after a restart, and with the lifetime they
	// were issued with (until Expires, measured as they arrived), which
	// Seed needs to give them the same windows again.
	OnRefresh func(creds aws.Credentials, lifetime time.Duration)
}

// Status is a snapshot of a Refresher's state.
type Status struct {
	Mode Mode
	// Valid reports whether Retrieve can answer without fetching.
	Valid bool
	// Expires is the expiry of the current credentials as issued; zero when
	// there are none or they do not expire.
	Expires time.Time
	// ServeUntil is when this machine stops serving them (Expires minus
	// the mandatory window, or the elapsed-time deadline while the clock is
	// not trusted).
	ServeUntil time.Time
	// LastRefresh is when the last successful fetch completed.
	LastRefresh time.Time
	// NextRefresh is when the next fetch is due (eager: scheduled;
	// deferred: the first Retrieve from then on fetches). Zero: none due,
	// or one is in progress.
	NextRefresh time.Time
	// LastError is the error of the latest attempt; nil once one succeeds.
	LastError error
	// Refreshes counts successful fetches.
	Refreshes int
	// Failures counts failed attempts since the last success.
	Failures int
	// TotalFailures counts all failed attempts.
	TotalFailures int
	// FailuresByReason counts all failed attempts by ClassifyFailure's
	// reason; its sum is TotalFailures.
	FailuresByReason FailureCounts
	// ClockError is a *ClockError while the clock reads before NotBefore.
	ClockError error
}

// Refresher wraps an aws.CredentialsProvider and keeps its credentials fresh
// by the rules of docs/refresh.md. It is an aws.CredentialsProvider itself and
// is safe for concurrent use.
type Refresher struct {
	p       aws.CredentialsProvider
	o       RefreshOptions
	wake    chan struct{}
	running atomic.Bool

	mu          sync.Mutex
	cur         *entry
	fl          *flight
	nextAttempt time.Time
	lastRefresh time.Time
	lastErr     error
	refreshes   int
	failures    int
	total       int
	reasons     FailureCounts
	clockErr    *ClockError
	seq         uint64

	notifyMu  sync.Mutex
	delivered uint64

	// joinHook, when set by tests, runs each time a caller starts waiting
	// for a fetch.
	joinHook func()
}

var _ aws.CredentialsProvider = (*Refresher)(nil)

// entry is a set of credentials with its schedule.
type entry struct {
	creds      aws.Credentials
	serveUntil time.Time     // exclusive; zero when the credentials do not expire
	refreshAt  time.Time     // zero when they do not expire
	assumed    bool          // lifetime assumed because the clock was not trusted
	lifetime   time.Duration // as issued; 0 when unknown (seeded by an older tether)
}

func (e *entry) validAt(now time.Time) bool {
	return !e.creds.CanExpire || now.Before(e.serveUntil)
}

func (e *entry) refreshDue(now time.Time) bool {
	return e.creds.CanExpire && !now.Before(e.refreshAt)
}

// served is what Retrieve hands out: Expires is the serving deadline, so a
// cache in front of the Refresher (config.LoadDefaultConfig always adds
// aws.CredentialsCache) stops using them when the Refresher would.
func (e *entry) served() aws.Credentials {
	c := e.creds
	if c.CanExpire {
		c.Expires = e.serveUntil.Round(0)
	}
	return c
}

// flight is one fetch shared by every caller that needs it.
type flight struct {
	done chan struct{}
	err  error
}

// NewRefresher wraps p. Options are checked with RefreshOptions.Validate;
// errors match ErrInvalidConfig and name the option at fault.
func NewRefresher(p aws.CredentialsProvider, opts RefreshOptions) (*Refresher, error) {
	if p == nil {
		return nil, fmt.Errorf("%w: NewRefresher: provider is nil", ErrInvalidConfig)
	}
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	o := opts
	if o.AdvisoryWindow == 0 {
		o.AdvisoryWindow = DefaultAdvisoryWindow
	}
	if o.MandatoryWindow == 0 {
		o.MandatoryWindow = DefaultMandatoryWindow
	}
	switch {
	case o.Jitter == 0:
		o.Jitter = DefaultJitter
	case o.Jitter < 0:
		o.Jitter = 0
	}
	if o.MinBackoff == 0 {
		o.MinBackoff = DefaultMinBackoff
	}
	if o.MaxBackoff == 0 {
		o.MaxBackoff = DefaultMaxBackoff
	}
	if o.FetchTimeout == 0 {
		o.FetchTimeout = DefaultFetchTimeout
	}
	if o.Clock == nil {
		o.Clock = SystemClock{}
	}
	if o.NotBefore.IsZero() {
		o.NotBefore = DefaultNotBefore()
	}
	if o.Rand == nil {
		o.Rand = rand.Float64
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Name != "" {
		o.Logger = o.Logger.With("credentials", o.Name)
	}
	return &Refresher{p: p, o: o, wake: make(chan struct{}, 1)}, nil
}

// Retrieve returns credentials that are valid for at least the mandatory
// window, fetching them if needed (see docs/refresh.md for when it waits).
// The Expires of the returned credentials is the moment the Refresher stops
// serving them, not the issuer's expiry (Status().Expires).
//
// A caller whose ctx ends while waiting gets ctx's error; the shared fetch goes
// on for the others.
func (r *Refresher) Retrieve(ctx context.Context) (aws.Credentials, error) {
	r.mu.Lock()
	now := r.o.Clock.Now()
	changed := r.checkClockLocked(now)
	e := r.cur
	valid := e != nil && e.validAt(now)
	if valid && !e.refreshDue(now) {
		c := e.served()
		r.unlock(changed)
		return c, nil
	}
	backingOff := now.Before(r.nextAttempt)
	if valid && (backingOff || r.o.Mode == Eager) {
		// Advisory window: eager mode never makes a caller wait for it.
		if !backingOff && r.fl == nil {
			r.startLocked(ctx)
		}
		c := e.served()
		r.unlock(changed)
		return c, nil
	}
	if !valid && backingOff && r.fl == nil {
		err := fmt.Errorf("%w: %d attempts failed, next at %s: %w", ErrNoCredentials,
			r.failures, r.nextAttempt.Round(0).Format(time.RFC3339), r.lastErr)
		r.unlock(changed)
		return aws.Credentials{}, err
	}
	f := r.startLocked(ctx)
	hook := r.joinHook
	r.unlock(changed)
	if hook != nil {
		hook()
	}

	select {
	case <-f.done:
	case <-ctx.Done():
		return aws.Credentials{}, fmt.Errorf("credprovider: waiting for a credentials refresh: %w", ctx.Err())
	}

	r.mu.Lock()
	defer r.mu.Unlock()
	now = r.o.Clock.Now()
	if e := r.cur; e != nil && e.validAt(now) {
		return e.served(), nil
	}
	if f.err == nil {
		return aws.Credentials{}, fmt.Errorf("%w: the credentials fetched expired before they could be served", ErrNoCredentials)
	}
	return aws.Credentials{}, fmt.Errorf("%w: %w", ErrNoCredentials, f.err)
}

// startLocked joins the fetch in progress or starts one.
func (r *Refresher) startLocked(ctx context.Context) *flight {
	if r.fl != nil {
		return r.fl
	}
	f := &flight{done: make(chan struct{})}
	r.fl = f
	// The fetch keeps ctx's values (tracing) but not its cancellation: it
	// serves every caller that joins, not just the first.
	go r.fetch(context.WithoutCancel(ctx), f)
	return f
}

func (r *Refresher) fetch(ctx context.Context, f *flight) {
	ctx, cancel := context.WithTimeout(ctx, r.o.FetchTimeout)
	creds, err := r.p.Retrieve(ctx)
	cancel()
	if err == nil && r.o.OnRefresh != nil {
		// Persist before publishing: once any caller can be served these
		// credentials, a crash must not lose them.
		r.o.OnRefresh(creds, creds.Expires.Sub(r.o.Clock.Now()))
	}

	r.mu.Lock()
	now := r.o.Clock.Now()
	r.checkClockLocked(now)
	var e *entry
	if err == nil {
		e, err = r.newEntry(creds, now, false, 0)
	}
	if err == nil {
		r.cur = e
		r.refreshes++
		r.failures = 0
		r.lastErr = nil
		r.lastRefresh = now
		r.nextAttempt = time.Time{}
	} else {
		r.failures++
		r.total++
		r.reasons[ClassifyFailure(err)]++
		r.lastErr = err
		n := r.failures
		var se *ServiceError
		if errors.As(err, &se) && se.StatusCode == http.StatusTooManyRequests {
			// The account's rate limit, not this device, refused: the whole
			// fleet is asking at once, so start from a backoff that spreads
			// it instead of climbing from a second (docs/refresh.md).
			n = max(n, throttledFailures)
		}
		delay := r.backoff(n)
		if se != nil && se.RetryAfter > delay {
			delay = min(se.RetryAfter, r.o.MaxBackoff)
		}
		r.nextAttempt = now.Add(delay)
	}
	f.err = err
	r.fl = nil
	failures, next := r.failures, r.nextAttempt
	r.unlock(true)

	if err != nil {
		r.o.Logger.Warn("credentials refresh failed", "error", err, "retryable", IsRetryable(err),
			"failures", failures, "next_attempt", next.Round(0))
	} else {
		r.o.Logger.Info("credentials refreshed", "source", creds.Source, "expires", creds.Expires,
			"serve_until", e.serveUntil.Round(0), "next_refresh", e.refreshAt.Round(0), "lifetime_assumed", e.assumed)
	}
	// Wake a Run that sleeps on a timer (the schedule changed) before
	// releasing the waiters, so a Run that waited on this very fetch can
	// take the poke back and not rearm its timer twice.
	r.poke()
	close(f.done)
}

// newEntry validates creds and schedules their refresh. seeded credentials
// come from storage with the lifetime they were issued with (0 when
// unknown: then only the advisory rule applies), and are refused while the
// clock is not trusted because nothing then tells whether they are still
// valid. Credentials with a known lifetime get the same windows whether
// fetched now or seeded, so a restarted process serves what the one before
// it would have.
func (r *Refresher) newEntry(creds aws.Credentials, now time.Time, seeded bool, issued time.Duration) (*entry, error) {
	if creds.AccessKeyID == "" || creds.SecretAccessKey == "" {
		return nil, fmt.Errorf("credprovider: provider returned credentials without an access key ID or secret access key")
	}
	e := &entry{creds: creds}
	if !creds.CanExpire {
		return e, nil
	}
	var lifetime time.Duration // as issued; 0 when unknown
	var expires time.Time      // by this machine's clock
	var start time.Time        // when issued, by this machine's clock
	if r.clockErr == nil {
		expires = creds.Expires
		lifetime, start = creds.Expires.Sub(now), now
		if seeded {
			lifetime, start = issued, creds.Expires.Add(-issued)
		}
	} else {
		if seeded {
			return nil, fmt.Errorf("credprovider: cannot tell whether stored credentials are still valid: %w", r.clockErr)
		}
		// The issuer just handed these out, so they are good for at least
		// the shortest lifetime AWS issues; measure it from now, by the
		// monotonic clock that Now's readings carry.
		lifetime = min(creds.Expires.Sub(now), minIssuedLifetime)
		expires, start = now.Add(lifetime), now
		e.assumed = true
	}
	e.lifetime = lifetime
	window := r.o.MandatoryWindow
	if lifetime > 0 && lifetime < 4*window {
		// AWS issues at least 15 minutes, so this is a test issuer or a
		// custom source handing out seconds: a fixed window would leave
		// nothing to serve. Keep three quarters of the lifetime servable.
		window = lifetime / 4
	}
	e.serveUntil = expires.Add(-window)
	if !now.Before(e.serveUntil) {
		return nil, &staleError{fmt.Sprintf("credprovider: credentials from %q expire at %s, within %v of now (%s): the provider handed out stale credentials or this machine's clock is ahead",
			creds.Source, creds.Expires.UTC().Format(time.RFC3339), window, now.UTC().Format(time.RFC3339))}
	}
	switch {
	case lifetime <= 0:
		e.refreshAt = expires.Add(-r.o.AdvisoryWindow)
	case lifetime < 2*r.o.AdvisoryWindow:
		// Short-lived credentials would sit in the advisory window for
		// most of their life; refresh at half-life instead.
		e.refreshAt = start.Add(lifetime / 2)
	default:
		e.refreshAt = expires.Add(-r.o.AdvisoryWindow)
	}
	if lead := e.refreshAt.Sub(now); lead > 0 && r.o.Jitter > 0 {
		j := r.o.Jitter
		if !seeded && (r.refreshes == 0 || r.failures > 0) {
			// The first credentials after start or after failures: the
			// whole fleet may have fetched them in the same minutes (a
			// boot, the end of an outage), and a jitter of a tenth would
			// keep it refreshing in step for days. One earlier refresh
			// spreads it over the lifetime (docs/refresh.md).
			j = resyncJitter
		}
		e.refreshAt = e.refreshAt.Add(-time.Duration(r.o.Rand() * j * float64(lead)))
	}
	if e.refreshAt.After(e.serveUntil) {
		e.refreshAt = e.serveUntil
	}
	if e.refreshAt.Before(now) {
		e.refreshAt = now
	}
	return e, nil
}

// resyncJitter is the Jitter of the first credentials after start or after
// failures.
const resyncJitter = 0.8

// throttledFailures is the backoff step a throttled (429) attempt is treated
// as at least: with the default MinBackoff, a draw from up to about four
// minutes. softhsm-test/fleetsim chose it: it halves the requests of a fleet
// booting at once and does not delay its recovery.
const throttledFailures = 8

// backoff returns the delay after the n-th consecutive failure: uniform in
// [MinBackoff, min(MaxBackoff, MinBackoff·2^n)].
func (r *Refresher) backoff(n int) time.Duration {
	ceil := r.o.MinBackoff
	for i := 0; i < n && ceil < r.o.MaxBackoff; i++ {
		ceil *= 2
	}
	ceil = min(ceil, r.o.MaxBackoff)
	return r.o.MinBackoff + time.Duration(r.o.Rand()*float64(ceil-r.o.MinBackoff))
}

// checkClockLocked tracks whether the clock is trusted and reports a change.
func (r *Refresher) checkClockLocked(now time.Time) bool {
	if now.Before(r.o.NotBefore) {
		if r.clockErr != nil {
			return false
		}
		r.clockErr = &ClockError{Now: now.Round(0), NotBefore: r.o.NotBefore}
		r.o.Logger.Error("clock not trusted", "error", r.clockErr)
		return true
	}
	if r.clockErr == nil {
		return false
	}
	r.clockErr = nil
	r.o.Logger.Info("clock synchronised", "now", now.Round(0))
	return true
}

// Seed installs credentials restored from storage so that a restart serves
// at once. lifetime is what OnRefresh reported for them (0 when unknown):
// credentials issued for less than four mandatory windows are then served
// until a quarter of it is left, as when they were fetched, instead of
// being refused for the full mandatory window. They replace the current
// ones only if those are invalid or expire earlier. It refuses (with an
// error that says why) credentials that are incomplete, within the
// mandatory window, or offered while the clock is not trusted.
func (r *Refresher) Seed(creds aws.Credentials, lifetime time.Duration) error {
	r.mu.Lock()
	now := r.o.Clock.Now()
	changed := r.checkClockLocked(now)
	e, err := r.newEntry(creds, now, true, lifetime)
	if err != nil {
		r.unlock(changed)
		return fmt.Errorf("credprovider: seed not used: %w", err)
	}
	if c := r.cur; c == nil || !c.validAt(now) || (c.creds.CanExpire && creds.Expires.After(c.creds.Expires)) {
		r.cur = e
		changed = true
	}
	r.unlock(changed)
	r.poke()
	return nil
}

// Current returns the credentials the Refresher holds, as fetched (Expires
// is the provider's, not the serving deadline), and the lifetime they were
// issued with (0 when unknown), without fetching; ok is false when it holds
// none that are valid now. Pass both to another Refresher's Seed to hand
// them over with the same windows, as the agent does on a reload.
func (r *Refresher) Current() (creds aws.Credentials, lifetime time.Duration, ok bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cur == nil || !r.cur.validAt(r.o.Clock.Now()) {
		return aws.Credentials{}, 0, false
	}
	return r.cur.creds, r.cur.lifetime, true
}

// Run refreshes in the background until ctx is done, then returns ctx.Err().
// It fetches at once when there are no valid credentials, at the scheduled
// refresh time otherwise, and after the backoff delay following a failure.
// Only one Run may be active per Refresher.
func (r *Refresher) Run(ctx context.Context) error {
	if !r.running.CompareAndSwap(false, true) {
		return errors.New("credprovider: Refresher.Run is already running")
	}
	defer r.running.Store(false)
	for {
		r.mu.Lock()
		now := r.o.Clock.Now()
		changed := r.checkClockLocked(now)
		var wait <-chan struct{}
		at, due := r.nextRefreshLocked(now)
		switch {
		case r.fl != nil:
			wait = r.fl.done
		case due:
			wait = r.startLocked(ctx).done
		}
		r.unlock(changed)

		if wait != nil {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-wait:
			}
			select {
			case <-r.wake: // this fetch's own poke: Run has seen it end
			default:
			}
			continue
		}
		stop := func() bool { return false }
		if !at.IsZero() {
			stop = r.o.Clock.AfterFunc(at.Sub(now), r.poke)
		}
		select {
		case <-ctx.Done():
			stop()
			return ctx.Err()
		case <-r.wake:
			stop()
		}
	}
}

// nextRefreshLocked returns when the next fetch is due (zero: never) and
// whether that is now.
func (r *Refresher) nextRefreshLocked(now time.Time) (time.Time, bool) {
	var at time.Time
	switch e := r.cur; {
	case e == nil || !e.validAt(now):
		at = now
	case !e.creds.CanExpire:
		return time.Time{}, false
	default:
		at = e.refreshAt
	}
	if at.Before(r.nextAttempt) {
		at = r.nextAttempt
	}
	return at, !now.Before(at)
}

// poke wakes Run to recompute its schedule.
func (r *Refresher) poke() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// Status returns a snapshot of the Refresher's state.
func (r *Refresher) Status() Status {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.statusLocked(r.o.Clock.Now())
}

func (r *Refresher) statusLocked(now time.Time) Status {
	st := Status{
		Mode:          r.o.Mode,
		LastRefresh:   r.lastRefresh,
		LastError:     r.lastErr,
		Refreshes:     r.refreshes,
		Failures:      r.failures,
		TotalFailures: r.total,

		FailuresByReason: r.reasons,
	}
	// Judged afresh: a Status taken right after NTP stepped the clock
	// must not still report it unsynchronised.
	if now.Before(r.o.NotBefore) {
		st.ClockError = &ClockError{Now: now.Round(0), NotBefore: r.o.NotBefore}
	}
	if e := r.cur; e != nil && e.validAt(now) {
		st.Valid = true
		if e.creds.CanExpire {
			st.Expires = e.creds.Expires
			st.ServeUntil = e.serveUntil
		}
	}
	if r.fl == nil {
		st.NextRefresh, _ = r.nextRefreshLocked(now)
	}
	return st
}

// unlock releases r.mu and, if notify, delivers a Status snapshot to
// OnChange, dropping it if a newer one was delivered meanwhile.
func (r *Refresher) unlock(notify bool) {
	if !notify || r.o.OnChange == nil {
		r.mu.Unlock()
		return
	}
	r.seq++
	seq, st := r.seq, r.statusLocked(r.o.Clock.Now())
	r.mu.Unlock()
	r.notifyMu.Lock()
	defer r.notifyMu.Unlock()
	if seq > r.delivered {
		r.delivered = seq
		r.o.OnChange(st)
	}
}
