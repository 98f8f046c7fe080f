package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// crashImage copies the state file and the outbox log of an outbox that is
// still open into a new directory, as a power cut would leave them (bbolt
// is consistent after every commit; the log is only written by commits,
// each synced before Enqueue returns), and returns the copy's state path.
func crashImage(t *testing.T, statePath string) string {
	t.Helper()
	dir := t.TempDir()
	for _, p := range []string{statePath, outboxLogPath(statePath)} {
		b, err := os.ReadFile(p)
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(dir, filepath.Base(p)), b, stateFileMode))
	}
	return filepath.Join(dir, filepath.Base(statePath))
}

// contents lists the unacknowledged messages of ob in order, as
// "seq:topic".
func contents(t *testing.T, ob *Outbox) []string {
	t.Helper()
	var out []string
	for after := uint64(0); ; {
		m, ok, err := ob.Next(after)
		require.NoError(t, err)
		if !ok {
			return out
		}
		out = append(out, fmt.Sprintf("%d:%s", m.Seq, m.Topic))
		after = m.Seq
	}
}

func count(b *syncBuffer, s string) int { return strings.Count(b.String(), s) }

// openLogged opens an outbox on path and returns what the store logs.
func openLogged(t *testing.T, path string, opts OutboxOptions) (*DB, *Outbox, *syncBuffer) {
	t.Helper()
	lines := &syncBuffer{}
	db, err := Open(path, Options{Logger: slog.New(slog.NewTextHandler(lines, nil))})
	require.NoError(t, err)
	ob, err := db.Outbox(opts)
	require.NoError(t, err)
	t.Cleanup(func() {
		_ = ob.Close()
		_ = db.Close()
	})
	return db, ob, lines
}

