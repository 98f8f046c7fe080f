package agent

import (
	"bytes"
	"cmp"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	cryptorand "crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/tetherd/tether/credprovider"
	"github.com/tetherd/tether/hsm"
	"github.com/tetherd/tether/hsm/tpm"
	"github.com/tetherd/tether/mqtt/fleetprov"
	"github.com/tetherd/tether/platform/atomicfile"
	"github.com/tetherd/tether/store"
)

// Rotation backoff: a failed attempt is retried after a delay drawn
// uniformly from [minRetry, min(maxRetry, baseRetry·2^attempts)).
const (
	minRetry  = 10 * time.Second
	baseRetry = time.Minute
	maxRetry  = 6 * time.Hour
)

// RotationStatus is the certificate rotation's state in `tether status`.
type RotationStatus struct {
	// Enabled is false when the configuration does not allow rotation;
	// Disabled then says why.
	Enabled  bool   `json:"enabled"`
	Disabled string `json:"disabled,omitempty"`
	// Phase is the step under way ("" when idle; "fallback" after a
	// commit, while the previous identity is kept).
	Phase string `json:"phase,omitempty"`
	// DaysLeft is what remains of the current certificate's validity.
	DaysLeft float64   `json:"days_left"`
	Due      time.Time `json:"due,omitzero"`
	// NextAttempt is when a failed rotation is tried again.
	NextAttempt   time.Time `json:"next_attempt,omitzero"`
	Attempts      int       `json:"attempts,omitempty"`
	LastError     string    `json:"last_error,omitempty"`
	LastErrorAt   time.Time `json:"last_error_at,omitzero"`
	LastRotation  time.Time `json:"last_rotation,omitzero"`
	FallbackUntil time.Time `json:"fallback_until,omitzero"`
}

// rotator renews the device certificate before it expires (docs/identity.md):
// a new key beside the current one, CreateCertificateFromCsr and
// RegisterThing over the agent's MQTT session, a proof (an MQTT connection
// and a credentials fetch with the pending identity), then the switch. Every
// step is recorded in the state store before it starts. One rotator runs
// per agent generation; a commit or rollback ends the generation, and the
// next opens the identity the certificate file then names.
type rotator struct {
	a   *Agent
	log *slog.Logger
	// disabled says why rotation cannot run ("" when it can).
	disabled string
	// trigger carries `tether identity rotate`.
	trigger chan struct{}
	// switched carries one value once the identity files changed.
	switched chan struct{}

	mu    sync.Mutex
	proof *aws.Credentials // the pending identity's credentials, for the commit
	// proofLifetime is what proof was issued with.
	proofLifetime time.Duration
}

func newRotator(a *Agent) *rotator {
	r := &rotator{a: a, log: a.log.With("component", "rotation"), trigger: make(chan struct{}, 1), switched: make(chan struct{}, 1)}
	id := &a.cfg.Identity
	switch {
	case id.RotationTemplate == "":
		r.disabled = "identity.rotation_template is not set"
	case a.cfg.MQTT.Endpoint == "":
		r.disabled = "no [mqtt] endpoint: rotation talks to AWS IoT over the device's MQTT session"
	case tpm.IsURI(id.PrivateKey) && !isKeyFile(id.PrivateKey):
		r.disabled = "rotation of tpm:handle= keys is not supported (a persistent handle holds one key); use a TSS2 key file (tpm:file=), or renew by provisioning again"
	case hsm.IsURI(id.PrivateKey) && strings.Contains(strings.SplitN(id.PrivateKey, "?", 2)[0], "id="):
		r.disabled = "identity.private_key names its key by id=, which would keep pointing at the old key; name it by object= only (the certificate picks the key)"
	}
	return r
}

