// Package hsm provides the device identity: an X.509 certificate chain and a
// private key that signs TLS handshakes, held in PEM files, in a PKCS#11
// token (SoftHSM, tpm2-pkcs11, secure elements) addressed by an RFC 7512
// URI, or in a TPM 2.0 addressed by a "tpm:" reference (package hsm/tpm,
// pure Go). It also derives or holds the AES-256-GCM key that seals the
// agent's persisted state.
//
// A PKCS#11 module is loaded into the process in cgo builds; static
// (CGO_ENABLED=0) builds, builds with -tags nopkcs11 (no crypto11), and URIs
// with x-p11-kit= reach it through p11-kit's RPC instead (`p11-kit remote
// MODULE` or a `p11-kit server` socket, see hsm/p11rpc), with the same keys,
// errors and recovery. TPM 2.0 keys are pure Go in every build.
package hsm

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/tetherd/tether/hsm/tpm"
)

// Errors callers tell apart with errors.Is. ErrTokenUnavailable is the only
// transient one (exit status 1, retry later); every other error from Open is
// a configuration error (exit status 2).
var (
	// ErrTokenUnavailable means the token is absent, was removed, or its
	// sessions were lost; the next use of the key tries to reopen it.
	ErrTokenUnavailable = errors.New("pkcs11 token unavailable")
	// ErrPINIncorrect means the token refused the PIN. It is never retried
	// with the same PIN, since tokens lock after a few failures.
	ErrPINIncorrect = errors.New("pkcs11 PIN incorrect")
	// ErrKeyNotFound means no private key matched the URI's object/id.
	ErrKeyNotFound = errors.New("pkcs11 key not found")
	// ErrModule means the PKCS#11 module could not be loaded.
	ErrModule = errors.New("pkcs11 module unusable")
	// ErrBadKey means a PEM key or certificate file was refused.
	ErrBadKey = errors.New("identity refused")
)

// Option configures Open and OpenKey.
type Option func(*options)

type options struct {
	logger *slog.Logger
	now    func() time.Time
	getenv func(string) string
}

func buildOptions(opts []Option) options {
	o := options{logger: slog.Default(), now: time.Now, getenv: os.Getenv}
	for _, f := range opts {
		f(&o)
	}
	return o
}

// WithLogger sets the logger for warnings (pin-value use, token reopened).
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.logger = l } }

// WithNow sets the clock used to check the certificate's validity period.
func WithNow(now func() time.Time) Option { return func(o *options) { o.now = now } }

// WithGetenv sets the environment lookup used for $CREDENTIALS_DIRECTORY;
// it lets tests and embedders avoid touching the process environment.
func WithGetenv(getenv func(string) string) Option { return func(o *options) { o.getenv = getenv } }

// Key is a private key usable as a crypto.Signer, from a PEM file or a
// PKCS#11 token. It is safe for concurrent use.
type Key struct {
	backend keyBackend
}

// keyBackend is what PEM and PKCS#11 keys have in common.
type keyBackend interface {
	crypto.Signer
	sealer(ctx context.Context, label string) (Sealer, error)
	location() string
	close() error
}

// OpenKey opens a private key without a certificate: key is a PEM file path,
// a "pkcs11:" URI or a "tpm:" reference (package hsm/tpm). Close it when done.
func OpenKey(ctx context.Context, key string, opts ...Option) (*Key, error) {
	return openKey(ctx, key, nil, buildOptions(opts))
}

// openKey opens key; a PEM file holding several keys, or a token holding
// several keys with the URI's label, yields the one whose public key is want.
func openKey(ctx context.Context, key string, want crypto.PublicKey, o options) (*Key, error) {
	if tpm.IsURI(key) {
		b, err := openTPMFor(ctx, key, want, o)
		if err != nil {
			return nil, err
		}
		return &Key{backend: b}, nil
	}
	if IsURI(key) {
		u, err := ParseKeyURI(key)
		if err != nil {
			return nil, err
		}
		b, err := openPKCS11(ctx, u, o)
		if errors.Is(err, errAmbiguous) && want != nil {
			// Several keys share the label (for a while during a
			// certificate rotation): the certificate picks one.
			b, err = openMatching(ctx, u, want, o)
		}
		if err != nil {
			return nil, err
		}
		return &Key{backend: b}, nil
	}
	b, err := openPEMKey(key, want)
	if err != nil {
		return nil, err
	}
	return &Key{backend: b}, nil
}

// Public returns the public key.
func (k *Key) Public() crypto.PublicKey { return k.backend.Public() }

