package store

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/bbolt"
)

// Outbox errors; check them with errors.Is.
var (
	// ErrOutboxFull means accepting the message would exceed
	// OutboxOptions.MaxMessages or MaxBytes. Nothing was queued; the caller
	// should retry later (HTTP 507).
	ErrOutboxFull = errors.New("outbox full")
	// ErrOutboxUnavailable means the message could not be committed (state
	// file closed, disk error). Nothing was queued (HTTP 503).
	ErrOutboxUnavailable = errors.New("outbox unavailable")
	// ErrOutboxClosed is returned after Outbox.Close.
	ErrOutboxClosed = errors.New("outbox closed")
)

// Outbox defaults, chosen for a gateway: a day of 1 msg/s telemetry fits
// many times over, and 64 MiB stays small next to a typical eMMC partition.
const (
	DefaultOutboxMaxMessages = 100_000
	DefaultOutboxMaxBytes    = 64 << 20
	DefaultOutboxMaxBatch    = 1024
)

// OutboxOptions configures DB.Outbox.
type OutboxOptions struct {
	// MaxMessages bounds the number of queued messages (0: DefaultOutboxMaxMessages).
	MaxMessages int
	// MaxBytes bounds the stored size of queued messages, topic and payload
	// included (0: DefaultOutboxMaxBytes).
	MaxBytes int64
	// MaxBatch bounds how many Enqueue calls share one commit (0: DefaultOutboxMaxBatch).
	MaxBatch int
	// MaxDeadLetters and MaxDeadLetterBytes bound the messages kept after
	// the broker refused them; the oldest go first (0: DefaultMaxDeadLetters,
	// DefaultMaxDeadLetterBytes).
	MaxDeadLetters     int
	MaxDeadLetterBytes int64
	// OneCommitPerMessage disables group commit and the outbox log: every
	// Enqueue gets its own bbolt transaction and fsyncs. It exists as the
	// baseline for benchmarks.
	OneCommitPerMessage bool
	// noLog commits every group to bbolt, as before the outbox log; a
	// baseline for the store's benchmark (BenchmarkOutboxEnqueue).
	noLog bool
}

// OutboxMessage is one queued MQTT publication.
type OutboxMessage struct {
	Seq      uint64    // position in the outbox; increases with every commit
	Topic    string    // already checked by the caller
	Payload  []byte    // owned by the receiver
	QoS      byte      // 0 or 1
	Enqueued time.Time // when Enqueue was called
}

// OutboxStats describes the outbox for status reports.
type OutboxStats struct {
	Depth   int       `json:"depth"`           // messages not yet acknowledged
	Bytes   int64     `json:"bytes"`           // their stored size
	Oldest  time.Time `json:"oldest,omitzero"` // Enqueued of the oldest, zero when empty
	Commits uint64    `json:"commits"`         // group commits that added messages (log appends or bbolt transactions)
	Drains  uint64    `json:"drains"`          // times the outbox log was moved into bbolt
	Refused uint64    `json:"refused"`         // Enqueue calls answered with ErrOutboxFull
	Error   string    `json:"error,omitempty"` // last commit error
	// Log is true while commits go to the outbox log; false when every
	// commit is a bbolt transaction (slower): the log could not be used or
	// failed, which the store's last error and the log say, or
	// OneCommitPerMessage asked for it.
	Log bool `json:"log"`
	// DeadLetters counts the messages kept in the dead-letter bucket;
	// DeadLettered counts those moved there since the outbox was opened,
	// LastDeadLetter is the reason of the last one.
	DeadLetters    int    `json:"dead_letters"`
	DeadLettered   uint64 `json:"dead_lettered"`
	LastDeadLetter string `json:"last_dead_letter,omitempty"`
}