// status reports the rotation for `tether status`.
func (r *rotator) status() *RotationStatus {
	leaf := r.a.id.Leaf()
	st := &RotationStatus{Enabled: r.disabled == "", Disabled: r.disabled, DaysLeft: daysLeft(leaf, time.Now())}
	if st.Enabled {
		st.Due = r.a.cfg.Identity.rotateAt(leaf.NotBefore, leaf.NotAfter).UTC()
	}
	rec, ok, err := r.a.db.Rotation()
	if err != nil {
		st.LastError = err.Error()
		return st
	}
	if ok {
		st.Phase, st.NextAttempt, st.Attempts = string(rec.Phase), rec.NextAttempt, rec.Attempts
		st.LastError, st.LastErrorAt, st.LastRotation, st.FallbackUntil = rec.LastError, rec.LastErrorAt, rec.Committed, rec.FallbackUntil
	}
	return st
}

func daysLeft(leaf *x509.Certificate, now time.Time) float64 {
	d := leaf.NotAfter.Sub(now).Hours() / 24
	return float64(int(d*10)) / 10
}

// handler serves POST /v1/identity/rotate to the agent's own user and root.
func (r *rotator) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/identity/rotate", func(w http.ResponseWriter, req *http.Request) {
		if p := peerFrom(req.Context()); p.UID != 0 && int(p.UID) != os.Getuid() {
			writeError(w, http.StatusForbidden, "forbidden", "only root or the agent's own user may rotate the identity")
			return
		}
		if r.disabled != "" {
			writeError(w, http.StatusConflict, "rotation_disabled", "rotation is disabled: "+r.disabled)
			return
		}
		select {
		case r.trigger <- struct{}{}:
		default: // one is pending already
		}
		writeJSON(w, http.StatusAccepted, map[string]string{"status": "rotation requested; see tether status"})
	})
	mux.HandleFunc("/v1/identity/", func(w http.ResponseWriter, req *http.Request) {
		writeError(w, http.StatusNotFound, "not_found", "no such endpoint: "+req.URL.Path+"; see POST /v1/identity/rotate")
	})
	return mux
}

// run drives rotations until ctx ends or the identity switched.
func (r *rotator) run(ctx context.Context) {
	leaf := r.a.id.Leaf()
	// One line a log-based metric can read.
	r.log.Info("device certificate", "days_left", daysLeft(leaf, time.Now()), "not_after", leaf.NotAfter.UTC().Format(time.RFC3339),
		"rotation", cmp.Or(r.disabled, "enabled"))
	if r.disabled != "" {
		return
	}
	manual := false
	for {
		if done := r.tick(ctx, manual); done {
			return
		}
		manual = false
		wait := r.nextWake()
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-r.trigger:
			manual = true
		case <-t.C:
		}
		t.Stop()
	}
}

// nextWake is how long to sleep before the next look at the record.
func (r *rotator) nextWake() time.Duration {
	now := time.Now()
	rec, _, err := r.a.db.Rotation()
	if err != nil {
		return time.Minute
	}
	var at time.Time
	switch rec.Phase {
	case "":
		leaf := r.a.id.Leaf()
		at = r.a.cfg.Identity.rotateAt(leaf.NotBefore, leaf.NotAfter)
		if rec.NextAttempt.After(at) {
			at = rec.NextAttempt
		}
	case store.RotationFallback:
		at = rec.FallbackUntil
		// Watch the new identity while the fallback is kept.
		if next := now.Add(time.Minute); next.Before(at) {
			at = next
		}
	default:
		at = rec.NextAttempt
	}
	d := at.Sub(now)
	switch {
	case d < 0:
		return 0
	case d > 12*time.Hour:
		// Clocks jump on gateways (NTP after boot): look again later.
		return 12 * time.Hour
	}
	return d
}

