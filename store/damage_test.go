package store

import (
	"context"
	"crypto/rand"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestDamagedWhileOpen ensures that a state file overwritten in place or
// truncated while the store has it open (bbolt's "invalid meta pages" panic,
// a SIGBUS on the truncated mapping) neither panics nor kills the process:
// the operation that meets it fails with ErrDamaged, the file is moved aside
// and replaced by a fresh one, and the store goes on, with outbox sequence
// numbers that keep increasing.
func TestDamagedWhileOpen(t *testing.T) {
	damages := []struct {
		name   string
		damage func(t *testing.T, path string)
	}{
		{"overwritten in place", func(t *testing.T, path string) {
			f, err := os.OpenFile(path, os.O_WRONLY, 0)
			require.NoError(t, err)
			garbage := make([]byte, 64<<10)
			rand.Read(garbage)
			_, err = f.WriteAt(garbage, 0)
			require.NoError(t, err)
			require.NoError(t, f.Close())
		}},
		{"truncated to zero", func(t *testing.T, path string) {
			require.NoError(t, os.Truncate(path, 0))
		}},
		{"truncated to one page", func(t *testing.T, path string) {
			require.NoError(t, os.Truncate(path, 4096))
		}},
	}
	ops := []struct {
		name string
		op   func(db *DB, ob *Outbox) error
	}{
		{"read credentials", func(db *DB, _ *Outbox) error { _, _, err := db.Credentials("device#1"); return err }},
		{"write credentials", func(db *DB, _ *Outbox) error {
			return db.PutCredentials("device#1", Cached{Credentials: aws.Credentials{AccessKeyID: "AKIA2", SecretAccessKey: "s", CanExpire: true, Expires: time.Now().Add(time.Hour)}, Lifetime: time.Hour})
		}},
		{"enqueue", func(_ *DB, ob *Outbox) error {
			_, err := ob.Enqueue(context.Background(), "t/after", []byte("x"), 1)
			return err
		}},
		{"next", func(_ *DB, ob *Outbox) error { _, _, err := ob.Next(0); return err }},
		{"drain the outbox log", func(_ *DB, ob *Outbox) error { return ob.Drain() }},
		{"list keys", func(db *DB, _ *Outbox) error { _, err := db.CredentialKeys(); return err }},
	}
	for _, d := range damages {
		for _, o := range ops {
			t.Run(d.name+"/"+o.name, func(t *testing.T) {
				path := filepath.Join(t.TempDir(), "state.db")
				db, err := Open(path, Options{Sealer: newSealer(t)})
				require.NoError(t, err)
				defer db.Close()
				ob, err := db.Outbox(OutboxOptions{})
				require.NoError(t, err)
				defer ob.Close()
				require.NoError(t, db.PutCredentials("device#1", Cached{Credentials: aws.Credentials{AccessKeyID: "AKIA1", SecretAccessKey: "s", CanExpire: true, Expires: time.Now().Add(time.Hour)}, Lifetime: time.Hour}))
				var last uint64
				for range 20 {
					last, err = ob.Enqueue(context.Background(), "t/before", make([]byte, 1000), 1)
					require.NoError(t, err)
				}

				d.damage(t, path)
				err = o.op(db, ob)
				if err != nil {
					require.ErrorIs(t, err, ErrDamaged)
				}
				// Whether or not that operation met the damage (a write may
				// rewrite the meta pages first; enqueue and next touch only
				// the outbox log), the store keeps working: the next
				// operation on the file meets it at the latest.
				for range 3 {
					_ = o.op(db, ob)
				}
				put := func() error {
					return db.PutCredentials("device#1", Cached{Credentials: aws.Credentials{AccessKeyID: "AKIA3", SecretAccessKey: "s", CanExpire: true, Expires: time.Now().Add(time.Hour)}, Lifetime: time.Hour})
				}
				if err := put(); err != nil {
					require.ErrorIs(t, err, ErrDamaged)
					require.NoError(t, put())
				}
				c, ok, err := db.Credentials("device#1")
				require.NoError(t, err)
				require.True(t, ok)
				assert.Equal(t, "AKIA3", c.AccessKeyID)
				seq, err := ob.Enqueue(context.Background(), "t/fresh", []byte("y"), 1)
				require.NoError(t, err)
				assert.Greater(t, seq, last, "sequence numbers never go back, so delivery's cursor stays valid")
				h := db.Health()
				if h.MovedAside != "" {
					_, err := os.Stat(h.MovedAside)
					assert.NoError(t, err, "the damaged file is kept for inspection")
					assert.NotEmpty(t, h.LastError)
				}
				// A restart opens the fresh file without moving anything.
				ob.Close() // reports the commit that met the damage, if one did
				require.NoError(t, db.Close())
				db2, err := Open(path, Options{Sealer: newSealer(t)})
				require.NoError(t, err)
				defer db2.Close()
				assert.Empty(t, db2.Health().MovedAside)
			})
		}
	}
}
