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

// benchIdentity is one EC P-256 identity of the benchmarks.
type benchIdentity struct {
	name string
	id   *hsm.Identity
}

// benchBackends returns the same SoftHSM key through every backend of this
// build (in-process as "cgo" when cgo is on, then "p11kit-remote" and
// "p11kit-server"), and a PEM key, the baseline, last.
func benchBackends(b *testing.B) []benchIdentity {
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
	uris := []struct{ name, uri string }{
		{"p11kit-remote", tk.RemoteURI("device")},
		{"p11kit-server", tk.ServerURI(b, "device")},
	}
	if hsm.PKCS11InProcess {
		uris = append([]struct{ name, uri string }{{"cgo", uri}}, uris...)
	}
	var out []benchIdentity
	for _, u := range uris {
		id, err := hsm.Open(ctx, certFile, u.uri)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { id.Close() })
		out = append(out, benchIdentity{u.name, id})
	}

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
	pemID, err := hsm.Open(ctx, pemCert, keyFile)
	if err != nil {
		b.Fatal(err)
	}
	return append(out, benchIdentity{"pem", pemID})
}

// ratios reports each identity's figure and its ratio to the PEM key's
// and, when present, to the in-process (cgo) token's.
func ratios(b *testing.B, ids []benchIdentity, per []float64, unit string) {
	base := map[string]float64{}
	for i, id := range ids {
		b.ReportMetric(per[i], id.name+"-"+unit)
		base[id.name] = per[i]
	}
	for i, id := range ids {
		if id.name == "pem" {
			continue
		}
		b.ReportMetric(per[i]/base["pem"], id.name+"/pem")
		if c, ok := base["cgo"]; ok && id.name != "cgo" {
			b.ReportMetric(per[i]/c, id.name+"/cgo")
		}
	}
}

// BenchmarkTLSHandshakeP11Kit times full TLS 1.3 mutual-auth handshakes
// over loopback with the client key in SoftHSM, in-process (cgo builds) and
// through p11-kit remote and server, and, as the baseline in the same run,
// in a PEM file, interleaved. X/pem is the cost factor of path X, X/cgo
// its cost against the in-process token.
func BenchmarkTLSHandshakeP11Kit(b *testing.B) {
	ids := benchBackends(b)
	all := make([]*hsm.Identity, len(ids))
	for i, id := range ids {
		all[i] = id.id
	}
	handshake := handshakeServer(b, all...)
	total := make([]time.Duration, len(ids))
	b.ResetTimer()
	for b.Loop() {
		for i, id := range ids {
			total[i] += handshake(id.id)
		}
	}
	per := make([]float64, len(ids))
	for i := range ids {
		per[i] = float64(total[i].Nanoseconds()) / float64(b.N)
	}
	ratios(b, ids, per, "ns/handshake")
}

// BenchmarkSignP11Kit measures ECDSA P-256 signatures per second in
// SoftHSM through each backend, with 1 and (for the tokens) 4 concurrent
// signers, against the PEM key in the same run.
func BenchmarkSignP11Kit(b *testing.B) {
	ids := benchBackends(b)
	one := make([]float64, len(ids))
	four := make([]float64, len(ids))
	b.ResetTimer()
	for b.Loop() {
		for i, id := range ids {
			one[i] += signRate(b, id.id.Key(), 1, 100)
			if id.name != "pem" {
				four[i] += signRate(b, id.id.Key(), 4, 100)
			}
		}
	}
	for i := range ids {
		one[i] /= float64(b.N)
		four[i] /= float64(b.N)
		if ids[i].name != "pem" {
			b.ReportMetric(four[i]/one[i], ids[i].name+"-4/1")
		}
	}
	ratios(b, ids, one, "sig/s")
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
