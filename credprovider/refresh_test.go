package credprovider_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tetherd/tether/credprovider"
	"github.com/tetherd/tether/credprovider/clocktest"
)

// t0 is a trusted time (after the release date).
var t0 = time.Date(2027, 3, 1, 12, 0, 0, 0, time.UTC)

// scripted is a provider whose answers the test controls. Each call issues
// credentials lasting lifetime from the clock's now, unless err is set; when
// gate is non-nil a call blocks until it is closed.
type scripted struct {
	clk      *clocktest.Clock
	mu       sync.Mutex
	lifetime time.Duration
	err      error
	gate     chan struct{}
	started  chan struct{} // receives once per call, if non-nil
	calls    atomic.Int32
	ctxErrs  []error // ctx.Err() of each call at return
}

func (s *scripted) Retrieve(ctx context.Context) (aws.Credentials, error) {
	n := s.calls.Add(1)
	s.mu.Lock()
	gate, started := s.gate, s.started
	s.mu.Unlock()
	if started != nil {
		started <- struct{}{}
	}
	if gate != nil {
		<-gate
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ctxErrs = append(s.ctxErrs, ctx.Err())
	if s.err != nil {
		return aws.Credentials{}, s.err
	}
	return aws.Credentials{
		AccessKeyID: fmt.Sprintf("AKID%d", n), SecretAccessKey: "secret", SessionToken: "token",
		Source: "scripted", CanExpire: true, Expires: s.clk.Now().Add(s.lifetime),
	}, nil
}

func (s *scripted) set(lifetime time.Duration, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lifetime, s.err = lifetime, err
}

func newRefresher(t *testing.T, p aws.CredentialsProvider, clk *clocktest.Clock, opts credprovider.RefreshOptions) *credprovider.Refresher {
	t.Helper()
	opts.Clock = clk
	if opts.Rand == nil {
		opts.Rand = func() float64 { return 0 }
	}
	r, err := credprovider.NewRefresher(p, opts)
	require.NoError(t, err)
	return r
}

var errTransient = errors.New("endpoint unavailable")

// TestNewRefresherRejectsBadOptions ensures that NewRefresher refuses bad options, naming the field.
func TestNewRefresherRejectsBadOptions(t *testing.T) {
	p := aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) { return aws.Credentials{}, nil })
	for _, tc := range []struct {
		name  string
		p     aws.CredentialsProvider
		opts  credprovider.RefreshOptions
		field string
	}{
		{"nil provider", nil, credprovider.RefreshOptions{}, "provider is nil"},
		{"mandatory below 30s", p, credprovider.RefreshOptions{MandatoryWindow: 10 * time.Second}, "MandatoryWindow"},
		{"advisory not above mandatory", p, credprovider.RefreshOptions{AdvisoryWindow: time.Minute, MandatoryWindow: time.Minute}, "MandatoryWindow"},
		{"jitter too large", p, credprovider.RefreshOptions{Jitter: 0.9}, "Jitter"},
		{"backoff inverted", p, credprovider.RefreshOptions{MinBackoff: time.Minute, MaxBackoff: time.Second}, "MaxBackoff"},
		{"bad mode", p, credprovider.RefreshOptions{Mode: 7}, "Mode"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := credprovider.NewRefresher(tc.p, tc.opts)
			require.ErrorIs(t, err, credprovider.ErrInvalidConfig)
			assert.Contains(t, err.Error(), tc.field)
		})
	}
}

// TestParseMode ensures that the refresh setting parses "eager" and "deferred" and nothing else.
func TestParseMode(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want credprovider.Mode
		ok   bool
	}{{"eager", credprovider.Eager, true}, {"deferred", credprovider.Deferred, true}, {"lazy", 0, false}} {
		m, err := credprovider.ParseMode(tc.in)
		if !tc.ok {
			require.ErrorIs(t, err, credprovider.ErrInvalidConfig)
			assert.Contains(t, err.Error(), `"lazy"`)
			continue
		}
		require.NoError(t, err)
		assert.Equal(t, tc.want, m)
		assert.Equal(t, tc.in, m.String())
	}
}