// tick does what the record and the clock call for; it reports whether the
// identity switched (the generation is ending).
func (r *rotator) tick(ctx context.Context, manual bool) bool {
	rec, _, err := r.a.db.Rotation()
	if err != nil {
		r.log.Error("rotation record unreadable", "err", err)
		return false
	}
	now := time.Now()
	switch rec.Phase {
	case "":
		leaf := r.a.id.Leaf()
		due := !now.Before(r.a.cfg.Identity.rotateAt(leaf.NotBefore, leaf.NotAfter))
		if !manual && (!due || now.Before(rec.NextAttempt)) {
			return false
		}
		r.log.Info("rotation starts", "manual", manual, "days_left", daysLeft(leaf, now))
		rec = store.Rotation{Phase: store.RotationKey, Key: pendingKeyRef(r.a.cfg.Identity.PrivateKey), Attempts: rec.Attempts,
			LastError: rec.LastError, LastErrorAt: rec.LastErrorAt, Committed: rec.Committed}
		// A pending key file left by an attempt that ended in a crash or a
		// rollback is never the one in use here: a new attempt starts
		// from a new key.
		removeKeyFile(rec.Key)
		if err := r.a.db.PutRotation(rec); err != nil {
			r.log.Error("rotation cannot start", "err", err)
			return false
		}
		return r.drive(ctx, &rec)
	case store.RotationFallback:
		return r.fallback(ctx, &rec)
	default:
		r.log.Info("rotation resumed", "phase", rec.Phase)
		return r.drive(ctx, &rec)
	}
}

func (r *rotator) drive(ctx context.Context, rec *store.Rotation) bool {
	for rec.Phase != store.RotationFallback {
		if err := r.step(ctx, rec); err != nil {
			if ctx.Err() != nil {
				return false // shutting down: resume next time
			}
			r.fail(ctx, rec, err)
			return false
		}
		failpoint("rotation:" + string(rec.Phase))
	}
	r.switched <- struct{}{}
	return true
}

func (r *rotator) advance(rec *store.Rotation, next store.RotationPhase) error {
	rec.Phase = next
	if err := r.a.db.PutRotation(*rec); err != nil {
		return err
	}
	r.log.Info("rotation step done", "next", next)
	return nil
}

func (r *rotator) pendingCert() string { return r.a.cfg.Identity.Certificate + ".next" }

func (r *rotator) step(ctx context.Context, rec *store.Rotation) error {
	id := &r.a.cfg.Identity
	switch rec.Phase {
	case store.RotationKey:
		if !keyExists(ctx, rec.Key) {
			if err := generateKey(ctx, rec.Key, keyTypeOf(r.a.id.Leaf())); err != nil {
				return err
			}
		}
		return r.advance(rec, store.RotationCertificate)

	case store.RotationCertificate:
		if err := r.connected(ctx); err != nil {
			return err
		}
		key, err := hsm.OpenKey(ctx, rec.Key)
		if err != nil {
			return fmt.Errorf("pending key: %w", err)
		}
		defer key.Close()
		csr, err := certificateRequest(key)
		if err != nil {
			return err
		}
		c := &fleetprov.Client{Conn: fleetprov.SessionConn(r.a.session())}
		cert, err := c.CreateCertificateFromCSR(ctx, csr)
		if err != nil {
			return err
		}
		if err := matchesKey([]byte(cert.CertificatePEM), key.Public()); err != nil {
			return err
		}
		if err := atomicfile.WriteFile(r.pendingCert(), []byte(cert.CertificatePEM), 0o644); err != nil {
			return fmt.Errorf("pending certificate: %w", err)
		}
		rec.CertificatePEM, rec.CertificateID, rec.OwnershipToken, rec.Issued = cert.CertificatePEM, cert.CertificateID, cert.CertificateOwnershipToken, time.Now().UTC()
		return r.advance(rec, store.RotationRegister)

	case store.RotationRegister:
		if time.Since(rec.Issued) > tokenLifetime {
			rec.CertificatePEM, rec.CertificateID, rec.OwnershipToken = "", "", ""
			return r.advance(rec, store.RotationCertificate)
		}
		if err := r.connected(ctx); err != nil {
			return err
		}
		c := &fleetprov.Client{Conn: fleetprov.SessionConn(r.a.session())}
		reg, err := c.RegisterThing(ctx, id.RotationTemplate, rec.OwnershipToken, map[string]string{"ThingName": id.ThingName})
		if err != nil {
			return err
		}
		if reg.ThingName != id.ThingName {
			return fmt.Errorf("rotation template %s attached the certificate to thing %s, not %s; fix the template (docs/identity.md)", id.RotationTemplate, reg.ThingName, id.ThingName)
		}
		rec.OwnershipToken = ""
		return r.advance(rec, store.RotationProve)

	case store.RotationProve:
		if err := r.prove(ctx, rec); err != nil {
			return err
		}
		return r.advance(rec, store.RotationCommit)

	case store.RotationCommit:
		if err := r.commit(ctx, rec); err != nil {
			return err
		}
		return nil
	}
	return fmt.Errorf("unknown rotation phase %q", rec.Phase)
}