// TestOutboxLogRecovery ensures that an outbox log cut short or damaged at
// every frame boundary and inside every frame gives back exactly the
// messages of the frames before the cut (those acknowledged in them
// excluded), in order, with sequence numbers that go on from the highest;
// that a torn tail is silent while damage followed by readable frames, or a
// log of the wrong size, is moved aside with one log line; and that a
// second reopen finds the same.
func TestOutboxLogRecovery(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "state.db")
	_, ob := openOutbox(t, path, OutboxOptions{})
	// Two messages drained into bbolt first, so that recovery puts the
	// log's after them.
	for i := range 2 {
		_, err := ob.Enqueue(ctx, fmt.Sprintf("old/%d", i), []byte("x"), 1)
		require.NoError(t, err)
	}
	require.NoError(t, ob.Drain())
	// One frame per commit; acks ride along in frames of their own.
	for i := range 6 {
		seq, err := ob.Enqueue(ctx, fmt.Sprintf("t/%d", i), bytes.Repeat([]byte{byte(i)}, 10+i), byte(i%2))
		require.NoError(t, err)
		if i == 2 || i == 4 {
			ob.Ack(seq - 1) // t/1 and t/3
		}
	}
	image := crashImage(t, path)
	logData, err := os.ReadFile(outboxLogPath(image))
	require.NoError(t, err)

	// Where each frame starts and what applying the frames before it gives.
	gen := max(readHeader(logData[:logSlotSize]), readHeader(logData[logSlotSize:]))
	recs, end, _ := parseFrames(logData, gen)
	require.Len(t, recs, 8, "six messages and two ack frames")
	starts := []int64{logDataStart}
	for _, r := range recs {
		n := int64(logFrameHeader + 1)
		if r.kind == logKindMessage {
			n += 8 + int64(len(r.rec))
		} else {
			n += 8 * int64(len(r.acks))
		}
		starts = append(starts, starts[len(starts)-1]+n)
	}
	require.Equal(t, end, starts[len(starts)-1])
	expect := func(frames int) []string {
		out := []string{"1:old/0", "2:old/1"}
		acked := map[uint64]bool{}
		for _, r := range recs[:frames] {
			for _, s := range r.acks {
				acked[s] = true
			}
		}
		for _, r := range recs[:frames] {
			if r.kind == logKindMessage && !acked[r.seq] {
				m, err := decodeAt(r.seq, r.rec)
				require.NoError(t, err)
				out = append(out, fmt.Sprintf("%d:%s", r.seq, m.Topic))
			}
		}
		return out
	}

	type tc struct {
		name    string
		damage  func(data []byte) []byte
		frames  int  // readable frames
		damaged bool // moved aside with a log line
	}
	var cases []tc
	for i := range len(recs) + 1 {
		cases = append(cases,
			tc{fmt.Sprintf("zeroed from frame %d", i), func(d []byte) []byte { clear(d[starts[i]:]); return d }, i, false},
			tc{fmt.Sprintf("truncated at frame %d", i), func(d []byte) []byte { return d[:starts[i]] }, i, true})
	}
	for i := range recs {
		mid := (starts[i] + starts[i+1]) / 2
		last := i == len(recs)-1
		cases = append(cases,
			tc{fmt.Sprintf("byte flipped inside frame %d", i), func(d []byte) []byte { d[mid] ^= 0x40; return d }, i, !last},
			tc{fmt.Sprintf("frame %d torn halfway", i), func(d []byte) []byte { clear(d[mid:]); return d }, i, false},
			tc{fmt.Sprintf("length of frame %d damaged", i), func(d []byte) []byte { d[starts[i]] = 0xff; return d }, i, !last})
	}
	cases = append(cases,
		tc{"header unreadable", func(d []byte) []byte { clear(d[:2*logSlotSize]); return d }, 0, true},
		tc{"header of another generation", func(d []byte) []byte {
			copy(d[logSlot(gen+1):], logHeader(gen+1))
			return d
		}, 0, false},
		tc{"shorter than its header", func(d []byte) []byte { return d[:100] }, 0, true},
		tc{"empty file", func([]byte) []byte { return nil }, 0, true})

	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := crashImage(t, image)
			require.NoError(t, os.WriteFile(outboxLogPath(p), c.damage(bytes.Clone(logData)), stateFileMode))
			db, ob, lines := openLogged(t, p, OutboxOptions{})
			want := expect(c.frames)
			assert.Equal(t, want, contents(t, ob))
			assert.Equal(t, len(want), ob.Stats().Depth)
			aside, _ := filepath.Glob(outboxLogPath(p) + ".corrupt-*")
			if c.damaged {
				assert.Equal(t, 1, count(lines, `msg="outbox log damaged`), "one clear line")
				assert.Len(t, aside, 1, "the damaged log is kept for inspection")
			} else {
				assert.Zero(t, count(lines, "level=ERROR"))
				assert.Empty(t, aside)
			}
			seq, err := ob.Enqueue(ctx, "after", nil, 1)
			require.NoError(t, err)
			var last uint64
			_, _ = fmt.Sscanf(want[len(want)-1], "%d:", &last)
			assert.Greater(t, seq, last, "sequence numbers go on from the highest kept")

			// A crash right away, and a clean reopen, find the same.
			again := crashImage(t, p)
			require.NoError(t, ob.Close())
			require.NoError(t, db.Close())
			want = append(want, fmt.Sprintf("%d:after", seq))
			for _, q := range []string{again, p} {
				_, ob2, lines2 := openLogged(t, q, OutboxOptions{})
				assert.Equal(t, want, contents(t, ob2))
				assert.Zero(t, count(lines2, "level=ERROR"))
			}
		})
	}
}

// TestOutboxLogReplayIdempotent ensures that a crash after a drain's bbolt
// transaction but before the log's reset, or one that tears the new header,
// replays records already in bbolt without duplicating, resurrecting or
// losing a message.
func TestOutboxLogReplayIdempotent(t *testing.T) {
	tears := []struct {
		name string
		tear func(t *testing.T, logPath string)
	}{
		{"crash before the header write", func(*testing.T, string) {}},
		{"header write torn", func(t *testing.T, logPath string) {
			f, err := os.OpenFile(logPath, os.O_RDWR, 0)
			require.NoError(t, err)
			defer f.Close()
			// The slot the next generation would have gone to.
			data := make([]byte, 2*logSlotSize)
			_, err = f.ReadAt(data, 0)
			require.NoError(t, err)
			gen := max(readHeader(data[:logSlotSize]), readHeader(data[logSlotSize:]))
			half := logHeader(gen + 1)[:logHeaderLen/2]
			_, err = f.WriteAt(half, logSlot(gen+1))
			require.NoError(t, err)
		}},
	}
	for _, tc := range tears {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			path := filepath.Join(t.TempDir(), "state.db")
			db, ob := openOutbox(t, path, OutboxOptions{})
			var want []string
			for i := range 10 {
				seq, err := ob.Enqueue(ctx, fmt.Sprintf("t/%d", i), []byte("p"), 1)
				require.NoError(t, err)
				if i%3 == 0 {
					ob.Ack(seq)
				} else {
					want = append(want, fmt.Sprintf("%d:t/%d", seq, i))
				}
			}
			crash := errors.New("crash")
			ob.FailBeforeLogReset(func() error { return crash })
			require.ErrorIs(t, ob.Close(), crash)
			require.NoError(t, db.Close())
			tc.tear(t, outboxLogPath(path))

			for range 2 { // the replay, then a reopen after it
				db, ob, lines := openLogged(t, path, OutboxOptions{})
				assert.Equal(t, want, contents(t, ob))
				assert.Equal(t, len(want), ob.Stats().Depth)
				assert.Zero(t, count(lines, "level=ERROR"))
				require.NoError(t, ob.Close())
				require.NoError(t, db.Close())
			}
		})
	}
}

