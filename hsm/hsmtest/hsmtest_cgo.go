//go:build cgo && !nopkcs11

package hsmtest

import (
	"errors"
	"fmt"
	"testing"

	"github.com/miekg/pkcs11"
)

// initToken uses C_InitToken and C_InitPIN rather than softhsm2-util, which
// would need the PINs on its command line.
func initToken(tk *Token, soPIN, pin string) error {
	module, label := tk.Module, tk.Label
	p := pkcs11.New(module)
	if p == nil {
		return fmt.Errorf("cannot load %s", module)
	}
	defer p.Destroy()
	if err := p.Initialize(); err != nil {
		if errors.Is(err, pkcs11.Error(pkcs11.CKR_CRYPTOKI_ALREADY_INITIALIZED)) {
			return errors.New("the PKCS#11 module is still initialised by an earlier test: close every hsm.Key/hsm.Identity (t.Cleanup) before creating the next token")
		}
		return err
	}
	defer p.Finalize()
	slots, err := p.GetSlotList(true)
	if err != nil {
		return err
	}
	free := -1
	for _, s := range slots {
		ti, err := p.GetTokenInfo(s)
		if err == nil && ti.Flags&pkcs11.CKF_TOKEN_INITIALIZED == 0 {
			free = int(s)
			break
		}
	}
	if free < 0 {
		return errors.New("no free SoftHSM slot")
	}
	if err := p.InitToken(uint(free), soPIN, label); err != nil {
		return fmt.Errorf("C_InitToken: %w", err)
	}
	// SoftHSM moves the new token to a slot of its own.
	slots, err = p.GetSlotList(true)
	if err != nil {
		return err
	}
	for _, s := range slots {
		ti, err := p.GetTokenInfo(s)
		if err != nil || ti.Label != label {
			continue
		}
		sh, err := p.OpenSession(s, pkcs11.CKF_SERIAL_SESSION|pkcs11.CKF_RW_SESSION)
		if err != nil {
			return err
		}
		defer p.CloseSession(sh)
		if err := p.Login(sh, pkcs11.CKU_SO, soPIN); err != nil {
			return fmt.Errorf("SO login: %w", err)
		}
		if err := p.InitPIN(sh, pin); err != nil {
			return fmt.Errorf("C_InitPIN: %w", err)
		}
		return p.Logout(sh)
	}
	return errors.New("initialised token not found")
}

// CloseAllSessions closes every session this process has on the token
// (C_CloseAllSessions), which also logs it out: what a token reset or a
// daemon sharing the module does to a running agent.
func (tk *Token) CloseAllSessions(t testing.TB) {
	t.Helper()
	p := pkcs11.New(tk.Module)
	if p == nil {
		t.Fatalf("hsmtest: cannot load %s", tk.Module)
	}
	defer p.Destroy()
	if err := p.Initialize(); err == nil {
		// Nobody had the module open, so nobody has sessions to lose.
		p.Finalize()
		t.Fatal("hsmtest: CloseAllSessions: the module is not in use by this process")
	}
	slots, err := p.GetSlotList(true)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range slots {
		if ti, err := p.GetTokenInfo(s); err == nil && ti.Label == tk.Label {
			if err := p.CloseAllSessions(s); err != nil {
				t.Fatalf("hsmtest: C_CloseAllSessions: %v", err)
			}
			return
		}
	}
	t.Fatalf("hsmtest: token %q not found", tk.Label)
}

// setPIN changes the user PIN through the module in this process, which
// the keys under test share.
func (tk *Token) setPIN(old, pin string) error {
	return tk.withSession(func(p *pkcs11.Ctx, sh pkcs11.SessionHandle) error {
		return p.SetPIN(sh, old, pin)
	})
}

// withSession runs f with a R/W session on the token, initialising the
// module only if nobody in the process has.
func (tk *Token) withSession(f func(*pkcs11.Ctx, pkcs11.SessionHandle) error) error {
	p := pkcs11.New(tk.Module)
	if p == nil {
		return fmt.Errorf("cannot load %s", tk.Module)
	}
	defer p.Destroy()
	if err := p.Initialize(); err == nil {
		defer p.Finalize()
	}
	slots, err := p.GetSlotList(true)
	if err != nil {
		return err
	}
	for _, s := range slots {
		if ti, err := p.GetTokenInfo(s); err == nil && ti.Label == tk.Label {
			sh, err := p.OpenSession(s, pkcs11.CKF_SERIAL_SESSION|pkcs11.CKF_RW_SESSION)
			if err != nil {
				return err
			}
			defer p.CloseSession(sh)
			return f(p, sh)
		}
	}
	return fmt.Errorf("token %q not found", tk.Label)
}
