package credprovider

import "time"

// Clock is the source of time for a Refresher. Tests substitute a fake one
// (package credprovider/clocktest) so that refresh schedules spanning hours
// run in microseconds and deterministically.
type Clock interface {
	// Now returns the current time. The system clock's readings carry a
	// monotonic component that the Refresher relies on while the wall
	// clock is not trusted.
	Now() time.Time
	// AfterFunc calls f in its own goroutine once d has elapsed, like
	// time.AfterFunc. stop prevents the call if it has not started and
	// reports whether it did.
	AfterFunc(d time.Duration, f func()) (stop func() bool)
}

// SystemClock is the real clock.
type SystemClock struct{}

// Now returns time.Now().
func (SystemClock) Now() time.Time { return time.Now() }

// AfterFunc wraps time.AfterFunc.
func (SystemClock) AfterFunc(d time.Duration, f func()) func() bool {
	return time.AfterFunc(d, f).Stop
}

// DefaultNotBefore returns the date of this release (2026-11-01 UTC). A clock
// that reads earlier is not synchronised: no credentials tether fetches can
// predate the code that fetched them. Bump it with each release.
func DefaultNotBefore() time.Time {
	return time.Date(2026, time.November, 1, 0, 0, 0, 0, time.UTC)
}

// minIssuedLifetime is the shortest lifetime AWS issues temporary
// credentials with (the IoT credentials provider and STS both refuse less
// than 900 s). When the wall clock is not trusted this is the lifetime the
// Refresher assumes for freshly fetched credentials.
const minIssuedLifetime = 15 * time.Minute
