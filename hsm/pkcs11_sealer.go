//go:build cgo && !nopkcs11

package hsm

import (
	"context"
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"fmt"
	"sync"

	"github.com/ThalesIgnite/crypto11"
)

// sealer returns an AES-256-GCM sealer whose key never leaves the token.
func (k *p11Key) sealer(ctx context.Context, label string) (Sealer, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if label == "" {
		return nil, errors.New("sealer: empty label")
	}
	a := &p11AEAD{k: k, label: label}
	if err := sealerRoundTrip(a.NonceSize(), a.Seal, a.Open); err != nil {
		return nil, fmt.Errorf("sealer %q in token %s: AES-GCM round trip failed (does the token support CKM_AES_GCM?): %w", label, k.uri, err)
	}
	return a, nil
}

// secretKey finds the AES key labelled label in c, generating it when
// missing: sensitive, never extractable, on the token.
func (k *p11Key) secretKey(c *crypto11.Context, label string) (*crypto11.SecretKey, error) {
	k.secretMu.Lock()
	defer k.secretMu.Unlock()
	sk, err := c.FindKey(nil, []byte(label))
	if err != nil {
		return nil, err
	}
	if sk == nil {
		id := make([]byte, 16)
		if _, err := rand.Read(id); err != nil {
			return nil, err
		}
		tmpl, err := crypto11.NewAttributeSetWithIDAndLabel(id, []byte(label))
		if err != nil {
			return nil, err
		}
		// CKA_PRIVATE makes generation fail, instead of creating a second
		// key, when the login was lost and FindKey could not see the first.
		if err := tmpl.Set(crypto11.CkaPrivate, true); err != nil {
			return nil, err
		}
		if sk, err = c.GenerateSecretKeyWithAttributes(tmpl, 256, crypto11.CipherAES); err != nil {
			return nil, fmt.Errorf("generate AES-256 key %q: %w", label, err)
		}
		k.log.Info("pkcs11 sealing key generated in token", "key", k.uri.String(), "label", label)
	}
	attrs, err := c.GetAttributes(sk, []crypto11.AttributeType{crypto11.CkaExtractable, crypto11.CkaSensitive})
	if err != nil {
		return nil, err
	}
	if v := attrs[crypto11.CkaExtractable]; v == nil || len(v.Value) != 1 || v.Value[0] != 0 {
		return nil, fmt.Errorf("secret key %q in token is extractable; tether only seals with non-extractable keys: delete it or pick another label", label)
	}
	if v := attrs[crypto11.CkaSensitive]; v == nil || len(v.Value) != 1 || v.Value[0] == 0 {
		return nil, fmt.Errorf("secret key %q in token is not sensitive; delete it or pick another label", label)
	}
	if sk.Cipher != crypto11.CipherAES {
		return nil, fmt.Errorf("secret key %q in token is not an AES key", label)
	}
	return sk, nil
}

// p11AEAD is crypto11's token GCM, re-bound to the new context after a
// reopen.
type p11AEAD struct {
	k     *p11Key
	label string

	mu   sync.Mutex
	gen  uint64
	aead cipher.AEAD
}

func (a *p11AEAD) NonceSize() int { return 12 }
func (a *p11AEAD) Overhead() int  { return 16 }

func (a *p11AEAD) bind() (cipher.AEAD, uint64, error) {
	c, _, gen, err := a.k.current()
	if err != nil {
		return nil, 0, err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.aead != nil && a.gen == gen {
		return a.aead, gen, nil
	}
	sk, err := a.k.secretKey(c, a.label)
	if err != nil {
		return nil, gen, err
	}
	g, err := sk.NewGCM()
	if err != nil {
		return nil, gen, err
	}
	a.aead, a.gen = g, gen
	return g, gen, nil
}

// do runs f on the bound AEAD, reopening the token once when it was lost.
func (a *p11AEAD) do(op string, f func(cipher.AEAD) ([]byte, error)) ([]byte, error) {
	for attempt := 0; ; attempt++ {
		g, gen, err := a.bind()
		if err == nil {
			var out []byte
			if out, err = f(g); err == nil {
				return out, nil
			}
		}
		if attempt == 0 && gen != 0 && a.k.retryable(gen, err) {
			a.k.drop(gen, err)
			continue
		}
		if isLost(err) {
			return nil, fmt.Errorf("pkcs11 %s with key %q in %s: %w: %w", op, a.label, a.k.uri, ErrTokenUnavailable, err)
		}
		return nil, fmt.Errorf("pkcs11 %s with key %q in %s: %w", op, a.label, a.k.uri, err)
	}
}

// Seal seals in the token, reopening it once when it was lost.
func (a *p11AEAD) Seal(dst, nonce, plaintext, additionalData []byte) ([]byte, error) {
	if len(nonce) != a.NonceSize() {
		return nil, fmt.Errorf("seal: nonce is %d bytes, want %d", len(nonce), a.NonceSize())
	}
	return a.do("seal", func(g cipher.AEAD) (out []byte, err error) {
		defer func() { // crypto11's Seal panics on token errors
			if r := recover(); r != nil {
				if e, ok := r.(error); ok {
					err = e
				} else {
					err = fmt.Errorf("%v", r)
				}
			}
		}()
		return g.Seal(dst, nonce, plaintext, additionalData), nil
	})
}

// Open opens in the token, reopening it once when it was lost.
func (a *p11AEAD) Open(dst, nonce, ciphertext, additionalData []byte) ([]byte, error) {
	if len(nonce) != a.NonceSize() {
		return nil, fmt.Errorf("open: nonce is %d bytes, want %d", len(nonce), a.NonceSize())
	}
	return a.do("open", func(g cipher.AEAD) ([]byte, error) {
		return g.Open(dst, nonce, ciphertext, additionalData)
	})
}
