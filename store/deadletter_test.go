package store

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestDeadLetterMovesOneMessageAside ensures that a dead-lettered message
// leaves the outbox in one step (the next one becomes the head), is kept with
// its reason across a reopen, and is counted.
func TestDeadLetterMovesOneMessageAside(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	db, err := Open(path, Options{})
	require.NoError(t, err)
	ob, err := db.Outbox(OutboxOptions{})
	require.NoError(t, err)
	ctx := context.Background()
	bad, err := ob.Enqueue(ctx, "bad\x01topic", []byte("p1"), 1)
	require.NoError(t, err)
	good, err := ob.Enqueue(ctx, "good", []byte("p2"), 1)
	require.NoError(t, err)

	require.NoError(t, ob.DeadLetter(bad, "PUBACK reason 0x87 not authorized"))
	m, ok, err := ob.Next(0)
	require.NoError(t, err)
	require.True(t, ok)
	assert.Equal(t, good, m.Seq, "the message behind it is now the head")
	st := ob.Stats()
	assert.Equal(t, 1, st.Depth)
	assert.Equal(t, 1, st.DeadLetters)
	assert.Equal(t, uint64(1), st.DeadLettered)
	assert.Contains(t, st.LastDeadLetter, "0x87")
	// Already gone: not an error, not counted twice.
	require.NoError(t, ob.DeadLetter(bad, "again"))
	assert.Equal(t, uint64(1), ob.Stats().DeadLettered)

	require.NoError(t, ob.Close())
	require.NoError(t, db.Close())
	db, err = Open(path, Options{})
	require.NoError(t, err)
	defer db.Close()
	ob, err = db.Outbox(OutboxOptions{})
	require.NoError(t, err)
	defer ob.Close()
	assert.Equal(t, 1, ob.Stats().DeadLetters)
	assert.Equal(t, 1, ob.Stats().Depth)
	dls, err := ob.DeadLetters()
	require.NoError(t, err)
	require.Len(t, dls, 1)
	assert.Equal(t, "bad\x01topic", dls[0].Topic)
	assert.Equal(t, []byte("p1"), dls[0].Payload)
	assert.Contains(t, dls[0].Reason, "not authorized")
	assert.False(t, dls[0].At.IsZero())
}

// TestDeadLettersAreBounded ensures that the dead-letter bucket keeps at
// most MaxDeadLetters messages and MaxDeadLetterBytes, dropping the oldest,
// and that a long reason is cut.
func TestDeadLettersAreBounded(t *testing.T) {
	db, err := Open(filepath.Join(t.TempDir(), "state.db"), Options{})
	require.NoError(t, err)
	defer db.Close()
	ob, err := db.Outbox(OutboxOptions{MaxDeadLetters: 3, MaxDeadLetterBytes: 1 << 20})
	require.NoError(t, err)
	defer ob.Close()
	for i := range 5 {
		seq, err := ob.Enqueue(context.Background(), fmt.Sprintf("t/%d", i), []byte("x"), 1)
		require.NoError(t, err)
		require.NoError(t, ob.DeadLetter(seq, strings.Repeat("é", 1000)))
	}
	dls, err := ob.DeadLetters()
	require.NoError(t, err)
	require.Len(t, dls, 3)
	assert.Equal(t, "t/2", dls[0].Topic, "the oldest went first")
	assert.LessOrEqual(t, len(dls[0].Reason), maxReasonBytes)
	assert.True(t, strings.HasPrefix(dls[0].Reason, "éé"))
	st := ob.Stats()
	assert.Equal(t, 3, st.DeadLetters)
	assert.Equal(t, uint64(5), st.DeadLettered)
	assert.Equal(t, 0, st.Depth)

	// A byte bound smaller than one message keeps none.
	ob2db, err := Open(filepath.Join(t.TempDir(), "state.db"), Options{})
	require.NoError(t, err)
	defer ob2db.Close()
	ob2, err := ob2db.Outbox(OutboxOptions{MaxDeadLetterBytes: 10})
	require.NoError(t, err)
	defer ob2.Close()
	seq, err := ob2.Enqueue(context.Background(), "t", make([]byte, 100), 1)
	require.NoError(t, err)
	require.NoError(t, ob2.DeadLetter(seq, "r"))
	assert.Equal(t, 0, ob2.Stats().DeadLetters)
	assert.Equal(t, 0, ob2.Stats().Depth)
}
