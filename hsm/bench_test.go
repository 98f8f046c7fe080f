//go:build cgo && !nopkcs11

package hsm_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"sync"
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

// handshakeServer starts a loopback TLS server that requires and verifies
// the client certificates of ids, and returns a function that times one
// TLS 1.3 handshake with one of them as the client.
func handshakeServer(b *testing.B, ids ...*hsm.Identity) func(*hsm.Identity) time.Duration {
	srvKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	now := time.Now()
	_, srvCert := hsmtest.Certificate(b, "localhost", srvKey.Public(), nil, srvKey, now.Add(-time.Hour), now.Add(time.Hour))
	roots := x509.NewCertPool()
	roots.AddCert(srvCert)
	clientCAs := x509.NewCertPool()
	for _, id := range ids {
		clientCAs.AddCert(id.Leaf())
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{srvCert.Raw}, PrivateKey: srvKey, Leaf: srvCert}},
		ClientAuth:   tls.RequireAndVerifyClientCert, ClientCAs: clientCAs,
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				c.(*tls.Conn).Handshake()
				c.Close()
			}()
		}
	}()
	return func(id *hsm.Identity) time.Duration {
		start := time.Now()
		c, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{
			RootCAs: roots, ServerName: "localhost", MinVersion: tls.VersionTLS13,
			Certificates: []tls.Certificate{id.Certificate()},
		})
		if err != nil {
			b.Fatal(err)
		}
		// The client's CertificateVerify is checked once the server reads it.
		if _, err := c.Read(make([]byte, 1)); err != nil && err.Error() != "EOF" {
			b.Fatal(err)
		}
		c.Close()
		return time.Since(start)
	}
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

// signRate is the number of ECDSA-SHA256 signatures per second s makes
// with workers concurrent signers sharing total signatures.
func signRate(b *testing.B, s crypto.Signer, workers, total int) float64 {
	digest := sha256.Sum256([]byte("tether"))
	var wg sync.WaitGroup
	start := time.Now()
	for w := range workers {
		n := total / workers
		if w < total%workers {
			n++
		}
		wg.Go(func() {
			for range n {
				if _, err := s.Sign(rand.Reader, digest[:], crypto.SHA256); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	return float64(total) / time.Since(start).Seconds()
}
