package store

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// newSealer returns the same construction hsm.Identity.Sealer returns for a
// PEM key (AES-256-GCM) under a fresh random key.
func newSealer(t testing.TB) Sealer {
	t.Helper()
	key := make([]byte, 32)
	_, err := rand.Read(key)
	require.NoError(t, err)
	block, err := aes.NewCipher(key)
	require.NoError(t, err)
	aead, err := cipher.NewGCM(block)
	require.NoError(t, err)
	return gcmSealer{aead}
}

// gcmSealer is a cipher.AEAD as a Sealer: its Seal cannot fail.
type gcmSealer struct{ cipher.AEAD }

func (g gcmSealer) Seal(dst, nonce, plaintext, additionalData []byte) ([]byte, error) {
	return g.AEAD.Seal(dst, nonce, plaintext, additionalData), nil
}

// syncBuffer is a log sink safe for concurrent writers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func newLogger() (*slog.Logger, *syncBuffer) {
	buf := &syncBuffer{}
	return slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug})), buf
}

func openT(t *testing.T, path string, opts Options) *DB {
	t.Helper()
	db, err := Open(path, opts)
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	return db
}

var testCreds = aws.Credentials{
	AccessKeyID:     "ASIAEXAMPLEACCESSKEY",
	SecretAccessKey: "s3cr3t-Secret-Access-Key-0123456789abcdef",
	SessionToken:    "FwoGZXIvYXdzEXAMPLESESSIONTOKEN-very-long-token-value",
	Source:          "tether-iot",
	CanExpire:       true,
	Expires:         time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC),
	AccountID:       "123456789012",
}

// TestCredentialsRoundTrip ensures that credentials come back from the store exactly as put, across a reopen.
func TestCredentialsRoundTrip(t *testing.T) {
	cases := []struct {
		name string
		role string
		c    aws.Credentials
	}{
		{"device role with session token", "device", testCreds},
		{"no expiry", "static", aws.Credentials{AccessKeyID: "AKIAEXAMPLE", SecretAccessKey: "plain-secret-value"}},
		{"role name with slashes and unicode", "team/telemetry-ü", testCreds},
	}
	path := filepath.Join(t.TempDir(), "state.db")
	sealer := newSealer(t)
	db := openT(t, path, Options{Sealer: sealer})
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			require.NoError(t, db.PutCredentials(tc.role, Cached{Credentials: tc.c}))
			got, ok, err := db.Credentials(tc.role)
			require.NoError(t, err)
			require.True(t, ok)
			assert.Equal(t, tc.c, got.Credentials)
		})
	}

	got, ok, err := db.Credentials("never-stored")
	require.NoError(t, err)
	assert.False(t, ok)
	assert.Zero(t, got)

	// Persistence: the same key opens them after a reopen.
	require.NoError(t, db.Close())
	db2 := openT(t, path, Options{Sealer: sealer})
	for _, tc := range cases {
		got, ok, err := db2.Credentials(tc.role)
		require.NoError(t, err)
		require.True(t, ok, tc.role)
		assert.Equal(t, tc.c, got.Credentials, tc.role)
	}
	h := db2.Health()
	assert.Equal(t, path, h.Path)
	assert.Equal(t, SchemaVersion, h.Schema)
	assert.Positive(t, h.Size)
	assert.Empty(t, h.LastError)
	assert.Empty(t, h.MovedAside)
}

// TestFileHoldsNoPlaintextSecret ensures that the state file never holds a secret in plaintext.
func TestFileHoldsNoPlaintextSecret(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	db := openT(t, path, Options{Sealer: newSealer(t)})
	require.NoError(t, db.PutCredentials("device", Cached{Credentials: testCreds}))
	require.NoError(t, db.Close())

	raw, err := os.ReadFile(path)
	require.NoError(t, err)
	for _, secret := range []string{testCreds.SecretAccessKey, testCreds.SessionToken, testCreds.AccessKeyID} {
		assert.False(t, bytes.Contains(raw, []byte(secret)), "state file contains %q in plaintext", secret[:6])
	}
	// The role name is a key, so it is expected in the file; this shows the
	// search itself works on this file.
	assert.True(t, bytes.Contains(raw, []byte("device")))

	fi, err := os.Stat(path)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), fi.Mode().Perm())
}

