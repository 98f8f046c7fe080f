package clocktest_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tetherd/tether/credprovider/clocktest"
)

// TestClock ensures that the fake clock fires AfterFunc callbacks in order as time is advanced, and never before.
func TestClock(t *testing.T) {
	start := time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)
	c := clocktest.New(start)
	fired := make(chan string, 3)
	c.AfterFunc(time.Hour, func() { fired <- "1h" })
	stop := c.AfterFunc(2*time.Hour, func() { fired <- "2h" })
	c.AfterFunc(0, func() { fired <- "now" })
	assert.Equal(t, "now", <-fired)
	require.NoError(t, c.BlockUntil(t.Context(), 2))
	next, ok := c.Next()
	require.True(t, ok)
	assert.Equal(t, start.Add(time.Hour), next)

	c.Advance(59 * time.Minute)
	assert.Equal(t, 2, c.Pending())
	c.Advance(time.Minute)
	assert.Equal(t, "1h", <-fired)
	assert.True(t, stop())
	assert.False(t, stop())
	c.Set(start.Add(10 * time.Hour))
	assert.Zero(t, c.Pending())
	assert.Equal(t, start.Add(10*time.Hour), c.Now())
	assert.Empty(t, fired)
}