// TestOutboxLogFullWhileNothingIsAcknowledged ensures that an outbox whose
// consumer is away (a broker outage) and that receives several logs' worth
// of messages drains the log into bbolt each time it fills and loses
// nothing: every message is there, in order, while running, after a crash
// and after a clean reopen.
func TestOutboxLogFullWhileNothingIsAcknowledged(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "state.db")
	db, ob := openOutbox(t, path, OutboxOptions{})
	const n, size = 3000, 500 // ≈ 1.6 MB: three logs and more
	var want []string
	for i := range n {
		seq, err := ob.Enqueue(ctx, fmt.Sprintf("t/%d", i), make([]byte, size), 1)
		require.NoError(t, err)
		want = append(want, fmt.Sprintf("%d:t/%d", seq, i))
	}
	st := ob.Stats()
	assert.GreaterOrEqual(t, st.Drains, uint64(3), "the log filled and was drained")
	assert.True(t, st.Log, "commits go to the log")
	assert.Equal(t, n, st.Depth)
	assert.Equal(t, want, contents(t, ob), "served from bbolt and from the log, in order")
	image := crashImage(t, path)
	require.NoError(t, ob.Close())
	require.NoError(t, db.Close())
	for _, p := range []string{image, path} {
		_, ob := openOutbox(t, p, OutboxOptions{})
		assert.Equal(t, want, contents(t, ob))
		assert.Equal(t, n, ob.Stats().Depth)
	}
}

// TestOutboxLogConcurrent ensures, under the race detector, that
// publishers, a consumer acknowledging as it goes and the drains of a log
// that fills several times agree: every message is delivered once, in
// order, and nothing is left.
func TestOutboxLogConcurrent(t *testing.T) {
	ctx := context.Background()
	_, ob := openOutbox(t, filepath.Join(t.TempDir(), "state.db"), OutboxOptions{})
	const writers, each = 8, 150
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				_, err := ob.Enqueue(ctx, fmt.Sprintf("t/%d/%d", w, i), make([]byte, 1000), 1)
				assert.NoError(t, err)
			}
		})
	}
	var got []uint64
	for after := uint64(0); len(got) < writers*each; {
		n := ob.Notify()
		m, ok, err := ob.Next(after)
		require.NoError(t, err)
		if !ok {
			<-n
			continue
		}
		got = append(got, m.Seq)
		after = m.Seq
		ob.Ack(m.Seq)
	}
	wg.Wait()
	require.IsIncreasing(t, got)
	assert.Equal(t, 0, ob.Stats().Depth)
	require.NoError(t, ob.Drain())
	st := ob.Stats()
	assert.Zero(t, st.Bytes, "every ack made durable")
	assert.Greater(t, st.Drains, uint64(1))
}

// TestOutboxLimitsAfterReopen ensures that the limits count the messages a
// previous run left in bbolt, and that acknowledging one of those frees
// room at once (the commit drains the acknowledgement first).
func TestOutboxLimitsAfterReopen(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "state.db")
	db, ob := openOutbox(t, path, OutboxOptions{MaxMessages: 3})
	for range 3 {
		_, err := ob.Enqueue(ctx, "t", []byte("x"), 1)
		require.NoError(t, err)
	}
	require.NoError(t, ob.Close())
	require.NoError(t, db.Close())
	_, ob = openOutbox(t, path, OutboxOptions{MaxMessages: 3})
	_, err := ob.Enqueue(ctx, "t", []byte("x"), 1)
	require.ErrorIs(t, err, ErrOutboxFull)
	m, ok, err := ob.Next(0)
	require.NoError(t, err)
	require.True(t, ok)
	ob.Ack(m.Seq)
	_, err = ob.Enqueue(ctx, "t", []byte("x"), 1)
	require.NoError(t, err)
	assert.Equal(t, 3, ob.Stats().Depth)
}

