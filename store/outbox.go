package store

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
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
	// OneCommitPerMessage disables group commit: every Enqueue gets its own
	// bbolt transaction and fsync. It exists as the baseline for benchmarks.
	OneCommitPerMessage bool
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
	Commits uint64    `json:"commits"`         // bbolt transactions that added messages
	Refused uint64    `json:"refused"`         // Enqueue calls answered with ErrOutboxFull
	Error   string    `json:"error,omitempty"` // last commit error
	// DeadLetters counts the messages kept in the dead-letter bucket;
	// DeadLettered counts those moved there since the outbox was opened,
	// LastDeadLetter is the reason of the last one.
	DeadLetters    int    `json:"dead_letters"`
	DeadLettered   uint64 `json:"dead_lettered"`
	LastDeadLetter string `json:"last_dead_letter,omitempty"`
}

// Outbox is the durable, ordered MQTT outbox in the state file. A message is
// accepted only once it is committed (fsync'd) to bbolt; it is deleted once
// its consumer calls Ack, which for MQTT means the broker acknowledged it.
//
// Concurrent Enqueue calls are group-committed: one committer goroutine takes
// every request waiting at the moment the previous commit finished and
// writes them in one transaction, so N concurrent publishers share one fsync
// with no added delay when only one is publishing. bbolt's DB.Batch was
// considered and not used: it waits up to MaxBatchDelay (10 ms) even for a
// lone caller, may run the function twice, and cannot check the size limits
// for the whole batch atomically. Acks are not made durable on their own;
// they ride along with the next commit, so after a crash a few acknowledged
// messages may be sent again (at-least-once, never lost).
//
// It is safe for concurrent use.
type Outbox struct {
	db   *DB
	opts OutboxOptions

	reqs chan *enqueueReq
	kick chan struct{} // a pending ack wants committing
	stop chan struct{}
	done chan struct{}

	mu      sync.Mutex
	closed  bool
	depth   int
	bytes   int64
	acks    map[uint64]struct{} // acknowledged, deletion not yet committed
	notify  chan struct{}       // closed on the next commit that adds messages
	commits uint64
	refused uint64
	lastErr error
	// lastSeq is the highest sequence given out, so a fresh file that
	// replaces a damaged one goes on from there (delivery keeps a cursor).
	lastSeq uint64
	// dead letters: kept, moved since open, last reason
	deadLetters  int
	deadLettered uint64
	lastDead     string
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
			return nil, fmt.Errorf("%w: clean outbox in %s: %w", ErrOutboxUnavailable, db.path, err)
		}
	}
	if err := o.countDeadLetters(); err != nil {
		return nil, fmt.Errorf("%w: read dead letters in %s: %w", ErrOutboxUnavailable, db.path, err)
	}
	db.onReplace(o.reset)
	go o.commitLoop()
	return o, nil
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
// own cursor so that messages in flight are not handed out twice.
func (o *Outbox) Next(after uint64) (msg OutboxMessage, ok bool, err error) {
	o.mu.Lock()
	closed := o.closed
	o.mu.Unlock()
	if closed {
		return msg, false, ErrOutboxClosed
	}
	err = o.db.view(func(tx *bbolt.Tx) error {
		c := tx.Bucket(bucketOutbox).Cursor()
		for k, v := c.Seek(seqKey(after + 1)); k != nil; k, v = c.Next() {
			seq := binary.BigEndian.Uint64(k)
			if o.isAcked(seq) {
				continue
			}
			m, derr := decodeRecord(k, v)
			if derr != nil {
				return derr
			}
			msg, ok = m, true
			return nil
		}
		return nil
	})
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
// deleted from the file with the next commit.
func (o *Outbox) Ack(seqs ...uint64) {
	if len(seqs) == 0 {
		return
	}
	o.mu.Lock()
	for _, s := range seqs {
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
		Depth:   max(0, o.depth-len(o.acks)),
		Bytes:   o.bytes,
		Commits: o.commits,
		Refused: o.refused,

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

// Close commits pending acks, answers queued Enqueue calls and stops the
// committer. It does not close the DB. Calling it twice is harmless.
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
	batch := make([]*enqueueReq, 0, o.opts.MaxBatch)
	// Acks wait for the next commit that adds messages, or ackDelay at
	// most: an ack-only commit costs an fsync (two, in bbolt) that a busy
	// outbox would otherwise make between every two batches of messages.
	ackTimer := time.NewTimer(time.Hour)
	ackTimer.Stop()
	var ackDue <-chan time.Time
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
		case <-o.stop:
			// Finish what was handed over before Close, then flush acks.
			for {
				select {
				case r := <-o.reqs:
					batch = append(batch, r)
				default:
					o.commit(batch)
					return
				}
			}
		}
		if o.opts.OneCommitPerMessage {
			o.commit(batch)
			continue
		}
		// Group commit: take everything that queued up while the previous
		// transaction was syncing.
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
		// This commit carries every pending ack.
		ackTimer.Stop()
		ackDue = nil
		// Those it answered and those that queued meanwhile are the
		// publishers at work.
		active = len(batch) + o.commit(batch)
	}
}