// Outbox is the durable, ordered MQTT outbox of a state file. A message is
// accepted only once it is on disk (fdatasync'd); it is deleted once its
// consumer calls Ack, which for MQTT means the broker acknowledged it.
//
// Concurrent Enqueue calls are group-committed: one committer goroutine takes
// every request waiting at the moment the previous commit finished and
// writes them in one commit, so N concurrent publishers share one fdatasync
// with no added delay when only one is publishing. A commit is one append
// to the outbox log (outboxlog.go: one pwrite, one fdatasync); the messages
// in the log are also held in memory, so Next serves them without reading
// the file, and they are drained into bbolt in one transaction when the log
// is full, drainIdle after the last commit, and at Close. Messages older
// than the log are in bbolt, read from there. Without a usable log (and
// with OneCommitPerMessage) every commit is a bbolt transaction. bbolt's
// DB.Batch was considered and not used: it waits up to MaxBatchDelay
// (10 ms) even for a lone caller, may run the function twice, and cannot
// check the size limits for the whole batch atomically. Acks are not made
// durable on their own; they ride along with the next commit or drain, so
// after a crash a few acknowledged messages may be sent again
// (at-least-once, never lost).
//
// It is safe for concurrent use.
type Outbox struct {
	db   *DB
	opts OutboxOptions

	reqs chan *enqueueReq
	kick chan struct{} // a pending ack wants committing
	stop chan struct{}
	done chan struct{}

	// wmu serialises what writes: the committer's commits and drains,
	// and DeadLetter. wal (nil: commits go to bbolt) is guarded by it.
	wmu sync.Mutex
	wal *outboxLog
	// logOn mirrors wal != nil for Stats, which does not take wmu (a
	// commit or a drain may hold it for a while).
	logOn atomic.Bool
	buf   []byte // frames of the commit being written
	// failBeforeReset, set by tests (export_test.go), is called between a
	// drain's bbolt transaction and the log's reset; an error stops the
	// drain there, as a crash would.
	failBeforeReset func() error

	mu     sync.Mutex
	closed bool
	// depth and bytes count the messages not durably removed, in bbolt
	// (inBolt of them) or in the log.
	depth, inBolt int
	bytes         int64
	acks          map[uint64]struct{} // acknowledged in bbolt, deletion not yet committed
	// The messages in the log, seq memFirst+i, and those of them
	// acknowledged whose ack is not yet in the log (memAcks, in Ack order).
	// Those from logFirst to memFirst were acknowledged for good and let go.
	mem                []memEntry
	logFirst, memFirst uint64
	memAcks            []uint64
	notify             chan struct{} // closed on the next commit that adds messages
	commits            uint64
	drains             uint64
	refused            uint64
	lastErr            error
	// lastSeq is the highest sequence given out, so a fresh file that
	// replaces a damaged one goes on from there (delivery keeps a cursor).
	lastSeq uint64
	// dead letters: kept, moved since open, last reason
	deadLetters  int
	deadLettered uint64
	lastDead     string
}

// memEntry is a message in the log: its record as bbolt would store it,
// whether it was acknowledged, and whether that ack is durable (in the log).
type memEntry struct {
	rec            []byte
	acked, durable bool
}

type enqueueReq struct {
	topic    string
	payload  []byte
	qos      byte
	enqueued time.Time
	res      chan enqueueRes
}

type enqueueRes struct {
	seq uint64
	err error
}

// recordHeader: version(1) qos(1) enqueued-unix-nanos(8) topic-length(2).
const recordHeader = 12

func recordSize(topic string, payload []byte) int64 {
	return int64(recordHeader + len(topic) + len(payload))
}

