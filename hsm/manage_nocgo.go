//go:build !cgo || nopkcs11

package hsm

import (
	"context"
	"crypto"
)

// List reports the module's slots, tokens and objects; see the cgo build.
// Here the module is reached through p11-kit: module names the module
// `p11-kit remote` hosts (DefaultModule when empty), or login's URI says
// where it is.
func List(ctx context.Context, module string, login *URI, opts ...Option) ([]Slot, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	o := buildOptions(opts)
	if login != nil {
		return rpcList(ctx, login, true, o)
	}
	if module == "" {
		module = DefaultModule
	}
	return rpcList(ctx, &URI{ModulePath: module}, false, o)
}

// GenerateKey creates a key pair in the token the URI names; see the cgo
// build. Here the module is reached through p11-kit.
func GenerateKey(ctx context.Context, uri string, kt KeyType, opts ...Option) (crypto.PublicKey, error) {
	u, err := keygenArgs(ctx, uri, kt)
	if err != nil {
		return nil, err
	}
	return rpcGenerateKey(ctx, u, kt, buildOptions(opts))
}
