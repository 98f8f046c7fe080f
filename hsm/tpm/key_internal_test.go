//go:build !notpm

package tpm

import (
	"bytes"
	"context"
	"crypto"
	"crypto/sha256"
	"path/filepath"
	"testing"

	"github.com/google/go-tpm/tpm2/transport"

	"github.com/tetherd/tether/hsm/tpm/tpmtest"
)

// recorder keeps every command sent to the TPM.
type recorder struct {
	transport.TPMCloser
	sent []byte
}

func (r *recorder) Send(cmd []byte) ([]byte, error) {
	r.sent = append(r.sent, cmd...)
	return r.TPMCloser.Send(cmd)
}

// Ensures that a key's authorisation value never crosses the bus: signing
// sends HMACs of a salted session, not the value, and a dead client's
// objects and sessions are flushed when the next one connects.
func TestAuthNotOnTheBus(t *testing.T) {
	sim := tpmtest.Start(t)
	auth := []byte("wire-secret-8271")
	for _, s := range []string{
		"tpm:file=" + filepath.Join(t.TempDir(), "k.tss2") + "?device=" + sim.Socket,
		"tpm:handle=0x81000005?device=" + sim.Socket,
	} {
		u, err := ParseURI(s)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := Generate(context.Background(), u, ECP256, auth); err != nil {
			t.Fatal(err)
		}
		k, err := Open(context.Background(), u, auth)
		if err != nil {
			t.Fatal(err)
		}
		rec := &recorder{TPMCloser: k.tpm}
		k.tpm = rec
		d := sha256.Sum256([]byte("x"))
		for range 3 {
			if _, err := k.Sign(nil, d[:], crypto.SHA256); err != nil {
				t.Fatal(err)
			}
		}
		if bytes.Contains(rec.sent, auth) {
			t.Fatalf("%s: the authorisation value was sent in the clear", s)
		}
		// Dropped without Close, as a killed agent would leave it.
		k.tpm.(*recorder).TPMCloser.Close()
	}
	for range 4 {
		u, _ := ParseURI("tpm:handle=0x81000005?device=" + sim.Socket)
		k, err := Open(context.Background(), u, auth)
		if err != nil {
			t.Fatalf("after dead clients: %v", err)
		}
		k.tpm.Close()
	}
}
