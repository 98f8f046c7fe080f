package openmetrics

import (
	"math"
	"sync/atomic"
)

// Histogram counts observations in fixed buckets without a lock: Observe is
// a few atomic additions, cheap enough for a publish path. It is safe for
// concurrent use. The zero value is not usable; see NewHistogram.
type Histogram struct {
	bounds []float64
	// counts[i] counts observations ≤ bounds[i] and > bounds[i-1];
	// the last one those above every bound (the +Inf bucket).
	counts  []atomic.Uint64
	sumBits atomic.Uint64
}

// NewHistogram returns a histogram with buckets up to each of bounds (and
// +Inf). Bounds must be finite and strictly increasing.
func NewHistogram(bounds ...float64) (*Histogram, error) {
	for i, b := range bounds {
		if math.IsInf(b, 0) || math.IsNaN(b) || i > 0 && b <= bounds[i-1] {
			return nil, ErrBadBounds
		}
	}
	return &Histogram{
		bounds: append([]float64(nil), bounds...),
		counts: make([]atomic.Uint64, len(bounds)+1),
	}, nil
}

// Observe records v. NaN is ignored.
func (h *Histogram) Observe(v float64) {
	if math.IsNaN(v) {
		return
	}
	// A linear search: tether's histograms have a dozen buckets, where it
	// is as fast as a binary one.
	i := 0
	for i < len(h.bounds) && v > h.bounds[i] {
		i++
	}
	h.counts[i].Add(1)
	for {
		old := h.sumBits.Load()
		if h.sumBits.CompareAndSwap(old, math.Float64bits(math.Float64frombits(old)+v)) {
			return
		}
	}
}

// HistogramSnapshot is a histogram's state at one moment, what
// Encoder.Histogram writes.
type HistogramSnapshot struct {
	// Bounds are the buckets' upper bounds, without +Inf.
	Bounds []float64
	// Counts has one count per bucket (not cumulative), the last for +Inf.
	Counts []uint64
	// Sum is the sum of every observation.
	Sum float64
}

// Count is the number of observations.
func (s HistogramSnapshot) Count() uint64 {
	var n uint64
	for _, c := range s.Counts {
		n += c
	}
	return n
}

// Snapshot reads the histogram. An observation made while it reads may be
// in the counts and not yet in the sum, or the other way round; the
// buckets and the count always agree, as the formats require.
func (h *Histogram) Snapshot() HistogramSnapshot {
	s := HistogramSnapshot{Bounds: h.bounds, Counts: make([]uint64, len(h.counts))}
	for i := range h.counts {
		s.Counts[i] = h.counts[i].Load()
	}
	s.Sum = math.Float64frombits(h.sumBits.Load())
	return s
}
