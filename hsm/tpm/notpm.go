//go:build notpm

package tpm

import (
	"context"
	"crypto"
	"crypto/cipher"
	"io"
)

// Available reports whether this binary talks to TPMs: built with -tags
// notpm, it does not (and carries no go-tpm).
const Available = false

// Key is a TPM key; a notpm build never has one.
type Key struct{}

// KeyFile is a decoded TSS2 key file; a notpm build never decodes one.
type KeyFile struct{ EmptyAuth bool }

// Open returns ErrNotBuilt.
func Open(context.Context, *URI, []byte) (*Key, error) { return nil, ErrNotBuilt }

// Generate returns ErrNotBuilt.
func Generate(context.Context, *URI, string, []byte) (crypto.PublicKey, error) {
	return nil, ErrNotBuilt
}

// List returns ErrNotBuilt.
func List(context.Context, string) (*Info, error) { return nil, ErrNotBuilt }

// ReadKeyFile returns ErrNotBuilt.
func ReadKeyFile(string) (*KeyFile, error) { return nil, ErrNotBuilt }

// Public returns nil.
func (*Key) Public() crypto.PublicKey { return nil }

// URI returns nil.
func (*Key) URI() *URI { return nil }

// Sign returns ErrNotBuilt.
func (*Key) Sign(io.Reader, []byte, crypto.SignerOpts) ([]byte, error) { return nil, ErrNotBuilt }

// Sealer returns ErrNotBuilt.
func (*Key) Sealer(context.Context, string) (cipher.AEAD, error) { return nil, ErrNotBuilt }

// Close does nothing.
func (*Key) Close() error { return nil }
