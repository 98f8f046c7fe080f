package agent

import (
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
