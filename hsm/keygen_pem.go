package hsm

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"

	"github.com/tetherd/tether/platform/atomicfile"
)

// GeneratePEMKey creates a key of type kt in a new PEM file (PKCS#8, mode
// 0600) and returns its public key. The file appears complete or not at
// all: it is written beside path, synced and linked into place. An existing file is
// never overwritten.
func GeneratePEMKey(path string, kt KeyType) (crypto.PublicKey, error) {
	var key crypto.Signer
	var err error
	switch kt {
	case KeyECP256, "":
		key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case KeyECP384:
		key, err = ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	case KeyRSA2048:
		key, err = rsa.GenerateKey(rand.Reader, 2048)
	default:
		return nil, fmt.Errorf("keygen: key type %q: want ec-p256, ec-p384 or rsa-2048", kt)
	}
	if err != nil {
		return nil, fmt.Errorf("keygen %s: %w", path, err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("keygen %s: %w", path, err)
	}
	data := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	clear(der)
	if _, err := os.Lstat(path); err == nil {
		return nil, fmt.Errorf("keygen: %s already exists; tether never overwrites a key file", path)
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("keygen: %w", err)
	}
	// Create links, not renames: it fails instead of replacing a key file
	// that appeared meanwhile. It writes mode 0600.
	err = atomicfile.Create(path, data, 0o600)
	clear(data)
	if err != nil {
		return nil, fmt.Errorf("keygen %s: %w", path, err)
	}
	return key.Public(), nil
}

// AppendPEMKey adds the key in src to the key file dst (atomically, mode
// 0600), unless dst holds it already. During a certificate rotation the key
// file holds both keys, so that the certificate file alone decides which
// identity opens.
func AppendPEMKey(dst, src string) error {
	k, err := openPEMKey(src, nil)
	if err != nil {
		return err
	}
	blocks, err := pemKeyBlocks(dst)
	if err != nil {
		return err
	}
	for _, b := range blocks {
		if b.matches(k.signer.Public()) {
			return nil
		}
	}
	var out []byte
	for _, b := range blocks {
		out = append(out, b.raw...)
	}
	out = append(out, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: k.pkcs8})...)
	return replaceKeyFile(dst, out)
}

// KeepPEMKey rewrites the key file so that it holds only the key for pub,
// ending a rotation's overlap. It does nothing when that is all it holds,
// and refuses when the file does not hold that key.
func KeepPEMKey(file string, pub crypto.PublicKey) error {
	blocks, err := pemKeyBlocks(file)
	if err != nil {
		return err
	}
	for _, b := range blocks {
		if b.matches(pub) {
			if len(blocks) == 1 {
				return nil
			}
			return replaceKeyFile(file, b.raw)
		}
	}
	return fmt.Errorf("%w: private key %s does not hold the key of the certificate; nothing removed", ErrBadKey, file)
}

type pemKeyBlock struct {
	raw []byte
	pub crypto.PublicKey
}

func (b pemKeyBlock) matches(pub crypto.PublicKey) bool {
	eq, ok := b.pub.(interface{ Equal(crypto.PublicKey) bool })
	return ok && eq.Equal(pub)
}

// pemKeyBlocks returns the private keys of a PEM file, each re-encoded.
func pemKeyBlocks(file string) ([]pemKeyBlock, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("%w: private key %s: %w", ErrBadKey, file, err)
	}
	var out []pemKeyBlock
	for rest := data; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		key, ok, err := parseKeyBlock(file, b)
		if err != nil {
			return nil, err
		}
		if !ok {
			continue
		}
		s, ok := key.(crypto.Signer)
		if !ok {
			return nil, fmt.Errorf("%w: private key %s: unsupported key type %T", ErrBadKey, file, key)
		}
		out = append(out, pemKeyBlock{raw: pem.EncodeToMemory(b), pub: s.Public()})
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: private key %s holds no private key", ErrBadKey, file)
	}
	return out, nil
}

// replaceKeyFile writes data over file atomically with mode 0600.
func replaceKeyFile(file string, data []byte) error {
	err := atomicfile.WriteFile(file, data, 0o600)
	clear(data)
	if err != nil {
		return fmt.Errorf("private key %s: %w", file, err)
	}
	return nil
}
