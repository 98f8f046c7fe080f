package store

import (
	"errors"
	"fmt"
	"runtime/debug"

	"go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// A state file can be damaged while the agent runs: overwritten in place or
// truncated by a mistaken command, or by a failing disk. bbolt reads it
// through a shared memory mapping, so the damage shows up as a panic
// ("invalid meta pages", a bad page type) or, for a truncated file, as a
// SIGBUS when a page beyond the new end is read; either would end the
// process. Every bbolt operation therefore runs through exec, which turns
// both into errors, and a damaged file is moved aside and replaced by a
// fresh one at once (as Open does at start-up), so the agent goes on with
// empty state rather than stop: credentials it holds in memory keep being
// served, and are persisted again at their next refresh.
//
// A panic inside bbolt can leave its internal locks held, so a handle that
// panicked is abandoned (its file closed, which releases the file lock),
// never used again; exec admits one operation at a time so that no other
// goroutine can be waiting on those locks when that happens. The store is a
// few hundred KiB on a gateway and its operations are short; the one that
// waits longest is a commit's fsync.

// view runs fn in a read-only transaction; see exec.
func (db *DB) view(fn func(*bbolt.Tx) error) error { return db.exec(false, fn) }

// update runs fn in a read-write transaction; see exec.
func (db *DB) update(fn func(*bbolt.Tx) error) error { return db.exec(true, fn) }

// exec runs fn in a transaction on the current file. A damaged file is
// replaced and the error, wrapping ErrDamaged, returned.
func (db *DB) exec(write bool, fn func(*bbolt.Tx) error) error {
	db.opMu.Lock()
	defer db.opMu.Unlock()
	b := db.bolt
	if b == nil {
		db.mu.Lock()
		closed := db.closed
		db.mu.Unlock()
		if closed {
			return ErrClosed
		}
		return fmt.Errorf("%w: %s could not be reopened after it was damaged; see the log", ErrUnusable, db.path)
	}
	err := guard(func() error {
		if write {
			return b.Update(fn)
		}
		return b.View(fn)
	})
	if errors.Is(err, errCorrupt) {
		db.replaceLocked(err)
		return fmt.Errorf("%w: %w", ErrDamaged, err)
	}
	return err
}

// ErrDamaged is returned by the operation that found the state file damaged
// while open; the file has been moved aside and a fresh one opened.
var ErrDamaged = errors.New("state file damaged while running; moved aside")

// guard runs f, turning a panic or a memory fault inside it, and bbolt's
// errors for a damaged file, into an error wrapping errCorrupt.
func guard(f func() error) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: bbolt: %v", errCorrupt, r)
		}
	}()
	err = f()
	if errors.Is(err, berrors.ErrInvalid) || errors.Is(err, berrors.ErrChecksum) ||
		errors.Is(err, berrors.ErrVersionMismatch) || errors.Is(err, berrors.ErrInvalidMapping) {
		err = fmt.Errorf("%w: %w", errCorrupt, err)
	}
	return err
}

// replaceLocked abandons the damaged handle, moves the file aside and opens
// a fresh one; db.opMu is held.
func (db *DB) replaceLocked(cause error) {
	if db.file != nil {
		db.file.Close()
	}
	db.bolt, db.file = nil, nil
	aside, err := moveAside(db.path)
	if err != nil {
		db.log.Error("state file damaged while running and could not be moved aside; state is not kept until tether restarts",
			"path", db.path, "err", cause, "rename_err", err)
		db.setErr(fmt.Errorf("%w: %s damaged (%v) and could not be moved aside: %v", ErrUnusable, db.path, cause, err))
		return
	}
	b, f, schema, err := openBolt(db.path, db.timeout, db.log)
	if err == nil {
		err = guard(func() error {
			return b.Update(func(tx *bbolt.Tx) error {
				for _, h := range db.onReset {
					if err := h(tx); err != nil {
						return err
					}
				}
				return nil
			})
		})
		if err != nil {
			f.Close()
		}
	}
	if err != nil {
		db.log.Error("state file damaged while running; moved aside, but a fresh one could not be opened; state is not kept until tether restarts",
			"path", db.path, "moved_to", aside, "err", err)
		db.setErr(fmt.Errorf("%w: a fresh %s could not be opened after the damaged one was moved to %s: %v", ErrUnusable, db.path, aside, err))
		return
	}
	db.bolt, db.file = b, f
	db.mu.Lock()
	db.movedAside, db.lastErr, db.schema = aside, cause, schema
	db.mu.Unlock()
	db.log.Error("state file damaged while running; moved aside, going on with a fresh one (queued MQTT messages and cached credentials in it are lost; credentials in memory are still served)",
		"path", db.path, "moved_to", aside, "err", cause)
}

// onReplace registers h to prepare each fresh file that replaces a damaged
// one, inside its first transaction, with db.opMu held: h must not call db.
func (db *DB) onReplace(h func(*bbolt.Tx) error) {
	db.opMu.Lock()
	db.onReset = append(db.onReset, h)
	db.opMu.Unlock()
}