// connected waits a while for the agent's MQTT session, which requests
// travel over (after a restart it is still connecting).
func (r *rotator) connected(ctx context.Context) error {
	wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	s := r.a.session()
	if s == nil {
		return fmt.Errorf("the MQTT session to %s is restarting", r.a.cfg.MQTT.Endpoint)
	}
	if err := s.AwaitConnection(wctx); err != nil {
		return fmt.Errorf("the MQTT session to %s is not connected: %w", r.a.cfg.MQTT.Endpoint, err)
	}
	return nil
}

// prove connects to the broker and fetches credentials with the pending
// identity; only an identity that did both is committed.
func (r *rotator) prove(ctx context.Context, rec *store.Rotation) error {
	cfg := r.a.cfg
	pend, err := hsm.Open(ctx, r.pendingCert(), rec.Key)
	if err != nil {
		return fmt.Errorf("pending identity: %w", err)
	}
	defer pend.Close()
	if err := r.dial(ctx, pend); err != nil {
		return fmt.Errorf("the broker refuses the new certificate: %w", err)
	}
	p, err := NewDeviceProvider(cfg, pend)
	if err != nil {
		return err
	}
	fctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	c, err := p.Retrieve(fctx)
	if err != nil {
		return fmt.Errorf("the credentials provider refuses the new certificate: %w", err)
	}
	r.mu.Lock()
	r.proof, r.proofLifetime = &c, time.Until(c.Expires).Round(time.Second)
	r.mu.Unlock()
	r.log.Info("the new certificate works", "certificate_id", rec.CertificateID)
	return nil
}

// commit switches the files to the new identity. The certificate file is
// the switch: the key file holds both keys first, and every step can be
// repeated after a crash.
func (r *rotator) commit(ctx context.Context, rec *store.Rotation) error {
	id := &r.a.cfg.Identity
	if rec.PreviousCertificatePEM == "" {
		cur, err := os.ReadFile(id.Certificate)
		if err != nil {
			return fmt.Errorf("identity.certificate: %w", err)
		}
		rec.PreviousCertificatePEM, rec.PreviousKey = string(cur), id.PrivateKey
		if c, err := parseCertPEM(cur); err == nil {
			rec.PreviousCertificateID = certificateID(c)
		}
		if err := r.a.db.PutRotation(*rec); err != nil {
			return err
		}
	}
	if err := atomicfile.WriteFile(id.Certificate+".prev", []byte(rec.PreviousCertificatePEM), 0o644); err != nil {
		return fmt.Errorf("fallback certificate: %w", err)
	}
	if isPEMKey(rec.Key) {
		if _, err := os.Lstat(rec.Key); err == nil {
			if err := hsm.AppendPEMKey(id.PrivateKey, rec.Key); err != nil {
				return err
			}
		}
	}
	// A TPM key stays in its own file (a TSS2 file holds one key): the
	// certificate picks it until the end of the fallback renames it.
	failpoint("rotation:commit-key")
	pend, err := hsm.Open(ctx, r.pendingCertOr(rec), id.PrivateKey)
	if err != nil {
		return fmt.Errorf("the new identity does not open from %s: %w", id.PrivateKey, err)
	}
	defer pend.Close()
	r.reseal(ctx, pend)
	if err := atomicfile.WriteFile(id.Certificate, []byte(rec.CertificatePEM), 0o644); err != nil {
		return fmt.Errorf("identity.certificate: %w", err)
	}
	failpoint("rotation:commit-cert")
	now := time.Now().UTC()
	rec.Phase, rec.Committed, rec.FallbackUntil = store.RotationFallback, now, now.Add(id.fallback())
	rec.Attempts, rec.NextAttempt, rec.LastError, rec.LastErrorAt = 0, time.Time{}, "", time.Time{}
	rec.RetirementAnnounced = false
	if err := r.a.db.PutRotation(*rec); err != nil {
		return err
	}
	os.Remove(r.pendingCert())
	if isPEMKey(rec.Key) {
		os.Remove(rec.Key) // now in the key file
	}
	r.log.Info("rotation committed", "certificate_id", rec.CertificateID, "previous", rec.PreviousCertificateID, "fallback_until", rec.FallbackUntil.Format(time.RFC3339))
	return nil
}

