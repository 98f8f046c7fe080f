//go:build cgo && !nopkcs11

package hsm

import (
	"context"
	"crypto"
	"crypto/rsa"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"

	"github.com/ThalesIgnite/crypto11"
)

// p11Key is a token key that reopens its context when the token was removed
// or its sessions were lost.
type p11Key struct {
	uri *URI
	pin string
	log *slog.Logger
	ref keyRef
	pub crypto.PublicKey

	mu     sync.Mutex // guards the fields below; held while reopening
	c      *crypto11.Context
	signer crypto11.Signer
	gen    uint64 // bumped whenever c changes, so concurrent failures reopen once
	pinErr error  // a refused PIN: never tried again
	closed bool

	secretMu sync.Mutex // serialises find-or-generate of secret keys
}

func openPKCS11(ctx context.Context, u *URI, o options) (keyBackend, error) {
	if u.viaP11Kit() {
		return openP11Kit(ctx, u, o)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	pin, err := keyPIN(u, o)
	if err != nil {
		return nil, err
	}
	k := &p11Key{uri: u, pin: pin, log: o.logger}
	k.mu.Lock()
	defer k.mu.Unlock()
	if err := k.connectLocked(); err != nil {
		return nil, err
	}
	k.pub = k.signer.Public()
	return k, nil
}

// connectLocked opens a fresh context and finds the key. k.mu is held.
func (k *p11Key) connectLocked() error {
	k.log.Debug("pkcs11 opening token", "key", k.uri.String())
	moduleMu.Lock()
	t, ref, err := preflight(k.uri, k.pin, true)
	if err != nil {
		moduleMu.Unlock()
		if errors.Is(err, ErrPINIncorrect) {
			k.pinErr = err
		}
		return err
	}
	c, err := configure(k.uri, t, k.pin)
	moduleMu.Unlock()
	if err != nil {
		return err
	}
	s, err := c.FindKeyPair(ref.id, ref.label)
	if err == nil && s == nil {
		err = fmt.Errorf("%w: private key %q in token %s has no public key object with the same CKA_ID and label; crypto11 needs it (import the public key or regenerate with tether hsm keygen)", ErrKeyNotFound, ref.label, t)
	}
	if err == nil {
		if err = checkPublicKey(s.Public()); err != nil {
			err = fmt.Errorf("key %s: %w", k.uri, err)
		}
	}
	if err == nil && k.pub != nil {
		if eq, ok := k.pub.(interface{ Equal(crypto.PublicKey) bool }); !ok || !eq.Equal(s.Public()) {
			err = fmt.Errorf("%w: key %s in token %s is not the key opened before the token was reopened", ErrKeyNotFound, k.uri, t)
		}
	}
	if err != nil {
		closeContext(c)
		if isLost(err) {
			return fmt.Errorf("%w: %s: %w", ErrTokenUnavailable, k.uri, err)
		}
		return err
	}
	k.c, k.signer, k.ref = c, s, ref
	k.gen++
	return nil
}

// current returns a usable context, reopening it when a fault dropped it.
func (k *p11Key) current() (*crypto11.Context, crypto11.Signer, uint64, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.closed {
		return nil, nil, 0, fmt.Errorf("pkcs11 key %s: closed", k.uri)
	}
	if k.pinErr != nil {
		return nil, nil, 0, k.pinErr
	}
	if k.c == nil {
		if err := k.connectLocked(); err != nil {
			return nil, nil, 0, err
		}
		k.log.Info("pkcs11 token reopened", "key", k.uri.String())
	}
	return k.c, k.signer, k.gen, nil
}

// drop discards the context of generation gen after a fault; the next use
// reopens. Other goroutines failing on the same generation do nothing.
func (k *p11Key) drop(gen uint64, cause error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.gen != gen || k.c == nil {
		return
	}
	k.log.Warn("pkcs11 token lost; reopening on next use", "key", k.uri.String(), "error", cause)
	old := k.c
	k.c, k.signer = nil, nil
	k.gen++
	// Close waits until every pooled session is back; callers still inside
	// a crypto11 call on old return theirs when that call fails.
	closeContext(old)
}

// retryable reports whether a failed call on generation gen should be
// retried: the token was lost, or another goroutine already replaced the
// context under it.
func (k *p11Key) retryable(gen uint64, err error) bool {
	if isLost(err) {
		return true
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.gen != gen
}

func (k *p11Key) Public() crypto.PublicKey { return k.pub }

// Sign signs in the token. crypto11 cannot sign PSS with
// PSSSaltLengthAuto, so that becomes PSSSaltLengthEqualsHash, which every
// verifier accepting "auto" accepts too (TLS 1.3 uses EqualsHash anyway).
func (k *p11Key) Sign(_ io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	if pss, ok := opts.(*rsa.PSSOptions); ok && pss.SaltLength == rsa.PSSSaltLengthAuto {
		opts = &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: pss.Hash}
	}
	for attempt := 0; ; attempt++ {
		_, s, gen, err := k.current()
		if err != nil {
			return nil, fmt.Errorf("pkcs11 sign with %s: %w", k.uri, err)
		}
		sig, err := s.Sign(nil, digest, opts)
		if err == nil {
			return sig, nil
		}
		if attempt == 0 && k.retryable(gen, err) {
			k.drop(gen, err)
			continue
		}
		if isLost(err) {
			k.drop(gen, err)
			return nil, fmt.Errorf("pkcs11 sign with %s: %w: %w", k.uri, ErrTokenUnavailable, err)
		}
		return nil, fmt.Errorf("pkcs11 sign with %s: %w", k.uri, err)
	}
}

func (k *p11Key) location() string { return k.uri.String() }

func (k *p11Key) close() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.closed {
		return nil
	}
	k.closed = true
	if k.c != nil {
		closeContext(k.c)
		k.c, k.signer = nil, nil
	}
	return nil
}