// TestExistingFileModeTightened ensures that an existing state file readable by others is made 0600.
func TestExistingFileModeTightened(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	db := openT(t, path, Options{})
	require.NoError(t, db.Close())
	require.NoError(t, os.Chmod(path, 0o644))

	log, buf := newLogger()
	openT(t, path, Options{Logger: log})
	fi, err := os.Stat(path)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), fi.Mode().Perm())
	assert.Contains(t, buf.String(), "0600")
}

// TestCorruptFileMovedAside ensures that a corrupt state file is moved aside and a fresh one started.
func TestCorruptFileMovedAside(t *testing.T) {
	garbage := make([]byte, 64<<10)
	_, err := rand.Read(garbage)
	require.NoError(t, err)

	cases := []struct {
		name  string
		write func(t *testing.T, path string)
	}{
		{"random bytes", func(t *testing.T, path string) {
			require.NoError(t, os.WriteFile(path, garbage, 0o600))
		}},
		{"short text", func(t *testing.T, path string) {
			require.NoError(t, os.WriteFile(path, []byte("not a database\n"), 0o600))
		}},
		{"both meta pages overwritten", func(t *testing.T, path string) {
			db, err := Open(path, Options{Sealer: newSealer(t)})
			require.NoError(t, err)
			require.NoError(t, db.PutCredentials("device", Cached{Credentials: testCreds}))
			require.NoError(t, db.Close())
			f, err := os.OpenFile(path, os.O_WRONLY, 0)
			require.NoError(t, err)
			_, err = f.WriteAt(garbage[:2*os.Getpagesize()], 0)
			require.NoError(t, err)
			require.NoError(t, f.Close())
		}},
		{"data pages overwritten, meta pages intact", func(t *testing.T, path string) {
			db, err := Open(path, Options{Sealer: newSealer(t)})
			require.NoError(t, err)
			for i := range 50 {
				require.NoError(t, db.PutCredentials(fmt.Sprintf("role-%d", i), Cached{Credentials: testCreds}))
			}
			require.NoError(t, db.Close())
			f, err := os.OpenFile(path, os.O_RDWR, 0)
			require.NoError(t, err)
			fi, err := f.Stat()
			require.NoError(t, err)
			ps := int64(os.Getpagesize())
			for off := 2 * ps; off+ps <= fi.Size(); off += ps {
				_, err = f.WriteAt(garbage[:ps], off)
				require.NoError(t, err)
			}
			require.NoError(t, f.Close())
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "state.db")
			tc.write(t, path)
			before, err := os.ReadFile(path)
			require.NoError(t, err)

			log, buf := newLogger()
			sealer := newSealer(t)
			db := openT(t, path, Options{Sealer: sealer, Logger: log})

			h := db.Health()
			require.NotEmpty(t, h.MovedAside)
			assert.True(t, strings.HasPrefix(h.MovedAside, path+".corrupt-"), h.MovedAside)
			assert.NotEmpty(t, h.LastError)
			moved, err := os.ReadFile(h.MovedAside)
			require.NoError(t, err)
			assert.Equal(t, before, moved, "the unreadable file is kept byte for byte for inspection")
			assert.Contains(t, buf.String(), "moved aside")
			assert.Contains(t, buf.String(), h.MovedAside)

			// The fresh file works.
			require.NoError(t, db.PutCredentials("device", Cached{Credentials: testCreds}))
			got, ok, err := db.Credentials("device")
			require.NoError(t, err)
			require.True(t, ok)
			assert.Equal(t, testCreds, got.Credentials)
		})
	}
}