// pendingCertOr is the pending certificate's file, rewritten from the
// record when a crash took it.
func (r *rotator) pendingCertOr(rec *store.Rotation) string {
	if _, err := os.Stat(r.pendingCert()); err != nil {
		_ = atomicfile.WriteFile(r.pendingCert(), []byte(rec.CertificatePEM), 0o644)
	}
	return r.pendingCert()
}

// reseal stores the cache under the new identity's sealer (a PEM key's
// sealer is derived from the key) with the proof's credentials as the
// device role's, so the next generation serves at once.
func (r *rotator) reseal(ctx context.Context, pend *hsm.Identity) {
	sealer, err := pend.Sealer(ctx, "tether-state")
	if err != nil {
		r.log.Warn("credentials will be fetched again after the switch", "err", err)
		return
	}
	next := r.a.db.WithSealer(sealer)
	r.a.closing.RLock()
	defer r.a.closing.RUnlock()
	if err := r.a.db.Reseal(next); err != nil {
		r.log.Warn("some cached credentials will be fetched again after the switch", "err", err)
	}
	r.mu.Lock()
	proof := r.proof
	r.mu.Unlock()
	if proof != nil {
		key := deviceCredentialsKey(r.a.cfg, sha256.Sum256(pend.Leaf().Raw)).storeKey(DeviceRole)
		if err := next.PutCredentials(key, store.Cached{Credentials: *proof, Lifetime: r.proofLifetime}); err != nil {
			r.log.Warn("the device role will be fetched again after the switch", "err", err)
		}
	}
}

// fail abandons the pending identity, keeps the current one and schedules
// the next attempt with backoff and full jitter.
func (r *rotator) fail(ctx context.Context, rec *store.Rotation, err error) {
	if rec.Phase == store.RotationCommit {
		// Part of the switch may be done; rolling forward is retried.
		r.log.Error("rotation commit failed; retrying", "err", err)
		r.schedule(rec, err, false)
		return
	}
	activated := rec.Phase == store.RotationProve
	if activated && rec.CertificateID != "" {
		// RegisterThing made it ACTIVE: have the cloud deactivate it.
		r.announceRetired(ctx, rec.CertificateID, "refused during the proof")
	}
	os.Remove(r.pendingCert())
	if hsm.IsURI(rec.Key) {
		if derr := hsm.DeleteKeys(ctx, rec.Key, nil); derr != nil {
			r.log.Warn("the pending key could not be deleted from the token", "err", derr)
		}
	} else {
		removeKeyFile(rec.Key)
	}
	r.schedule(rec, err, true)
}

func (r *rotator) schedule(rec *store.Rotation, err error, abandon bool) {
	rec.Attempts++
	ceiling := maxRetry
	if rec.Attempts < 20 {
		ceiling = min(maxRetry, baseRetry<<rec.Attempts)
	}
	delay := minRetry + rand.N(ceiling)
	now := time.Now().UTC()
	rec.LastError, rec.LastErrorAt, rec.NextAttempt = oneLine(err), now, now.Add(delay)
	if abandon {
		*rec = store.Rotation{Attempts: rec.Attempts, LastError: rec.LastError, LastErrorAt: now, NextAttempt: rec.NextAttempt, Committed: rec.Committed}
	}
	if perr := r.a.db.PutRotation(*rec); perr != nil {
		r.log.Error("rotation record not saved", "err", perr)
	}
	r.log.Warn("rotation failed; the current identity stays in use", "err", rec.LastError, "attempts", rec.Attempts, "next_attempt", rec.NextAttempt.Format(time.RFC3339))
}

