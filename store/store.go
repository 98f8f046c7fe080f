// Package store keeps tether's durable state in one bbolt file: the sealed
// credential cache, the MQTT outbox and session state, and the schema version.
//
// The store must never be the reason the daemon fails to start on a gateway in
// the field: a file that bbolt cannot read is moved aside and a fresh one is
// created. Problems an operator has to fix (a missing or read-only directory,
// a second tether holding the lock, a file written by a newer tether) are
// reported as one clear error instead, because moving the file aside would
// lose data or hide the fault.
package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/debug"
	"sync"
	"syscall"
	"time"

	"go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// SchemaVersion is the layout version this build writes. A file with a higher
// version was written by a newer tether and is refused rather than rewritten.
const SchemaVersion = 1

// DefaultTimeout is how long Open waits for the file lock when
// Options.Timeout is zero; bbolt itself would wait forever.
const DefaultTimeout = 2 * time.Second

// Bucket names. They are shared with outbox.go (same package).
var (
	bucketMeta        = []byte("meta")
	bucketCredentials = []byte("credentials")
	bucketOutbox      = []byte("outbox")
	bucketMQTTSession = []byte("mqtt-session")
	bucketDeadLetters = []byte("mqtt-dead-letters")

	keySchema = []byte("schema")
	// keyLogDrained holds the last outbox log generation drained into
	// bucket outbox (outboxlog.go).
	keyLogDrained = []byte("outbox-log-drained")
)

// allBuckets is created by every Open so callers never meet a missing bucket.
var allBuckets = [][]byte{bucketMeta, bucketCredentials, bucketOutbox, bucketMQTTSession, bucketDeadLetters}

// Errors returned by Open; check them with errors.Is.
var (
	// ErrLocked means another process (usually a second tether) holds the
	// file lock.
	ErrLocked = errors.New("state file is locked by another process")
	// ErrNewerSchema means the file was written by a newer tether.
	ErrNewerSchema = errors.New("state file was written by a newer tether")
	// ErrUnusable means the file or its directory cannot be used at all
	// (missing directory, not a directory, permission denied, read-only file
	// system). The operator has to fix the path.
	ErrUnusable = errors.New("state path unusable")
	// ErrNoSealer is returned by PutCredentials when the store was opened
	// without a Sealer: credentials are never written in plaintext.
	ErrNoSealer = errors.New("store has no sealer; credentials are not persisted")
	// ErrClosed is returned after Close.
	ErrClosed = errors.New("store is closed")
)

// Options configures Open.
type Options struct {
	// Sealer encrypts cached credentials (AES-256-GCM from hsm.Identity.Sealer).
	// Nil disables the credential cache; the outbox works without it.
	Sealer Sealer
	// Logger receives the lines about moved-aside files, discarded entries and
	// migrations. Nil discards them.
	Logger *slog.Logger
	// Timeout bounds the wait for the file lock; zero means DefaultTimeout.
	Timeout time.Duration
}

// Health describes the store for `tether status`.
type Health struct {
	Path       string `json:"path"`
	Size       int64  `json:"size"`
	Schema     int    `json:"schema"`
	LastError  string `json:"last_error,omitempty"`
	MovedAside string `json:"moved_aside,omitempty"` // where an unreadable file went, if this Open moved one
}

// DB is an open state file. It is safe for concurrent use.
type DB struct {
	// opMu admits one bbolt operation at a time, and guards bolt and file:
	// see exec for why.
	opMu    sync.Mutex
	bolt    *bbolt.DB
	file    *os.File
	onReset []func(*bbolt.Tx) error
	timeout time.Duration

	path   string
	sealer Sealer
	log    *slog.Logger

	mu         sync.Mutex
	closed     bool
	lastErr    error
	movedAside string
	schema     int
}

