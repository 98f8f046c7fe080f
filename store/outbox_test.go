package store

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func openOutbox(t *testing.T, path string, opts OutboxOptions) (*DB, *Outbox) {
	t.Helper()
	db, ob, _ := openLogged(t, path, opts)
	return db, ob
}

// TestOutboxOrderAckAndReopen ensures that the outbox delivers in order, forgets what is acknowledged and keeps the rest across a reopen.
func TestOutboxOrderAckAndReopen(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "state.db")
	db, ob := openOutbox(t, path, OutboxOptions{})

	var seqs []uint64
	for i := range 5 {
		seq, err := ob.Enqueue(ctx, fmt.Sprintf("t/%d", i), []byte{byte(i)}, byte(i%2))
		require.NoError(t, err)
		seqs = append(seqs, seq)
	}
	require.IsIncreasing(t, seqs)

	m, ok, err := ob.Next(0)
	require.NoError(t, err)
	require.True(t, ok)
	assert.Equal(t, "t/0", m.Topic)
	assert.Equal(t, []byte{0}, m.Payload)
	assert.Equal(t, byte(0), m.QoS)
	assert.False(t, m.Enqueued.IsZero())

	m, ok, err = ob.Next(seqs[2])
	require.NoError(t, err)
	require.True(t, ok)
	assert.Equal(t, "t/3", m.Topic)
	assert.Equal(t, byte(1), m.QoS)

	ob.Ack(seqs[0], seqs[1])
	m, ok, err = ob.Next(0)
	require.NoError(t, err)
	require.True(t, ok)
	assert.Equal(t, seqs[2], m.Seq, "acked messages are skipped before their deletion is committed")
	assert.Equal(t, 3, ob.Stats().Depth)

	// Reopen: unacknowledged messages survive, acked ones are gone.
	require.NoError(t, ob.Close())
	require.NoError(t, db.Close())
	_, ob2 := openOutbox(t, path, OutboxOptions{})
	st := ob2.Stats()
	assert.Equal(t, 3, st.Depth)
	assert.False(t, st.Oldest.IsZero())
	var topics []string
	for after := uint64(0); ; {
		m, ok, err := ob2.Next(after)
		require.NoError(t, err)
		if !ok {
			break
		}
		topics = append(topics, m.Topic)
		after = m.Seq
	}
	assert.Equal(t, []string{"t/2", "t/3", "t/4"}, topics)
	seq, err := ob2.Enqueue(ctx, "t/5", nil, 1)
	require.NoError(t, err)
	assert.Greater(t, seq, seqs[4], "sequence numbers keep increasing across restarts")
}

// TestOutboxLimits ensures that the outbox refuses messages beyond its count and byte limits with ErrOutboxFull.
func TestOutboxLimits(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name    string
		opts    OutboxOptions
		payload int
		fit     int
	}{
		{"by count", OutboxOptions{MaxMessages: 3}, 10, 3},
		{"by bytes", OutboxOptions{MaxBytes: 3 * (recordHeader + 1 + 100)}, 100, 3},
		{"single message larger than the limit", OutboxOptions{MaxBytes: 50}, 100, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, ob := openOutbox(t, filepath.Join(t.TempDir(), "s.db"), tc.opts)
			for range tc.fit {
				_, err := ob.Enqueue(ctx, "t", make([]byte, tc.payload), 1)
				require.NoError(t, err)
			}
			_, err := ob.Enqueue(ctx, "t", make([]byte, tc.payload), 1)
			require.ErrorIs(t, err, ErrOutboxFull)
			assert.Contains(t, err.Error(), "limit")
			st := ob.Stats()
			assert.Equal(t, tc.fit, st.Depth, "a refused message changes nothing")
			assert.Equal(t, uint64(1), st.Refused)

			if tc.fit > 0 {
				// Acknowledging frees room.
				m, ok, err := ob.Next(0)
				require.NoError(t, err)
				require.True(t, ok)
				ob.Ack(m.Seq)
				_, err = ob.Enqueue(ctx, "t", make([]byte, tc.payload), 1)
				require.NoError(t, err)
			}
		})
	}
}

// TestOutboxGroupCommit ensures that concurrent enqueues share commits and each returns only once on disk.
func TestOutboxGroupCommit(t *testing.T) {
	tests := []struct {
		name       string
		opts       OutboxOptions
		wantShared bool
	}{
		{"group commit", OutboxOptions{}, true},
		{"one commit per message", OutboxOptions{OneCommitPerMessage: true}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, ob := openOutbox(t, filepath.Join(t.TempDir(), "s.db"), tc.opts)
			const writers, each = 16, 25
			var wg sync.WaitGroup
			var mu sync.Mutex
			seen := map[uint64]bool{}
			for w := range writers {
				wg.Go(func() {
					for i := range each {
						seq, err := ob.Enqueue(context.Background(), "t", fmt.Appendf(nil, "%d-%d", w, i), 1)
						assert.NoError(t, err)
						mu.Lock()
						seen[seq] = true
						mu.Unlock()
					}
				})
			}
			wg.Wait()
			assert.Len(t, seen, writers*each, "every message has its own sequence number")
			st := ob.Stats()
			assert.Equal(t, writers*each, st.Depth)
			if tc.wantShared {
				assert.Less(t, st.Commits, uint64(writers*each), "concurrent publishers share commits")
			} else {
				assert.Equal(t, uint64(writers*each), st.Commits)
			}
		})
	}
}

// TestOutboxUnavailableAndClosed ensures that a closed outbox or store is reported, never a silent loss.
func TestOutboxUnavailableAndClosed(t *testing.T) {
	ctx := context.Background()
	db, ob := openOutbox(t, filepath.Join(t.TempDir(), "s.db"), OutboxOptions{})
	require.NoError(t, db.Close())
	_, err := ob.Enqueue(ctx, "t", []byte("x"), 1)
	require.ErrorIs(t, err, ErrOutboxUnavailable)
	assert.NotEmpty(t, ob.Stats().Error)

	_ = ob.Close()
	_, err = ob.Enqueue(ctx, "t", []byte("x"), 1)
	require.True(t, errors.Is(err, ErrOutboxClosed), "got %v", err)
	_, _, err = ob.Next(0)
	require.ErrorIs(t, err, ErrOutboxClosed)
}

// TestOutboxAcksRideAlong ensures that acknowledgements are committed with
// the next commit that adds messages, without an fsync of their own, and on
// their own within ackDelay when nothing else comes.
func TestOutboxAcksRideAlong(t *testing.T) {
	_, ob := openOutbox(t, filepath.Join(t.TempDir(), "s.db"), OutboxOptions{})
	ctx := context.Background()
	first, err := ob.Enqueue(ctx, "dt/gw/a", []byte("one"), 1)
	require.NoError(t, err)
	size := recordSize("dt/gw/a", []byte("one"))
	ob.Ack(first)
	assert.Equal(t, 0, ob.Stats().Depth, "acknowledged at once")
	assert.Equal(t, size, ob.Stats().Bytes, "but not yet deleted from the file")

	_, err = ob.Enqueue(ctx, "dt/gw/a", []byte("two"), 1)
	require.NoError(t, err)
	assert.Equal(t, size, ob.Stats().Bytes, "the ack rode along with the next commit")
	assert.EqualValues(t, 2, ob.Stats().Commits)

	m, ok, err := ob.Next(first)
	require.NoError(t, err)
	require.True(t, ok)
	ob.Ack(m.Seq)
	require.Eventually(t, func() bool { return ob.Stats().Bytes == 0 }, 10*ackDelay, 10*time.Millisecond,
		"an ack alone is committed within ackDelay")
}
