// Package mqtttest runs Debian's mosquitto as a real MQTT v5 broker with
// mutual TLS on 127.0.0.1 for tests, in the style of net/http/httptest.
//
// The broker listens on a free loopback port that stays the same across
// Stop/Kill and Start, so clients can be tested against broker restarts. The
// test PKI (a CA, a server certificate for 127.0.0.1 and localhost, and
// device certificates) is generated with crypto/x509 on the fly.
package mqtttest

import (
	"bufio"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// MosquittoPath is where Debian's mosquitto package installs the broker.
const MosquittoPath = "/usr/sbin/mosquitto"

// PKI is a throw-away certificate authority.
type PKI struct {
	CA     *x509.Certificate
	CAPEM  []byte
	Pool   *x509.CertPool // contains CA
	caKey  *ecdsa.PrivateKey
	serial int64
	mu     sync.Mutex
}

// NewPKI creates a CA named name.
func NewPKI(t testing.TB, name string) *PKI {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("mqtttest: CA key: %v", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatalf("mqtttest: CA certificate: %v", err)
	}
	ca, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	return &PKI{CA: ca, CAPEM: pemBlock("CERTIFICATE", der), Pool: pool, caKey: key, serial: 1}
}

// Issue signs a leaf certificate for cn. server adds 127.0.0.1 and
// localhost as SANs and the server-auth usage; otherwise it is a device
// (client-auth) certificate. It returns the PEM certificate and PKCS#8 key.
func (p *PKI) Issue(t testing.TB, cn string, server bool) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("mqtttest: key: %v", err)
	}
	p.mu.Lock()
	p.serial++
	serial := p.serial
	p.mu.Unlock()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
		tmpl.DNSNames = []string{"localhost"}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.CA, &key.PublicKey, p.caKey)
	if err != nil {
		t.Fatalf("mqtttest: certificate for %s: %v", cn, err)
	}
	k8, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatalf("mqtttest: marshal key: %v", err)
	}
	return pemBlock("CERTIFICATE", der), pemBlock("PRIVATE KEY", k8)
}

// Signer is the CA's private key, for issuing device certificates for keys
// held elsewhere (e.g. in a PKCS#11 token).
func (p *PKI) Signer() crypto.Signer { return p.caKey }

// ClientCertificate issues a device certificate for cn as a tls.Certificate.
func (p *PKI) ClientCertificate(t testing.TB, cn string) tls.Certificate {
	t.Helper()
	c, k := p.Issue(t, cn, false)
	cert, err := tls.X509KeyPair(c, k)
	if err != nil {
		t.Fatalf("mqtttest: key pair: %v", err)
	}
	return cert
}

// ClientFiles issues a device certificate for cn and writes it to
// certificate and key files in a temporary directory, for command-line
// clients such as mosquitto_pub or for PEM identities.
func (p *PKI) ClientFiles(t testing.TB, cn string) (certFile, keyFile string) {
	t.Helper()
	c, k := p.Issue(t, cn, false)
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, cn+".crt"), filepath.Join(dir, cn+".key")
	writeFile(t, certFile, c, 0o644)
	writeFile(t, keyFile, k, 0o600)
	return certFile, keyFile
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

func writeFile(t testing.TB, path string, b []byte, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, b, mode); err != nil {
		t.Fatalf("mqtttest: %v", err)
	}
}

// Broker is a mosquitto process with mutual TLS on 127.0.0.1.
type Broker struct {
	// Addr is host:port of the TLS listener; it does not change on restart.
	Addr string
	// Port is the port of Addr.
	Port int
	// PKI signed the broker's certificate; device certificates it issues
	// are trusted by the broker.
	PKI *PKI
	// CAFile is the PEM file of PKI's CA, for command-line clients.
	CAFile string

	t    testing.TB
	dir  string
	conf string

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
	starts int
	logBuf *lockedTail
	// crlFile is set with Options.CRL; crlNumber counts its versions.
	crlFile   string
	crlNumber int64
}

// Options adjusts NewBroker.
type Options struct {
	// ExtraConfig is appended to the generated mosquitto.conf.
	ExtraConfig string
	// CRL makes the broker check device certificates against a revocation
	// list that RefuseCertificates rewrites (empty at start).
	CRL bool
}

