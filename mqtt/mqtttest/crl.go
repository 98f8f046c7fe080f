package mqtttest

import (
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// initCRL writes an empty revocation list and returns the configuration
// line that makes mosquitto check it.
func (b *Broker) initCRL() string {
	b.crlFile = filepath.Join(b.dir, "crl.pem")
	if err := b.writeCRL(nil); err != nil {
		b.t.Fatalf("mqtttest: %v", err)
	}
	return "crlfile " + b.crlFile + "\n"
}

func (b *Broker) writeCRL(serials []*big.Int) error {
	b.crlNumber++
	now := time.Now()
	tmpl := &x509.RevocationList{
		Number:     big.NewInt(b.crlNumber),
		ThisUpdate: now.Add(-time.Minute),
		NextUpdate: now.Add(24 * time.Hour),
	}
	for _, s := range serials {
		tmpl.RevokedCertificateEntries = append(tmpl.RevokedCertificateEntries, x509.RevocationListEntry{SerialNumber: s, RevocationTime: now.Add(-time.Minute)})
	}
	der, err := x509.CreateRevocationList(rand.Reader, tmpl, b.PKI.CA, b.PKI.CAKey)
	if err != nil {
		return fmt.Errorf("CRL: %w", err)
	}
	tmp := b.crlFile + ".tmp"
	if err := os.WriteFile(tmp, pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der}), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, b.crlFile)
}

// RefuseCertificates makes the broker refuse, from the next TLS handshake
// on, device certificates with these serial numbers (and only those): it
// rewrites the CRL and has mosquitto reload it (SIGHUP), waiting until it
// did. Connections already open stay open, as with AWS IoT's registry,
// which checks a certificate's status when a device connects. The broker
// must have been created with Options.CRL.
func (b *Broker) RefuseCertificates(serials []*big.Int) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.crlFile == "" {
		return fmt.Errorf("mqtttest: RefuseCertificates needs a broker created with Options{CRL: true}")
	}
	if err := b.writeCRL(serials); err != nil {
		return err
	}
	if b.cmd == nil {
		return nil // read at the next Start
	}
	before := b.logBuf.reloadCount()
	if err := b.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		return fmt.Errorf("mqtttest: SIGHUP mosquitto: %w", err)
	}
	// mosquitto is single-threaded: it logs the line, then reloads the
	// listeners' certificates and CRL before it handles another socket.
	deadline := time.Now().Add(10 * time.Second)
	for b.logBuf.reloadCount() <= before {
		if time.Now().After(deadline) {
			return fmt.Errorf("mqtttest: mosquitto did not reload within 10s:\n%s", b.logBuf.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
	return nil
}

const reloadLine = "Reloading config"

func (l *lockedTail) reloadCount() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.reloads
}