func oneLine(err error) string { return strings.ReplaceAll(err.Error(), "\n", "; ") }

// fallback watches the new identity while the previous one is kept: if the
// credentials provider refuses the new certificate, the previous is put
// back; once the period is over, the previous certificate is announced as
// retired and its key removed.
func (r *rotator) fallback(ctx context.Context, rec *store.Rotation) bool {
	id := &r.a.cfg.Identity
	var dev *credprovider.Refresher
	if rl := r.a.roles[DeviceRole]; rl != nil {
		dev = rl.ref
	}
	if rec.PreviousCertificatePEM != "" {
		if who := r.refusedBy(ctx, dev, rec); who != "" {
			return r.revert(ctx, rec, who)
		}
	}
	if time.Now().Before(rec.FallbackUntil) {
		return false
	}
	if !rec.RetirementAnnounced && rec.PreviousCertificateID != "" {
		if !r.announceRetired(ctx, rec.PreviousCertificateID, "rotated") {
			return false
		}
		rec.RetirementAnnounced = true
		if err := r.a.db.PutRotation(*rec); err != nil {
			return false
		}
	}
	moved, err := r.removePrevious(ctx, rec)
	if err != nil {
		r.log.Error("the previous key could not be removed", "err", err)
		return false
	}
	failpoint("rotation:previous-removed")
	os.Remove(id.Certificate + ".prev")
	*rec = store.Rotation{Committed: rec.Committed}
	if err := r.a.db.PutRotation(*rec); err != nil {
		return false
	}
	r.log.Info("rotation finished: the previous key is removed")
	if moved {
		// The running key was loaded from the file that moved: the next
		// generation opens it under its configured name.
		r.switched <- struct{}{}
		return true
	}
	return false
}

// brokerRefusals is how many connection attempts in a row the broker must
// refuse the new certificate for before the fallback watch believes it.
const brokerRefusals = 2

// refusedBy names who refuses the new certificate after the switch ("" when
// nobody does): the credentials provider (401/403 with no valid credentials
// left), or the broker (brokerRefusals attempts in a row refused for the
// identity, while the previous identity still connects: a broker that
// refuses both is not a reason to go back).
func (r *rotator) refusedBy(ctx context.Context, dev *credprovider.Refresher, rec *store.Rotation) string {
	if refused(dev) {
		return "the credentials provider"
	}
	s := r.a.session()
	if s == nil {
		return ""
	}
	st := s.Status()
	if st.IdentityRefused < brokerRefusals {
		return ""
	}
	if err := r.previousConnects(ctx, rec); err != nil {
		r.log.Warn("the broker refuses the new certificate, but the previous one does not connect either; keeping the new one",
			"certificate_id", rec.CertificateID, "broker_error", st.LastError, "previous_error", err)
		return ""
	}
	return "the broker"
}

// previousConnects connects to the broker once with the previous identity
// (the certificate kept beside the current one, its key still in the
// store).
func (r *rotator) previousConnects(ctx context.Context, rec *store.Rotation) error {
	prevCert := r.a.cfg.Identity.Certificate + ".prev"
	if _, err := os.Stat(prevCert); err != nil {
		if err := atomicfile.WriteFile(prevCert, []byte(rec.PreviousCertificatePEM), 0o644); err != nil {
			return fmt.Errorf("fallback certificate: %w", err)
		}
	}
	prev, err := hsm.Open(ctx, prevCert, cmp.Or(rec.PreviousKey, r.a.cfg.Identity.PrivateKey))
	if err != nil {
		return fmt.Errorf("previous identity: %w", err)
	}
	defer prev.Close()
	return r.dial(ctx, prev)
}

