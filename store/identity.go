package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"go.etcd.io/bbolt"
)

// bucketIdentity holds the progress of the identity's lifecycle flows, one
// JSON record per flow. It is created on first write.
var bucketIdentity = []byte("identity")

// Record names in the identity bucket.
const (
	provisioningKey = "provisioning"
	rotationKey     = "rotation"
)

// ProvisionPhase is a step of provisioning by claim. Each phase is recorded
// before its work starts, so that a run after a crash resumes it.
type ProvisionPhase string

// Provisioning phases, in order.
const (
	// ProvisionKey: the new key is being generated at Provisioning.Key.
	ProvisionKey ProvisionPhase = "key"
	// ProvisionCertificate: the key exists; a certificate is requested for it.
	ProvisionCertificate ProvisionPhase = "certificate"
	// ProvisionRegister: the certificate and its ownership token are
	// recorded; RegisterThing activates it.
	ProvisionRegister ProvisionPhase = "register"
	// ProvisionCommit: the certificate is active; the files and the
	// configuration are being written.
	ProvisionCommit ProvisionPhase = "commit"
	// ProvisionDone: the device identity is in place.
	ProvisionDone ProvisionPhase = "done"
)

// Provisioning is the progress of `tether provision`.
type Provisioning struct {
	Phase    ProvisionPhase `json:"phase"`
	Template string         `json:"template"`
	// Key is where the new key is generated: a staging PEM file, or the
	// configured pkcs11: URI.
	Key string `json:"key"`
	// CertificatePEM, CertificateID and OwnershipToken are
	// CreateCertificateFromCsr's answer; Issued is when it came.
	CertificatePEM string    `json:"certificate_pem,omitempty"`
	CertificateID  string    `json:"certificate_id,omitempty"`
	OwnershipToken string    `json:"ownership_token,omitempty"`
	Issued         time.Time `json:"issued,omitzero"`
	ThingName      string    `json:"thing_name,omitempty"`
	LastError      string    `json:"last_error,omitempty"`
	Updated        time.Time `json:"updated"`
}

// RotationPhase is a step of a certificate rotation.
type RotationPhase string

// Rotation phases, in order. Up to RotationProve the current identity is the
// only one in use and a failure abandons the pending one; from RotationCommit
// on the new identity is the device's.
const (
	// RotationKey: the new key is being generated at Rotation.Key.
	RotationKey RotationPhase = "key"
	// RotationCertificate: CreateCertificateFromCsr for the new key.
	RotationCertificate RotationPhase = "certificate"
	// RotationRegister: RegisterThing with the rotation template.
	RotationRegister RotationPhase = "register"
	// RotationProve: the pending identity connects to the broker and
	// fetches credentials.
	RotationProve RotationPhase = "prove"
	// RotationCommit: the files are being switched to the new identity.
	RotationCommit RotationPhase = "commit"
	// RotationFallback: committed; the previous identity is kept until
	// Rotation.FallbackUntil, and its retirement is announced.
	RotationFallback RotationPhase = "fallback"
)

// Rotation is the progress of the current certificate rotation, and what
// the last one left behind.
type Rotation struct {
	Phase RotationPhase `json:"phase,omitempty"` // "" when none is under way
	// Key is the pending key: a staging PEM file or a pkcs11: URI.
	Key            string    `json:"key,omitempty"`
	CertificatePEM string    `json:"certificate_pem,omitempty"`
	CertificateID  string    `json:"certificate_id,omitempty"`
	OwnershipToken string    `json:"ownership_token,omitempty"`
	Issued         time.Time `json:"issued,omitzero"`
	// PreviousCertificatePEM is the certificate replaced at commit, kept as
	// the fallback; PreviousKey is where its key is.
	PreviousCertificatePEM string    `json:"previous_certificate_pem,omitempty"`
	PreviousCertificateID  string    `json:"previous_certificate_id,omitempty"`
	PreviousKey            string    `json:"previous_key,omitempty"`
	Committed              time.Time `json:"committed,omitzero"`
	FallbackUntil          time.Time `json:"fallback_until,omitzero"`
	RetirementAnnounced    bool      `json:"retirement_announced,omitempty"`
	// Attempts counts failed attempts since the last success; NextAttempt
	// is when the next may start (backoff with jitter).
	Attempts    int       `json:"attempts,omitempty"`
	NextAttempt time.Time `json:"next_attempt,omitzero"`
	LastError   string    `json:"last_error,omitempty"`
	LastErrorAt time.Time `json:"last_error_at,omitzero"`
	Updated     time.Time `json:"updated"`
}

// Provisioning returns the provisioning record; ok is false when there is
// none.
func (db *DB) Provisioning() (p Provisioning, ok bool, err error) {
	ok, err = db.getIdentity(provisioningKey, &p)
	return p, ok, err
}

// PutProvisioning records p durably (the write is synced before it returns).
func (db *DB) PutProvisioning(p Provisioning) error {
	p.Updated = time.Now().UTC()
	return db.putIdentity(provisioningKey, p)
}

// Rotation returns the rotation record; ok is false when there is none.
func (db *DB) Rotation() (r Rotation, ok bool, err error) {
	ok, err = db.getIdentity(rotationKey, &r)
	return r, ok, err
}

// PutRotation records r durably (the write is synced before it returns).
func (db *DB) PutRotation(r Rotation) error {
	r.Updated = time.Now().UTC()
	return db.putIdentity(rotationKey, r)
}

func (db *DB) getIdentity(key string, v any) (bool, error) {
	var raw []byte
	err := db.bolt.View(func(tx *bbolt.Tx) error {
		if b := tx.Bucket(bucketIdentity); b != nil {
			raw = append(raw, b.Get([]byte(key))...)
		}
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("store: read %s record in %s: %w", key, db.path, db.mapErr(err))
	}
	if raw == nil {
		return false, nil
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return false, fmt.Errorf("store: %s record in %s is unreadable: %w", key, db.path, err)
	}
	return true, nil
}

func (db *DB) putIdentity(key string, v any) error {
	raw, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("store: encode %s record: %w", key, err)
	}
	err = db.bolt.Update(func(tx *bbolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(bucketIdentity)
		if err != nil {
			return err
		}
		return b.Put([]byte(key), raw)
	})
	if err != nil {
		err = fmt.Errorf("store: save %s record in %s: %w", key, db.path, db.mapErr(err))
		db.setErr(err)
		return err
	}
	return nil
}

// WithSealer returns a view of db that seals and opens credentials with s:
// a certificate rotation writes the credentials the new identity will read
// before it switches to it. The view shares db's file; do not close it.
func (db *DB) WithSealer(s Sealer) *DB {
	return &DB{bolt: db.bolt, path: db.path, sealer: s, log: db.log, schema: db.schema}
}

// Reseal copies every cached credential readable with db's sealer into to,
// sealed with to's: after a rotation with a PEM key the sealer changes, and
// the cache would otherwise read as undecryptable.
func (db *DB) Reseal(to *DB) error {
	keys, err := db.CredentialKeys()
	if err != nil {
		return err
	}
	var errs []error
	for _, k := range keys {
		c, ok, err := db.Credentials(k)
		if err != nil || !ok {
			continue // unreadable entries are refetched anyway
		}
		errs = append(errs, to.PutCredentials(k, c))
	}
	return errors.Join(errs...)
}
