package agent

import "runtime/metrics"

// MemoryStatus is what the Go runtime holds, so that an operator (and
// `make bench`) can tell the agent's own memory from the binary's pages,
// which /proc/PID/smaps_rollup counts as file-backed.
type MemoryStatus struct {
	// HeapInUse is the bytes of heap objects, live or not yet swept.
	HeapInUse uint64 `json:"heap_in_use"`
	// Mapped is everything the runtime has mapped: heap, stacks, metadata,
	// less what it has returned to the kernel.
	Mapped uint64 `json:"mapped"`
	// Goroutines is the number of goroutines.
	Goroutines uint64 `json:"goroutines"`
}

var memorySamples = []string{
	"/memory/classes/heap/objects:bytes",
	"/memory/classes/total:bytes",
	"/memory/classes/heap/released:bytes",
	"/sched/goroutines:goroutines",
}

func memoryStatus() MemoryStatus {
	s := make([]metrics.Sample, len(memorySamples))
	for i, name := range memorySamples {
		s[i].Name = name
	}
	metrics.Read(s)
	return MemoryStatus{
		HeapInUse:  s[0].Value.Uint64(),
		Mapped:     s[1].Value.Uint64() - s[2].Value.Uint64(),
		Goroutines: s[3].Value.Uint64(),
	}
}