// dial makes one MQTT connection to the broker with ident, under its own
// client id (the device's would take the agent's session over).
func (r *rotator) dial(ctx context.Context, ident *hsm.Identity) error {
	cfg := r.a.cfg
	roots, err := brokerRoots(cfg)
	if err != nil {
		return err
	}
	conn, err := fleetprov.Dial(ctx, fleetprov.DialConfig{Endpoint: cfg.MQTT.Endpoint, Port: cfg.MQTT.Port,
		ClientID: cfg.MQTT.ClientID + "-rotation", Certificate: ident.Certificate(), RootCAs: roots})
	if err != nil {
		return err
	}
	conn.Close()
	return nil
}

// revert puts the previous certificate back after who refused the new one
// during the fallback period, has the cloud deactivate the new one, and
// ends the generation so the next one runs the previous identity.
func (r *rotator) revert(ctx context.Context, rec *store.Rotation, who string) bool {
	r.log.Error(who+" refuses the new certificate; going back to the previous one", "certificate_id", rec.CertificateID)
	if err := atomicfile.WriteFile(r.a.cfg.Identity.Certificate, []byte(rec.PreviousCertificatePEM), 0o644); err != nil {
		r.log.Error("rollback failed", "err", err)
		return false
	}
	r.announceRetired(ctx, rec.CertificateID, "refused after the switch")
	pending := rec.Key
	r.schedule(rec, fmt.Errorf("%s refused the new certificate after the switch; rolled back to the previous one", who), true)
	if tpm.IsURI(pending) {
		removeKeyFile(pending) // the refused key; the certificate no longer picks it
	}
	r.switched <- struct{}{}
	return true
}

// removePrevious deletes the previous key: from the PEM file (keeping the
// current certificate's), from the token (every key with the label but the
// new one's id), or, for a TPM key file, by renaming the new key's file
// over it; moved reports that the running key's file was renamed.
func (r *rotator) removePrevious(ctx context.Context, rec *store.Rotation) (moved bool, err error) {
	id := &r.a.cfg.Identity
	switch {
	case tpm.IsURI(id.PrivateKey):
		return r.renameTPMKey(rec)
	case !hsm.IsURI(id.PrivateKey):
		return false, hsm.KeepPEMKey(id.PrivateKey, r.a.id.Leaf().PublicKey)
	}
	u, err := hsm.ParseURI(rec.Key)
	if err != nil || len(u.ID) == 0 {
		return false, fmt.Errorf("the rotation record names no new key id (%q)", redactKey(rec.Key))
	}
	// Only if the running identity is the new key: never delete the key in use.
	if loc, err := hsm.ParseURI(r.a.id.KeyLocation()); err == nil && len(loc.ID) > 0 && !bytes.Equal(loc.ID, u.ID) {
		return false, fmt.Errorf("the running key %s is not the rotated one", loc)
	}
	if err := hsm.DeleteKeys(ctx, id.PrivateKey, u.ID); err != nil {
		// Cleanup only: the certificate already picks the new key.
		r.log.Warn("the previous key stays in the token", "err", err)
	}
	return false, nil
}

// renameTPMKey renames the new TPM key file (PendingKey) over the previous
// one: one atomic rename, after which the configured file holds the key the
// certificate is for; done again, it does nothing.
func (r *rotator) renameTPMKey(rec *store.Rotation) (bool, error) {
	cur, _ := hsm.KeyFile(r.a.cfg.Identity.PrivateKey)
	next, ok := hsm.KeyFile(rec.Key)
	if !ok || next == cur {
		return false, fmt.Errorf("the rotation record names no new TPM key file (%q)", redactKey(rec.Key))
	}
	if _, err := os.Lstat(next); errors.Is(err, os.ErrNotExist) {
		return false, nil // renamed before a restart
	}
	// Only if the running identity is the new key: never remove the key in use.
	switch loc, _ := hsm.KeyFile(r.a.id.KeyLocation()); loc {
	case next:
	case cur:
		// The previous certificate is back (a rollback a crash cut short):
		// the new key is the one to go.
		return false, os.Remove(next)
	default:
		return false, fmt.Errorf("the running key %s is neither %s nor %s", r.a.id.KeyLocation(), cur, next)
	}
	if err := os.Rename(next, cur); err != nil {
		return false, err
	}
	return true, atomicfile.SyncDir(filepath.Dir(cur))
}