// TestSchedule ensures that the advisory rule, the half-life rule and the mandatory deadline schedule each refresh.
//
// TestSchedule checks the advisory rule, the half-life rule for short-lived
// credentials and the mandatory deadline, in deferred mode where Retrieve
// fetches exactly when the schedule says.
func TestSchedule(t *testing.T) {
	for _, tc := range []struct {
		lifetime, wantRefreshIn time.Duration
	}{
		{time.Hour, 45 * time.Minute},                       // advisory: expires - 15m
		{12 * time.Hour, 11*time.Hour + 45*time.Minute},     // advisory
		{30 * time.Minute, 15 * time.Minute},                // exactly 2*advisory: advisory rule
		{29 * time.Minute, 14*time.Minute + 30*time.Second}, // half-life
		{15 * time.Minute, 7*time.Minute + 30*time.Second},  // half-life
		{2 * time.Minute, time.Minute},                      // half-life
	} {
		t.Run(tc.lifetime.String(), func(t *testing.T) {
			clk := clocktest.New(t0)
			p := &scripted{clk: clk, lifetime: tc.lifetime}
			r := newRefresher(t, p, clk, credprovider.RefreshOptions{Mode: credprovider.Deferred})
			c, err := r.Retrieve(t.Context())
			require.NoError(t, err)
			assert.Equal(t, "AKID1", c.AccessKeyID)
			st := r.Status()
			assert.Equal(t, t0.Add(tc.lifetime), st.Expires)
			assert.Equal(t, t0.Add(tc.lifetime-30*time.Second), st.ServeUntil)
			assert.Equal(t, st.ServeUntil, c.Expires, "Retrieve reports the serving deadline")
			assert.Equal(t, t0.Add(tc.wantRefreshIn), st.NextRefresh)

			clk.Advance(tc.wantRefreshIn - time.Second)
			c, err = r.Retrieve(t.Context())
			require.NoError(t, err)
			assert.Equal(t, "AKID1", c.AccessKeyID, "no refresh before the schedule")
			assert.EqualValues(t, 1, p.calls.Load())

			clk.Advance(time.Second)
			c, err = r.Retrieve(t.Context())
			require.NoError(t, err)
			assert.Equal(t, "AKID2", c.AccessKeyID, "deferred mode refreshes on demand once due")
			assert.Equal(t, 2, r.Status().Refreshes)
		})
	}
}

// TestJitterBounds ensures that jitter only moves a refresh earlier, by at
// most its fraction of the time until it, and that the first credentials
// after start are spread by the wider resync jitter.
func TestJitterBounds(t *testing.T) {
	for _, tc := range []struct {
		name   string
		jitter float64
		rand   float64
		want   time.Duration // refresh offset from fetch
	}{
		{"no jitter drawn", 0, 0, 45 * time.Minute},
		{"default 10%, max draw", 0, 0.999999, 45*time.Minute - time.Duration(0.999999*0.1*float64(45*time.Minute))},
		{"default 10%, half draw", 0, 0.5, 45*time.Minute - 135*time.Second},
		{"custom 50%, max draw", 0.5, 0.999999, 45*time.Minute - time.Duration(0.999999*0.5*float64(45*time.Minute))},
		{"disabled", -1, 0.999999, 45 * time.Minute},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clk := clocktest.New(t0)
			p := &scripted{clk: clk, lifetime: time.Hour}
			r := newRefresher(t, p, clk, credprovider.RefreshOptions{
				Mode: credprovider.Deferred, Jitter: tc.jitter, Rand: func() float64 { return tc.rand },
			})
			_, err := r.Retrieve(t.Context())
			require.NoError(t, err)
			// The first credentials after start are drawn from the wide
			// resync jitter, unless jitter is disabled.
			first := r.Status().NextRefresh
			resync := 0.8
			if tc.jitter < 0 {
				resync = 0
			}
			assert.Equal(t, t0.Add(45*time.Minute-time.Duration(tc.rand*resync*float64(45*time.Minute))), first)
			// The next ones by the configured jitter.
			clk.Set(first)
			_, err = r.Retrieve(t.Context())
			require.NoError(t, err)
			t0 := first
			next := r.Status().NextRefresh
			assert.Equal(t, t0.Add(tc.want), next)
			frac := tc.jitter
			if frac == 0 {
				frac = credprovider.DefaultJitter
			}
			if frac < 0 {
				frac = 0
			}
			// Jitter only ever moves the refresh earlier, by at most
			// frac of the time until it.
			assert.False(t, next.After(t0.Add(45*time.Minute)))
			assert.False(t, next.Before(t0.Add(45*time.Minute-time.Duration(frac*float64(45*time.Minute)))))
		})
	}
}

