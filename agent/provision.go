package agent

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/tetherd/tether/hsm"
	"github.com/tetherd/tether/mqtt/fleetprov"
	"github.com/tetherd/tether/platform/atomicfile"
	"github.com/tetherd/tether/store"
)

// ProvisionOptions adjusts Provision.
type ProvisionOptions struct {
	// Logger receives progress; never a secret.
	Logger *slog.Logger
	// Timeout bounds each request to AWS IoT; default fleetprov.DefaultTimeout.
	Timeout time.Duration
}

// ProvisionResult is what Provision did.
type ProvisionResult struct {
	ThingName     string
	CertificateID string
	NotAfter      time.Time
	// Already is true when the configuration held a working identity and
	// nothing was done.
	Already bool
}

// tokenLifetime is how long an ownership token is used: AWS deletes a
// PENDING_ACTIVATION certificate after an hour; a margin covers clock skew.
const tokenLifetime = 50 * time.Minute

// Provision exchanges the claim identity of cfg.Provision for the device's
// own, over the AWS IoT fleet provisioning MQTT API: a key generated in the
// device's key store (cfg.Identity.PrivateKey: a new PEM file or a pkcs11:
// URI), CreateCertificateFromCsr, RegisterThing with the template and its
// parameters. It writes the certificate and the thing name into the
// configuration. Every step is recorded in the state store first, so a
// later run after a crash resumes where this one stopped; a run with a
// working identity does nothing.
func Provision(ctx context.Context, cfg *Config, opts ProvisionOptions) (*ProvisionResult, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	id := &cfg.Identity
	db, err := store.Open(cfg.State.Path, store.Options{Logger: log})
	if err != nil {
		if errors.Is(err, store.ErrLocked) {
			return nil, runtimeFailure("state: %w; is tether run using it? provisioning needs it to itself", err)
		}
		return nil, runtimeFailure("state: %w", err)
	}
	defer db.Close()
	rec, ok, err := db.Provisioning()
	if err != nil {
		return nil, runtimeFailure("%w", err)
	}
	if !ok || rec.Phase == store.ProvisionDone {
		if res, ok := workingIdentity(ctx, cfg); ok {
			return res, nil
		}
		if keyExists(ctx, id.PrivateKey) {
			return nil, configFailure("identity.private_key: %s already exists, but identity.certificate %s is missing or not its certificate; remove the key, or point identity.certificate at its certificate", id.PrivateKey, id.Certificate)
		}
		rec = store.Provisioning{Phase: store.ProvisionKey, Template: cfg.Provision.Template, Key: stagedKey(id.PrivateKey)}
		if err := db.PutProvisioning(rec); err != nil {
			return nil, runtimeFailure("%w", err)
		}
		log.Info("provisioning started", "template", rec.Template, "key", redactKey(rec.Key))
	} else {
		// The template may have been corrected since the last run.
		rec.Template = cfg.Provision.Template
		log.Info("provisioning resumed", "phase", rec.Phase, "template", rec.Template)
	}
	p := &provisioner{cfg: cfg, db: db, log: log, rec: rec, timeout: opts.Timeout}
	defer p.closeClaim()
	for p.rec.Phase != store.ProvisionDone {
		if err := p.step(ctx); err != nil {
			p.rec.LastError = err.Error()
			_ = db.PutProvisioning(p.rec)
			return nil, err
		}
		failpoint("provision:" + string(p.rec.Phase))
	}
	res := &ProvisionResult{ThingName: p.rec.ThingName, CertificateID: p.rec.CertificateID}
	if c, err := parseCertPEM([]byte(p.rec.CertificatePEM)); err == nil {
		res.NotAfter = c.NotAfter
	}
	return res, nil
}

type provisioner struct {
	cfg     *Config
	db      *store.DB
	log     *slog.Logger
	rec     store.Provisioning
	timeout time.Duration

	claim   *hsm.Identity
	conn    *fleetprov.DirectConn
	newKey  *hsm.Key
	keyType hsm.KeyType
}

// advance records the next phase durably.
func (p *provisioner) advance(next store.ProvisionPhase) error {
	p.rec.Phase, p.rec.LastError = next, ""
	if err := p.db.PutProvisioning(p.rec); err != nil {
		return runtimeFailure("%w", err)
	}
	p.log.Info("provisioning step done", "next", next)
	return nil
}

