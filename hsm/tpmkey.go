package hsm

import (
	"context"
	"crypto"
	"errors"
	"fmt"
	"os"

	"github.com/tetherd/tether/hsm/tpm"
)

// TPMAvailable reports whether this build holds TPM 2.0 keys: every build
// does (pure Go, no cgo), unless made with -tags notpm to leave go-tpm out.
const TPMAvailable = tpm.Available

// tpmKey is a key in a TPM 2.0, through package tpm.
type tpmKey struct {
	*tpm.Key
}

// openTPM opens the key a "tpm:" reference names, with its authorisation
// value read from the same pin-source forms as PKCS#11 PINs.
func openTPM(ctx context.Context, ref string, o options) (keyBackend, error) {
	u, auth, err := parseTPMRef(ref, o)
	if err != nil {
		return nil, err
	}
	k, err := tpm.Open(ctx, u, auth)
	if err != nil {
		return nil, tpmErr(err)
	}
	if err := checkPublicKey(k.Public()); err != nil {
		k.Close()
		return nil, fmt.Errorf("%w: %s: %w", ErrBadKey, u, err)
	}
	return tpmKey{k}, nil
}

// openTPMFor opens the key ref names or, when want is set and that key is
// not want's but the rotation's pending key file beside it (PendingKey) is,
// that one: a TSS2 file holds one key, so during a rotation the certificate
// picks between the two files.
func openTPMFor(ctx context.Context, ref string, want crypto.PublicKey, o options) (keyBackend, error) {
	b, err := openTPM(ctx, ref, o)
	if err != nil || want == nil || samePublic(b.Public(), want) {
		return b, err
	}
	next := PendingKey(ref)
	if f, ok := KeyFile(next); !ok || next == ref || !fileExists(f) {
		return b, nil
	}
	// A TPM holds few objects (three on many parts): let go of this one
	// before loading the other.
	b.close()
	nb, err := openTPM(ctx, next, o)
	if err == nil && samePublic(nb.Public(), want) {
		return nb, nil
	}
	if nb != nil {
		nb.close()
	}
	// Neither is the certificate's: Open reports the mismatch with the
	// configured file.
	return openTPM(ctx, ref, o)
}

func fileExists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}

// parseTPMRef parses ref and reads the key's authorisation value from its
// pin-source, with the pkcs11: URIs' rule (a URI holding only the
// pin-source reads it the same way); auth is nil without one.
func parseTPMRef(ref string, o options) (u *tpm.URI, auth []byte, err error) {
	if u, err = tpm.ParseURI(ref); err != nil || u.PINSource == "" {
		return u, nil, err
	}
	pin, err := (&URI{PINSource: u.PINSource}).readPIN(o.getenv)
	if err != nil {
		return nil, nil, err
	}
	return u, []byte(pin), nil
}

// sealer is an AES-GCM AEAD in memory, keyed inside the TPM: its Seal
// cannot fail.
func (k tpmKey) sealer(ctx context.Context, label string) (Sealer, error) {
	a, err := k.Key.Sealer(ctx, label)
	if err != nil {
		return nil, tpmErr(err)
	}
	return aeadSealer{a}, nil
}

func (k tpmKey) location() string { return k.URI().String() }
func (k tpmKey) close() error     { return k.Close() }

// tpmErr files a TPM error under the package's errors, so callers tell a
// TPM that is away or busy (retry later) from a configuration fault the
// same way as for a token.
func tpmErr(err error) error {
	var kind error
	switch {
	case err == nil:
		return nil
	case errors.Is(err, tpm.ErrNoDevice), errors.Is(err, tpm.ErrBusy):
		kind = ErrTokenUnavailable
	case errors.Is(err, tpm.ErrAuth):
		kind = ErrPINIncorrect
	case errors.Is(err, tpm.ErrKeyNotFound), errors.Is(err, tpm.ErrKeyFile):
		kind = ErrKeyNotFound
	case errors.Is(err, tpm.ErrWrongTPM):
		kind = ErrBadKey
	default:
		return err
	}
	return kindError{err: err, kind: kind}
}

// kindError reads as err and is also kind for errors.Is.
type kindError struct{ err, kind error }

func (e kindError) Error() string   { return e.err.Error() }
func (e kindError) Unwrap() []error { return []error{e.err, e.kind} }

// CheckTPMKey checks a "tpm:" reference as far as `tether config check` can
// without using the key: its syntax, the key file, the device and the PIN
// file, with the rule of the pkcs11: URIs' (URI.CheckFiles).
func CheckTPMKey(ref string, getenv func(string) string) error {
	u, err := tpm.ParseURI(ref)
	if err != nil {
		return err
	}
	if !tpm.Available {
		return tpm.ErrNotBuilt
	}
	if err := u.Check(); err != nil {
		return err
	}
	return (&URI{PINSource: u.PINSource}).checkPINFile(getenv)
}

// GenerateTPMKey creates a key of type kt in the TPM that ref names: a TSS2
// key file for tpm:file=, a persistent key for tpm:handle=. Its
// authorisation value comes from ref's pin-source (none without one).
func GenerateTPMKey(ctx context.Context, ref string, kt KeyType, opts ...Option) (crypto.PublicKey, error) {
	o := buildOptions(opts)
	u, auth, err := parseTPMRef(ref, o)
	if err != nil {
		return nil, err
	}
	pub, err := tpm.Generate(ctx, u, string(kt), auth)
	return pub, tpmErr(err)
}

// ListTPM reports what the TPM at device holds, for `tether hsm list --tpm`.
func ListTPM(ctx context.Context, device string) (*tpm.Info, error) {
	info, err := tpm.List(ctx, device)
	return info, tpmErr(err)
}