// TestWrongSealerDiscardsEntry ensures that an entry sealed with another key is discarded with a log line and reads as absent.
func TestWrongSealerDiscardsEntry(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	oldKey, newKey := newSealer(t), newSealer(t)
	db := openT(t, path, Options{Sealer: oldKey})
	require.NoError(t, db.PutCredentials("device", Cached{Credentials: testCreds}))
	require.NoError(t, db.Close())

	log, buf := newLogger()
	db = openT(t, path, Options{Sealer: newKey, Logger: log})
	got, ok, err := db.Credentials("device")
	require.NoError(t, err, "a changed device key is not fatal")
	assert.False(t, ok)
	assert.Zero(t, got)
	assert.Contains(t, buf.String(), "role=device")
	assert.Contains(t, buf.String(), "another key")
	assert.NotContains(t, buf.String(), testCreds.SecretAccessKey)
	assert.Contains(t, db.Health().LastError, "discarded")

	// The entry is gone: even the old key finds nothing now.
	require.NoError(t, db.Close())
	db = openT(t, path, Options{Sealer: oldKey})
	_, ok, err = db.Credentials("device")
	require.NoError(t, err)
	assert.False(t, ok)
}

// TestSealedEntryBoundToRole ensures that an entry copied under another role's key does not open.
func TestSealedEntryBoundToRole(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	log, buf := newLogger()
	db := openT(t, path, Options{Sealer: newSealer(t), Logger: log})
	require.NoError(t, db.PutCredentials("admin", Cached{Credentials: testCreds}))
	// Copy admin's sealed value under another role's key, as an attacker
	// with write access to the file could.
	require.NoError(t, db.bolt.Update(func(tx *bbolt.Tx) error {
		b := tx.Bucket(bucketCredentials)
		return b.Put([]byte("guest"), append([]byte(nil), b.Get([]byte("admin"))...))
	}))
	_, ok, err := db.Credentials("guest")
	require.NoError(t, err)
	assert.False(t, ok, "a value sealed for admin must not open as guest")
	assert.Contains(t, buf.String(), "role=guest")

	got, ok, err := db.Credentials("admin")
	require.NoError(t, err)
	require.True(t, ok)
	assert.Equal(t, testCreds, got.Credentials)
}

// TestDamagedEntryDiscarded ensures that a damaged entry is discarded rather than served.
func TestDamagedEntryDiscarded(t *testing.T) {
	cases := []struct {
		name   string
		mangle func(v []byte) []byte
	}{
		{"too short", func(v []byte) []byte { return v[:5] }},
		{"unknown format", func(v []byte) []byte { v[0] = 99; return v }},
		{"flipped ciphertext bit", func(v []byte) []byte { v[len(v)-1] ^= 1; return v }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			db := openT(t, filepath.Join(t.TempDir(), "state.db"), Options{Sealer: newSealer(t)})
			require.NoError(t, db.PutCredentials("device", Cached{Credentials: testCreds}))
			require.NoError(t, db.bolt.Update(func(tx *bbolt.Tx) error {
				b := tx.Bucket(bucketCredentials)
				v := append([]byte(nil), b.Get([]byte("device"))...)
				return b.Put([]byte("device"), tc.mangle(v))
			}))
			_, ok, err := db.Credentials("device")
			require.NoError(t, err)
			assert.False(t, ok)
			require.NoError(t, db.bolt.View(func(tx *bbolt.Tx) error {
				assert.Nil(t, tx.Bucket(bucketCredentials).Get([]byte("device")), "damaged entry deleted")
				return nil
			}))
		})
	}
}

// TestNoSealerNeverWritesCredentials ensures that without a sealer no credentials are written.
func TestNoSealerNeverWritesCredentials(t *testing.T) {
	db := openT(t, filepath.Join(t.TempDir(), "state.db"), Options{})
	err := db.PutCredentials("device", Cached{Credentials: testCreds})
	require.ErrorIs(t, err, ErrNoSealer)
	_, ok, err := db.Credentials("device")
	require.NoError(t, err)
	assert.False(t, ok)
}

