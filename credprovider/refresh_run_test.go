package credprovider_test

import (
	"context"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tetherd/tether/credprovider"
	"github.com/tetherd/tether/credprovider/clocktest"
)

// runEager starts r.Run and returns a channel of every Status OnChange saw.
func runEager(t *testing.T, p aws.CredentialsProvider, clk *clocktest.Clock, opts credprovider.RefreshOptions) (*credprovider.Refresher, <-chan credprovider.Status) {
	t.Helper()
	changes := make(chan credprovider.Status, 1000)
	opts.Mode = credprovider.Eager
	opts.OnChange = func(st credprovider.Status) { changes <- st }
	r := newRefresher(t, p, clk, opts)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		assert.ErrorIs(t, <-done, context.Canceled)
	})
	return r, changes
}

// next returns the next Status after a fetch attempt.
func nextAttempt(t *testing.T, changes <-chan credprovider.Status) credprovider.Status {
	t.Helper()
	for {
		select {
		case st := <-changes:
			if st.Refreshes+st.TotalFailures > 0 {
				return st
			}
		case <-t.Context().Done():
			t.Fatal("no refresh attempt")
		}
	}
}

// TestRunRefreshesAheadOfExpiry ensures that Run refreshes at the advisory point, before the credentials expire.
func TestRunRefreshesAheadOfExpiry(t *testing.T) {
	clk := clocktest.New(t0)
	p := &scripted{clk: clk, lifetime: time.Hour}
	r, changes := runEager(t, p, clk, credprovider.RefreshOptions{})

	st := nextAttempt(t, changes) // Run fetches at once: no credentials yet
	assert.Equal(t, 1, st.Refreshes)
	require.NoError(t, clk.BlockUntil(t.Context(), 1))
	next, _ := clk.Next()
	assert.Equal(t, t0.Add(45*time.Minute), next, "Run sleeps until the advisory window")

	for i := 2; i <= 4; i++ {
		clk.Set(next)
		st = nextAttempt(t, changes)
		assert.Equal(t, i, st.Refreshes)
		c, err := r.Retrieve(t.Context())
		require.NoError(t, err)
		assert.Equal(t, "AKID"+string(rune('0'+i)), c.AccessKeyID)
		require.NoError(t, clk.BlockUntil(t.Context(), 1))
		next, _ = clk.Next()
		assert.Equal(t, clk.Now().Add(45*time.Minute), next)
	}
	assert.EqualValues(t, 4, p.calls.Load())
}

// TestRunRetriesWithBackoffWhileServing ensures that failed refreshes are retried with backoff while the current credentials keep being served.
func TestRunRetriesWithBackoffWhileServing(t *testing.T) {
	clk := clocktest.New(t0)
	p := &scripted{clk: clk, lifetime: time.Hour}
	r, changes := runEager(t, p, clk, credprovider.RefreshOptions{Rand: func() float64 { return 0.999999999 }})
	nextAttempt(t, changes)
	require.NoError(t, clk.BlockUntil(t.Context(), 1))
	p.set(time.Hour, errTransient)
	next, _ := clk.Next()
	// The first credentials after start: the resync jitter draw moved the
	// refresh 80% of 45 min earlier.
	assert.Equal(t, t0.Add(45*time.Minute-time.Duration(0.999999999*0.8*float64(45*time.Minute))), next)

	for i := 1; i <= 5; i++ {
		clk.Set(next)
		st := nextAttempt(t, changes)
		require.Equal(t, i, st.Failures)
		require.NoError(t, clk.BlockUntil(t.Context(), 1))
		next, _ = clk.Next()
		assert.InDelta(t, float64(time.Second<<i), float64(next.Sub(clk.Now())), float64(time.Millisecond), "backoff after failure %d", i)
		c, err := r.Retrieve(t.Context())
		require.NoError(t, err)
		assert.Equal(t, "AKID1", c.AccessKeyID, "valid credentials keep being served")
	}
	p.set(time.Hour, nil)
	clk.Set(next)
	st := nextAttempt(t, changes)
	assert.Equal(t, 2, st.Refreshes)
	assert.Zero(t, st.Failures)
}