// Outbox starts the outbox on this state file. Call it once per DB: two
// Outbox values on one file would disagree about its depth. Close the
// Outbox before the DB.
func (db *DB) Outbox(opts OutboxOptions) (*Outbox, error) {
	if opts.MaxMessages <= 0 {
		opts.MaxMessages = DefaultOutboxMaxMessages
	}
	if opts.MaxBytes <= 0 {
		opts.MaxBytes = DefaultOutboxMaxBytes
	}
	if opts.MaxBatch <= 0 {
		opts.MaxBatch = DefaultOutboxMaxBatch
	}
	if opts.MaxDeadLetters <= 0 {
		opts.MaxDeadLetters = DefaultMaxDeadLetters
	}
	if opts.MaxDeadLetterBytes <= 0 {
		opts.MaxDeadLetterBytes = DefaultMaxDeadLetterBytes
	}
	o := &Outbox{
		db:     db,
		opts:   opts,
		reqs:   make(chan *enqueueReq, opts.MaxBatch),
		kick:   make(chan struct{}, 1),
		stop:   make(chan struct{}),
		done:   make(chan struct{}),
		acks:   make(map[uint64]struct{}),
		notify: make(chan struct{}),
	}
	if !opts.OneCommitPerMessage && !opts.noLog {
		if err := o.openLog(); err != nil {
			return nil, err
		}
	}
	// Count what a previous run left behind, and drop records this build
	// cannot read rather than let one bad record block the queue forever.
	var bad [][]byte
	err := db.view(func(tx *bbolt.Tx) error {
		o.lastSeq = tx.Bucket(bucketOutbox).Sequence()
		return tx.Bucket(bucketOutbox).ForEach(func(k, v []byte) error {
			if _, err := decodeRecord(k, v); err != nil {
				bad = append(bad, append([]byte(nil), k...))
				return nil
			}
			o.depth++
			o.bytes += int64(len(v))
			return nil
		})
	})
	if err != nil {
		o.closeLog()
		return nil, fmt.Errorf("%w: read outbox in %s: %w", ErrOutboxUnavailable, db.path, err)
	}
	if len(bad) > 0 {
		db.log.Error("outbox records unreadable; discarded", "path", db.path, "count", len(bad))
		if err := db.update(func(tx *bbolt.Tx) error {
			b := tx.Bucket(bucketOutbox)
			for _, k := range bad {
				if err := b.Delete(k); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			o.closeLog()
			return nil, fmt.Errorf("%w: clean outbox in %s: %w", ErrOutboxUnavailable, db.path, err)
		}
	}
	o.inBolt = o.depth
	o.logFirst, o.memFirst = o.lastSeq+1, o.lastSeq+1
	if err := o.countDeadLetters(); err != nil {
		o.closeLog()
		return nil, fmt.Errorf("%w: read dead letters in %s: %w", ErrOutboxUnavailable, db.path, err)
	}
	db.onReplace(o.reset)
	go o.commitLoop()
	return o, nil
}

// openLog opens the outbox log and applies what a previous run left in it
// to bbolt. A log that is damaged is moved aside (after applying what can be
// read) and a fresh one made; one that cannot be used at all (the directory
// is read-only, the disk is full) is reported, and the outbox commits to
// bbolt instead. Only a failure to apply the records is an error: they stay
// in the log for the next start.
func (o *Outbox) openLog() error {
	db := o.db
	path := outboxLogPath(db.path)
	var drained uint64
	if err := db.view(func(tx *bbolt.Tx) error {
		drained = logDrained(tx)
		return nil
	}); err != nil {
		return fmt.Errorf("%w: read outbox in %s: %w", ErrOutboxUnavailable, db.path, err)
	}
	l, recs, err := openOutboxLog(path, drained+1)
	damaged := errors.Is(err, errLogDamaged)
	if err != nil && !damaged {
		logUnusable(db, path, err)
		return nil
	}
	if l != nil && l.gen <= drained {
		recs = nil // in bbolt already: the drain's reset did not happen
	}
	if len(recs) > 0 {
		err := replayLog(db, recs, l.gen)
		if errors.Is(err, ErrDamaged) {
			err = replayLog(db, recs, l.gen) // on the fresh file that replaced it
		}
		if err != nil {
			if l != nil {
				l.close()
			}
			return fmt.Errorf("%w: apply outbox log %s to %s: %w", ErrOutboxUnavailable, path, db.path, err)
		}
	}
	if damaged {
		if l != nil {
			l.close()
		}
		aside, rerr := moveAside(path)
		if rerr != nil {
			logUnusable(db, path, fmt.Errorf("%w; moving it aside: %w", err, rerr))
			return nil
		}
		db.log.Error("outbox log damaged; what could be read was kept, the file moved aside", "path", path, "moved_to", aside, "err", err, "messages_kept", countMessages(recs))
		db.setErr(err)
		if l, err = createOutboxLog(path, max(drained, l.genOrZero())+1); err != nil {
			logUnusable(db, path, err)
			return nil
		}
	} else if !l.empty() || l.gen <= drained {
		if err := l.resetTo(max(l.gen, drained) + 1); err != nil {
			l.close()
			logUnusable(db, path, err)
			return nil
		}
	}
	tightenMode(path, "outbox log", db.log)
	o.wal = l
	o.logOn.Store(true)
	return nil
}

// logUnusable reports, in one line, that the outbox goes on without its log.
func logUnusable(db *DB, path string, err error) {
	db.log.Error("outbox log unusable; committing every message to the state file instead (slower)", "path", path, "err", err)
	db.setErr(err)
}

func countMessages(recs []logRecord) (n int) {
	for _, r := range recs {
		if r.kind == logKindMessage {
			n++
		}
	}
	return n
}

// replayLog applies records read from the log in one transaction: puts of
// the messages not acknowledged, deletes of the acknowledged, and the
// sequence. Applying the same records twice (a crash between a drain and
// the log's reset) leaves the same state.
func replayLog(db *DB, recs []logRecord, gen uint64) error {
	acked := make(map[uint64]bool)
	for _, r := range recs {
		for _, s := range r.acks {
			acked[s] = true
		}
	}
	return db.update(func(tx *bbolt.Tx) error {
		b := tx.Bucket(bucketOutbox)
		last := b.Sequence()
		for _, r := range recs {
			if r.kind != logKindMessage {
				continue
			}
			last = max(last, r.seq)
			if acked[r.seq] {
				delete(acked, r.seq)
				if err := b.Delete(seqKey(r.seq)); err != nil {
					return err
				}
				continue
			}
			if err := b.Put(seqKey(r.seq), r.rec); err != nil {
				return err
			}
		}
		for s := range acked { // acknowledgements of messages already in bbolt
			if err := b.Delete(seqKey(s)); err != nil {
				return err
			}
		}
		if err := b.SetSequence(last); err != nil {
			return err
		}
		return setLogDrained(tx, gen)
	})
}

// logDrained returns the last log generation drained into bbolt.
func logDrained(tx *bbolt.Tx) uint64 {
	if v := tx.Bucket(bucketMeta).Get(keyLogDrained); len(v) == 8 {
		return binary.BigEndian.Uint64(v)
	}
	return 0
}

func setLogDrained(tx *bbolt.Tx, gen uint64) error {
	return tx.Bucket(bucketMeta).Put(keyLogDrained, binary.BigEndian.AppendUint64(nil, gen))
}

// Enqueue commits one message and returns its sequence number. It returns
// only after the message is durable, or with ErrOutboxFull,
// ErrOutboxUnavailable or ErrOutboxClosed, in which case nothing was queued.
// The caller validates topic, payload and QoS. A cancelled ctx stops the
// wait for a place in the commit queue; once handed to the committer the
// request is finished (commits are bounded by the disk, not the network).
func (o *Outbox) Enqueue(ctx context.Context, topic string, payload []byte, qos byte) (uint64, error) {
	if size := recordSize(topic, payload); size > o.opts.MaxBytes {
		o.mu.Lock()
		o.refused++
		o.mu.Unlock()
		return 0, fmt.Errorf("%w: message of %d bytes exceeds the outbox limit of %d bytes", ErrOutboxFull, size, o.opts.MaxBytes)
	}
	if len(topic) > 0xffff {
		return 0, fmt.Errorf("%w: topic of %d bytes is too long to store", ErrOutboxUnavailable, len(topic))
	}
	r := &enqueueReq{
		topic:    topic,
		payload:  payload,
		qos:      qos,
		enqueued: time.Now(),
		res:      make(chan enqueueRes, 1),
	}
	select {
	case o.reqs <- r:
	case <-o.stop:
		return 0, ErrOutboxClosed
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	select {
	case res := <-r.res:
		return res.seq, res.err
	case <-o.done:
		// The committer stopped; it may still have answered just before.
		select {
		case res := <-r.res:
			return res.seq, res.err
		default:
			return 0, ErrOutboxClosed
		}
	}
}

// Next returns the oldest unacknowledged message with a sequence number
// greater than after; ok is false when there is none. Delivery keeps its
// own cursor so that messages in flight are not handed out twice. Messages
// in the outbox log are served from memory; only older ones are read from
// bbolt.
func (o *Outbox) Next(after uint64) (msg OutboxMessage, ok bool, err error) {
	o.mu.Lock()
	if o.closed {
		o.mu.Unlock()
		return msg, false, ErrOutboxClosed
	}
	// What the log holds is taken first: a drain that runs meanwhile only
	// moves it into bbolt, where the read below would find it too.
	first := o.memFirst
	for s := max(after+1, first); s < first+uint64(len(o.mem)); s++ {
		if e := o.mem[s-first]; !e.acked {
			msg, err = decodeAt(s, e.rec)
			ok = err == nil
			break
		}
	}
	inBolt := o.inBolt > 0 && after+1 < first
	o.mu.Unlock()
	if err == nil && inBolt {
		var found bool
		var m OutboxMessage
		err = o.db.view(func(tx *bbolt.Tx) error {
			c := tx.Bucket(bucketOutbox).Cursor()
			for k, v := c.Seek(seqKey(after + 1)); k != nil; k, v = c.Next() {
				seq := binary.BigEndian.Uint64(k)
				if seq >= first {
					return nil
				}
				if o.isAcked(seq) {
					continue
				}
				var derr error
				m, derr = decodeRecord(k, v)
				found = derr == nil
				return derr
			}
			return nil
		})
		if found {
			msg, ok = m, true
		}
	}
	if err != nil {
		return OutboxMessage{}, false, fmt.Errorf("%w: read outbox in %s: %w", ErrOutboxUnavailable, o.db.path, err)
	}
	return msg, ok, nil
}

func (o *Outbox) isAcked(seq uint64) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	_, ok := o.acks[seq]
	return ok
}

// Ack marks messages as delivered. They disappear from Next at once and are
// deleted with the next commit or drain.
func (o *Outbox) Ack(seqs ...uint64) {
	if len(seqs) == 0 {
		return
	}
	o.mu.Lock()
	for _, s := range seqs {
		if s >= o.logFirst && s < o.memFirst {
			continue // acknowledged for good already
		}
		if s >= o.memFirst && s-o.memFirst < uint64(len(o.mem)) {
			if e := &o.mem[s-o.memFirst]; !e.acked {
				e.acked = true
				o.memAcks = append(o.memAcks, s)
			}
			continue
		}
		o.acks[s] = struct{}{}
	}
	o.mu.Unlock()
	select {
	case o.kick <- struct{}{}:
	default:
	}
}

// Notify returns a channel that is closed by the next commit that adds
// messages. Get it before calling Next to not miss a commit.
func (o *Outbox) Notify() <-chan struct{} {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.notify
}

// Stats reports depth, size and the age of the oldest message.
func (o *Outbox) Stats() OutboxStats {
	o.mu.Lock()
	st := OutboxStats{
		Depth:   max(0, o.depth-len(o.acks)-len(o.memAcks)),
		Bytes:   o.bytes,
		Commits: o.commits,
		Drains:  o.drains,
		Refused: o.refused,
		Log:     o.logOn.Load(),

		DeadLetters:    o.deadLetters,
		DeadLettered:   o.deadLettered,
		LastDeadLetter: o.lastDead,
	}
	if o.lastErr != nil {
		st.Error = o.lastErr.Error()
	}
	closed := o.closed
	o.mu.Unlock()
	if closed {
		return st
	}
	if m, ok, err := o.Next(0); err == nil && ok {
		st.Oldest = m.Enqueued
	}
	return st
}

// Close commits pending acks, answers queued Enqueue calls, drains the
// outbox log into bbolt and stops the committer. It does not close the DB.
// Calling it twice is harmless.
func (o *Outbox) Close() error {
	o.mu.Lock()
	if o.closed {
		o.mu.Unlock()
		<-o.done
		return nil
	}
	o.closed = true
	o.mu.Unlock()
	close(o.stop)
	<-o.done
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.lastErr
}

func (o *Outbox) commitLoop() {
	defer close(o.done)
	defer o.closeLog()
	batch := make([]*enqueueReq, 0, o.opts.MaxBatch)
	// Acks wait for the next commit that adds messages, or ackDelay at
	// most: an ack-only commit costs fsyncs that a busy outbox would
	// otherwise make between every two batches of messages.
	ackTimer := time.NewTimer(time.Hour)
	ackTimer.Stop()
	var ackDue <-chan time.Time
	// The log is drained into bbolt drainIdle after the last commit.
	idleTimer := time.NewTimer(time.Hour)
	idleTimer.Stop()
	var idleDue <-chan time.Time
	// active is how many publishers were at work when the last commit
	// ended: the next commit waits up to groupWait for as many.
	active := 0
	groupTimer := time.NewTimer(time.Hour)
	groupTimer.Stop()
	for {
		batch = batch[:0]
		select {
		case r := <-o.reqs:
			batch = append(batch, r)
		case <-o.kick:
			if ackDue == nil {
				ackTimer.Reset(ackDelay)
				ackDue = ackTimer.C
			}
			continue
		case <-ackDue:
			ackDue = nil
			o.flush()
			continue
		case <-idleDue:
			idleDue = nil
			o.flush()
			continue
		case <-o.stop:
			// Finish what was handed over before Close, then flush acks
			// and the log.
			for {
				select {
				case r := <-o.reqs:
					batch = append(batch, r)
				default:
					o.commit(batch)
					o.flush()
					return
				}
			}
		}
		if o.opts.OneCommitPerMessage {
			o.commit(batch)
			continue
		}
		// Group commit: take everything that queued up while the previous
		// commit was syncing.
	drain:
		for len(batch) < o.opts.MaxBatch {
			select {
			case r := <-o.reqs:
				batch = append(batch, r)
			default:
				break drain
			}
		}
		// Publishers that each wait for their message split into two
		// groups that take turns, one syncing while the other queues, and
		// every commit carries half of them. Wait a little for the ones the
		// last commit answered, so that all share one commit again.
		if want := min(active, o.opts.MaxBatch); len(batch) < want {
			groupTimer.Reset(groupWait)
		gather:
			for len(batch) < want {
				select {
				case r := <-o.reqs:
					batch = append(batch, r)
				case <-groupTimer.C:
					break gather
				}
			}
			groupTimer.Stop()
		}
		// Those it answered and those that queued meanwhile are the
		// publishers at work.
		active = len(batch) + o.commit(batch)
		// This commit carried every pending ack but, with the log, those
		// of messages already in bbolt, which the next drain deletes.
		if o.acksPending() == 0 {
			ackTimer.Stop()
			ackDue = nil
		}
		idleTimer.Reset(drainIdle)
		idleDue = idleTimer.C
	}
}

// groupWait bounds how long a commit waits for the publishers of the last
// one: a fraction of what a commit costs, paid only while fewer arrive than
// last time, so a lone publisher never waits.
const groupWait = 500 * time.Microsecond

// ackDelay bounds how long an acknowledged message stays in the file when
// nothing else is committed: after a crash within it, the broker may get
// it again (at-least-once).
const ackDelay = time.Second

// drainIdle is how long after the last commit the outbox log is drained
// into bbolt, so that an idle outbox holds no messages in memory.
const drainIdle = time.Second

// acksPending counts acks that no commit has made durable yet.
func (o *Outbox) acksPending() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.acks) + len(o.memAcks)
}