// TestOutboxLogUnusable ensures that a log path the outbox cannot use (here
// a directory in its place) is reported with one line and the outbox goes
// on committing to the state file, losing nothing.
func TestOutboxLogUnusable(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "state.db")
	require.NoError(t, os.Mkdir(outboxLogPath(path), 0o700))
	db, ob, lines := openLogged(t, path, OutboxOptions{})
	assert.Equal(t, 1, count(lines, "outbox log unusable"))
	assert.NotEmpty(t, db.Health().LastError)
	assert.False(t, ob.Stats().Log, "the stats say the log is not in use")
	seq, err := ob.Enqueue(ctx, "t", []byte("x"), 1)
	require.NoError(t, err)
	require.NoError(t, ob.Close())
	require.NoError(t, db.Close())
	_, ob, _ = openLogged(t, path, OutboxOptions{})
	assert.Equal(t, []string{fmt.Sprintf("%d:t", seq)}, contents(t, ob))
}

// TestOutboxLogFileMode ensures that the log is created with the state
// file's mode and that an existing one readable by others is restricted.
func TestOutboxLogFileMode(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	db, ob := openOutbox(t, path, OutboxOptions{})
	fi, err := os.Stat(outboxLogPath(path))
	require.NoError(t, err)
	assert.Equal(t, stateFileMode, fi.Mode().Perm())
	assert.EqualValues(t, outboxLogSize, fi.Size(), "created at its full size")
	require.NoError(t, ob.Close())
	require.NoError(t, db.Close())

	require.NoError(t, os.Chmod(outboxLogPath(path), 0o644))
	_, _ = openOutbox(t, path, OutboxOptions{})
	fi, err = os.Stat(outboxLogPath(path))
	require.NoError(t, err)
	assert.Equal(t, stateFileMode, fi.Mode().Perm())
}

// BenchmarkOutboxEnqueue: durable enqueues per second from 8 concurrent
// publishers with the outbox log, against group commit straight to bbolt
// (before the log) and one bbolt commit per message, in the same run.
func BenchmarkOutboxEnqueue(b *testing.B) {
	const writers, each = 8, 250
	run := func(opts OutboxOptions) float64 {
		db, err := Open(filepath.Join(b.TempDir(), "s.db"), Options{})
		require.NoError(b, err)
		defer db.Close()
		ob, err := db.Outbox(opts)
		require.NoError(b, err)
		defer ob.Close()
		start := time.Now()
		var wg sync.WaitGroup
		for range writers {
			wg.Go(func() {
				for range each {
					if _, err := ob.Enqueue(context.Background(), "dt/gw/x", make([]byte, 200), 1); err != nil {
						b.Error(err)
						return
					}
				}
			})
		}
		wg.Wait()
		return time.Since(start).Seconds()
	}
	var wal, group, single float64
	for b.Loop() {
		wal += run(OutboxOptions{})
		group += run(OutboxOptions{noLog: true})
		single += run(OutboxOptions{OneCommitPerMessage: true})
	}
	total := float64(writers * each * b.N)
	b.ReportMetric(total/wal, "log-msg/s")
	b.ReportMetric(total/group, "bbolt-group-msg/s")
	b.ReportMetric(total/single, "single-msg/s")
	b.ReportMetric(group/wal, "ratio-vs-bbolt-group")
	b.ReportMetric(single/wal, "ratio-vs-single")
}

// TestOutboxLogLetsGoOfAcknowledged ensures that a steady trickle whose
// messages are acknowledged as they go holds next to nothing in memory
// between drains, and that a message acknowledged twice is counted once.
func TestOutboxLogLetsGoOfAcknowledged(t *testing.T) {
	ctx := context.Background()
	_, ob := openOutbox(t, filepath.Join(t.TempDir(), "state.db"), OutboxOptions{})
	var last uint64
	for range 1000 {
		seq, err := ob.Enqueue(ctx, "t", make([]byte, 100), 1)
		require.NoError(t, err)
		ob.Ack(seq) // rides along with the next commit
		last = seq
	}
	ob.mu.Lock()
	held, drains := len(ob.mem), ob.drains
	ob.mu.Unlock()
	assert.Zero(t, drains, "all in one log")
	assert.LessOrEqual(t, held, 2, "acknowledged messages are let go of")
	ob.Ack(last - 10)
	assert.Equal(t, 0, ob.Stats().Depth)
	_, err := ob.Enqueue(ctx, "t", nil, 1)
	require.NoError(t, err)
	assert.Equal(t, 1, ob.Stats().Depth)
}
