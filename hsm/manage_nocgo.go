//go:build !cgo || nopkcs11

package hsm

import (
	"context"
	"crypto"
)

// List needs the PKCS#11 build.
func List(context.Context, string, *URI, ...Option) ([]Slot, error) {
	return nil, ErrPKCS11Unavailable
}

// GenerateKey needs the PKCS#11 build.
func GenerateKey(context.Context, string, KeyType, ...Option) (crypto.PublicKey, error) {
	return nil, ErrPKCS11Unavailable
}