// Open opens or creates the state file at path with mode 0600. The directory
// must exist. A file bbolt cannot read is renamed to path.corrupt-<UTC time>
// and a fresh file is created in its place.
func Open(path string, opts Options) (*DB, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	timeout := opts.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	if path == "" {
		return nil, fmt.Errorf("%w: [state] path is empty: set it to a file such as /var/lib/tether/state.db", ErrUnusable)
	}
	if err := checkDir(path); err != nil {
		return nil, err
	}

	db := &DB{path: path, sealer: opts.Sealer, log: log, timeout: timeout}
	b, f, schema, err := openBolt(path, timeout, log)
	if errors.Is(err, errCorrupt) {
		aside, rerr := moveAside(path)
		if rerr != nil {
			return nil, fmt.Errorf("%w: state file %s is unreadable (%v) and could not be moved aside: %v; remove it by hand", ErrUnusable, path, err, rerr)
		}
		log.Error("state file unreadable; moved aside, starting with empty state",
			"path", path, "moved_to", aside, "err", err)
		db.movedAside = aside
		db.lastErr = err
		b, f, schema, err = openBolt(path, timeout, log)
	}
	if err != nil {
		return nil, err
	}
	db.bolt, db.file = b, f
	db.schema = schema
	tightenMode(path, "state file", log)
	return db, nil
}

// errCorrupt marks failures that moving the file aside fixes.
var errCorrupt = errors.New("state file corrupt")

// checkDir reports a missing or unusable directory before bbolt turns it into
// a less helpful open error.
func checkDir(path string) error {
	dir := filepath.Dir(path)
	fi, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("%w: directory %s of state file %s does not exist: create it (mode 0700, owned by the tether user; systemd: StateDirectory=tether) or set [state] path", ErrUnusable, dir, path)
	case err != nil:
		return fmt.Errorf("%w: directory %s of state file %s: %v: fix its permissions or set [state] path", ErrUnusable, dir, path, err)
	case !fi.IsDir():
		return fmt.Errorf("%w: %s (directory of state file %s) is not a directory: set [state] path to a file in a directory", ErrUnusable, dir, path)
	}
	if fi, err := os.Stat(path); err == nil && fi.IsDir() {
		return fmt.Errorf("%w: state file %s is a directory: set [state] path to a file, e.g. %s", ErrUnusable, path, filepath.Join(path, "state.db"))
	}
	return nil
}

// openBolt opens the file, creates the buckets and checks or migrates the
// schema. bbolt panics on some kinds of page corruption, so a panic here is
// treated as corruption too: the store must never keep the daemon from
// starting.
func openBolt(path string, timeout time.Duration, log *slog.Logger) (b *bbolt.DB, file *os.File, schema int, err error) {
	// bbolt can panic inside Open (e.g. loading a damaged freelist), before
	// it returns a DB to close; keep the file so its lock is released. A
	// file truncated under its mapping faults (SIGBUS): a panic here too.
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			if file != nil {
				_ = file.Close()
			}
			b, file = nil, nil
			err = fmt.Errorf("%w: %s: bbolt: %v", errCorrupt, path, r)
		}
	}()
	b, err = bbolt.Open(path, stateFileMode, &bbolt.Options{
		Timeout: timeout,
		OpenFile: func(name string, flag int, mode os.FileMode) (*os.File, error) {
			f, err := os.OpenFile(name, flag, mode)
			file = f
			return f, err
		},
	})
	if err != nil {
		return nil, nil, 0, classifyOpen(path, err)
	}
	schema, err = prepare(b, path, log)
	if err != nil {
		_ = b.Close()
		return nil, nil, 0, err
	}
	return b, file, schema, nil
}

// moveAside renames a damaged state file to path.corrupt-<UTC time>.
func moveAside(path string) (string, error) {
	aside := fmt.Sprintf("%s.corrupt-%s", path, time.Now().UTC().Format("20060102T150405.000000000Z"))
	return aside, os.Rename(path, aside)
}

func classifyOpen(path string, err error) error {
	switch {
	case errors.Is(err, berrors.ErrTimeout):
		return fmt.Errorf("%w: %s: is another tether running? stop it, or point [state] path elsewhere", ErrLocked, path)
	case errors.Is(err, fs.ErrPermission), errors.Is(err, syscall.EROFS):
		return fmt.Errorf("%w: cannot open state file %s for writing: %v: make the directory writable by the tether user (systemd: StateDirectory=tether) or set [state] path", ErrUnusable, path, err)
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT):
		return fmt.Errorf("%w: no space for state file %s: %v: free space on its file system", ErrUnusable, path, err)
	case errors.Is(err, syscall.EISDIR), errors.Is(err, syscall.ENOTDIR), errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("%w: state file %s: %v: set [state] path to a file in an existing directory", ErrUnusable, path, err)
	}
	// What remains (invalid meta page, checksum, version mismatch, short
	// file, failed mmap of a truncated file) is the file's fault.
	return fmt.Errorf("%w: %s: %w", errCorrupt, path, err)
}