// flush makes every pending ack durable: a drain of the log, or a bbolt
// commit without messages.
func (o *Outbox) flush() {
	o.wmu.Lock()
	defer o.wmu.Unlock()
	if o.wal == nil {
		o.commitBolt(nil)
		return
	}
	o.fail(o.drainLocked())
}

// fail records a commit error for Stats and Health.
func (o *Outbox) fail(err error) {
	if err == nil {
		return
	}
	o.mu.Lock()
	o.lastErr = err
	o.mu.Unlock()
	o.db.setErr(err)
}

// commit writes batch and the pending acks in one commit and answers every
// request in batch. It returns how many requests queued meanwhile, counted
// before the answers let their publishers queue again.
func (o *Outbox) commit(batch []*enqueueReq) (queued int) {
	o.wmu.Lock()
	defer o.wmu.Unlock()
	if o.wal == nil {
		return o.commitBolt(batch)
	}
	if len(batch) == 0 {
		return len(o.reqs)
	}
	if o.db.isClosed() {
		// The log is the state file's: nothing is accepted without it.
		return o.answer(batch, fmt.Errorf("%w: commit to %s: %w", ErrOutboxUnavailable, o.db.path, ErrClosed))
	}
	results, fr, recs, acks := o.frame(batch)
	// Acknowledged messages in bbolt are deleted by a drain only, and a
	// full log is emptied by one: drain, then frame the batch again.
	for _, drain := range []func() bool{
		func() bool { return refusedAny(results) && o.acksInBolt() },
		func() bool { return int64(len(fr.buf)) > o.wal.free() },
	} {
		if !drain() {
			continue
		}
		if err := o.drainLocked(); err != nil {
			return o.answer(batch, err)
		}
		if o.wal == nil {
			return o.commitBolt(batch)
		}
		results, fr, recs, acks = o.frame(batch)
	}
	if int64(len(fr.buf)) > o.wal.free() {
		// Larger than the whole log: bbolt takes it, after the drain
		// above, so every sequence in bbolt is still below the log's.
		return o.commitBolt(batch)
	}
	if len(fr.buf) == 0 { // every message refused, no ack to write
		return o.answerAll(batch, results)
	}
	if err := o.wal.append(fr); err != nil {
		o.fail(fmt.Errorf("%w: %w", ErrOutboxUnavailable, err))
		o.dropLog(err)
		return o.commitBolt(batch)
	}

	o.mu.Lock()
	for _, s := range acks {
		e := &o.mem[s-o.memFirst]
		e.durable = true
		o.depth--
		o.bytes -= int64(len(e.rec))
		e.rec = nil // never read again: only the log's frames remember it
	}
	o.memAcks = o.memAcks[len(acks):]
	// Let go of the messages acknowledged for good at the head, so that a
	// steady trickle acknowledged as it goes holds next to nothing.
	n := 0
	for n < len(o.mem) && o.mem[n].durable {
		n++
	}
	o.mem = o.mem[n:]
	o.memFirst += uint64(n)
	added := 0
	for i, r := range recs {
		if r == nil {
			o.refused++
			continue
		}
		o.mem = append(o.mem, memEntry{rec: r})
		o.lastSeq = results[i].seq
		o.depth++
		o.bytes += int64(len(r))
		added++
	}
	if added > 0 {
		o.commits++
		close(o.notify)
		o.notify = make(chan struct{})
	}
	o.mu.Unlock()
	queued = len(o.reqs)
	for i, r := range batch {
		r.res <- results[i]
	}
	return queued
}

