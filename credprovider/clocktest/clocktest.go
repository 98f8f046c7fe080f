// Package clocktest provides a fake clock for tests of code that takes a
// credprovider.Clock, so that schedules spanning hours run instantly and
// deterministically, without sleeping.
package clocktest

import (
	"context"
	"sort"
	"sync"
	"time"
)

// Clock is a manually advanced clock. It satisfies credprovider.Clock. Its
// readings carry no monotonic component, so a Set backwards or forwards is seen
// by callers exactly like a wall-clock step. The zero value is not usable; call
// New.
type Clock struct {
	mu      sync.Mutex
	now     time.Time
	timers  []*timer
	changed chan struct{} // closed and replaced whenever timers change
}

type timer struct {
	at time.Time
	f  func()
}

// New returns a Clock reading now.
func New(now time.Time) *Clock {
	return &Clock{now: now.Round(0), changed: make(chan struct{})}
}

// Now returns the fake time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// AfterFunc schedules f to run in its own goroutine once the clock has been
// advanced by d. A d <= 0 runs f at once, like time.AfterFunc.
func (c *Clock) AfterFunc(d time.Duration, f func()) func() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &timer{at: c.now.Add(d), f: f}
	if d <= 0 {
		go f()
		return func() bool { return false }
	}
	c.timers = append(c.timers, t)
	c.signalLocked()
	return func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		for i, x := range c.timers {
			if x == t {
				c.timers = append(c.timers[:i], c.timers[i+1:]...)
				c.signalLocked()
				return true
			}
		}
		return false
	}
}

// Advance moves the clock forward by d and fires the timers that fall due.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.setLocked(c.now.Add(d))
}

// Set moves the clock to t (forwards or backwards) and fires the timers that
// fall due. Timers keep their deadlines in clock time.
func (c *Clock) Set(t time.Time) {
	c.mu.Lock()
	c.setLocked(t.Round(0))
}

// setLocked is called with c.mu held and releases it.
func (c *Clock) setLocked(t time.Time) {
	c.now = t
	sort.SliceStable(c.timers, func(i, j int) bool { return c.timers[i].at.Before(c.timers[j].at) })
	var due []*timer
	for len(c.timers) > 0 && !c.timers[0].at.After(t) {
		due = append(due, c.timers[0])
		c.timers = c.timers[1:]
	}
	if len(due) > 0 {
		c.signalLocked()
	}
	c.mu.Unlock()
	for _, x := range due {
		go x.f()
	}
}

// Pending returns the number of timers waiting to fire.
func (c *Clock) Pending() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.timers)
}

// Next returns the deadline of the earliest pending timer.
func (c *Clock) Next() (time.Time, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.timers) == 0 {
		return time.Time{}, false
	}
	next := c.timers[0].at
	for _, x := range c.timers[1:] {
		if x.at.Before(next) {
			next = x.at
		}
	}
	return next, true
}

// BlockUntil waits until at least n timers are pending, e.g. until a
// background loop has gone to sleep, or until ctx is done.
func (c *Clock) BlockUntil(ctx context.Context, n int) error {
	for {
		c.mu.Lock()
		if len(c.timers) >= n {
			c.mu.Unlock()
			return nil
		}
		ch := c.changed
		c.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (c *Clock) signalLocked() {
	close(c.changed)
	c.changed = make(chan struct{})
}
