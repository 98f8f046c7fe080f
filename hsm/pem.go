package hsm

import (
	"bytes"
	"context"
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/sha256"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/tetherd/tether/hsm/tpm"
	"github.com/tetherd/tether/platform/secretfile"
)

// loadChain reads every CERTIFICATE block of file; the first is the leaf.
func loadChain(file string) ([]*x509.Certificate, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("%w: certificate %s: %w", ErrBadKey, file, err)
	}
	var chain []*x509.Certificate
	rest := data
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			if len(chain) == 0 && isKeyBlock(b.Type) {
				return nil, fmt.Errorf("%w: certificate %s holds a %s, not a certificate; is it the key file?", ErrBadKey, file, b.Type)
			}
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%w: certificate %s, block %d: %w", ErrBadKey, file, len(chain)+1, err)
		}
		chain = append(chain, c)
	}
	if len(chain) == 0 {
		return nil, fmt.Errorf("%w: certificate %s: no PEM \"CERTIFICATE\" block found; want the device certificate in PEM (-----BEGIN CERTIFICATE-----)", ErrBadKey, file)
	}
	return chain, nil
}

func isKeyBlock(t string) bool {
	switch t {
	case "PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY", "ENCRYPTED PRIVATE KEY":
		return true
	}
	return false
}

// checkValidity refuses a certificate outside its validity period: AWS IoT
// would refuse it too, with a far less helpful TLS alert.
func checkValidity(file string, c *x509.Certificate, now time.Time) error {
	const layout = "2006-01-02 15:04:05 UTC"
	nb, na := c.NotBefore.UTC().Format(layout), c.NotAfter.UTC().Format(layout)
	switch {
	case now.Before(c.NotBefore):
		return fmt.Errorf("%w: certificate %s is not valid yet: NotBefore %s, NotAfter %s, now %s; check the system clock (NTP) or the certificate", ErrBadKey, file, nb, na, now.UTC().Format(layout))
	case now.After(c.NotAfter):
		return fmt.Errorf("%w: certificate %s expired: NotBefore %s, NotAfter %s, now %s; install a renewed certificate", ErrBadKey, file, nb, na, now.UTC().Format(layout))
	}
	return nil
}

// checkMatch refuses a key that is not the certificate's.
func checkMatch(certFile, keyLoc string, leaf *x509.Certificate, pub crypto.PublicKey) error {
	k, ok := pub.(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !k.Equal(leaf.PublicKey) {
		return fmt.Errorf("%w: private key %s does not match certificate %s (subject %q); pair the certificate with the key it was issued for", ErrBadKey, keyLoc, certFile, leaf.Subject.String())
	}
	return nil
}

// pemKey is a private key loaded from a PEM file.
type pemKey struct {
	file   string
	signer crypto.Signer
	pkcs8  []byte
}

// openPEMKey reads a PKCS#1, PKCS#8 or SEC1 private key. The file must not
// be readable by group or others, since it is the device's identity. A file
// may hold several keys (for a while during a certificate rotation): the one
// whose public key is want is chosen, else the first.
func openPEMKey(file string, want crypto.PublicKey) (*pemKey, error) {
	if err := secretfile.Check(file); err != nil {
		return nil, fmt.Errorf("%w: private key: %w", ErrBadKey, err)
	}
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("%w: private key %s: %w", ErrBadKey, file, err)
	}
	rest := data
	var first *pemKey
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type == tpm.KeyFilePEMType {
			return nil, fmt.Errorf("%w: private key %s is a TPM key file (TSS2 PRIVATE KEY); write private_key = \"tpm:file=%s\" (see docs/tpm.md)", ErrBadKey, file, file)
		}
		if b.Type == "ENCRYPTED PRIVATE KEY" || b.Headers["Proc-Type"] == "4,ENCRYPTED" {
			return nil, fmt.Errorf("%w: private key %s is encrypted; tether needs it unencrypted with mode 0600 (openssl pkey -in %s -out NEW), or keep it in a PKCS#11 token", ErrBadKey, file, file)
		}
		key, ok, err := parseKeyBlock(file, b)
		if err != nil {
			return nil, err
		}
		if !ok {
			continue
		}
		signer, err := signerOf(file, key)
		if err != nil {
			return nil, err
		}
		der, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			return nil, fmt.Errorf("%w: private key %s: %w", ErrBadKey, file, err)
		}
		k := &pemKey{file: file, signer: signer, pkcs8: der}
		if eq, ok := signer.Public().(interface{ Equal(crypto.PublicKey) bool }); want == nil || (ok && eq.Equal(want)) {
			return k, nil
		}
		if first == nil {
			first = k
		}
	}
	if first != nil {
		return first, nil
	}
	if bytes.Contains(data, []byte("-----BEGIN")) {
		return nil, fmt.Errorf("%w: private key %s: no PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY block; is it the certificate file?", ErrBadKey, file)
	}
	return nil, fmt.Errorf("%w: private key %s: no PEM block found; want a PEM private key (PKCS#8, PKCS#1 or SEC1)", ErrBadKey, file)
}

// signerOf returns key as a signer when it is of a type and size that
// checkPublicKey accepts.
func signerOf(file string, key any) (crypto.Signer, error) {
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("%w: private key %s: key type %T not supported; use EC P-256/P-384 or RSA", ErrBadKey, file, key)
	}
	if err := checkPublicKey(signer.Public()); err != nil {
		return nil, fmt.Errorf("%w: private key %s: %w", ErrBadKey, file, err)
	}
	return signer, nil
}

func (k *pemKey) Public() crypto.PublicKey { return k.signer.Public() }

func (k *pemKey) Sign(rand io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	return k.signer.Sign(rand, digest, opts)
}

func (k *pemKey) location() string { return k.file }
func (k *pemKey) close() error     { return nil }

// sealer derives the AES-256 key from the private key so nothing else needs
// storing; the label separates keys for different uses.
func (k *pemKey) sealer(_ context.Context, label string) (Sealer, error) {
	a, err := derivedAEAD(k.pkcs8, label)
	if err != nil {
		return nil, err
	}
	return aeadSealer{a}, nil
}

// aeadSealer is a cipher.AEAD in memory as a Sealer: its Seal cannot fail.
type aeadSealer struct{ cipher.AEAD }

func (a aeadSealer) Seal(dst, nonce, plaintext, additionalData []byte) ([]byte, error) {
	return a.AEAD.Seal(dst, nonce, plaintext, additionalData), nil
}

func derivedAEAD(secret []byte, label string) (cipher.AEAD, error) {
	key, err := hkdf.Key(sha256.New, secret, nil, label, 32)
	if err != nil {
		return nil, fmt.Errorf("sealer %q: %w", label, err)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("sealer %q: %w", label, err)
	}
	return cipher.NewGCM(block)
}

// parseKeyBlock parses one PEM block holding a private key (PKCS#8, PKCS#1 or
// SEC1); ok is false for blocks that hold none ("EC PARAMETERS" from openssl
// ecparam -genkey, certificates bundled with the key), which are skipped.
func parseKeyBlock(file string, b *pem.Block) (key any, ok bool, err error) {
	switch b.Type {
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(b.Bytes)
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(b.Bytes)
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(b.Bytes)
	default:
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("%w: private key %s: %s block: %w", ErrBadKey, file, b.Type, err)
	}
	return key, true, nil
}
