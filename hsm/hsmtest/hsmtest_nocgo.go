//go:build !cgo || nopkcs11

package hsmtest

import (
	"testing"

	"github.com/tetherd/tether/hsm/p11rpc"
)

// initToken initialises the token through `p11-kit remote` (no cgo here),
// with C_InitToken and C_InitPIN rather than softhsm2-util, which would
// need the PINs on its command line.
func initToken(tk *Token, soPIN, pin string) error {
	return rpcInitToken(tk, soPIN, pin)
}

// setPIN changes the user PIN through a `p11-kit remote` of its own.
func (tk *Token) setPIN(old, pin string) error {
	return tk.rpcSession(func(c *p11rpc.Client, sh p11rpc.SessionHandle) error {
		return c.SetPIN(sh, old, pin)
	})
}

// CloseAllSessions needs the module in this process (the cgo build); keys
// reached through p11-kit lose their sessions with hsm's test hook instead.
func (tk *Token) CloseAllSessions(t testing.TB) {
	t.Helper()
	t.Fatal("hsmtest: CloseAllSessions needs the cgo build: with p11-kit the sessions live in the key's own p11-kit process")
}
