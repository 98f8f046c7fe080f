//go:build !cgo || nopkcs11

package hsm

import (
	"context"
	"crypto"
	"errors"
)

// PKCS11Available reports whether this build can load PKCS#11 modules: a
// CGO_ENABLED=0 binary cannot dlopen them, and -tags nopkcs11 leaves
// crypto11 out of a cgo build (Yocto and Buildroot without their pkcs11 option).
const PKCS11Available = false

// openPKCS11 refuses: a static binary cannot dlopen a PKCS#11 module.
func openPKCS11(_ context.Context, u *URI, _ options) (keyBackend, error) {
	return nil, ErrPKCS11Unavailable
}

// errAmbiguous: the URI matches several private keys.
var errAmbiguous = errors.New("ambiguous key")

func openMatching(context.Context, *URI, crypto.PublicKey, options) (keyBackend, error) {
	return nil, ErrPKCS11Unavailable
}

// DeleteKeys needs the PKCS#11 build.
func DeleteKeys(context.Context, string, []byte, ...Option) error { return ErrPKCS11Unavailable }