// frame builds the log frames of one commit: a message frame for every
// request within the limits (recs[i] its record, nil when refused with
// results[i]) and one frame for the pending acks of messages in the log.
func (o *Outbox) frame(batch []*enqueueReq) (results []enqueueRes, fr frames, recs [][]byte, acks []uint64) {
	o.mu.Lock()
	acks = slices.Clone(o.memAcks)
	d, sz := o.depth, o.bytes
	for _, s := range acks {
		d--
		sz -= int64(len(o.mem[s-o.memFirst].rec))
	}
	seq := o.lastSeq
	o.mu.Unlock()

	results = make([]enqueueRes, len(batch))
	recs = make([][]byte, len(batch))
	fr = o.wal.frames(o.buf)
	for i, r := range batch {
		size := recordSize(r.topic, r.payload)
		if d+1 > o.opts.MaxMessages || sz+size > o.opts.MaxBytes {
			results[i] = enqueueRes{err: o.fullError(d, sz)}
			continue
		}
		seq++
		recs[i] = encodeRecord(r)
		fr.message(seq, recs[i])
		results[i] = enqueueRes{seq: seq}
		d++
		sz += size
	}
	if len(acks) > 0 {
		fr.ack(acks)
	}
	o.buf = fr.buf
	return results, fr, recs, acks
}