// TestBackoff ensures that the delay after each failure is full-jitter exponential, growing and capped.
//
// TestBackoff drives consecutive failures and checks the delay window after
// each: uniform in [1s, min(5m, 1s·2^n)] (full jitter), growing and capped.
func TestBackoff(t *testing.T) {
	for _, tc := range []struct {
		name string
		rand float64
		want []time.Duration
	}{
		{"ceiling", 0.999999999, []time.Duration{2, 4, 8, 16, 32, 64, 128, 256, 300, 300}},
		{"floor", 0, []time.Duration{1, 1, 1, 1, 1, 1, 1, 1, 1, 1}},
		{"middle", 0.5, []time.Duration{1500 * time.Millisecond / time.Second, 2, 4, 8, 16, 32, 64, 128, 150, 150}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clk := clocktest.New(t0)
			p := &scripted{clk: clk, err: errTransient}
			r := newRefresher(t, p, clk, credprovider.RefreshOptions{
				Mode: credprovider.Deferred, Rand: func() float64 { return tc.rand },
			})
			for i, w := range tc.want {
				want := w * time.Second
				if tc.name == "middle" {
					// 1s + 0.5·(ceil-1s)
					ceil := min(time.Second<<(i+1), 5*time.Minute)
					want = time.Second + (ceil-time.Second)/2
				}
				_, err := r.Retrieve(t.Context())
				require.ErrorIs(t, err, errTransient)
				require.ErrorIs(t, err, credprovider.ErrNoCredentials)
				st := r.Status()
				assert.Equal(t, i+1, st.Failures)
				assert.InDelta(t, float64(want), float64(st.NextRefresh.Sub(clk.Now())), float64(time.Millisecond), "failure %d", i+1)

				// Inside the backoff a caller fails fast, without a fetch.
				calls := p.calls.Load()
				_, err = r.Retrieve(t.Context())
				require.ErrorIs(t, err, errTransient)
				assert.Equal(t, calls, p.calls.Load())
				clk.Set(st.NextRefresh)
			}
			p.set(time.Hour, nil)
			_, err := r.Retrieve(t.Context())
			require.NoError(t, err)
			st := r.Status()
			assert.Zero(t, st.Failures)
			assert.NoError(t, st.LastError)
			assert.Equal(t, len(tc.want), st.TotalFailures)
		})
	}
}

// TestSingleFlight ensures that concurrent callers share one fetch.
func TestSingleFlight(t *testing.T) {
	for _, mode := range []credprovider.Mode{credprovider.Eager, credprovider.Deferred} {
		t.Run(mode.String(), func(t *testing.T) {
			clk := clocktest.New(t0)
			gate := make(chan struct{})
			p := &scripted{clk: clk, lifetime: time.Hour, gate: gate}
			r := newRefresher(t, p, clk, credprovider.RefreshOptions{Mode: mode})
			keys := retrieveTogether(t, r, 100, func() { close(gate) })
			for _, k := range keys {
				assert.Equal(t, "AKID1", k)
			}
			assert.EqualValues(t, 1, p.calls.Load())
		})
	}
}

// TestCancelledCallerDoesNotCancelSharedFetch ensures that a caller that gives up does not cancel the fetch the others wait for.
func TestCancelledCallerDoesNotCancelSharedFetch(t *testing.T) {
	clk := clocktest.New(t0)
	gate := make(chan struct{})
	started := make(chan struct{}, 1)
	p := &scripted{clk: clk, lifetime: time.Hour, gate: gate, started: started}
	r := newRefresher(t, p, clk, credprovider.RefreshOptions{Mode: credprovider.Deferred})

	ctx, cancel := context.WithCancel(context.Background())
	first := make(chan error, 1)
	go func() { _, err := r.Retrieve(ctx); first <- err }()
	<-started
	var joined sync.WaitGroup
	joined.Add(1)
	credprovider.SetJoinHook(r, joined.Done)
	second := make(chan aws.Credentials, 1)
	go func() { c, _ := r.Retrieve(context.Background()); second <- c }()
	joined.Wait()

	cancel()
	err := <-first
	require.ErrorIs(t, err, context.Canceled)
	close(gate)
	assert.Equal(t, "AKID1", (<-second).AccessKeyID)
	assert.EqualValues(t, 1, p.calls.Load())
	p.mu.Lock()
	assert.Equal(t, []error{nil}, p.ctxErrs, "the fetch's context outlived the cancelled caller")
	p.mu.Unlock()
}

