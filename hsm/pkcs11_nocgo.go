//go:build !cgo || nopkcs11

package hsm

import (
	"context"
)

// PKCS11Available reports whether this build can use pkcs11: keys. A
// CGO_ENABLED=0 binary cannot dlopen a module, and -tags nopkcs11 leaves
// crypto11 out of a cgo build (Yocto and Buildroot without their pkcs11
// option); both reach modules through p11-kit (see p11kit.go).
const PKCS11Available = true

// PKCS11InProcess reports whether this build can load a PKCS#11 module into the
// process: a CGO_ENABLED=0 binary cannot dlopen it, so every module is
// reached through p11-kit.
const PKCS11InProcess = false

// openPKCS11 opens the key through p11-kit: `p11-kit remote MODULE` or the
// URI's p11-kit server socket.
func openPKCS11(ctx context.Context, u *URI, o options) (keyBackend, error) {
	return openP11Kit(ctx, u, o)
}

// DeleteKeys destroys the key pairs the URI names, except those whose
// CKA_ID is keep; see the cgo build. Here the module is reached through
// p11-kit.
func DeleteKeys(ctx context.Context, uri string, keep []byte, opts ...Option) error {
	u, err := deleteKeysArgs(ctx, uri)
	if err != nil {
		return err
	}
	return rpcDeleteKeys(ctx, u, keep, buildOptions(opts))
}
