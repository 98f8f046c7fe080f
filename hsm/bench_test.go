//go:build cgo && !nopkcs11

package hsm_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/tetherd/tether/hsm"
	"github.com/tetherd/tether/hsm/hsmtest"
)

// benchIdentities returns a token identity and a PEM identity, both EC P-256.
func benchIdentities(b *testing.B) (token, pemID *hsm.Identity) {
	b.Helper()
	ctx := context.Background()
	tk := hsmtest.NewToken(b, "bench")
	uri, pub := tk.GenerateKey(b, "device", hsm.KeyECP256)
	k, err := hsm.OpenKey(ctx, uri)
	if err != nil {
		b.Fatal(err)
	}
	now := time.Now()
	certFile, _ := hsmtest.Certificate(b, "token", pub, nil, k, now.Add(-time.Hour), now.Add(time.Hour))
	k.Close()
	if token, err = hsm.Open(ctx, certFile, uri); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { token.Close() })

	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	der, _ := x509.MarshalPKCS8PrivateKey(priv)
	keyFile := filepath.Join(b.TempDir(), "device.key")
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		b.Fatal(err)
	}
	pemCert, _ := hsmtest.Certificate(b, "pem", priv.Public(), nil, priv, now.Add(-time.Hour), now.Add(time.Hour))
	if pemID, err = hsm.Open(ctx, pemCert, keyFile); err != nil {
		b.Fatal(err)
	}
	return token, pemID
}

// BenchmarkTLSHandshake times full TLS 1.3 mutual-auth handshakes over
// loopback with the client key in SoftHSM and, as the baseline in the same
// run, in a PEM file. token/pem is the cost factor of the token.
func BenchmarkTLSHandshake(b *testing.B) {
	token, pemID := benchIdentities(b)
	handshake := handshakeServer(b, token, pemID)
	var tTok, tPEM time.Duration
	b.ResetTimer()
	for b.Loop() {
		tPEM += handshake(pemID)
		tTok += handshake(token)
	}
	n := float64(b.N)
	b.ReportMetric(float64(tPEM.Nanoseconds())/n, "pem-ns/handshake")
	b.ReportMetric(float64(tTok.Nanoseconds())/n, "token-ns/handshake")
	b.ReportMetric(float64(tTok)/float64(tPEM), "token/pem")
}

// BenchmarkSign measures ECDSA P-256 signatures per second in SoftHSM with
// 1 and 4 concurrent signers, against the PEM key in the same run.
func BenchmarkSign(b *testing.B) {
	token, pemID := benchIdentities(b)
	var tok1, tok4, pem1 float64
	b.ResetTimer()
	for b.Loop() {
		tok1 += signRate(b, token.Key(), 1, 200)
		tok4 += signRate(b, token.Key(), 4, 200)
		pem1 += signRate(b, pemID.Key(), 1, 200)
	}
	n := float64(b.N)
	b.ReportMetric(tok1/n, "token-sig/s-1")
	b.ReportMetric(tok4/n, "token-sig/s-4")
	b.ReportMetric(pem1/n, "pem-sig/s-1")
	b.ReportMetric(tok4/tok1, "token-4/1")
	b.ReportMetric(pem1/tok1, "pem/token")
}