// TestServeStaleWhileValid ensures that a failed advisory refresh keeps the current credentials in service until the mandatory deadline, never past it.
func TestServeStaleWhileValid(t *testing.T) {
	for _, mode := range []credprovider.Mode{credprovider.Eager, credprovider.Deferred} {
		t.Run(mode.String(), func(t *testing.T) {
			clk := clocktest.New(t0)
			started := make(chan struct{}, 10)
			p := &scripted{clk: clk, lifetime: time.Hour, started: started}
			changes := make(chan credprovider.Status, 100)
			r := newRefresher(t, p, clk, credprovider.RefreshOptions{Mode: mode, OnChange: func(st credprovider.Status) { changes <- st }})
			_, err := r.Retrieve(t.Context())
			require.NoError(t, err)
			<-started
			p.set(time.Hour, errTransient)

			// Into the advisory window: the refresh fails, the old
			// credentials keep being served.
			clk.Set(t0.Add(50 * time.Minute))
			c, err := r.Retrieve(t.Context())
			require.NoError(t, err)
			assert.Equal(t, "AKID1", c.AccessKeyID)
			<-started
			waitFailures(t, changes, 1) // eager mode refreshes in the background

			// Last instant before the mandatory window.
			clk.Set(t0.Add(time.Hour - 30*time.Second - time.Nanosecond))
			c, err = r.Retrieve(t.Context())
			require.NoError(t, err)
			assert.Equal(t, "AKID1", c.AccessKeyID)
			if mode == credprovider.Deferred {
				<-started // the backoff had elapsed: another attempt
			}

			// Inside it: never served.
			clk.Set(t0.Add(time.Hour - 30*time.Second))
			_, err = r.Retrieve(t.Context())
			require.ErrorIs(t, err, credprovider.ErrNoCredentials)
			require.ErrorIs(t, err, errTransient)
			assert.False(t, r.Status().Valid)
		})
	}
}

// waitFailures waits until OnChange reports n consecutive failures.
func waitFailures(t *testing.T, changes <-chan credprovider.Status, n int) {
	t.Helper()
	for st := range changes {
		if st.Failures >= n {
			return
		}
	}
}

// retrieveTogether has n goroutines call r.Retrieve at once. Once all n are
// waiting on the fetch, release lets it finish; every call must succeed.
// It returns the access key ids they got.
func retrieveTogether(t *testing.T, r *credprovider.Refresher, n int, release func()) []string {
	t.Helper()
	var joined sync.WaitGroup
	joined.Add(n)
	credprovider.SetJoinHook(r, joined.Done)
	var wg sync.WaitGroup
	keys := make([]string, n)
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			c, err := r.Retrieve(context.Background())
			keys[i], errs[i] = c.AccessKeyID, err
		})
	}
	joined.Wait()
	release()
	wg.Wait()
	for i := range n {
		require.NoError(t, errs[i])
	}
	return keys
}

// TestThrottledBackoff ensures that an attempt the account's rate limit
// refused (429) backs off as if it were the eighth failure, so a fleet asking
// at once spreads over minutes, while other failures start from a second.
func TestThrottledBackoff(t *testing.T) {
	throttled := &credprovider.ServiceError{Endpoint: "x", RoleAlias: "r", StatusCode: http.StatusTooManyRequests}
	unavailable := &credprovider.ServiceError{Endpoint: "x", RoleAlias: "r", StatusCode: http.StatusServiceUnavailable}
	for _, tc := range []struct {
		name string
		err  error
		want time.Duration // after the first failure, with the ceiling drawn
	}{
		{"throttled", throttled, 256 * time.Second},
		{"unavailable", unavailable, 2 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clk := clocktest.New(t0)
			p := &scripted{clk: clk, err: tc.err}
			r := newRefresher(t, p, clk, credprovider.RefreshOptions{
				Mode: credprovider.Deferred, Rand: func() float64 { return 0.999999999 },
			})
			_, err := r.Retrieve(t.Context())
			require.Error(t, err)
			st := r.Status()
			assert.Equal(t, 1, st.Failures, "a throttled attempt counts as one failure")
			assert.InDelta(t, float64(tc.want), float64(st.NextRefresh.Sub(clk.Now())), float64(time.Millisecond))
		})
	}
}
