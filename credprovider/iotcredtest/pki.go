package iotcredtest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// KeyType selects the kind of key NewDevice generates.
type KeyType int

const (
	// ECDSAP256 is what AWS IoT's CreateKeysAndCertificate issues.
	ECDSAP256 KeyType = iota
	// RSA2048 is the other common device key.
	RSA2048
)

// PKI is an in-memory test certificate authority with a server certificate
// for 127.0.0.1, ::1 and localhost. Everything is generated fresh; nothing
// is trusted by the system.
type PKI struct {
	CA    *x509.Certificate
	CAKey crypto.Signer
	CAPEM []byte
	// Server is the certificate (chain + key) the simulator presents.
	Server        tls.Certificate
	ServerCertPEM []byte
	ServerKeyPEM  []byte
}

// Device is a device identity issued by a PKI.
type Device struct {
	Name    string
	Cert    *x509.Certificate
	CertPEM []byte
	Key     crypto.Signer
	// KeyPEM is the PKCS#8 private key, nil when Key is not a software key
	// (e.g. it lives in an HSM).
	KeyPEM []byte
}

// NewPKI generates a CA (ECDSA P-256, valid from an hour ago for ten years)
// and a server certificate for 127.0.0.1, ::1 and localhost.
func NewPKI() (*PKI, error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("iotcredtest: CA key: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{Organization: []string{"tether test"}, CommonName: "tether test CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.AddDate(10, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            0,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, caKey.Public(), caKey)
	if err != nil {
		return nil, fmt.Errorf("iotcredtest: CA certificate: %w", err)
	}
	ca, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("iotcredtest: CA certificate: %w", err)
	}
	p := &PKI{CA: ca, CAKey: caKey, CAPEM: pemCert(der)}

	srvKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("iotcredtest: server key: %w", err)
	}
	srv := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{Organization: []string{"tether test"}, CommonName: "localhost"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.AddDate(1, 0, 0),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}
	srvDER, err := x509.CreateCertificate(rand.Reader, srv, ca, srvKey.Public(), caKey)
	if err != nil {
		return nil, fmt.Errorf("iotcredtest: server certificate: %w", err)
	}
	p.ServerCertPEM = pemCert(srvDER)
	if p.ServerKeyPEM, err = pemKey(srvKey); err != nil {
		return nil, err
	}
	leaf, _ := x509.ParseCertificate(srvDER)
	p.Server = tls.Certificate{Certificate: [][]byte{srvDER, der}, PrivateKey: srvKey, Leaf: leaf}
	return p, nil
}

// Pool returns a new pool holding the CA, to trust the server or verify
// devices.
func (p *PKI) Pool() *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AddCert(p.CA)
	return pool
}

// Sign issues a device (client-auth) certificate with common name name for
// pub, e.g. the public key of a key pair generated inside a PKCS#11 token.
func (p *PKI) Sign(name string, pub crypto.PublicKey) (*x509.Certificate, error) {
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{Organization: []string{"tether test"}, CommonName: name},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.AddDate(1, 0, 0),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.CA, pub, p.CAKey)
	if err != nil {
		return nil, fmt.Errorf("iotcredtest: device certificate for %q: %w", name, err)
	}
	return x509.ParseCertificate(der)
}

// IssueDevice issues a device certificate for key. KeyPEM is filled in for
// ECDSA, RSA and Ed25519 software keys.
func (p *PKI) IssueDevice(name string, key crypto.Signer) (*Device, error) {
	if key == nil {
		return nil, errors.New("iotcredtest: IssueDevice: key is nil (use NewDevice to generate one)")
	}
	cert, err := p.Sign(name, key.Public())
	if err != nil {
		return nil, err
	}
	d := &Device{Name: name, Cert: cert, CertPEM: pemCert(cert.Raw), Key: key}
	switch key.(type) {
	case *ecdsa.PrivateKey, *rsa.PrivateKey, ed25519.PrivateKey:
		if d.KeyPEM, err = pemKey(key); err != nil {
			return nil, err
		}
	}
	return d, nil
}

// NewDevice generates a key of type kt and issues a certificate for it.
func (p *PKI) NewDevice(name string, kt KeyType) (*Device, error) {
	var key crypto.Signer
	var err error
	switch kt {
	case ECDSAP256:
		key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case RSA2048:
		key, err = rsa.GenerateKey(rand.Reader, 2048)
	default:
		return nil, fmt.Errorf("iotcredtest: NewDevice: unknown KeyType %d", kt)
	}
	if err != nil {
		return nil, fmt.Errorf("iotcredtest: device key for %q: %w", name, err)
	}
	return p.IssueDevice(name, key)
}

// TLSCertificate returns the identity for tls.Config or IoTOptions.
func (d *Device) TLSCertificate() tls.Certificate {
	return tls.Certificate{Certificate: [][]byte{d.Cert.Raw}, PrivateKey: d.Key, Leaf: d.Cert}
}

// WriteFiles writes NAME.crt (0644) and, for software keys, NAME.key (0600)
// into dir and returns their paths (keyFile is "" without KeyPEM).
func (d *Device) WriteFiles(dir string) (certFile, keyFile string, err error) {
	certFile = filepath.Join(dir, d.Name+".crt")
	if err := os.WriteFile(certFile, d.CertPEM, 0o644); err != nil {
		return "", "", fmt.Errorf("iotcredtest: %w", err)
	}
	if d.KeyPEM == nil {
		return certFile, "", nil
	}
	keyFile = filepath.Join(dir, d.Name+".key")
	if err := os.WriteFile(keyFile, d.KeyPEM, 0o600); err != nil {
		return "", "", fmt.Errorf("iotcredtest: %w", err)
	}
	return certFile, keyFile, nil
}

// WriteFiles writes ca.crt, server.crt and server.key (0600) into dir.
func (p *PKI) WriteFiles(dir string) error {
	for _, f := range []struct {
		name string
		data []byte
		mode os.FileMode
	}{
		{"ca.crt", p.CAPEM, 0o644},
		{"server.crt", p.ServerCertPEM, 0o644},
		{"server.key", p.ServerKeyPEM, 0o600},
	} {
		if err := os.WriteFile(filepath.Join(dir, f.name), f.data, f.mode); err != nil {
			return fmt.Errorf("iotcredtest: %w", err)
		}
	}
	return nil
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	return n.Add(n, big.NewInt(1))
}

func pemCert(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func pemKey(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("iotcredtest: encode private key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}