// TestRunTwiceFails ensures that a second concurrent Run is refused.
func TestRunTwiceFails(t *testing.T) {
	clk := clocktest.New(t0)
	p := &scripted{clk: clk, lifetime: time.Hour}
	r, changes := runEager(t, p, clk, credprovider.RefreshOptions{})
	nextAttempt(t, changes)
	require.Error(t, r.Run(t.Context()))
}

// TestEagerRetrieveNeverWaitsInAdvisoryWindow ensures that in eager mode Retrieve returns valid credentials at once even while a refresh is running.
func TestEagerRetrieveNeverWaitsInAdvisoryWindow(t *testing.T) {
	clk := clocktest.New(t0)
	started := make(chan struct{}, 2)
	p := &scripted{clk: clk, lifetime: time.Hour, started: started}
	r := newRefresher(t, p, clk, credprovider.RefreshOptions{Mode: credprovider.Eager})
	_, err := r.Retrieve(t.Context())
	require.NoError(t, err)
	<-started

	gate := make(chan struct{})
	p.mu.Lock()
	p.gate = gate
	p.mu.Unlock()
	clk.Set(t0.Add(50 * time.Minute))
	c, err := r.Retrieve(t.Context()) // returns while the refresh is blocked
	require.NoError(t, err)
	assert.Equal(t, "AKID1", c.AccessKeyID)
	<-started // the refresh was started in the background
	close(gate)
}

// TestSeed ensures that Seed installs stored credentials unless they are incomplete or inside the mandatory window.
func TestSeed(t *testing.T) {
	seed := func(left time.Duration) aws.Credentials {
		return aws.Credentials{AccessKeyID: "SEED", SecretAccessKey: "s", SessionToken: "t", CanExpire: true, Expires: t0.Add(left)}
	}
	for _, tc := range []struct {
		name      string
		creds     aws.Credentials
		wantErr   string
		wantFetch bool // a Retrieve right after fetches
	}{
		{"fresh", seed(time.Hour), "", false},
		{"inside advisory window", seed(10 * time.Minute), "", true},
		{"inside mandatory window", seed(20 * time.Second), "within 30s of now", false},
		{"expired", seed(-time.Hour), "within 30s of now", false},
		{"no secret", aws.Credentials{AccessKeyID: "SEED"}, "without an access key ID or secret", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clk := clocktest.New(t0)
			p := &scripted{clk: clk, lifetime: time.Hour}
			r := newRefresher(t, p, clk, credprovider.RefreshOptions{Mode: credprovider.Deferred})
			err := r.Seed(tc.creds, 0)
			if tc.wantErr != "" {
				require.ErrorContains(t, err, tc.wantErr)
				assert.False(t, r.Status().Valid)
				return
			}
			require.NoError(t, err)
			c, err := r.Retrieve(t.Context())
			require.NoError(t, err)
			if tc.wantFetch {
				assert.Equal(t, "AKID1", c.AccessKeyID)
			} else {
				assert.Equal(t, "SEED", c.AccessKeyID)
				assert.Zero(t, p.calls.Load())
			}
		})
	}
}

// TestStaticCredentialsNeverRefresh ensures that credentials that do not expire are fetched once and never refreshed.
func TestStaticCredentialsNeverRefresh(t *testing.T) {
	clk := clocktest.New(t0)
	var calls int
	p := aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
		calls++
		return aws.Credentials{AccessKeyID: "STATIC", SecretAccessKey: "s"}, nil
	})
	r := newRefresher(t, p, clk, credprovider.RefreshOptions{Mode: credprovider.Deferred})
	for range 3 {
		c, err := r.Retrieve(t.Context())
		require.NoError(t, err)
		assert.Equal(t, "STATIC", c.AccessKeyID)
		clk.Advance(1000 * time.Hour)
	}
	assert.Equal(t, 1, calls)
	assert.True(t, r.Status().NextRefresh.IsZero())
}

