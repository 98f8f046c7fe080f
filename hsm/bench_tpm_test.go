//go:build cgo && !nopkcs11

package hsm_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/tetherd/tether/hsm"
	"github.com/tetherd/tether/hsm/hsmtest"
	"github.com/tetherd/tether/hsm/tpm"
	"github.com/tetherd/tether/hsm/tpm/tpmtest"
)

// benchTPMIdentity returns an EC P-256 identity whose key is in a swtpm
// simulator (with a PIN, as on a gateway).
func benchTPMIdentity(b *testing.B) *hsm.Identity {
	b.Helper()
	ctx := context.Background()
	sim := tpmtest.Start(b)
	dir := b.TempDir()
	pin := filepath.Join(dir, "pin")
	if err := os.WriteFile(pin, []byte("1234"), 0o600); err != nil {
		b.Fatal(err)
	}
	ref := fmt.Sprintf("tpm:file=%s?device=%s&pin-source=file:%s", filepath.Join(dir, "device.tss2"), sim.Socket, pin)
	pub, err := hsm.GenerateTPMKey(ctx, ref, tpm.ECP256)
	if err != nil {
		b.Fatal(err)
	}
	k, err := hsm.OpenKey(ctx, ref)
	if err != nil {
		b.Fatal(err)
	}
	now := time.Now()
	certFile, _ := hsmtest.Certificate(b, "tpm", pub, nil, k, now.Add(-time.Hour), now.Add(time.Hour))
	k.Close()
	id, err := hsm.Open(ctx, certFile, ref)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { id.Close() })
	return id
}

// BenchmarkTLSHandshakeTPM times TLS 1.3 mutual-auth handshakes with the
// client key in a TPM (swtpm, pure Go through go-tpm), in SoftHSM through
// cgo PKCS#11 and in a PEM file, interleaved in the same run: tpm/pem and
// tpm/token are the cost factors. swtpm signs in software on this machine;
// a hardware TPM takes tens of milliseconds per signature (docs/tpm.md).
func BenchmarkTLSHandshakeTPM(b *testing.B) {
	token, pemID := benchIdentities(b)
	tpmID := benchTPMIdentity(b)
	handshake := handshakeServer(b, token, pemID, tpmID)
	var tTPM, tTok, tPEM time.Duration
	b.ResetTimer()
	for b.Loop() {
		tPEM += handshake(pemID)
		tTok += handshake(token)
		tTPM += handshake(tpmID)
	}
	n := float64(b.N)
	b.ReportMetric(float64(tTPM.Nanoseconds())/n, "tpm-ns/handshake")
	b.ReportMetric(float64(tTPM)/float64(tPEM), "tpm/pem")
	b.ReportMetric(float64(tTPM)/float64(tTok), "tpm/token")
}

// BenchmarkSignTPM measures ECDSA P-256 signatures per second in swtpm
// with 1 and 4 concurrent signers (one TPM connection, so they queue),
// against SoftHSM and the PEM key in the same run.
func BenchmarkSignTPM(b *testing.B) {
	token, pemID := benchIdentities(b)
	tpmID := benchTPMIdentity(b)
	var tpm1, tpm4, tok1, pem1 float64
	b.ResetTimer()
	for b.Loop() {
		tpm1 += signRate(b, tpmID.Key(), 1, 100)
		tpm4 += signRate(b, tpmID.Key(), 4, 100)
		tok1 += signRate(b, token.Key(), 1, 100)
		pem1 += signRate(b, pemID.Key(), 1, 100)
	}
	n := float64(b.N)
	b.ReportMetric(tpm1/n, "tpm-sig/s-1")
	b.ReportMetric(tpm4/n, "tpm-sig/s-4")
	b.ReportMetric(tok1/tpm1, "token/tpm")
	b.ReportMetric(pem1/tpm1, "pem/tpm")
}
