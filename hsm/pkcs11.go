//go:build cgo && !nopkcs11

package hsm

import (
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/ThalesIgnite/crypto11"
	"github.com/miekg/pkcs11"
)

// PKCS11Available reports whether this build can use pkcs11: keys: in
// process, and through p11-kit when the URI says x-p11-kit=.
const PKCS11Available = true

// PKCS11InProcess reports whether this build can load a PKCS#11 module into
// the process: this cgo build can.
const PKCS11InProcess = true

// moduleMu serialises every C_Initialize and C_Finalize this package causes,
// directly or through crypto11.Configure and Context.Close. A module's
// initialised state is per process, and crypto11 finalises the module when a
// Configure fails even while another Context still uses it; checking the
// token, PIN and key first under this lock keeps Configure from failing.
var moduleMu sync.Mutex

// maxSessions bounds the crypto11 session pool: small secure elements allow
// only a handful of sessions, and more than a few concurrent handshakes on a
// gateway are rare.
const maxSessions = 16

// isLost reports whether err means the token or its sessions went away.
// crypto11 formats some errors with %v (its AEAD does), so the name of the
// return value is matched as well as its type.
func isLost(err error) bool {
	var pe pkcs11.Error
	if errors.As(err, &pe) || errors.As(cause(err), &pe) {
		return lostRV(uint64(pe))
	}
	msg := err.Error()
	for _, c := range lostCodes {
		name := pkcs11.Error(c).Error()
		if strings.Contains(msg, name[strings.LastIndex(name, " ")+1:]) {
			return true
		}
	}
	return false
}

// cause unwraps github.com/pkg/errors v0.8 wrappers (crypto11 uses them;
// they predate Unwrap).
func cause(err error) error {
	for {
		c, ok := err.(interface{ Cause() error })
		if !ok {
			return err
		}
		err = c.Cause()
	}
}

func ckr(err error, code pkcs11.Error) bool {
	var pe pkcs11.Error
	return errors.As(cause(err), &pe) && pe == code
}

// withModule loads the module at path and runs f with it initialised. The
// caller holds moduleMu. When this call initialised the module it also
// finalises it, so a later crypto11.Configure starts from a clean state (and
// SoftHSM rescans its token directory).
func withModule(path string, f func(p *pkcs11.Ctx) error) error {
	if err := checkModule(path); err != nil {
		return err
	}
	p := pkcs11.New(path)
	if p == nil {
		return fmt.Errorf("%w: module %s cannot be loaded: not a PKCS#11 library, or built for another architecture or missing its own dependencies (check with ldd)", ErrModule, path)
	}
	defer p.Destroy()
	owned := true
	if err := p.Initialize(); err != nil {
		if !ckr(err, pkcs11.CKR_CRYPTOKI_ALREADY_INITIALIZED) {
			return fmt.Errorf("%w: module %s: C_Initialize: %w", ErrModule, path, err)
		}
		owned = false
	}
	if owned {
		defer p.Finalize()
	}
	return f(p)
}

// configure opens a crypto11 context on the token found by preflight.
func configure(u *URI, t tokenRef, pin string) (*crypto11.Context, error) {
	cfg := &crypto11.Config{
		Path:        u.ModulePath,
		Pin:         pin,
		MaxSessions: maxSessions,
		GCMIVLength: 12, // the NIST-recommended 96-bit GCM nonce
	}
	switch {
	case t.info.Label != "":
		cfg.TokenLabel = t.info.Label
	case strings.TrimSpace(t.info.SerialNumber) != "":
		cfg.TokenSerial = t.info.SerialNumber
	default:
		slot := int(t.slot)
		cfg.SlotNumber = &slot
	}
	if t.info.Flags&pkcs11.CKF_LOGIN_REQUIRED == 0 {
		cfg.LoginNotSupported = true
	}
	c, err := crypto11.Configure(cfg)
	if err != nil {
		if isLost(err) {
			return nil, fmt.Errorf("%w: token %s: %w", ErrTokenUnavailable, t, err)
		}
		return nil, fmt.Errorf("token %s: %w", t, err)
	}
	return c, nil
}

// closeContext closes c under moduleMu (it may finalise the module).
func closeContext(c *crypto11.Context) {
	moduleMu.Lock()
	defer moduleMu.Unlock()
	_ = c.Close()
}