func (p *provisioner) step(ctx context.Context) error {
	switch p.rec.Phase {
	case store.ProvisionKey:
		if !keyExists(ctx, p.rec.Key) {
			if err := generateKey(ctx, p.rec.Key, hsm.KeyType(p.cfg.Provision.KeyType)); err != nil {
				return err
			}
		}
		return p.advance(store.ProvisionCertificate)

	case store.ProvisionCertificate:
		key, err := p.key(ctx)
		if err != nil {
			return err
		}
		csr, err := certificateRequest(key)
		if err != nil {
			return runtimeFailure("certificate request: %w", err)
		}
		c, err := p.client(ctx, key.Public())
		if err != nil {
			return err
		}
		cert, err := c.CreateCertificateFromCSR(ctx, csr)
		if err != nil {
			return apiFailure(err)
		}
		if err := matchesKey([]byte(cert.CertificatePEM), key.Public()); err != nil {
			return runtimeFailure("CreateCertificateFromCsr: %w", err)
		}
		p.rec.CertificatePEM, p.rec.CertificateID, p.rec.OwnershipToken = cert.CertificatePEM, cert.CertificateID, cert.CertificateOwnershipToken
		p.rec.Issued = time.Now().UTC()
		return p.advance(store.ProvisionRegister)

	case store.ProvisionRegister:
		if time.Since(p.rec.Issued) > tokenLifetime {
			// AWS has deleted the pending certificate by now.
			p.log.Info("the ownership token has expired; asking for a new certificate")
			p.rec.CertificatePEM, p.rec.CertificateID, p.rec.OwnershipToken = "", "", ""
			return p.advance(store.ProvisionCertificate)
		}
		params, err := resolveParameters(ctx, p.cfg.Provision.Parameters)
		if err != nil {
			return configFailure("%w", err)
		}
		key, err := p.key(ctx)
		if err != nil {
			return err
		}
		c, err := p.client(ctx, key.Public())
		if err != nil {
			return err
		}
		reg, err := c.RegisterThing(ctx, p.rec.Template, p.rec.OwnershipToken, params)
		if err != nil {
			return apiFailure(err)
		}
		p.rec.ThingName = reg.ThingName
		return p.advance(store.ProvisionCommit)

	case store.ProvisionCommit:
		// A TPM may serve one connection at a time: the commit opens the
		// key again from its final place.
		if p.newKey != nil {
			p.newKey.Close()
			p.newKey = nil
		}
		if err := p.commit(ctx); err != nil {
			return err
		}
		p.rec.OwnershipToken = ""
		return p.advance(store.ProvisionDone)
	}
	return runtimeFailure("state: unknown provisioning phase %q in %s; remove the state file to start over", p.rec.Phase, p.cfg.State.Path)
}

// commit puts the key and the certificate where the configuration says and
// names the thing in it. Each write is atomic and repeating it is
// harmless: the key first (a staged PEM file is linked into place), then
// the certificate, then the configuration.
func (p *provisioner) commit(ctx context.Context) error {
	id := &p.cfg.Identity
	if p.rec.Key != id.PrivateKey {
		staged, _ := hsm.KeyFile(p.rec.Key)
		final, _ := hsm.KeyFile(id.PrivateKey)
		if err := linkStaged(staged, final); err != nil {
			return runtimeFailure("identity.private_key: %w", err)
		}
		failpoint("provision:commit-key")
	}
	if err := atomicfile.WriteFile(id.Certificate, []byte(p.rec.CertificatePEM), 0o644); err != nil {
		return runtimeFailure("identity.certificate: cannot write %s: %w", id.Certificate, unwrapPathError(err))
	}
	if err := setThingName(p.cfg.File, p.rec.ThingName); err != nil {
		return runtimeFailure("%s: cannot record thing_name: %w", p.cfg.File, unwrapPathError(err))
	}
	idn, err := hsm.Open(ctx, id.Certificate, id.PrivateKey)
	if err != nil {
		return runtimeFailure("the new identity does not open: %w", err)
	}
	idn.Close()
	return nil
}

func (p *provisioner) key(ctx context.Context) (*hsm.Key, error) {
	if p.newKey != nil {
		return p.newKey, nil
	}
	k, err := hsm.OpenKey(ctx, p.rec.Key)
	if err != nil {
		return nil, keyFailure("the new device key", err)
	}
	p.newKey = k
	return k, nil
}

// client connects with the claim identity, once per run.
func (p *provisioner) client(ctx context.Context, newPub crypto.PublicKey) (*fleetprov.Client, error) {
	if p.conn == nil {
		pc := &p.cfg.Provision
		claim, err := hsm.Open(ctx, pc.ClaimCertificate, pc.ClaimPrivateKey)
		if err != nil {
			return nil, keyFailure("provision.claim_certificate/claim_private_key", err)
		}
		p.claim = claim
		roots, err := brokerRoots(p.cfg)
		if err != nil {
			return nil, err
		}
		clientID := pc.ClientID
		if clientID == "" {
			clientID = "provision-" + keyDigest(newPub)[:16]
		}
		conn, err := fleetprov.Dial(ctx, fleetprov.DialConfig{Endpoint: p.cfg.MQTT.Endpoint, Port: p.cfg.MQTT.Port, ClientID: clientID,
			Certificate: claim.Certificate(), RootCAs: roots})
		if err != nil {
			return nil, runtimeFailure("connecting with the claim certificate: %w", err)
		}
		p.conn = conn
	}
	return &fleetprov.Client{Conn: p.conn, Timeout: p.timeout}, nil
}

