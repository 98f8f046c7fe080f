package tpm_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/sha256"
	"os"
	"path/filepath"
	"testing"

	"github.com/tetherd/tether/hsm/tpm"
	"github.com/tetherd/tether/hsm/tpm/tpmtest"
)

func ref(t *testing.T, s string) *tpm.URI {
	t.Helper()
	u, err := tpm.ParseURI(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func verify(t *testing.T, k *tpm.Key) {
	t.Helper()
	d := sha256.Sum256([]byte("hello"))
	switch p := k.Public().(type) {
	case *ecdsa.PublicKey:
		sig, err := k.Sign(nil, d[:], crypto.SHA256)
		if err != nil {
			t.Fatal(err)
		}
		if !ecdsa.VerifyASN1(p, d[:], sig) {
			t.Fatal("ECDSA signature does not verify")
		}
	case *rsa.PublicKey:
		opts := &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: crypto.SHA256}
		sig, err := k.Sign(nil, d[:], opts)
		if err != nil {
			t.Fatal(err)
		}
		if err := rsa.VerifyPSS(p, crypto.SHA256, d[:], sig, opts); err != nil {
			t.Fatalf("RSA-PSS: %v", err)
		}
		sig, err = k.Sign(nil, d[:], crypto.SHA256)
		if err != nil {
			t.Fatal(err)
		}
		if err := rsa.VerifyPKCS1v15(p, crypto.SHA256, d[:], sig); err != nil {
			t.Fatalf("RSA PKCS#1 v1.5: %v", err)
		}
	default:
		t.Fatalf("public key %T", p)
	}
}

// Ensures that key files made by OpenSSL's tpm2 provider load and sign.
func TestOpenSSLKeyFiles(t *testing.T) {
	sim := tpmtest.Start(t)
	dir := t.TempDir()
	sim.Tools(func(tcti string) {
		tpmtest.Run(t, tcti, "openssl", "genpkey", "-provider", "tpm2", "-provider", "default", "-algorithm", "EC", "-pkeyopt", "group:P-256", "-out", filepath.Join(dir, "ec.tss2"))
		tpmtest.Run(t, tcti, "openssl", "genpkey", "-provider", "tpm2", "-provider", "default", "-algorithm", "RSA", "-pkeyopt", "bits:2048", "-out", filepath.Join(dir, "rsa.tss2"))
	})
	for _, name := range []string{"ec.tss2", "rsa.tss2"} {
		t.Run(name, func(t *testing.T) {
			f := filepath.Join(dir, name)
			os.Chmod(f, 0o600)
			k, err := tpm.Open(context.Background(), ref(t, "tpm:file="+f+"?device="+sim.Socket), nil)
			if err != nil {
				t.Fatal(err)
			}
			defer k.Close()
			verify(t, k)
		})
	}
}