// prepare creates missing buckets and brings the schema up to SchemaVersion.
func prepare(b *bbolt.DB, path string, log *slog.Logger) (int, error) {
	var from int
	err := b.Update(func(tx *bbolt.Tx) error {
		for _, name := range allBuckets {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return fmt.Errorf("%w: %s: create bucket %q: %w", errCorrupt, path, name, err)
			}
		}
		meta := tx.Bucket(bucketMeta)
		v := meta.Get(keySchema)
		switch {
		case v == nil:
			from = 0
		case len(v) != 8:
			return fmt.Errorf("%w: %s: schema version is %d bytes, want 8", errCorrupt, path, len(v))
		default:
			from = int(binary.BigEndian.Uint64(v))
		}
		if from > SchemaVersion {
			return fmt.Errorf("%w: %s has schema %d, this tether understands up to %d: upgrade tether, or move the file aside to start fresh", ErrNewerSchema, path, from, SchemaVersion)
		}
		for ver := from; ver < SchemaVersion; ver++ {
			if err := migrations[ver](tx); err != nil {
				return fmt.Errorf("%w: %s: migrate schema %d to %d: %w", errCorrupt, path, ver, ver+1, err)
			}
		}
		if from != SchemaVersion {
			return meta.Put(keySchema, binary.BigEndian.AppendUint64(nil, SchemaVersion))
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	if from != SchemaVersion && from != 0 {
		log.Info("state file migrated", "path", path, "from", from, "to", SchemaVersion)
	}
	// A consistency check is cheap for a state file of a few hundred KiB and
	// catches page corruption now rather than as a panic in a later write.
	if err := b.View(func(tx *bbolt.Tx) error {
		for cerr := range tx.Check() {
			return fmt.Errorf("%w: %s: %w", errCorrupt, path, cerr)
		}
		return nil
	}); err != nil {
		return 0, err
	}
	return SchemaVersion, nil
}

// migrations[v] upgrades a file from schema v to v+1 inside one transaction.
// Schema 0 is a file without a version key (new, or written before the
// version existed); the buckets created above are all it needs.
var migrations = [SchemaVersion]func(*bbolt.Tx) error{
	0: func(*bbolt.Tx) error { return nil },
}

// stateFileMode is the mode of every file the store writes (the state file,
// the outbox log): they hold queued messages and sealed credentials.
const stateFileMode os.FileMode = 0o600

// tightenMode makes an existing file (what names it in the log) 0600, as
// bbolt and the outbox log apply stateFileMode only when they create one.
func tightenMode(path, what string, log *slog.Logger) {
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm()&0o077 == 0 {
		return
	}
	if err := os.Chmod(path, stateFileMode); err != nil {
		log.Warn(what+" is readable by others and could not be restricted", "path", path, "mode", fi.Mode().Perm().String(), "err", err)
		return
	}
	log.Info(what+" permissions restricted to 0600", "path", path, "was", fi.Mode().Perm().String())
}

// setErr records the last error for Health.
func (db *DB) setErr(err error) {
	if err == nil {
		return
	}
	db.mu.Lock()
	db.lastErr = err
	db.mu.Unlock()
}

func (db *DB) isClosed() bool {
	db.mu.Lock()
	defer db.mu.Unlock()
	return db.closed
}

// Path returns the file the store was opened on.
func (db *DB) Path() string { return db.path }

// Health reports the file's path, size, schema, last error and any file this
// Open moved aside.
func (db *DB) Health() Health {
	db.mu.Lock()
	defer db.mu.Unlock()
	h := Health{Path: db.path, Schema: db.schema, MovedAside: db.movedAside}
	if db.lastErr != nil {
		h.LastError = db.lastErr.Error()
	}
	if fi, err := os.Stat(db.path); err == nil {
		h.Size = fi.Size()
	}
	return h
}

// Close releases the file lock. Calling it twice is harmless.
func (db *DB) Close() error {
	db.mu.Lock()
	if db.closed {
		db.mu.Unlock()
		return nil
	}
	db.closed = true
	db.mu.Unlock()
	db.opMu.Lock()
	defer db.opMu.Unlock()
	b := db.bolt
	db.bolt, db.file = nil, nil
	if b == nil {
		return nil
	}
	if err := guard(b.Close); err != nil {
		return fmt.Errorf("close state file %s: %w", db.path, err)
	}
	return nil
}