func refusedAny(results []enqueueRes) bool {
	return slices.ContainsFunc(results, func(r enqueueRes) bool { return r.err != nil })
}

func (o *Outbox) acksInBolt() bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.acks) > 0
}

func (o *Outbox) fullError(depth int, bytes int64) error {
	return fmt.Errorf("%w: %d messages / %d bytes queued, limits %d / %d: the broker has not acknowledged for a while; retry later",
		ErrOutboxFull, depth, bytes, o.opts.MaxMessages, o.opts.MaxBytes)
}

// answerAll answers the requests of a commit that wrote nothing.
func (o *Outbox) answerAll(batch []*enqueueReq, results []enqueueRes) (queued int) {
	o.mu.Lock()
	o.refused += uint64(len(batch))
	o.mu.Unlock()
	queued = len(o.reqs)
	for i, r := range batch {
		r.res <- results[i]
	}
	return queued
}

// answer fails every request of batch with err.
func (o *Outbox) answer(batch []*enqueueReq, err error) (queued int) {
	o.fail(err)
	queued = len(o.reqs)
	for _, r := range batch {
		r.res <- enqueueRes{err: err}
	}
	return queued
}

// drainLocked moves the messages of the log into bbolt (moveToBolt), then
// starts the log's next generation. o.wmu is held.
func (o *Outbox) drainLocked() error {
	moved, err := o.moveToBolt()
	if err != nil || !moved {
		return err
	}
	if o.failBeforeReset != nil {
		if err := o.failBeforeReset(); err != nil {
			return err
		}
	}
	if cap(o.buf) > 64<<10 {
		o.buf = nil // a large commit's frames
	}
	if err := o.wal.reset(); err != nil {
		// Everything is in bbolt; the log's records would only be
		// replayed again at the next start, which is harmless.
		o.dropLog(fmt.Errorf("%w: %w", ErrOutboxUnavailable, err))
	}
	return nil
}

