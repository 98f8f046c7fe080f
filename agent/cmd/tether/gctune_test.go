package main

import (
	"runtime"
	"testing"
	"time"
)

// TestGCTunerFollowsThePace ensures that GOGC goes to the busy target when
// collections come faster than gcFast, stays there while they keep coming
// within gcSlow, and returns to the idle target after a slow one.
func TestGCTunerFollowsThePace(t *testing.T) {
	tests := []struct {
		name string
		gaps []time.Duration // between collections, from the first
		want []int           // GOGC after each collection
	}{
		{"idle stays idle", []time.Duration{2 * time.Minute, 30 * time.Second, 2 * gcFast}, []int{gcIdle, gcIdle, gcIdle}},
		{"a burst switches to busy", []time.Duration{time.Minute, gcFast / 2}, []int{gcIdle, gcBusy}},
		{"busy holds between the thresholds", []time.Duration{time.Minute, 10 * time.Millisecond, 500 * time.Millisecond, gcSlow}, []int{gcIdle, gcBusy, gcBusy, gcBusy}},
		{"a slow collection returns to idle", []time.Duration{time.Minute, 10 * time.Millisecond, 2 * gcSlow, 50 * time.Millisecond}, []int{gcIdle, gcBusy, gcIdle, gcBusy}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
			var set []int
			tu := newGCTuner()
			tu.now = func() time.Time { return now }
			tu.set = func(p int) int { set = append(set, p); return 0 }
			tu.cycle() // the first collection has no gap
			for i, gap := range tt.gaps {
				now = now.Add(gap)
				tu.cycle()
				if tu.cur != tt.want[i] {
					t.Fatalf("after gap %d (%v): GOGC target %d, want %d", i, gap, tu.cur, tt.want[i])
				}
			}
			// SetGCPercent is called only on a change.
			for i := 1; i < len(set); i++ {
				if set[i] == set[i-1] {
					t.Fatalf("SetGCPercent(%d) called twice in a row: %v", set[i], set)
				}
			}
		})
	}
}

// TestGCTunerSeesEachCollection ensures that an armed tuner is told of
// collections by the runtime itself, again after the first.
func TestGCTunerSeesEachCollection(t *testing.T) {
	seen := make(chan struct{}, 16)
	tu := newGCTuner()
	tu.set = func(int) int { return 0 }
	tu.now = func() time.Time { seen <- struct{}{}; return time.Now() }
	tu.arm()
	for i := range 3 {
		deadline := time.After(10 * time.Second)
	wait:
		for {
			runtime.GC()
			select {
			case <-seen:
				break wait
			case <-deadline:
				t.Fatalf("collection %d not reported within 10 s", i+1)
			default:
				runtime.Gosched()
			}
		}
	}
}
