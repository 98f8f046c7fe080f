//go:build !cgo

package hsm

import "context"

// openPKCS11 refuses: a static binary cannot dlopen a PKCS#11 module.
func openPKCS11(_ context.Context, u *URI, _ options) (keyBackend, error) {
	return nil, ErrPKCS11Unavailable
}