// groupWait bounds how long a commit waits for the publishers of the last
// one: a fraction of what a commit costs (two fdatasyncs), paid only while
// fewer arrive than last time, so a lone publisher never waits.
const groupWait = 500 * time.Microsecond

// ackDelay bounds how long an acknowledged message stays in the file when
// nothing else is committed: after a crash within it, the broker may get
// it again (at-least-once).
const ackDelay = time.Second

// commit writes batch and the pending acks in one transaction and answers
// every request in batch. It returns how many requests queued meanwhile,
// counted before the answers let their publishers queue again.
func (o *Outbox) commit(batch []*enqueueReq) (queued int) {
	o.mu.Lock()
	acks := make([]uint64, 0, len(o.acks))
	for s := range o.acks {
		acks = append(acks, s)
	}
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
		freed, deleted = 0, 0
		for _, s := range acks {
			k := seqKey(s)
			if v := b.Get(k); v != nil {
				freed += int64(len(v))
				deleted++
				if err := b.Delete(k); err != nil {
					return err
				}
			}
		}
		d, sz := depth-deleted, bytes-freed
		for i, r := range batch {
			size := recordSize(r.topic, r.payload)
			if d+1 > o.opts.MaxMessages || sz+size > o.opts.MaxBytes {
				results[i] = enqueueRes{err: fmt.Errorf("%w: %d messages / %d bytes queued, limits %d / %d: the broker has not acknowledged for a while; retry later",
					ErrOutboxFull, d, sz, o.opts.MaxMessages, o.opts.MaxBytes)}
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
		o.bytes -= freed
		for i, r := range batch {
			if results[i].err != nil {
				o.refused++
				continue
			}
			o.lastSeq = max(o.lastSeq, results[i].seq)
			added++
			o.depth++
			o.bytes += recordSize(r.topic, r.payload)
		}
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
// fresh file's first transaction.
func (o *Outbox) reset(tx *bbolt.Tx) error {
	o.mu.Lock()
	seq := o.lastSeq
	o.depth, o.bytes, o.deadLetters = 0, 0, 0
	o.acks = make(map[uint64]struct{})
	o.mu.Unlock()
	return tx.Bucket(bucketOutbox).SetSequence(seq)
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
	if len(k) != 8 || len(v) < recordHeader || v[0] != 1 || v[1] > 1 {
		return OutboxMessage{}, errBadRecord
	}
	tl := int(binary.BigEndian.Uint16(v[10:12]))
	if len(v) < recordHeader+tl {
		return OutboxMessage{}, errBadRecord
	}
	return OutboxMessage{
		Seq:      binary.BigEndian.Uint64(k),
		QoS:      v[1],
		Enqueued: time.Unix(0, int64(binary.BigEndian.Uint64(v[2:10]))),
		Topic:    string(v[recordHeader : recordHeader+tl]),
		Payload:  append([]byte(nil), v[recordHeader+tl:]...),
	}, nil
}