// TestProviderHandingOutStaleCredentials ensures that credentials that arrive already inside the mandatory window are refused, not served.
func TestProviderHandingOutStaleCredentials(t *testing.T) {
	clk := clocktest.New(t0)
	p := &scripted{clk: clk, lifetime: -time.Second} // as seen by a clock running ahead
	r := newRefresher(t, p, clk, credprovider.RefreshOptions{Mode: credprovider.Deferred})
	_, err := r.Retrieve(t.Context())
	require.ErrorIs(t, err, credprovider.ErrNoCredentials)
	assert.ErrorContains(t, err, "clock is ahead")
	assert.Equal(t, 1, r.Status().Failures)
}

// TestSecondsLongCredentials ensures that credentials that live for seconds are served until their last quarter and refreshed at half-life.
//
// A test issuer or custom source handing out
// credentials that live for seconds gets a mandatory window of a quarter of
// their lifetime, so they are served, refreshed at half-life, and never
// served in their last quarter.
func TestSecondsLongCredentials(t *testing.T) {
	clk := clocktest.New(t0)
	p := &scripted{clk: clk, lifetime: 30 * time.Second}
	r := newRefresher(t, p, clk, credprovider.RefreshOptions{Mode: credprovider.Deferred, Jitter: -1})
	c, err := r.Retrieve(t.Context())
	require.NoError(t, err)
	assert.Equal(t, t0.Add(30*time.Second-7500*time.Millisecond), c.Expires, "served until three quarters of the lifetime")
	assert.Equal(t, t0.Add(15*time.Second), r.Status().NextRefresh, "half-life rule")
	clk.Advance(16 * time.Second)
	c2, err := r.Retrieve(t.Context())
	require.NoError(t, err)
	assert.NotEqual(t, c.AccessKeyID, c2.AccessKeyID)
}

// TestUnsynchronisedClock ensures that before the release date the clock is not trusted, and credentials are judged by the monotonic clock only.
//
// Before the release date the wall clock is not
// trusted: the error is reported, fresh credentials are served for the
// shortest lifetime AWS issues measured from the fetch, stored ones are
// refused, and trust returns with a synchronised clock.
func TestUnsynchronisedClock(t *testing.T) {
	boot := time.Date(1970, 1, 1, 0, 0, 42, 0, time.UTC) // an RTC-less gateway
	clk := clocktest.New(boot)
	realNow := t0
	p := aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
		return aws.Credentials{AccessKeyID: "AKID", SecretAccessKey: "s", CanExpire: true, Expires: realNow.Add(time.Hour)}, nil
	})
	changes := make(chan credprovider.Status, 100)
	r := newRefresher(t, p, clk, credprovider.RefreshOptions{Mode: credprovider.Deferred, OnChange: func(st credprovider.Status) { changes <- st }})

	c, err := r.Retrieve(t.Context())
	require.NoError(t, err)
	st := r.Status()
	require.ErrorIs(t, st.ClockError, credprovider.ErrClockUnsynchronised)
	assert.ErrorContains(t, st.ClockError, "1970-01-01T00:00:42Z")
	assert.Equal(t, realNow.Add(time.Hour), st.Expires, "Status keeps the issued expiry")
	assert.Equal(t, boot.Add(15*time.Minute-30*time.Second), st.ServeUntil)
	assert.Equal(t, st.ServeUntil, c.Expires, "consumers get an expiry in this machine's time")
	assert.Equal(t, boot.Add(7*time.Minute+30*time.Second), st.NextRefresh, "half-life of the assumed 15 min")

	require.ErrorIs(t, r.Seed(aws.Credentials{AccessKeyID: "OLD", SecretAccessKey: "s", CanExpire: true, Expires: realNow.Add(time.Hour)}, 0), credprovider.ErrClockUnsynchronised)

	clk.Advance(15*time.Minute - 30*time.Second)
	assert.False(t, r.Status().Valid, "not served past the assumed lifetime")

	// NTP sets the clock: trust returns, the change is announced.
	clk.Set(realNow.Add(time.Minute))
	st = r.Status()
	assert.NoError(t, st.ClockError)
	_, err = r.Retrieve(t.Context())
	require.NoError(t, err)
	st = r.Status()
	assert.NoError(t, st.ClockError)
	assert.Equal(t, realNow.Add(time.Hour-30*time.Second), st.ServeUntil)
	var sawCleared bool
	for len(changes) > 0 {
		if s := <-changes; s.ClockError == nil {
			sawCleared = true
		}
	}
	assert.True(t, sawCleared, "OnChange reported the clock becoming trusted")
}

