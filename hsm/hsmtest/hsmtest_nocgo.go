//go:build !cgo

package hsmtest

import (
	"os"
	"strings"
	"testing"

	"github.com/tetherd/tether/hsm/p11rpc"
)

// initToken initialises the token through `p11-kit remote` (no cgo here),
// with C_InitToken and C_InitPIN rather than softhsm2-util, which would
// need the PINs on its command line.
func initToken(tk *Token, soPIN, pin string) error {
	return rpcInitToken(tk, soPIN, pin)
}

// ChangePIN sets a new random user PIN on the token (C_SetPIN, through a
// `p11-kit remote` of its own) while keys are open, as an operator
// rotating the PIN would, and writes it to PINFile. Keys opened before keep
// the old PIN in memory.
func (tk *Token) ChangePIN(t testing.TB) {
	t.Helper()
	old, err := os.ReadFile(tk.PINFile)
	if err != nil {
		t.Fatal(err)
	}
	pin := randomPIN(t)
	err = tk.rpcSession(func(c *p11rpc.Client, sh p11rpc.SessionHandle) error {
		return c.SetPIN(sh, strings.TrimSpace(string(old)), pin)
	})
	if err != nil {
		t.Fatalf("hsmtest: C_SetPIN: %v", err)
	}
	if err := os.WriteFile(tk.PINFile, []byte(pin+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
}

// CloseAllSessions needs the module in this process (the cgo build); keys
// reached through p11-kit lose their sessions with hsm's test hook instead.
func (tk *Token) CloseAllSessions(t testing.TB) {
	t.Helper()
	t.Fatal("hsmtest: CloseAllSessions needs the cgo build: with p11-kit the sessions live in the key's own p11-kit process")
}