func (p *provisioner) closeClaim() {
	if p.conn != nil {
		p.conn.Close()
	}
	if p.claim != nil {
		p.claim.Close()
	}
	if p.newKey != nil {
		p.newKey.Close()
	}
}

// workingIdentity reports whether cfg's identity opens and names its thing.
func workingIdentity(ctx context.Context, cfg *Config) (*ProvisionResult, bool) {
	if cfg.Identity.ThingName == "" {
		return nil, false
	}
	idn, err := hsm.Open(ctx, cfg.Identity.Certificate, cfg.Identity.PrivateKey)
	if err != nil {
		return nil, false
	}
	defer idn.Close()
	return &ProvisionResult{ThingName: cfg.Identity.ThingName, NotAfter: idn.Leaf().NotAfter, Already: true}, true
}

// stagedKey is where a new key is generated before it is committed: a key
// file (PEM, TPM key file) beside its final file, so a crash never leaves a
// key file without its certificate; a token or handle key at its final
// place, since it cannot be renamed (the certificate file then commits it).
func stagedKey(ref string) string {
	if f, ok := hsm.KeyFile(ref); ok {
		return hsm.WithKeyFile(ref, f+".new")
	}
	return ref
}

func keyExists(ctx context.Context, ref string) bool {
	if f, ok := hsm.KeyFile(ref); ok {
		_, err := os.Lstat(f)
		return err == nil
	}
	k, err := hsm.OpenKey(ctx, ref)
	if err != nil {
		return false
	}
	k.Close()
	return true
}

func generateKey(ctx context.Context, ref string, kt hsm.KeyType) error {
	if _, err := hsm.Generate(ctx, ref, kt); err != nil {
		return keyFailure("new key", err)
	}
	return nil
}

// linkStaged moves a staged PEM key into place; done again, it does nothing.
func linkStaged(staged, final string) error {
	if _, err := os.Lstat(staged); errors.Is(err, os.ErrNotExist) {
		if _, err := os.Lstat(final); err == nil {
			return nil // moved by an earlier run
		}
		return fmt.Errorf("neither %s nor %s exists; remove the state file to provision again", staged, final)
	}
	if err := os.Rename(staged, final); err != nil {
		return err
	}
	return atomicfile.SyncDir(filepath.Dir(final))
}

func setThingName(file, thing string) error {
	b, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	st, err := os.Stat(file)
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(file, setTOMLKey(b, "identity", "thing_name", thing), st.Mode().Perm())
}

func certificateRequest(key crypto.Signer) ([]byte, error) {
	// AWS IoT ignores the subject; the certificate is bound to the key.
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), nil
}

func parseCertPEM(b []byte) (*x509.Certificate, error) {
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "CERTIFICATE" {
		return nil, errors.New("the certificate is not PEM")
	}
	return x509.ParseCertificate(blk.Bytes)
}

// matchesKey refuses a certificate that is not for pub: it would never work.
func matchesKey(certPEM []byte, pub crypto.PublicKey) error {
	c, err := parseCertPEM(certPEM)
	if err != nil {
		return err
	}
	if eq, ok := c.PublicKey.(interface{ Equal(crypto.PublicKey) bool }); !ok || !eq.Equal(pub) {
		return errors.New("the certificate returned is not for the key the CSR was made with")
	}
	return nil
}

func keyDigest(pub crypto.PublicKey) string {
	der, _ := x509.MarshalPKIXPublicKey(pub)
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:])
}

// apiFailure maps a refusal of AWS IoT to the exit status: a refused
// template, parameters or CSR is configuration (2); throttling, service
// errors and silence are runtime (1), worth retrying.
func apiFailure(err error) error {
	var fe *fleetprov.Error
	if errors.As(err, &fe) && !fe.Temporary() {
		return configFailure("%w", err)
	}
	return runtimeFailure("%w", err)
}

func keyFailure(what string, err error) error {
	if errors.Is(err, hsm.ErrTokenUnavailable) {
		return runtimeFailure("%s: %w", what, err)
	}
	return configFailure("%s: %w", what, err)
}

func redactKey(ref string) string {
	if hsm.IsURI(ref) {
		if u, err := hsm.ParseURI(ref); err == nil {
			return u.String()
		}
		return "pkcs11:(unparsable)"
	}
	return ref
}

// failpoint kills the process when TETHER_FAILPOINT names this point: the
// crash tests use it to cut power at every step boundary. It does nothing
// otherwise.
func failpoint(name string) {
	if v := os.Getenv("TETHER_FAILPOINT"); v != "" && v == name {
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {}
	}
}
