package mqtt

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tetherd/tether/hsm"
	"github.com/tetherd/tether/hsm/tpm/tpmtest"
	"github.com/tetherd/tether/mqtt/mqtttest"
)

// TestRoundTripTPM: the device key never leaves a TPM (swtpm, through the
// pure-Go TPM code every build has); mosquitto's mTLS handshake signs there,
// with an EC and an RSA key.
func TestRoundTripTPM(t *testing.T) {
	b := mqtttest.NewBroker(t, mqtttest.Options{})
	sim := tpmtest.Start(t)
	for i, kt := range []hsm.KeyType{hsm.KeyECP256, hsm.KeyRSA2048} {
		t.Run(string(kt), func(t *testing.T) {
			ctx := context.Background()
			dir := t.TempDir()
			ref := fmt.Sprintf("tpm:file=%s?device=%s", filepath.Join(dir, "device.tss2"), sim.Socket)
			pub, err := hsm.GenerateTPMKey(ctx, ref, kt)
			require.NoError(t, err)
			tmpl := &x509.Certificate{
				SerialNumber: big.NewInt(int64(100 + i)), Subject: pkix.Name{CommonName: "gw-tpm"},
				NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
				KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
			}
			der, err := x509.CreateCertificate(rand.Reader, tmpl, b.PKI.CA, pub, b.PKI.CAKey)
			require.NoError(t, err)
			certFile := filepath.Join(dir, "device.crt")
			require.NoError(t, os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644))
			id, err := hsm.Open(ctx, certFile, ref)
			require.NoError(t, err)
			defer id.Close() // swtpm serves one connection at a time
			cert := id.Certificate()

			s := newSession(t, b, "gw-tpm", tempOutbox(t), func(c *Config) { c.Certificate = &cert })
			awaitConnected(t, s)
			sub, err := s.Subscribe(ctx, "tpm/echo")
			require.NoError(t, err)
			_, err = s.Publish(ctx, "tpm/echo", []byte("signed by the TPM"), 1)
			require.NoError(t, err)
			assert.Equal(t, "signed by the TPM", string(receive(t, sub).Payload))
			require.NoError(t, s.Close())
		})
	}
}