// NewBroker starts mosquitto and stops it when the test ends. It fails the
// test, naming the Debian package, when mosquitto is not installed.
func NewBroker(t testing.TB, opts Options) *Broker {
	t.Helper()
	if _, err := os.Stat(MosquittoPath); err != nil {
		t.Fatalf("mqtttest: %s not found: install the Debian package mosquitto (apt-get install mosquitto mosquitto-clients)", MosquittoPath)
	}
	pki := NewPKI(t, "tether test CA")
	dir := t.TempDir()
	b := &Broker{PKI: pki, t: t, dir: dir, logBuf: &lockedTail{}}
	b.CAFile = filepath.Join(dir, "ca.pem")
	writeFile(t, b.CAFile, pki.CAPEM, 0o644)
	sc, sk := pki.Issue(t, "127.0.0.1", true)
	writeFile(t, filepath.Join(dir, "server.crt"), sc, 0o644)
	writeFile(t, filepath.Join(dir, "server.key"), sk, 0o600)
	b.Port = freePort(t)
	b.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(b.Port))
	if err := os.MkdirAll(filepath.Join(dir, "data"), 0o700); err != nil {
		t.Fatalf("mqtttest: %v", err)
	}
	b.conf = filepath.Join(dir, "mosquitto.conf")
	if opts.CRL {
		opts.ExtraConfig = b.initCRL() + opts.ExtraConfig
	}
	conf := fmt.Sprintf(`# generated by mqtttest
user root
per_listener_settings false
allow_anonymous true
persistence true
persistence_location %[1]s/data/
max_queued_messages 0
max_inflight_messages 100
log_dest stderr
log_type error
log_type warning
log_type notice
log_type information
connection_messages true
listener %[2]d 127.0.0.1
cafile %[1]s/ca.pem
certfile %[1]s/server.crt
keyfile %[1]s/server.key
require_certificate true
use_identity_as_username true
%[3]s
`, dir, b.Port, opts.ExtraConfig)
	writeFile(t, b.conf, []byte(conf), 0o600)
	t.Cleanup(func() {
		if err := b.Stop(); err != nil {
			t.Logf("mqtttest: stop broker: %v", err)
		}
		if t.Failed() {
			t.Logf("mosquitto log tail:\n%s", b.logBuf.String())
		}
	})
	if err := b.Start(); err != nil {
		t.Fatalf("mqtttest: %v", err)
	}
	return b
}

// URL is the broker's address as an mqtts:// URL string.
func (b *Broker) URL() string { return "mqtts://" + b.Addr }

// Starts counts how often the broker was started.
func (b *Broker) Starts() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.starts
}

// Log returns the tail of mosquitto's log.
func (b *Broker) Log() string { return b.logBuf.String() }

// Start starts mosquitto on the same port and returns once it accepts TCP
// connections there. Starting a running broker is an error.
func (b *Broker) Start() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.cmd != nil {
		return errors.New("broker already running")
	}
	cmd := exec.Command(MosquittoPath, "-c", b.conf)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return err
	}
	cmd.Stdout = io.Discard
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", MosquittoPath, err)
	}
	exited := make(chan struct{})
	ready := make(chan struct{})
	var once sync.Once
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			b.logBuf.add(line)
			if strings.Contains(line, "running") {
				once.Do(func() { close(ready) })
			}
		}
		_ = cmd.Wait()
		close(exited)
	}()
	b.cmd, b.exited = cmd, exited
	b.starts++
	select {
	case <-ready:
	case <-exited:
		b.cmd = nil
		return fmt.Errorf("mosquitto exited at start-up:\n%s", b.logBuf.String())
	case <-time.After(10 * time.Second):
		return fmt.Errorf("mosquitto did not report running within 10s:\n%s", b.logBuf.String())
	}
	// "running" is logged after the listener is bound; a connection proves it.
	c, err := net.DialTimeout("tcp", b.Addr, 5*time.Second)
	if err != nil {
		return fmt.Errorf("mosquitto running but %s refuses connections: %w", b.Addr, err)
	}
	return c.Close()
}

// Stop stops mosquitto gracefully (SIGTERM), which saves its persistence.
// Stopping a stopped broker does nothing.
func (b *Broker) Stop() error { return b.signal(syscall.SIGTERM) }

// Kill stops mosquitto with SIGKILL: whatever it had not saved is lost, as
// in a power cut of the broker host.
func (b *Broker) Kill() error { return b.signal(syscall.SIGKILL) }

// Running reports whether the broker process is up.
func (b *Broker) Running() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.cmd != nil
}

func (b *Broker) signal(sig syscall.Signal) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.cmd == nil {
		return nil
	}
	_ = b.cmd.Process.Signal(sig)
	select {
	case <-b.exited:
	case <-time.After(10 * time.Second):
		_ = b.cmd.Process.Kill()
		<-b.exited
	}
	b.cmd = nil
	return nil
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("mqtttest: free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// lockedTail keeps the last lines of the broker log.
type lockedTail struct {
	mu      sync.Mutex
	lines   []string
	reloads int // lines announcing a configuration reload (SIGHUP)
}

func (l *lockedTail) add(s string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if strings.Contains(s, reloadLine) {
		l.reloads++
	}
	l.lines = append(l.lines, s)
	if len(l.lines) > 200 {
		l.lines = l.lines[len(l.lines)-200:]
	}
}

func (l *lockedTail) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "\n")
}
