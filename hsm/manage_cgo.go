//go:build cgo && !nopkcs11

package hsm

import (
	"context"
	"crypto"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"fmt"
	"strings"

	"github.com/ThalesIgnite/crypto11"
	"github.com/miekg/pkcs11"
)

// List reports the module's slots, tokens and the objects visible in each
// (labels, ids, key types and the sensitive/extractable flags; never key
// material or PINs). login, when not nil, selects one token and the PIN to
// log into it with, so that its private objects are listed too; other tokens
// are never sent that PIN.
func List(ctx context.Context, module string, login *URI, opts ...Option) ([]Slot, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	o := buildOptions(opts)
	if login != nil && login.viaP11Kit() {
		return rpcList(ctx, login, true, o)
	}
	pin := ""
	if login != nil {
		var err error
		if pin, err = login.readPIN(o.getenv); err != nil {
			return nil, err
		}
		module = login.ModulePath
	}
	if module == "" {
		module = DefaultModule
	}
	moduleMu.Lock()
	defer moduleMu.Unlock()
	var out []Slot
	err := withModule(module, func(p *pkcs11.Ctx) error {
		slots, err := p.GetSlotList(false)
		if err != nil {
			return fmt.Errorf("module %s: C_GetSlotList: %w", module, err)
		}
		var chosen *tokenRef
		if login != nil {
			toks, err := listTokens(p)
			if err != nil {
				return err
			}
			t, err := pickToken(login, toks)
			if err != nil {
				return err
			}
			chosen = &t
		}
		for _, s := range slots {
			si, err := p.GetSlotInfo(s)
			if err != nil {
				continue
			}
			slot := Slot{ID: s, Description: strings.TrimSpace(si.SlotDescription)}
			if si.Flags&pkcs11.CKF_TOKEN_PRESENT != 0 {
				if ti, err := p.GetTokenInfo(s); err == nil {
					t, err := listToken(p, tokenRef{slot: s, info: ti}, chosen, login, pin)
					if err != nil {
						return err
					}
					slot.Token = t
				}
			}
			out = append(out, slot)
		}
		return nil
	})
	return out, err
}

func listToken(p *pkcs11.Ctx, t tokenRef, chosen *tokenRef, loginAs *URI, pin string) (*Token, error) {
	tok := &Token{
		Label: t.info.Label, Serial: strings.TrimSpace(t.info.SerialNumber),
		Model: strings.TrimSpace(t.info.Model), Manufacturer: strings.TrimSpace(t.info.ManufacturerID),
		Initialized:   t.info.Flags&pkcs11.CKF_TOKEN_INITIALIZED != 0,
		LoginRequired: t.info.Flags&pkcs11.CKF_LOGIN_REQUIRED != 0,
		UserPINLocked: t.info.Flags&pkcs11.CKF_USER_PIN_LOCKED != 0,
	}
	if !tok.Initialized {
		return tok, nil
	}
	sh, err := p.OpenSession(t.slot, pkcs11.CKF_SERIAL_SESSION)
	if err != nil {
		return tok, nil
	}
	defer p.CloseSession(sh)
	if chosen != nil && chosen.slot == t.slot {
		if err := login(p, sh, t, loginAs, pin); err != nil {
			return nil, err
		}
		tok.LoggedIn = true
	}
	hs, err := findObjects(p, sh, nil)
	if err != nil {
		return tok, nil
	}
	for _, h := range hs {
		tok.Objects = append(tok.Objects, describe(p, sh, h))
	}
	return tok, nil
}

// GenerateKey creates a key pair in the token the URI names, labelled with
// its object= and identified by its id= (random 16 bytes when absent). The
// private key is sensitive and never extractable; the public key is public
// so that `tether hsm list` shows it without a PIN. It refuses to create a
// second key with the same label or id.
func GenerateKey(ctx context.Context, uri string, kt KeyType, opts ...Option) (crypto.PublicKey, error) {
	u, err := keygenArgs(ctx, uri, kt)
	if err != nil {
		return nil, err
	}
	o := buildOptions(opts)
	if u.viaP11Kit() {
		return rpcGenerateKey(ctx, u, kt, o)
	}
	pin, err := u.readPIN(o.getenv)
	if err != nil {
		return nil, err
	}
	moduleMu.Lock()
	t, _, err := preflight(u, pin, true)
	switch {
	case err == nil:
		moduleMu.Unlock()
		return nil, fmt.Errorf("keygen %s: a private key with that label/id already exists in token %s; pick another object= or delete it first", u, t)
	case !errors.Is(err, ErrKeyNotFound):
		moduleMu.Unlock()
		return nil, fmt.Errorf("keygen: %w", err)
	}
	c, err := configure(u, t, pin)
	moduleMu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("keygen: %w", err)
	}
	defer closeContext(c)
	id := u.ID
	if len(id) == 0 {
		id = make([]byte, 16)
		if _, err := rand.Read(id); err != nil {
			return nil, err
		}
	}
	pubAttrs, err := crypto11.NewAttributeSetWithIDAndLabel(id, []byte(u.Object))
	if err != nil {
		return nil, err
	}
	privAttrs := pubAttrs.Copy()
	// The public half is readable without login; the private half needs it
	// and stays sensitive and non-extractable (crypto11 sets those).
	if err := pubAttrs.Set(crypto11.CkaPrivate, false); err != nil {
		return nil, err
	}
	if err := privAttrs.Set(crypto11.CkaPrivate, true); err != nil {
		return nil, err
	}
	var s crypto11.Signer
	switch kt {
	case KeyECP256:
		s, err = c.GenerateECDSAKeyPairWithAttributes(pubAttrs, privAttrs, elliptic.P256())
	case KeyECP384:
		s, err = c.GenerateECDSAKeyPairWithAttributes(pubAttrs, privAttrs, elliptic.P384())
	case KeyRSA2048:
		s, err = c.GenerateRSAKeyPairWithAttributes(pubAttrs, privAttrs, 2048)
	}
	if err != nil {
		return nil, fmt.Errorf("keygen %s in token %s: %w", u, t, err)
	}
	return s.Public(), nil
}
