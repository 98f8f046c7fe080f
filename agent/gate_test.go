package agent

import (
	"sync"
	"testing"
)

// TestGateRetiresOnceRequestsAreDone ensures that a closed gate admits no
// request and signals idle only when the last admitted one has left.
func TestGateRetiresOnceRequestsAreDone(t *testing.T) {
	var g gate
	if !g.enter() || !g.enter() {
		t.Fatal("an open gate refused a request")
	}
	idle := g.close()
	if g.enter() {
		t.Fatal("a closed gate admitted a request")
	}
	if g.close() != idle {
		t.Fatal("a second close returned another channel")
	}
	g.leave()
	select {
	case <-idle:
		t.Fatal("idle with a request still in flight")
	default:
	}
	g.leave()
	<-idle
}

// TestGateClosedWhenIdle ensures that closing a gate with nothing in
// flight signals idle at once.
func TestGateClosedWhenIdle(t *testing.T) {
	var g gate
	g.enter()
	g.leave()
	<-g.close()
}

// TestGateConcurrent ensures that requests entering and leaving while the
// gate closes neither lose the idle signal nor close it twice.
func TestGateConcurrent(t *testing.T) {
	for range 100 {
		var g gate
		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() {
				for range 100 {
					if g.enter() {
						g.leave()
					}
				}
			})
		}
		idle := g.close()
		wg.Wait()
		<-idle
	}
}
