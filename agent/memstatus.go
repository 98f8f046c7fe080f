package agent

import "runtime/metrics"

// MemoryStatus is what the Go runtime holds, so that an operator (and
// `make bench`) can tell the agent's own memory from the binary's pages,
// which /proc/PID/smaps_rollup counts as file-backed, and see where the
// anonymous part goes.
type MemoryStatus struct {
	// HeapInUse is the bytes of heap objects, live or not yet swept.
	HeapInUse uint64 `json:"heap_in_use"`
	// Mapped is everything the runtime has mapped: heap, stacks, metadata,
	// less what it has returned to the kernel.
	Mapped uint64 `json:"mapped"`
	// HeapFree is heap memory free but not yet returned to the kernel, and
	// HeapUnused the free room inside spans that hold objects (fragmentation).
	HeapFree   uint64 `json:"heap_free"`
	HeapUnused uint64 `json:"heap_unused"`
	// Stacks is the goroutines' and the runtime's threads' stacks.
	Stacks uint64 `json:"stacks"`
	// Metadata is what the runtime has mapped for its own structures:
	// spans, per-P caches, GC and page allocator state, profiling buckets
	// and the rest (mapped, of which only the pages touched are resident).
	Metadata uint64 `json:"metadata"`
	// Goroutines is the number of goroutines.
	Goroutines uint64 `json:"goroutines"`
}

var memorySamples = []string{
	"/memory/classes/heap/objects:bytes",
	"/memory/classes/total:bytes",
	"/memory/classes/heap/released:bytes",
	"/sched/goroutines:goroutines",
	"/memory/classes/heap/free:bytes",
	"/memory/classes/heap/unused:bytes",
	"/memory/classes/heap/stacks:bytes",
	"/memory/classes/os-stacks:bytes",
	// The rest is metadata.
	"/memory/classes/metadata/mcache/free:bytes",
	"/memory/classes/metadata/mcache/inuse:bytes",
	"/memory/classes/metadata/mspan/free:bytes",
	"/memory/classes/metadata/mspan/inuse:bytes",
	"/memory/classes/metadata/other:bytes",
	"/memory/classes/profiling/buckets:bytes",
	"/memory/classes/other:bytes",
}

func memoryStatus() MemoryStatus {
	s := make([]metrics.Sample, len(memorySamples))
	for i, name := range memorySamples {
		s[i].Name = name
	}
	metrics.Read(s)
	v := func(i int) uint64 { return s[i].Value.Uint64() }
	var meta uint64
	for i := 8; i < len(s); i++ {
		meta += v(i)
	}
	return MemoryStatus{
		HeapInUse:  v(0),
		Mapped:     v(1) - v(2),
		Goroutines: v(3),
		HeapFree:   v(4),
		HeapUnused: v(5),
		Stacks:     v(6) + v(7),
		Metadata:   meta,
	}
}
