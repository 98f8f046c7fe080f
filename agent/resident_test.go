package agent

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"
)

// TestIdleTrimDue ensures that the agent trims after work that brought
// pages back, once a period has been quiet, and not while it works or when
// nothing came back.
func TestIdleTrimDue(t *testing.T) {
	last := usage{cpu: time.Second, faults: 1000}
	cases := []struct {
		name      string
		prev, now usage
		want      bool
	}{
		{"quiet after a burst", usage{cpu: 9 * time.Second, faults: 3000}, usage{cpu: 9*time.Second + 10*time.Millisecond, faults: 3001}, true},
		{"still busy", usage{cpu: 5 * time.Second, faults: 2000}, usage{cpu: 9 * time.Second, faults: 3000}, false},
		{"quiet, little came back", usage{cpu: time.Second, faults: 1100}, usage{cpu: time.Second, faults: 1100 + idleTrimFaults - 100}, false},
		{"quiet, nothing since the last trim", last, last, false},
		{"just under the CPU bound", usage{cpu: 2 * time.Second, faults: 5000}, usage{cpu: 2*time.Second + idleCPU - 1, faults: 5000}, true},
		{"at the CPU bound", usage{cpu: 2 * time.Second, faults: 5000}, usage{cpu: 2*time.Second + idleCPU, faults: 5000}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := idleTrimDue(last, tc.prev, tc.now); got != tc.want {
				t.Errorf("idleTrimDue = %v, want %v", got, tc.want)
			}
		})
	}
}

// TestReadUsage ensures that the process's CPU time and page faults are read
// and grow with work.
func TestReadUsage(t *testing.T) {
	before, err := readUsage()
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 8<<20)
	for i := 0; i < len(b); i += 4096 {
		b[i] = 1
	}
	after, err := readUsage()
	if err != nil {
		t.Fatal(err)
	}
	if after.faults-before.faults < 512 || after.cpu < before.cpu {
		t.Errorf("touching 8 MiB: faults %d → %d, cpu %v → %v", before.faults, after.faults, before.cpu, after.cpu)
	}
}

// trims counts the trims in a trim loop's log.
func trims(logs *logBuffer) int { return strings.Count(logs.String(), "trimmed resident memory") }

// TestTrimResidentAfterWork ensures that the trim loop trims at start-up,
// then again at the first quiet period after pages were faulted back in,
// and not while nothing came back.
func TestTrimResidentAfterWork(t *testing.T) {
	logs := &logBuffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		trimResidentEvery(ctx, log, []time.Duration{0}, 20*time.Millisecond)
	}()
	defer func() { cancel(); <-done }()
	waitTrims := func(n int) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); trims(logs) < n; time.Sleep(5 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%d trims, want %d; log:\n%s", trims(logs), n, logs.String())
			}
		}
	}
	waitTrims(1)
	// Quiet, nothing faulted back: a few periods without a trim.
	time.Sleep(100 * time.Millisecond)
	if n := trims(logs); n != 1 {
		t.Fatalf("%d trims while idle, want 1", n)
	}
	// Work that faults pages in (8 MiB of fresh heap), then quiet.
	b := make([]byte, 8<<20)
	for i := 0; i < len(b); i += 4096 {
		b[i] = 1
	}
	waitTrims(2)
}

// TestTrimResidentOff ensures that TETHER_TRIM=off turns every trim off.
func TestTrimResidentOff(t *testing.T) {
	t.Setenv("TETHER_TRIM", "off")
	logs := &logBuffer{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		trimResidentEvery(context.Background(), slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})), []time.Duration{0}, time.Millisecond)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the trim loop runs with TETHER_TRIM=off")
	}
	if n := trims(logs); n != 0 {
		t.Fatalf("%d trims with TETHER_TRIM=off", n)
	}
}
