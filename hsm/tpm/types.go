package tpm

import "errors"

// Errors callers tell apart with errors.Is.
var (
	// ErrNoDevice means the TPM device (or simulator socket) is absent or
	// cannot be opened.
	ErrNoDevice = errors.New("TPM unavailable")
	// ErrBusy means the TPM is in use by another program, or in its
	// dictionary-attack lockout; it recovers on its own.
	ErrBusy = errors.New("TPM busy")
	// ErrAuth means the TPM refused the key's authorisation value. It is
	// never retried: each failure counts toward the lockout.
	ErrAuth = errors.New("TPM authorisation refused")
	// ErrKeyNotFound means the persistent handle holds nothing, or the key
	// file's parent is missing.
	ErrKeyNotFound = errors.New("TPM key not found")
	// ErrWrongTPM means a key file was made by another TPM (or under another
	// parent, or the TPM was cleared since), so this TPM cannot load it.
	ErrWrongTPM = errors.New("TPM key file belongs to another TPM")
	// ErrKeyFile marks a key file that is missing or not a loadable TSS2 key.
	ErrKeyFile = errors.New("TPM key file unusable")
	// ErrNotBuilt is what a binary built with -tags notpm returns for
	// every TPM key.
	ErrNotBuilt = errors.New("TPM 2.0 support is not in this binary (built with -tags notpm); use a build without it")
)

// KeyFilePEMType is the PEM block type of a TSS2 key file.
const KeyFilePEMType = "TSS2 PRIVATE KEY"

// Key types Generate makes; the names are those of `tether hsm keygen
// --type`.
const (
	ECP256  = "ec-p256"
	ECP384  = "ec-p384"
	RSA2048 = "rsa-2048"
)

// Info describes a TPM for `tether hsm list`: who made it, its lockout
// state and the persistent keys in it. It holds no secret.
type Info struct {
	Device       string
	Manufacturer string
	Firmware     string
	// LockoutCounter counts authorisation failures; at MaxAuthFail the TPM
	// locks out for LockoutRecovery seconds.
	LockoutCounter, MaxAuthFail, LockoutRecovery uint32
	InLockout                                    bool
	Persistent                                   []Persistent
}

// Persistent is one object at a persistent handle.
type Persistent struct {
	Handle uint32
	// Type is e.g. "EC P-256 signing", "RSA 2048 storage".
	Type string
}