// Sign signs digest with the key; see crypto.Signer. PKCS#11 keys reopen
// their token once when it was removed or its sessions were lost.
func (k *Key) Sign(rand io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	return k.backend.Sign(rand, digest, opts)
}

// Location describes where the key lives, for display; it never holds a PIN.
func (k *Key) Location() string { return k.backend.location() }

// Sealer is an authenticated cipher for stored state: the methods of
// cipher.AEAD, except that Seal returns an error, since a key in a token can
// fail where cipher.AEAD.Seal could only panic.
type Sealer interface {
	// NonceSize is the size of the nonce Seal and Open take.
	NonceSize() int
	// Overhead is how much longer a sealed text is than its plaintext.
	Overhead() int
	// Seal encrypts and authenticates plaintext and additionalData and
	// appends the result to dst; see cipher.AEAD.Seal.
	Seal(dst, nonce, plaintext, additionalData []byte) ([]byte, error)
	// Open authenticates and decrypts; see cipher.AEAD.Open.
	Open(dst, nonce, ciphertext, additionalData []byte) ([]byte, error)
}

// Sealer returns the AES-256-GCM sealer for label; see Identity.Sealer.
func (k *Key) Sealer(ctx context.Context, label string) (Sealer, error) {
	return k.backend.sealer(ctx, label)
}

// Close releases the token sessions; PEM keys need nothing.
func (k *Key) Close() error { return k.backend.close() }

// Identity is a device certificate chain with its private key.
type Identity struct {
	key  *Key
	cert tls.Certificate
}

// Open loads the certificate chain in certFile and the private key named by
// key (a PEM file path or a "pkcs11:" URI), and checks that they belong
// together and that the certificate is valid now.
func Open(ctx context.Context, certFile, key string, opts ...Option) (*Identity, error) {
	o := buildOptions(opts)
	chain, err := loadChain(certFile)
	if err != nil {
		return nil, err
	}
	if err := checkValidity(certFile, chain[0], o.now()); err != nil {
		return nil, err
	}
	k, err := openKey(ctx, key, chain[0].PublicKey, o)
	if err != nil {
		return nil, err
	}
	if err := checkMatch(certFile, k.Location(), chain[0], k.Public()); err != nil {
		k.Close()
		return nil, err
	}
	der := make([][]byte, len(chain))
	for i, c := range chain {
		der[i] = c.Raw
	}
	return &Identity{key: k, cert: tls.Certificate{Certificate: der, PrivateKey: k, Leaf: chain[0]}}, nil
}

// Certificate returns the chain and key for tls.Config; Leaf is set and
// PrivateKey is a crypto.Signer.
func (id *Identity) Certificate() tls.Certificate { return id.cert }

// Leaf returns the device certificate.
func (id *Identity) Leaf() *x509.Certificate { return id.cert.Leaf }

// Key returns the private key.
func (id *Identity) Key() *Key { return id.key }

// KeyLocation describes where the key lives, for display; it never holds a PIN.
func (id *Identity) KeyLocation() string { return id.key.Location() }

// Sealer returns an AES-256-GCM sealer for stored state under label.
// For a PKCS#11 key the AES key lives in the token (sensitive, never
// extractable) and is generated there on first use; for a PEM key it is
// derived with HKDF-SHA256 from the private key, so it changes when the key
// is replaced and sealed data then reads as undecryptable, not as garbage.
// A token's Seal returns an error when the token fails even after a reopen.
func (id *Identity) Sealer(ctx context.Context, label string) (Sealer, error) {
	return id.key.Sealer(ctx, label)
}

// checkPublicKey is the one key-type policy, for PEM and token keys alike:
// what AWS IoT accepts for device certificates.
func checkPublicKey(pub crypto.PublicKey) error {
	switch p := pub.(type) {
	case *ecdsa.PublicKey:
		if p.Curve == elliptic.P256() || p.Curve == elliptic.P384() {
			return nil
		}
		return fmt.Errorf("EC curve %s not supported; use P-256 or P-384", p.Curve.Params().Name)
	case *rsa.PublicKey:
		if p.N.BitLen() >= 2048 {
			return nil
		}
		return fmt.Errorf("RSA %d bits is too short; use 2048 or more", p.N.BitLen())
	default:
		return fmt.Errorf("key type %T not supported; use EC P-256/P-384 or RSA", pub)
	}
}

// Close releases the token sessions.
func (id *Identity) Close() error { return id.key.Close() }
