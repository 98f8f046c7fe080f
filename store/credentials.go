package store

import (
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// sealedFormat is the first byte of every sealed credentials value so that a
// later format can be told apart from this one.
const sealedFormat byte = 1

// storedCredentials is the plaintext inside the seal. It is never written to
// disk unsealed.
type storedCredentials struct {
	AccessKeyID     string    `json:"a"`
	SecretAccessKey string    `json:"s"`
	SessionToken    string    `json:"t,omitempty"`
	Source          string    `json:"src,omitempty"`
	CanExpire       bool      `json:"ce,omitempty"`
	Expires         time.Time `json:"e,omitzero"`
	AccountID       string    `json:"acct,omitempty"`
	// Lifetime is Cached.Lifetime; absent from entries of older versions.
	Lifetime time.Duration `json:"l,omitempty"`
}

// Cached is a role's last credentials as the store keeps them.
type Cached struct {
	aws.Credentials
	// Lifetime is what they were issued with (credprovider's OnRefresh
	// reports it), so a restart can give them the same windows; 0 when
	// unknown.
	Lifetime time.Duration
}

// additionalData binds a sealed value to its role, so an entry copied under
// another role's key fails to open instead of being served for that role.
func additionalData(role string) []byte {
	return []byte("tether/credentials/v1/" + role)
}

// PutCredentials seals c with the store's Sealer (random nonce, role name as
// additional data) and stores it as the last credentials of role.
func (db *DB) PutCredentials(role string, c Cached) error {
	sealer := db.currentSealer()
	if sealer == nil {
		return ErrNoSealer
	}
	if role == "" {
		return errors.New("store: PutCredentials: empty role name")
	}
	plain, err := json.Marshal(storedCredentials{
		AccessKeyID:     c.AccessKeyID,
		SecretAccessKey: c.SecretAccessKey,
		SessionToken:    c.SessionToken,
		Source:          c.Source,
		CanExpire:       c.CanExpire,
		Expires:         c.Expires,
		AccountID:       c.AccountID,
		Lifetime:        c.Lifetime,
	})
	if err != nil {
		return fmt.Errorf("store: encode credentials for role %q: %w", role, err)
	}
	ns := sealer.NonceSize()
	val := make([]byte, 1+ns, 1+ns+len(plain)+sealer.Overhead())
	val[0] = sealedFormat
	if _, err := rand.Read(val[1:]); err != nil {
		return fmt.Errorf("store: nonce for role %q: %w", role, err)
	}
	val, err = sealer.Seal(val, val[1:], plain, additionalData(role))
	clear(plain)
	if err != nil {
		err = fmt.Errorf("store: seal credentials for role %q: %w", role, err)
		db.setErr(err)
		return err
	}

	err = db.update(func(tx *bbolt.Tx) error {
		return tx.Bucket(bucketCredentials).Put([]byte(role), val)
	})
	if err != nil {
		err = fmt.Errorf("store: save credentials for role %q in %s: %w", role, db.path, db.mapErr(err))
		db.setErr(err)
		return err
	}
	return nil
}

// Credentials returns the last stored credentials of role, which may have
// expired (the caller decides). ok is false when none are stored, when the
// store has no Sealer, or when the entry cannot be opened: an entry sealed
// with another key (the device key was replaced) or damaged is deleted with a
// log line, because nothing could ever open it again.
func (db *DB) Credentials(role string) (c Cached, ok bool, err error) {
	sealer := db.currentSealer()
	if sealer == nil {
		return Cached{}, false, nil
	}
	var val []byte
	err = db.view(func(tx *bbolt.Tx) error {
		if v := tx.Bucket(bucketCredentials).Get([]byte(role)); v != nil {
			val = append([]byte(nil), v...) // v is only valid inside the transaction
		}
		return nil
	})
	if err != nil {
		err = fmt.Errorf("store: read credentials for role %q from %s: %w", role, db.path, db.mapErr(err))
		db.setErr(err)
		return Cached{}, false, err
	}
	if val == nil {
		return Cached{}, false, nil
	}
	sc, why := unseal(sealer, role, val)
	if why != "" {
		db.log.Warn("discarding cached credentials that cannot be opened; they will be fetched again",
			"role", role, "path", db.path, "reason", why)
		db.setErr(fmt.Errorf("store: cached credentials for role %q discarded: %s", role, why))
		db.discard(role, val)
		return Cached{}, false, nil
	}
	return Cached{Credentials: aws.Credentials{
		AccessKeyID:     sc.AccessKeyID,
		SecretAccessKey: sc.SecretAccessKey,
		SessionToken:    sc.SessionToken,
		Source:          sc.Source,
		CanExpire:       sc.CanExpire,
		Expires:         sc.Expires,
		AccountID:       sc.AccountID,
	}, Lifetime: sc.Lifetime}, true, nil
}

// unseal opens val; why is non-empty when it cannot. The reason never
// contains plaintext.
func unseal(sealer Sealer, role string, val []byte) (sc storedCredentials, why string) {
	ns := sealer.NonceSize()
	if len(val) < 1+ns+sealer.Overhead() {
		return sc, "entry too short"
	}
	if val[0] != sealedFormat {
		return sc, fmt.Sprintf("unknown format %d", val[0])
	}
	plain, err := sealer.Open(nil, val[1:1+ns], val[1+ns:], additionalData(role))
	if err != nil {
		return sc, "authentication failed (sealed with another key: the device key or token changed)"
	}
	defer clear(plain)
	if err := json.Unmarshal(plain, &sc); err != nil {
		return storedCredentials{}, "undecodable content"
	}
	return sc, ""
}

// discard deletes role's entry if it still holds val, so a fresh entry
// written concurrently is not lost.
func (db *DB) discard(role string, val []byte) {
	err := db.update(func(tx *bbolt.Tx) error {
		b := tx.Bucket(bucketCredentials)
		if cur := b.Get([]byte(role)); cur != nil && string(cur) == string(val) {
			return b.Delete([]byte(role))
		}
		return nil
	})
	if err != nil {
		db.log.Warn("could not delete discarded credentials", "role", role, "path", db.path, "err", db.mapErr(err))
	}
}

// DeleteCredentials removes role's cached credentials, e.g. when the role is
// removed from the configuration.
func (db *DB) DeleteCredentials(role string) error {
	err := db.update(func(tx *bbolt.Tx) error {
		return tx.Bucket(bucketCredentials).Delete([]byte(role))
	})
	if err != nil {
		return fmt.Errorf("store: delete credentials for role %q in %s: %w", role, db.path, db.mapErr(err))
	}
	return nil
}

// mapErr turns bbolt's closed-database error into ErrClosed.
func (db *DB) mapErr(err error) error {
	if errors.Is(err, berrors.ErrDatabaseNotOpen) {
		return ErrClosed
	}
	return err
}

// Sealer is an authenticated cipher for stored state: cipher.AEAD, except
// that Seal can fail, as it does when the key lives in a hardware token that
// went away (hsm.Identity.Sealer returns one). A failure is an error the
// caller logs, never a panic.
type Sealer interface {
	NonceSize() int
	Overhead() int
	Seal(dst, nonce, plaintext, additionalData []byte) ([]byte, error)
	Open(dst, nonce, ciphertext, additionalData []byte) ([]byte, error)
}

// CredentialKeys lists the names under which credentials are stored, so the
// agent can delete those of roles it no longer has.
func (db *DB) CredentialKeys() ([]string, error) {
	var keys []string
	err := db.view(func(tx *bbolt.Tx) error {
		return tx.Bucket(bucketCredentials).ForEach(func(k, _ []byte) error {
			keys = append(keys, string(k))
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("store: list credentials in %s: %w", db.path, db.mapErr(err))
	}
	return keys, nil
}

// SetSealer replaces the Sealer, for an agent whose device key changed while
// it runs (a reload after rotation): credentials are sealed with the new key
// from now on. Nil disables the credential cache.
func (db *DB) SetSealer(s Sealer) {
	db.mu.Lock()
	db.sealer = s
	db.mu.Unlock()
}

// currentSealer returns the Sealer in use.
func (db *DB) currentSealer() Sealer {
	db.mu.Lock()
	defer db.mu.Unlock()
	return db.sealer
}