// writeSchema stores a raw schema version, as another tether build would.
func writeSchema(t *testing.T, path string, v uint64, buckets ...[]byte) {
	t.Helper()
	b, err := bbolt.Open(path, 0o600, nil)
	require.NoError(t, err)
	require.NoError(t, b.Update(func(tx *bbolt.Tx) error {
		for _, name := range buckets {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return err
			}
		}
		meta, err := tx.CreateBucketIfNotExists(bucketMeta)
		if err != nil {
			return err
		}
		if v == 0 {
			return meta.Delete(keySchema)
		}
		return meta.Put(keySchema, binary.BigEndian.AppendUint64(nil, v))
	}))
	require.NoError(t, b.Close())
}

func readSchema(t *testing.T, path string) uint64 {
	t.Helper()
	b, err := bbolt.Open(path, 0o600, &bbolt.Options{ReadOnly: true})
	require.NoError(t, err)
	defer b.Close()
	var v uint64
	require.NoError(t, b.View(func(tx *bbolt.Tx) error {
		v = binary.BigEndian.Uint64(tx.Bucket(bucketMeta).Get(keySchema))
		return nil
	}))
	return v
}

// TestNewerSchemaRefused ensures that a state file of a newer schema is refused, not downgraded.
func TestNewerSchemaRefused(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "state.db")
	writeSchema(t, path, SchemaVersion+1)
	before, err := os.ReadFile(path)
	require.NoError(t, err)

	_, err = Open(path, Options{})
	require.ErrorIs(t, err, ErrNewerSchema)
	assert.Contains(t, err.Error(), path)
	assert.Contains(t, err.Error(), "upgrade tether")

	after, err := os.ReadFile(path)
	require.NoError(t, err)
	assert.Equal(t, before, after, "a newer file is left untouched")
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	assert.Len(t, entries, 1, "nothing moved aside")
}

// TestOlderSchemaMigrated ensures that a state file of an older schema is migrated.
func TestOlderSchemaMigrated(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	// Schema 0: a file with only the meta bucket and no version key.
	writeSchema(t, path, 0)
	db := openT(t, path, Options{Sealer: newSealer(t)})
	assert.Equal(t, SchemaVersion, db.Health().Schema)
	require.NoError(t, db.bolt.View(func(tx *bbolt.Tx) error {
		for _, name := range allBuckets {
			assert.NotNil(t, tx.Bucket(name), string(name))
		}
		return nil
	}))
	require.NoError(t, db.Close())
	assert.Equal(t, uint64(SchemaVersion), readSchema(t, path))
}

// TestUnusablePath ensures that a missing or read-only directory, or a directory as path, is ErrUnusable with the path.
func TestUnusablePath(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "plain-file")
	require.NoError(t, os.WriteFile(file, nil, 0o600))
	require.NoError(t, os.Mkdir(filepath.Join(dir, "state.db"), 0o700))

	cases := []struct {
		name string
		path string
		want []string
	}{
		{"missing directory", filepath.Join(dir, "nope", "state.db"), []string{filepath.Join(dir, "nope"), "does not exist", "StateDirectory", "[state] path"}},
		{"parent is a file", filepath.Join(file, "state.db"), []string{file, "not a directory"}},
		{"path is a directory", filepath.Join(dir, "state.db"), []string{"is a directory", "[state] path"}},
		{"empty path", "", []string{"[state] path is empty"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			db, err := Open(tc.path, Options{})
			require.ErrorIs(t, err, ErrUnusable)
			assert.Nil(t, db)
			for _, w := range tc.want {
				assert.Contains(t, err.Error(), w)
			}
		})
	}
}

