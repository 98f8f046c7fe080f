package platform

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

// TestRateLimitPassesABurstThenCountsWhatItDrops ensures that a flood of
// records becomes a burst of lines, and that the next line that passes says
// how many were dropped.
func TestRateLimitPassesABurstThenCountsWhatItDrops(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(RateLimit(slog.NewTextHandler(&buf, nil), time.Hour, 3))
	for range 1000 {
		log.Warn("refused")
	}
	assert.Equal(t, 3, strings.Count(buf.String(), "refused"))

	// Refill the bucket by hand rather than wait: one token.
	h := log.Handler().(*rateLimited)
	h.b.mu.Lock()
	h.b.last = h.b.last.Add(-time.Hour)
	h.b.mu.Unlock()
	log.With("k", "v").Warn("refused again")
	assert.Contains(t, buf.String(), "suppressed=997")
	assert.Contains(t, buf.String(), "k=v", "derived loggers share the bucket")
}
