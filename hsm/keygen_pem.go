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
	"path/filepath"
)

// GeneratePEMKey creates a key of type kt in a new PEM file (PKCS#8, mode
// 0600) and returns its public key. The file appears complete or not at
// all: it is written beside path, synced and renamed. An existing file is
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
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return nil, fmt.Errorf("keygen: cannot write in %s: %w", dir, err)
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.Write(data)
	clear(data)
	if err == nil {
		err = tmp.Sync() // CreateTemp made it 0600
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		// Link, not rename: it fails instead of replacing a file that
		// appeared meanwhile.
		err = os.Link(tmp.Name(), path)
	}
	if err == nil {
		var d *os.File
		if d, err = os.Open(dir); err == nil {
			err = d.Sync()
			d.Close()
		}
	}
	if err != nil {
		return nil, fmt.Errorf("keygen %s: %w", path, err)
	}
	return key.Public(), nil
}
