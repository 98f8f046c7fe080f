// Package clocktest provides a fake clock for tests of code that takes a
// credprovider.Clock, so that schedules spanning hours run instantly and
// deterministically, without sleeping.
package clocktest

import (
	"container/heap"
	"context"
	"sync"
	"time"
)

// Clock is a manually advanced clock. It satisfies credprovider.Clock. Its
// readings carry no monotonic component, so a Set backwards or forwards is seen
// by callers exactly like a wall-clock step. The zero value is not usable; call
// New.
//
// Timers are kept in a heap and waiters are woken only when what they wait
// for holds, so one Clock can drive a simulated fleet of 100,000 Refreshers.
type Clock struct {
	mu      sync.Mutex
	now     time.Time
	timers  timerHeap
	seq     uint64
	waiters []waiter
}

type timer struct {
	at    time.Time
	seq   uint64 // equal deadlines fire in the order they were set
	index int    // in the heap; -1 once fired or stopped
	f     func()
}

type waiter struct {
	n  int
	ch chan struct{}
}

// New returns a Clock reading now.
func New(now time.Time) *Clock {
	return &Clock{now: now.Round(0)}
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
	if d <= 0 {
		go f()
		return func() bool { return false }
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.seq++
	t := &timer{at: c.now.Add(d), seq: c.seq, f: f}
	heap.Push(&c.timers, t)
	c.wakeLocked()
	return func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		if t.index < 0 {
			return false
		}
		heap.Remove(&c.timers, t.index)
		return true
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
	var due []*timer
	for len(c.timers) > 0 && !c.timers[0].at.After(t) {
		due = append(due, heap.Pop(&c.timers).(*timer))
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
	return c.timers[0].at, true
}

// BlockUntil waits until at least n timers are pending, e.g. until a
// background loop has gone to sleep, or until ctx is done.
func (c *Clock) BlockUntil(ctx context.Context, n int) error {
	c.mu.Lock()
	if len(c.timers) >= n {
		c.mu.Unlock()
		return nil
	}
	w := waiter{n: n, ch: make(chan struct{})}
	c.waiters = append(c.waiters, w)
	c.mu.Unlock()
	select {
	case <-w.ch:
		return nil
	case <-ctx.Done():
		c.mu.Lock()
		defer c.mu.Unlock()
		for i, x := range c.waiters {
			if x.ch == w.ch {
				c.waiters = append(c.waiters[:i], c.waiters[i+1:]...)
				break
			}
		}
		return ctx.Err()
	}
}

// wakeLocked releases the waiters whose count of pending timers is reached.
func (c *Clock) wakeLocked() {
	kept := c.waiters[:0]
	for _, w := range c.waiters {
		if len(c.timers) >= w.n {
			close(w.ch)
		} else {
			kept = append(kept, w)
		}
	}
	c.waiters = kept
}

// timerHeap orders timers by deadline, then by the order they were set.
type timerHeap []*timer

func (h timerHeap) Len() int { return len(h) }
func (h timerHeap) Less(i, j int) bool {
	if !h[i].at.Equal(h[j].at) {
		return h[i].at.Before(h[j].at)
	}
	return h[i].seq < h[j].seq
}
func (h timerHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index, h[j].index = i, j
}
func (h *timerHeap) Push(x any) {
	t := x.(*timer)
	t.index = len(*h)
	*h = append(*h, t)
}
func (h *timerHeap) Pop() any {
	old := *h
	t := old[len(old)-1]
	old[len(old)-1] = nil
	t.index = -1
	*h = old[:len(old)-1]
	return t
}