// pendingKeyRef is where a rotation generates the new key: beside the PEM
// or TPM key file (hsm.PendingKey), or in the same token with the same label
// and a new random id.
func pendingKeyRef(ref string) string {
	if !hsm.IsURI(ref) {
		return hsm.PendingKey(ref)
	}
	id := make([]byte, 16)
	_, _ = cryptorand.Read(id)
	path, query, hasQuery := strings.Cut(ref, "?")
	var b strings.Builder
	b.WriteString(path)
	b.WriteString(";id=")
	for _, c := range id {
		fmt.Fprintf(&b, "%%%02x", c)
	}
	if hasQuery {
		b.WriteString("?" + query)
	}
	return b.String()
}

// rollback puts the previous certificate back after a switch the agent
// could not make, and records why; the running identity stays in use.
func (r *rotator) rollback(cause error) {
	rec, ok, err := r.a.db.Rotation()
	if err != nil || !ok || rec.Phase != store.RotationFallback || rec.PreviousCertificatePEM == "" {
		return
	}
	if err := atomicfile.WriteFile(r.a.cfg.Identity.Certificate, []byte(rec.PreviousCertificatePEM), 0o644); err != nil {
		r.log.Error("rollback failed", "err", err)
		return
	}
	r.schedule(&rec, fmt.Errorf("the rotated identity did not start (%w); rolled back", cause), true)
}

// refused reports whether the credentials provider refused the device's
// certificate (HTTP 401/403) and no valid credentials are left.
func refused(ref *credprovider.Refresher) bool {
	if ref == nil {
		return false
	}
	st := ref.Status()
	var se *credprovider.ServiceError
	return !st.Valid && errors.As(st.LastError, &se) && (se.StatusCode == 401 || se.StatusCode == 403)
}

// announceRetired queues the retirement notice in the durable outbox, so it
// reaches identity.retired_topic even across restarts. It reports whether
// the notice was queued (or there is no topic).
func (r *rotator) announceRetired(ctx context.Context, certID, reason string) bool {
	topic := r.a.cfg.Identity.RetiredTopic
	if topic == "" {
		return true
	}
	body, _ := json.Marshal(map[string]string{"certificateId": certID, "thingName": r.a.cfg.Identity.ThingName, "reason": reason})
	s := r.a.session()
	if s == nil {
		r.log.Error("retirement notice not queued: the MQTT session is restarting", "topic", topic)
		return false
	}
	if _, err := s.Publish(ctx, topic, body, 1); err != nil {
		r.log.Error("retirement notice not queued", "topic", topic, "err", err)
		return false
	}
	r.log.Info("retirement notice queued", "topic", topic, "certificate_id", certID, "reason", reason)
	return true
}

// isPEMKey reports whether ref is a PEM key file (not a pkcs11: or tpm:
// reference).
func isPEMKey(ref string) bool { return ref != "" && !hsm.IsURI(ref) && !tpm.IsURI(ref) }

// isKeyFile reports whether the key ref names lives in a file of its own.
func isKeyFile(ref string) bool {
	_, ok := hsm.KeyFile(ref)
	return ok
}

// removeKeyFile removes the file of a pending key (a PEM or TPM key file);
// a key in a token is not a file.
func removeKeyFile(ref string) {
	if f, ok := hsm.KeyFile(ref); ok && ref != "" {
		_ = os.Remove(f)
	}
}

func certificateID(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	return hex.EncodeToString(sum[:])
}

// keyTypeOf keeps the kind of key the device has.
func keyTypeOf(c *x509.Certificate) hsm.KeyType {
	switch c.PublicKeyAlgorithm {
	case x509.RSA:
		return hsm.KeyRSA2048
	case x509.ECDSA:
		if k, ok := c.PublicKey.(*ecdsa.PublicKey); ok && k.Curve == elliptic.P384() {
			return hsm.KeyECP384
		}
	}
	return hsm.KeyECP256
}
