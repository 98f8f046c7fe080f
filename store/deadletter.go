package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"time"

	"go.etcd.io/bbolt"
)

// Dead-letter defaults: enough to show an operator what went wrong, small
// next to the outbox.
const (
	DefaultMaxDeadLetters     = 100
	DefaultMaxDeadLetterBytes = 4 << 20
	// maxReasonBytes bounds the reason stored with a dead letter.
	maxReasonBytes = 512
)

// DeadLetter is a message the broker refused, moved out of the outbox so
// that it no longer holds up the messages behind it.
type DeadLetter struct {
	OutboxMessage
	// Reason says why it was refused (a PUBACK reason code, the broker
	// closing the connection each time it was sent).
	Reason string
	// At is when it was moved aside.
	At time.Time
}

// deadHeader: moved-at unix nanos(8) reason-length(2).
const deadHeader = 10

func encodeDead(reason string, at time.Time, record []byte) []byte {
	b := make([]byte, 0, deadHeader+len(reason)+len(record))
	b = binary.BigEndian.AppendUint64(b, uint64(at.UnixNano()))
	b = binary.BigEndian.AppendUint16(b, uint16(len(reason)))
	b = append(b, reason...)
	return append(b, record...)
}

func decodeDead(k, v []byte) (DeadLetter, error) {
	if len(v) < deadHeader {
		return DeadLetter{}, errors.New("dead letter too short")
	}
	at := time.Unix(0, int64(binary.BigEndian.Uint64(v)))
	n := int(binary.BigEndian.Uint16(v[8:]))
	if len(v) < deadHeader+n {
		return DeadLetter{}, errors.New("dead letter reason truncated")
	}
	m, err := decodeRecord(k, v[deadHeader+n:])
	if err != nil {
		return DeadLetter{}, err
	}
	return DeadLetter{OutboxMessage: m, Reason: string(v[deadHeader : deadHeader+n]), At: at}, nil
}

// boundReason cuts reason to maxReasonBytes on a rune boundary.
func boundReason(reason string) string {
	if len(reason) <= maxReasonBytes {
		return reason
	}
	return strings.ToValidUTF8(reason[:maxReasonBytes], "")
}

// DeadLetter moves message seq from the outbox into the dead-letter bucket
// with reason, in one transaction, and drops the oldest dead letters beyond
// OutboxOptions.MaxDeadLetters or MaxDeadLetterBytes. A seq no longer in the
// outbox (acknowledged meanwhile) is not an error.
func (o *Outbox) DeadLetter(seq uint64, reason string) error {
	o.mu.Lock()
	closed := o.closed
	o.mu.Unlock()
	if closed {
		return ErrOutboxClosed
	}
	reason = boundReason(reason)
	o.wmu.Lock()
	defer o.wmu.Unlock()
	if o.wal != nil && o.inLog(seq) {
		// Dead letters are rare: move the log into bbolt, then move the
		// message from there as any other.
		if err := o.drainLocked(); err != nil {
			o.fail(err)
			return err
		}
	}
	var (
		moved bool
		freed int64
		count int
	)
	err := o.db.update(func(tx *bbolt.Tx) error {
		ob, dl := tx.Bucket(bucketOutbox), tx.Bucket(bucketDeadLetters)
		k := seqKey(seq)
		v := ob.Get(k)
		if v == nil {
			return nil
		}
		freed = int64(len(v))
		if err := dl.Put(k, encodeDead(reason, time.Now(), v)); err != nil {
			return err
		}
		if err := ob.Delete(k); err != nil {
			return err
		}
		moved = true
		var size int64
		count, size = 0, 0
		if err := dl.ForEach(func(_, v []byte) error {
			count++
			size += int64(len(v))
			return nil
		}); err != nil {
			return err
		}
		c := dl.Cursor()
		for k, v := c.First(); k != nil && (count > o.opts.MaxDeadLetters || size > o.opts.MaxDeadLetterBytes); k, v = c.First() {
			size -= int64(len(v))
			count--
			if err := c.Delete(); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		err = fmt.Errorf("%w: move message %d to the dead letters in %s: %w", ErrOutboxUnavailable, seq, o.db.path, err)
		o.db.setErr(err)
		return err
	}
	if moved {
		o.mu.Lock()
		o.depth--
		o.inBolt--
		o.bytes -= freed
		o.deadLetters = count
		o.deadLettered++
		o.lastDead = reason
		o.mu.Unlock()
	}
	return nil
}

// inLog reports whether message seq is in the outbox log.
func (o *Outbox) inLog(seq uint64) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return seq >= o.memFirst && seq-o.memFirst < uint64(len(o.mem))
}

// DeadLetters returns the dead letters, oldest first.
func (o *Outbox) DeadLetters() ([]DeadLetter, error) {
	var out []DeadLetter
	err := o.db.view(func(tx *bbolt.Tx) error {
		return tx.Bucket(bucketDeadLetters).ForEach(func(k, v []byte) error {
			d, err := decodeDead(k, v)
			if err != nil {
				return nil // unreadable: skip, it ages out
			}
			out = append(out, d)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("%w: read dead letters in %s: %w", ErrOutboxUnavailable, o.db.path, err)
	}
	return out, nil
}

// countDeadLetters counts the dead letters a previous run left.
func (o *Outbox) countDeadLetters() error {
	return o.db.view(func(tx *bbolt.Tx) error {
		o.deadLetters = tx.Bucket(bucketDeadLetters).Stats().KeyN
		return nil
	})
}
