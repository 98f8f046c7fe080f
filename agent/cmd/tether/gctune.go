package main

import (
	"runtime"
	"runtime/debug"
	"time"
)

// GC targets: gcIdle keeps an idle agent small; gcBusy is used while the
// program allocates fast, in a burst of requests. At GOGC=50 the heap goal
// of a ~1 MB heap is ~2 MB, so 8 clients asking for credentials as fast as
// they can (30,000 requests/s, ~2 KB of net/http garbage each) made the
// agent collect about 70 times a second, each time marking its whole heap,
// stacks and globals: 20 % of the socket's throughput (BenchmarkSocket,
// 0.79 of the floor at 50, 0.99 at 100).
const (
	gcIdle = 50
	gcBusy = 100
	// A collection sooner than gcFast after the previous one means the
	// program is busy; one later than gcSlow that it is idle again (sysmon
	// forces one at least every 2 minutes).
	gcFast = 100 * time.Millisecond
	gcSlow = time.Second
)

// gcTuner moves GOGC between an idle and a busy target, as the time
// between two collections tells. It is called once per collection, from
// a cleanup of an object that each call allocates anew, so an idle agent
// pays no timer and no wake-up for it.
type gcTuner struct {
	idle, busy int
	fast, slow time.Duration
	set        func(int) int // debug.SetGCPercent
	now        func() time.Time
	last       time.Time
	cur        int
}

// newGCTuner returns a tuner that starts at the idle target.
func newGCTuner() *gcTuner {
	return &gcTuner{idle: gcIdle, busy: gcBusy, fast: gcFast, slow: gcSlow,
		set: debug.SetGCPercent, now: time.Now, cur: gcIdle}
}

// cycle records one collection and switches the target when the pace of
// collections crosses a threshold.
func (t *gcTuner) cycle() {
	now := t.now()
	gap := now.Sub(t.last)
	t.last = now
	switch {
	case t.cur == t.idle && gap < t.fast:
		t.cur = t.busy
		t.set(t.busy)
	case t.cur == t.busy && gap > t.slow:
		t.cur = t.idle
		t.set(t.idle)
	}
}

// gcSentinel is the object whose collection reports a GC cycle; it holds
// a pointer so that it is not batched with tiny allocations, which are
// freed together.
type gcSentinel struct{ _ *byte }

// arm has cycle called after the next collection, and again after each.
func (t *gcTuner) arm() {
	runtime.AddCleanup(&gcSentinel{}, func(t *gcTuner) {
		t.cycle()
		t.arm()
	}, t)
}
