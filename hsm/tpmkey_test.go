package hsm_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/tetherd/tether/hsm"
	"github.com/tetherd/tether/hsm/tpm"
	"github.com/tetherd/tether/hsm/tpm/tpmtest"
)

// tpmIdentity makes a TPM key of keyType with a PIN in a 0600 file and a
// self-signed certificate for it; it returns the key reference and the
// certificate file.
func tpmIdentity(t *testing.T, sim *tpmtest.Simulator, keyType string) (ref, certFile string) {
	t.Helper()
	dir := t.TempDir()
	pin := writeFile(t, "pin", []byte("1234\n"), 0o600)
	ref = fmt.Sprintf("tpm:file=%s?device=%s&pin-source=file:%s", filepath.Join(dir, keyType+".tss2"), sim.Socket, pin)
	u, err := tpm.ParseURI(ref)
	require.NoError(t, err)
	_, err = tpm.Generate(context.Background(), u, keyType, []byte("1234"))
	require.NoError(t, err)
	k, err := hsm.OpenKey(context.Background(), ref)
	require.NoError(t, err)
	defer k.Close()
	now := time.Now()
	certFile = writeFile(t, "device.crt", selfSigned(t, k, now.Add(-time.Hour), now.Add(time.Hour)), 0o644)
	return ref, certFile
}

// Ensures that a TPM key is a device identity like any other: it opens with
// its certificate, authenticates mutual TLS 1.2 and 1.3 (ECDSA, and RSA-PSS
// or PKCS#1 v1.5 for RSA), and seals state.
func TestTPMIdentity(t *testing.T) {
	sim := tpmtest.Start(t)
	for _, keyType := range []string{tpm.ECP256, tpm.RSA2048} {
		t.Run(keyType, func(t *testing.T) {
			ref, certFile := tpmIdentity(t, sim, keyType)
			id, err := hsm.Open(context.Background(), certFile, ref)
			require.NoError(t, err)
			defer id.Close()
			require.Equal(t, ref[:strings.Index(ref, "?")], id.KeyLocation()[:strings.Index(id.KeyLocation(), "?")])
			for _, v := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
				require.NoError(t, mutualTLS(t, id, v), "TLS %x", v)
			}
			a, err := id.Sealer(context.Background(), "credentials")
			require.NoError(t, err)
			nonce := make([]byte, a.NonceSize())
			box, err := a.Seal(nil, nonce, []byte("secret"), nil)
			require.NoError(t, err)
			plain, err := a.Open(nil, nonce, box, nil)
			require.NoError(t, err)
			require.Equal(t, "secret", string(plain))
		})
	}
}

// mutualTLS runs one handshake with id as the client against a loopback
// server that requires and verifies its certificate, at TLS version v.
func mutualTLS(t *testing.T, id *hsm.Identity, v uint16) error {
	t.Helper()
	srvKey, srvCertPEM := serverCert(t)
	srv, err := tls.X509KeyPair(srvCertPEM, srvKey)
	require.NoError(t, err)
	cas := x509.NewCertPool()
	cas.AddCert(id.Leaf())
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{
		Certificates: []tls.Certificate{srv}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: cas,
		MinVersion: v, MaxVersion: v,
	})
	require.NoError(t, err)
	defer ln.Close()
	done := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- err
			return
		}
		defer c.Close()
		if err := c.(*tls.Conn).Handshake(); err != nil {
			done <- err
			return
		}
		_, err = c.Write([]byte("ok"))
		done <- err
	}()
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(srvCertPEM)
	c, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{
		RootCAs: roots, ServerName: "localhost", Certificates: []tls.Certificate{id.Certificate()},
		MinVersion: v, MaxVersion: v,
	})
	if err != nil {
		return err
	}
	defer c.Close()
	if _, err := io.ReadFull(c, make([]byte, 2)); err != nil {
		return err
	}
	return <-done
}

// Ensures that TPM faults are filed under hsm's errors, so the agent and
// the CLI treat them like token faults: a wrong PIN is a configuration
// error, a TPM that is away is a runtime one, and a TSS2 key file given
// as a PEM key says how to name it.
func TestTPMFaults(t *testing.T) {
	sim := tpmtest.Start(t)
	ref, _ := tpmIdentity(t, sim, tpm.ECP256)
	ctx := context.Background()
	wrong := writeFile(t, "wrong", []byte("9999"), 0o600)
	pinAt := strings.Index(ref, "&pin-source=")
	_, err := hsm.OpenKey(ctx, ref[:pinAt]+"&pin-source=file:"+wrong)
	require.ErrorIs(t, err, hsm.ErrPINIncorrect)
	require.ErrorContains(t, err, "not retried")

	_, err = hsm.OpenKey(ctx, strings.Replace(ref, sim.Socket, filepath.Join(t.TempDir(), "none"), 1))
	require.ErrorIs(t, err, hsm.ErrTokenUnavailable)

	_, err = hsm.OpenKey(ctx, ref[:pinAt]+"&pin-source=credential:tpm-pin", hsm.WithGetenv(func(string) string { return "" }))
	require.ErrorIs(t, err, hsm.ErrPINSource)

	file := strings.TrimPrefix(ref[:strings.Index(ref, "?")], "tpm:file=")
	_, err = hsm.OpenKey(ctx, file)
	require.ErrorIs(t, err, hsm.ErrBadKey)
	require.ErrorContains(t, err, `private_key = "tpm:file=`+file)

	_, err = hsm.OpenKey(ctx, "tpm:handle=0x81000042?device="+sim.Socket)
	require.ErrorIs(t, err, hsm.ErrKeyNotFound)
}

// serverCert returns a PEM key and self-signed certificate for localhost.
func serverCert(t *testing.T) (keyPEM, certPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "localhost"}, DNSNames: []string{"localhost"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	require.NoError(t, err)
	kd, err := x509.MarshalPKCS8PrivateKey(key)
	require.NoError(t, err)
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kd}), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}