// moveToBolt writes the messages of the log to bbolt in one transaction:
// puts of the unacknowledged, deletes of acknowledged messages already in
// bbolt, the sequence. moved is false when there was nothing to do. o.wmu
// is held.
func (o *Outbox) moveToBolt() (moved bool, err error) {
	o.mu.Lock()
	// Ack writes the entries while the transaction runs: take what it needs.
	first := o.memFirst
	put := make([][]byte, len(o.mem)) // nil: acknowledged
	acked := make([]bool, len(o.mem))
	for i, e := range o.mem {
		if acked[i] = e.acked; !e.acked {
			put[i] = e.rec
		}
	}
	backs := slices.Collect(maps.Keys(o.acks))
	lastSeq := o.lastSeq
	o.mu.Unlock()
	if len(put) == 0 && len(backs) == 0 && o.wal.empty() {
		return false, nil
	}
	gen := o.wal.gen

	var freed int64
	var deleted int
	err = o.db.update(func(tx *bbolt.Tx) error {
		b := tx.Bucket(bucketOutbox)
		var err error
		if deleted, freed, err = deleteAcked(b, backs); err != nil {
			return err
		}
		for i, rec := range put {
			if rec != nil {
				if err := b.Put(seqKey(first+uint64(i)), rec); err != nil {
					return err
				}
			}
		}
		if b.Sequence() < lastSeq {
			if err := b.SetSequence(lastSeq); err != nil {
				return err
			}
		}
		return setLogDrained(tx, gen)
	})
	if err != nil {
		return false, fmt.Errorf("%w: move the outbox log into %s: %w", ErrOutboxUnavailable, o.db.path, err)
	}

	o.mu.Lock()
	defer o.mu.Unlock()
	for _, s := range backs {
		delete(o.acks, s)
	}
	o.depth -= deleted
	o.inBolt -= deleted
	o.bytes -= freed
	for i, e := range o.mem {
		switch {
		case !acked[i]:
			o.inBolt++
			if e.acked { // acknowledged during the transaction
				o.acks[first+uint64(i)] = struct{}{}
			}
		case !e.durable:
			o.depth--
			o.bytes -= int64(len(e.rec))
		}
	}
	// Let go of the records: an idle outbox holds none in memory.
	o.mem, o.memAcks = nil, nil
	o.logFirst, o.memFirst = lastSeq+1, lastSeq+1
	o.drains++
	return true, nil
}

// dropLog stops using the log after a write to it failed: what it holds is
// moved into bbolt (kept in the log for the next start when that fails
// too), the file moved aside, and every later commit is a bbolt
// transaction. o.wmu is held.
func (o *Outbox) dropLog(cause error) {
	l := o.wal
	if _, err := o.moveToBolt(); err != nil {
		o.db.log.Error("outbox log failed and its messages could not be moved into the state file; they stay in the log for the next start; committing to the state file from now on",
			"path", l.path, "err", cause, "drain_err", err)
		o.closeLogLocked()
		return
	}
	o.closeLogLocked()
	aside, err := moveAside(l.path)
	o.db.log.Error("outbox log failed; moved aside, committing every message to the state file from now on (slower)",
		"path", l.path, "moved_to", aside, "err", cause, "rename_err", err)
}

func (o *Outbox) closeLogLocked() {
	if o.wal != nil {
		o.wal.close()
		o.wal = nil
		o.logOn.Store(false)
	}
}

func (o *Outbox) closeLog() {
	o.wmu.Lock()
	defer o.wmu.Unlock()
	o.closeLogLocked()
}