// TestSecondOpenReportsLock ensures that a second Open of a state file in use gets ErrLocked, naming the path and another tether.
func TestSecondOpenReportsLock(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	openT(t, path, Options{})
	// flock locks belong to the open file description, so a second Open in
	// this process conflicts just as a second tether process would.
	_, err := Open(path, Options{Timeout: 20 * time.Millisecond})
	require.ErrorIs(t, err, ErrLocked)
	assert.Contains(t, err.Error(), path)
	assert.Contains(t, err.Error(), "another tether")
}

// TestCloseThenUse ensures that using a closed store is ErrClosed, never a panic.
func TestCloseThenUse(t *testing.T) {
	db, err := Open(filepath.Join(t.TempDir(), "state.db"), Options{Sealer: newSealer(t)})
	require.NoError(t, err)
	require.NoError(t, db.Close())
	require.NoError(t, db.Close(), "second Close is harmless")
	require.ErrorIs(t, db.PutCredentials("device", Cached{Credentials: testCreds}), ErrClosed)
	_, _, err = db.Credentials("device")
	require.ErrorIs(t, err, ErrClosed)
	assert.Contains(t, db.Health().LastError, "closed")
}

// TestConcurrentUse ensures that concurrent readers and writers see whole entries.
func TestConcurrentUse(t *testing.T) {
	db := openT(t, filepath.Join(t.TempDir(), "state.db"), Options{Sealer: newSealer(t)})
	const workers, rounds = 8, 20
	var wg sync.WaitGroup
	errs := make(chan error, workers*rounds)
	for w := range workers {
		wg.Go(func() {
			for i := range rounds {
				role := fmt.Sprintf("role-%d", w%3) // shared roles: readers race writers
				c := testCreds
				c.AccessKeyID = fmt.Sprintf("ASIA-%d-%d", w, i)
				if err := db.PutCredentials(role, Cached{Credentials: c}); err != nil {
					errs <- err
					return
				}
				got, ok, err := db.Credentials(role)
				switch {
				case err != nil:
					errs <- err
				case !ok:
					errs <- fmt.Errorf("%s: stored credentials not found", role)
				case got.SecretAccessKey != testCreds.SecretAccessKey:
					errs <- errors.New("credentials mixed up")
				}
				_ = db.Health()
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// BenchmarkPutCredentials reports the cost of sealing relative to storing
// the same number of bytes unsealed in the same bbolt file (ratio ~1: the
// fsync dominates, sealing is noise).
func BenchmarkPutCredentials(b *testing.B) {
	db, err := Open(filepath.Join(b.TempDir(), "state.db"), Options{Sealer: newSealer(b)})
	require.NoError(b, err)
	defer db.Close()
	raw := make([]byte, 256)

	const baselineN = 200
	start := time.Now()
	for range baselineN {
		require.NoError(b, db.bolt.Update(func(tx *bbolt.Tx) error {
			return tx.Bucket(bucketCredentials).Put([]byte("baseline"), raw)
		}))
	}
	perBaseline := time.Since(start) / baselineN

	b.ResetTimer()
	start = time.Now()
	for b.Loop() {
		if err := db.PutCredentials("device", Cached{Credentials: testCreds}); err != nil {
			b.Fatal(err)
		}
	}
	per := time.Since(start) / time.Duration(b.N)
	b.ReportMetric(float64(per)/float64(perBaseline), "x-raw-bbolt-put")
}

// BenchmarkCredentials reports a sealed read against a raw read of the same
// key.
func BenchmarkCredentials(b *testing.B) {
	db, err := Open(filepath.Join(b.TempDir(), "state.db"), Options{Sealer: newSealer(b)})
	require.NoError(b, err)
	defer db.Close()
	require.NoError(b, db.PutCredentials("device", Cached{Credentials: testCreds}))

	const baselineN = 20000
	start := time.Now()
	for range baselineN {
		_ = db.bolt.View(func(tx *bbolt.Tx) error {
			_ = append([]byte(nil), tx.Bucket(bucketCredentials).Get([]byte("device"))...)
			return nil
		})
	}
	perBaseline := time.Since(start) / baselineN

	b.ResetTimer()
	start = time.Now()
	for b.Loop() {
		if _, ok, err := db.Credentials("device"); err != nil || !ok {
			b.Fatal(ok, err)
		}
	}
	per := time.Since(start) / time.Duration(b.N)
	b.ReportMetric(float64(per)/float64(perBaseline), "x-raw-bbolt-get")
}

// TestClassifyOpenErrors ensures that permission, read-only and disk-full errors at open are the operator's to fix, never taken for corruption.
//
// TestClassifyOpenErrors covers the failures this machine cannot produce for
// real in a test running as root (permission denied, read-only file system,
// disk full): they are the operator's to fix and must not be mistaken for a
// corrupt file, which would be moved aside.
func TestClassifyOpenErrors(t *testing.T) {
	path := "/var/lib/tether/state.db"
	pe := func(errno syscall.Errno) error { return &fs.PathError{Op: "open", Path: path, Err: errno} }
	cases := []struct {
		name    string
		err     error
		want    error
		message string
	}{
		{"permission denied", pe(syscall.EACCES), ErrUnusable, "writable by the tether user"},
		{"read-only file system", pe(syscall.EROFS), ErrUnusable, "writable by the tether user"},
		{"disk full", pe(syscall.ENOSPC), ErrUnusable, "free space"},
		{"lock held", berrors.ErrTimeout, ErrLocked, "another tether"},
		{"not a bolt file", berrors.ErrInvalid, errCorrupt, "invalid database"},
		{"checksum", berrors.ErrChecksum, errCorrupt, "checksum"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := classifyOpen(path, tc.err)
			require.ErrorIs(t, got, tc.want)
			assert.Contains(t, got.Error(), path)
			assert.Contains(t, got.Error(), tc.message)
		})
	}
}

// TestCredentialKeys ensures that CredentialKeys lists what is stored, so stale entries can be pruned.
func TestCredentialKeys(t *testing.T) {
	db := openT(t, filepath.Join(t.TempDir(), "state.db"), Options{Sealer: newSealer(t)})
	creds := aws.Credentials{AccessKeyID: "AKID", SecretAccessKey: "secret", SessionToken: "token", CanExpire: true, Expires: time.Now().Add(time.Hour)}
	require.NoError(t, db.PutCredentials("device#1", Cached{Credentials: creds}))
	require.NoError(t, db.PutCredentials("telemetry#2", Cached{Credentials: creds}))
	keys, err := db.CredentialKeys()
	require.NoError(t, err)
	assert.ElementsMatch(t, []string{"device#1", "telemetry#2"}, keys)
	require.NoError(t, db.DeleteCredentials("device#1"))
	keys, err = db.CredentialKeys()
	require.NoError(t, err)
	assert.Equal(t, []string{"telemetry#2"}, keys)
}

// TestCredentialsKeepTheirLifetime ensures that the lifetime credentials
// were issued with survives the store, so a restarted agent gives them the
// windows the one before did, and that entries written without one read as
// unknown (0).
func TestCredentialsKeepTheirLifetime(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	sealer := newSealer(t)
	db := openT(t, path, Options{Sealer: sealer})
	require.NoError(t, db.PutCredentials("short", Cached{Credentials: testCreds, Lifetime: 90 * time.Second}))
	require.NoError(t, db.PutCredentials("older", Cached{Credentials: testCreds}))
	require.NoError(t, db.Close())
	db = openT(t, path, Options{Sealer: sealer})
	got, ok, err := db.Credentials("short")
	require.NoError(t, err)
	require.True(t, ok)
	assert.Equal(t, Cached{Credentials: testCreds, Lifetime: 90 * time.Second}, got)
	got, ok, err = db.Credentials("older")
	require.NoError(t, err)
	require.True(t, ok)
	assert.Zero(t, got.Lifetime)
}