// TestOnRefreshGetsIssuedCredentials ensures that OnRefresh sees the issuer's expiry while callers get the serving deadline.
func TestOnRefreshGetsIssuedCredentials(t *testing.T) {
	clk := clocktest.New(t0)
	p := &scripted{clk: clk, lifetime: time.Hour}
	var got []aws.Credentials
	r := newRefresher(t, p, clk, credprovider.RefreshOptions{Mode: credprovider.Deferred, OnRefresh: func(c aws.Credentials, _ time.Duration) { got = append(got, c) }})
	c, err := r.Retrieve(t.Context())
	require.NoError(t, err)
	require.Len(t, got, 1)
	assert.Equal(t, t0.Add(time.Hour), got[0].Expires, "issued expiry, for persisting and Seed")
	assert.Equal(t, t0.Add(time.Hour-30*time.Second), c.Expires)
}

// TestSeedWithLifetimeKeepsTheWindows ensures that credentials restored with
// the lifetime OnRefresh reported (or handed over with Current's) are
// served, and refreshed, exactly as by the process that fetched them: a
// 60-second credential keeps its quarter-lifetime window after a restart
// (kill -9) instead of being refused for the full 30-second one, and one of
// unknown lifetime is judged by the full window as before.
func TestSeedWithLifetimeKeepsTheWindows(t *testing.T) {
	clk := clocktest.New(t0)
	p := &scripted{clk: clk, lifetime: time.Minute}
	var stored aws.Credentials
	var lifetime time.Duration
	first := newRefresher(t, p, clk, credprovider.RefreshOptions{Mode: credprovider.Deferred, Jitter: -1,
		OnRefresh: func(c aws.Credentials, l time.Duration) { stored, lifetime = c, l }})
	served, err := first.Retrieve(t.Context())
	require.NoError(t, err)
	require.Equal(t, time.Minute, lifetime)
	want := first.Status()
	held, heldLifetime, ok := first.Current()
	require.True(t, ok)
	assert.Equal(t, stored, held, "Current hands over what OnRefresh persisted (a reload)")
	assert.Equal(t, lifetime, heldLifetime)

	// The process dies 35 s later: 25 s are left, inside the full window
	// but outside the 15 s quarter-lifetime one.
	clk.Advance(35 * time.Second)
	// (Eager, with no Run: Retrieve serves what is valid without waiting.)
	restarted := newRefresher(t, p, clk, credprovider.RefreshOptions{Jitter: -1})
	require.NoError(t, restarted.Seed(stored, lifetime))
	st := restarted.Status()
	assert.True(t, st.Valid)
	assert.Equal(t, want.Expires, st.Expires, "served until the same deadline")
	assert.Equal(t, clk.Now(), st.NextRefresh, "its half-life (30 s) is past: due now, as in the first process")
	c, err := restarted.Retrieve(t.Context())
	require.NoError(t, err)
	assert.Equal(t, served.AccessKeyID, c.AccessKeyID, "the cached credentials, not a new fetch")
	assert.EqualValues(t, 1, p.calls.Load())

	unknown := newRefresher(t, p, clk, credprovider.RefreshOptions{Mode: credprovider.Deferred, Jitter: -1})
	assert.ErrorContains(t, unknown.Seed(stored, 0), "within 30s of now", "without a lifetime the full window applies")
}
