package hsmtest

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tetherd/tether/hsm"
)

// Token is a SoftHSM2 token initialised for one test.
type Token struct {
	// Module is the SoftHSM2 PKCS#11 library.
	Module string
	// Conf is the SOFTHSM2_CONF file; TokenDir is its directories.tokendir.
	Conf, TokenDir string
	// Label is the token label; PINFile holds the user PIN (mode 0600).
	Label, PINFile string

	server string // the p11-kit server's socket, once ServerURI started it
}

// ModuleEnv names the environment variable that points NewToken at another
// SoftHSM2 build, e.g. the arm64 one unpacked for softhsm-test/arm64-test.sh.
const ModuleEnv = "HSMTEST_SOFTHSM2_MODULE"

// NewToken initialises a token labelled label. It fails the test, naming the
// Debian package, when SoftHSM2 is not installed.
func NewToken(t testing.TB, label string) *Token {
	t.Helper()
	module := hsm.DefaultModule
	if m := os.Getenv(ModuleEnv); m != "" {
		module = m
	}
	if _, err := os.Stat(module); err != nil {
		t.Fatalf("hsmtest: %s missing: install the Debian package softhsm2 (apt-get install softhsm2)", module)
	}
	dir := t.TempDir()
	tk := &Token{
		Module:   module,
		Conf:     filepath.Join(dir, "softhsm2.conf"),
		TokenDir: filepath.Join(dir, "tokens"),
		Label:    label,
		PINFile:  filepath.Join(dir, "pin"),
	}
	if err := os.Mkdir(tk.TokenDir, 0o700); err != nil {
		t.Fatal(err)
	}
	conf := fmt.Sprintf("directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n", tk.TokenDir)
	if err := os.WriteFile(tk.Conf, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("SOFTHSM2_CONF", tk.Conf)
	pin, soPIN := randomPIN(t), randomPIN(t)
	if err := os.WriteFile(tk.PINFile, []byte(pin+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := initToken(tk, soPIN, pin); err != nil {
		t.Fatalf("hsmtest: init token %q: %v", label, err)
	}
	return tk
}

func randomPIN(t testing.TB) string {
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// ChangePIN sets a new random user PIN on the token (C_SetPIN) while keys
// are open, as an operator rotating the PIN would, and writes it to
// PINFile. Keys opened before keep the old PIN in memory.
func (tk *Token) ChangePIN(t testing.TB) {
	t.Helper()
	old, err := os.ReadFile(tk.PINFile)
	if err != nil {
		t.Fatal(err)
	}
	pin := randomPIN(t)
	if err := tk.setPIN(strings.TrimSpace(string(old)), pin); err != nil {
		t.Fatalf("hsmtest: C_SetPIN: %v", err)
	}
	if err := os.WriteFile(tk.PINFile, []byte(pin+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
}

// URI returns the RFC 7512 URI of object in the token, with module-path and
// pin-source=file: set.
func (tk *Token) URI(object string) string {
	return "pkcs11:token=" + url.PathEscape(tk.Label) + ";object=" + url.PathEscape(object) +
		"?module-path=" + tk.Module + "&pin-source=file:" + tk.PINFile
}

// GenerateKey creates a key pair labelled object in the token with
// hsm.GenerateKey and returns its URI and public key.
func (tk *Token) GenerateKey(t testing.TB, object string, kt hsm.KeyType) (string, crypto.PublicKey) {
	t.Helper()
	uri := tk.URI(object)
	pub, err := hsm.GenerateKey(context.Background(), uri, kt)
	if err != nil {
		t.Fatalf("hsmtest: generate %s key %q: %v", kt, object, err)
	}
	return uri, pub
}

// Remove moves the token's files away, as if the token had been unplugged;
// Restore puts them back.
func (tk *Token) Remove(t testing.TB) {
	t.Helper()
	if err := os.Rename(tk.TokenDir, tk.TokenDir+".removed"); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(tk.TokenDir, 0o700); err != nil {
		t.Fatal(err)
	}
}

// Restore undoes Remove.
func (tk *Token) Restore(t testing.TB) {
	t.Helper()
	if err := os.Remove(tk.TokenDir); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tk.TokenDir+".removed", tk.TokenDir); err != nil {
		t.Fatal(err)
	}
}

// Certificate issues a certificate for pub signed by issuer (a CA
// certificate and its key), or self-signed when issuer is nil with signer
// as the key, and writes it as PEM into a file in t.TempDir(). It returns
// the file and the certificate.
func Certificate(t testing.TB, cn string, pub crypto.PublicKey, issuer *x509.Certificate, signer crypto.Signer, notBefore, notAfter time.Time) (string, *x509.Certificate) {
	t.Helper()
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  issuer == nil,
		DNSNames:              []string{"localhost"},
	}
	parent := issuer
	if parent == nil {
		parent = tmpl
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, signer)
	if err != nil {
		t.Fatalf("hsmtest: certificate %q: %v", cn, err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.CreateTemp(t.TempDir(), "cert-*.pem")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := pem.Encode(f, &pem.Block{Type: "CERTIFICATE", Bytes: der}); err != nil {
		t.Fatal(err)
	}
	return f.Name(), c
}
