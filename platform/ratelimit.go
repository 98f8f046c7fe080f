package platform

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// RateLimit returns a handler that passes at most burst records at once and
// then one per every to next, dropping the rest; the next record that passes
// carries "suppressed"=N, the number dropped since the last one. It is for
// lines that a local client can cause at will (a wrong token, a refused
// peer, a connection over the limit): each is worth logging, thousands a
// second are a denial of service on the journal.
func RateLimit(next slog.Handler, every time.Duration, burst int) slog.Handler {
	return &rateLimited{next: next, b: &bucket{every: every, burst: float64(burst), tokens: float64(burst), last: time.Now()}}
}

type rateLimited struct {
	next slog.Handler
	b    *bucket
}

// bucket is a token bucket shared by a handler and those derived from it.
type bucket struct {
	mu         sync.Mutex
	every      time.Duration
	burst      float64
	tokens     float64
	last       time.Time
	suppressed int
}

// take reports whether a record may pass and how many were dropped before it.
func (b *bucket) take(now time.Time) (bool, int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.tokens = min(b.burst, b.tokens+float64(now.Sub(b.last))/float64(b.every))
	b.last = now
	if b.tokens < 1 {
		b.suppressed++
		return false, 0
	}
	b.tokens--
	n := b.suppressed
	b.suppressed = 0
	return true, n
}

func (h *rateLimited) Enabled(ctx context.Context, l slog.Level) bool { return h.next.Enabled(ctx, l) }

func (h *rateLimited) Handle(ctx context.Context, r slog.Record) error {
	ok, n := h.b.take(time.Now())
	if !ok {
		return nil
	}
	if n > 0 {
		r = r.Clone()
		r.AddAttrs(slog.Int("suppressed", n))
	}
	return h.next.Handle(ctx, r)
}

func (h *rateLimited) WithAttrs(as []slog.Attr) slog.Handler {
	return &rateLimited{next: h.next.WithAttrs(as), b: h.b}
}

func (h *rateLimited) WithGroup(name string) slog.Handler {
	return &rateLimited{next: h.next.WithGroup(name), b: h.b}
}