// commitBolt writes batch and the pending acks in one bbolt transaction
// and answers every request in batch. It returns how many requests queued
// meanwhile. The log is absent or empty (every sequence in bbolt stays
// below those in the log). o.wmu is held.
func (o *Outbox) commitBolt(batch []*enqueueReq) (queued int) {
	o.mu.Lock()
	acks := slices.Collect(maps.Keys(o.acks))
	depth, bytes := o.depth, o.bytes
	o.mu.Unlock()
	if len(batch) == 0 && len(acks) == 0 {
		return len(o.reqs)
	}

	results := make([]enqueueRes, len(batch))
	var freed int64
	var deleted int
	err := o.db.update(func(tx *bbolt.Tx) error {
		b := tx.Bucket(bucketOutbox)
		var err error
		if deleted, freed, err = deleteAcked(b, acks); err != nil {
			return err
		}
		d, sz := depth-deleted, bytes-freed
		for i, r := range batch {
			size := recordSize(r.topic, r.payload)
			if d+1 > o.opts.MaxMessages || sz+size > o.opts.MaxBytes {
				results[i] = enqueueRes{err: o.fullError(d, sz)}
				continue
			}
			seq, err := b.NextSequence()
			if err != nil {
				return err
			}
			if err := b.Put(seqKey(seq), encodeRecord(r)); err != nil {
				return err
			}
			results[i] = enqueueRes{seq: seq}
			d++
			sz += size
		}
		return nil
	})

	o.mu.Lock()
	added := 0
	if err != nil {
		err = fmt.Errorf("%w: commit to %s: %w", ErrOutboxUnavailable, o.db.path, err)
		o.lastErr = err
		for i := range results {
			results[i] = enqueueRes{err: err}
		}
	} else {
		for _, s := range acks {
			delete(o.acks, s)
		}
		o.depth -= deleted
		o.inBolt -= deleted
		o.bytes -= freed
		for i, r := range batch {
			if results[i].err != nil {
				o.refused++
				continue
			}
			o.lastSeq = max(o.lastSeq, results[i].seq)
			added++
			o.depth++
			o.inBolt++
			o.bytes += recordSize(r.topic, r.payload)
		}
		o.logFirst, o.memFirst = o.lastSeq+1, o.lastSeq+1
		if added > 0 {
			o.commits++
			close(o.notify)
			o.notify = make(chan struct{})
		}
	}
	o.mu.Unlock()
	if err != nil {
		o.db.setErr(err)
	}
	queued = len(o.reqs)
	for i, r := range batch {
		r.res <- results[i]
	}
	return queued
}

// reset forgets what the outbox counted in a state file that was damaged
// and replaced (see DB.exec) and carries the sequence over into tx, the
// fresh file's first transaction. Messages in the outbox log live on.
func (o *Outbox) reset(tx *bbolt.Tx) error {
	o.mu.Lock()
	seq := o.lastSeq
	o.depth, o.bytes, o.inBolt, o.deadLetters = 0, 0, 0, 0
	for _, e := range o.mem {
		if !e.durable {
			o.depth++
			o.bytes += int64(len(e.rec))
		}
	}
	o.acks = make(map[uint64]struct{})
	o.mu.Unlock()
	return tx.Bucket(bucketOutbox).SetSequence(seq)
}

// deleteAcked deletes the acknowledged messages seqs from b and says how
// many were there and their size.
func deleteAcked(b *bbolt.Bucket, seqs []uint64) (deleted int, freed int64, err error) {
	for _, s := range seqs {
		k := seqKey(s)
		if v := b.Get(k); v != nil {
			freed += int64(len(v))
			deleted++
			if err := b.Delete(k); err != nil {
				return 0, 0, err
			}
		}
	}
	return deleted, freed, nil
}

func seqKey(seq uint64) []byte { return binary.BigEndian.AppendUint64(nil, seq) }

func encodeRecord(r *enqueueReq) []byte {
	v := make([]byte, 0, recordHeader+len(r.topic)+len(r.payload))
	v = append(v, 1, r.qos)
	v = binary.BigEndian.AppendUint64(v, uint64(r.enqueued.UnixNano()))
	v = binary.BigEndian.AppendUint16(v, uint16(len(r.topic)))
	v = append(v, r.topic...)
	return append(v, r.payload...)
}

var errBadRecord = errors.New("unreadable outbox record")

func decodeRecord(k, v []byte) (OutboxMessage, error) {
	if len(k) != 8 {
		return OutboxMessage{}, errBadRecord
	}
	return decodeAt(binary.BigEndian.Uint64(k), v)
}

// decodeAt decodes record v of message seq.
func decodeAt(seq uint64, v []byte) (OutboxMessage, error) {
	if len(v) < recordHeader || v[0] != 1 || v[1] > 1 {
		return OutboxMessage{}, errBadRecord
	}
	tl := int(binary.BigEndian.Uint16(v[10:12]))
	if len(v) < recordHeader+tl {
		return OutboxMessage{}, errBadRecord
	}
	return OutboxMessage{
		Seq:      seq,
		QoS:      v[1],
		Enqueued: time.Unix(0, int64(binary.BigEndian.Uint64(v[2:10]))),
		Topic:    string(v[recordHeader : recordHeader+tl]),
		Payload:  append([]byte(nil), v[recordHeader+tl:]...),
	}, nil
}
