//go:build cgo && !nopkcs11

package hsm

import (
	"encoding/binary"
	"fmt"
	"strings"

	"github.com/miekg/pkcs11"
)

type tokenRef struct {
	slot uint
	info pkcs11.TokenInfo
}

func (t tokenRef) String() string {
	return tokenName(t.info.Label, strings.TrimSpace(t.info.SerialNumber), t.slot)
}

func listTokens(p *pkcs11.Ctx) ([]tokenRef, error) {
	slots, err := p.GetSlotList(true)
	if err != nil {
		return nil, fmt.Errorf("C_GetSlotList: %w", err)
	}
	var out []tokenRef
	for _, s := range slots {
		ti, err := p.GetTokenInfo(s)
		if err != nil {
			continue // removed between the two calls
		}
		out = append(out, tokenRef{slot: s, info: ti})
	}
	return out, nil
}

// pickToken finds the token the URI selects.
func pickToken(u *URI, toks []tokenRef) (tokenRef, error) {
	cands := make([]tokenCandidate, len(toks))
	for i, t := range toks {
		cands[i] = tokenCandidate{slot: t.slot, label: t.info.Label, serial: strings.TrimSpace(t.info.SerialNumber),
			initialized: t.info.Flags&pkcs11.CKF_TOKEN_INITIALIZED != 0, name: t.String()}
	}
	i, err := chooseToken(u, "module "+u.ModulePath, cands)
	if err != nil {
		return tokenRef{}, err
	}
	return toks[i], nil
}

// login logs the session's application in. A wrong PIN is reported at once
// and never tried again by this package: tokens lock after a few failures.
func login(p *pkcs11.Ctx, sh pkcs11.SessionHandle, t tokenRef, u *URI, pin string) error {
	return doLogin(t, u, pin, t.info.Flags&pkcs11.CKF_USER_PIN_LOCKED != 0, t.info.Flags&pkcs11.CKF_LOGIN_REQUIRED != 0,
		func() (loginResult, error) {
			err := p.Login(sh, pkcs11.CKU_USER, pin)
			switch {
			case err == nil, ckr(err, pkcs11.CKR_USER_ALREADY_LOGGED_IN):
				return loginOK, nil
			case ckr(err, pkcs11.CKR_PIN_INCORRECT):
				return loginPINIncorrect, err
			case ckr(err, pkcs11.CKR_PIN_LOCKED):
				return loginPINLocked, err
			case isLost(err):
				return loginLost, err
			}
			return loginFailed, err
		})
}

// keyRef is a private key found by the preflight.
type keyRef struct {
	id, label []byte
	keyType   uint
}

func findObjects(p *pkcs11.Ctx, sh pkcs11.SessionHandle, tmpl []*pkcs11.Attribute) ([]pkcs11.ObjectHandle, error) {
	if err := p.FindObjectsInit(sh, tmpl); err != nil {
		return nil, err
	}
	var all []pkcs11.ObjectHandle
	for {
		hs, _, err := p.FindObjects(sh, 64)
		if err != nil {
			_ = p.FindObjectsFinal(sh)
			return nil, err
		}
		all = append(all, hs...)
		if len(hs) == 0 {
			break
		}
	}
	return all, p.FindObjectsFinal(sh)
}

var classNames = map[uint]string{
	pkcs11.CKO_PRIVATE_KEY: "private", pkcs11.CKO_PUBLIC_KEY: "public",
	pkcs11.CKO_SECRET_KEY: "secret-key", pkcs11.CKO_CERTIFICATE: "cert", pkcs11.CKO_DATA: "data",
}

func describe(p *pkcs11.Ctx, sh pkcs11.SessionHandle, h pkcs11.ObjectHandle) Object {
	var o Object
	attrs, err := p.GetAttributeValue(sh, h, []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, nil),
		pkcs11.NewAttribute(pkcs11.CKA_LABEL, nil),
		pkcs11.NewAttribute(pkcs11.CKA_ID, nil),
	})
	if err != nil {
		return Object{Class: "unreadable"}
	}
	cls := bytesToUint(attrs[0].Value)
	o.Class = classNames[cls]
	if o.Class == "" {
		o.Class = fmt.Sprintf("class-%#x", cls)
	}
	o.Label, o.ID = string(attrs[1].Value), attrs[2].Value
	if cls != pkcs11.CKO_PRIVATE_KEY && cls != pkcs11.CKO_PUBLIC_KEY && cls != pkcs11.CKO_SECRET_KEY {
		return o
	}
	if a, err := p.GetAttributeValue(sh, h, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, nil)}); err == nil {
		o.KeyType = keyTypeName(p, sh, h, bytesToUint(a[0].Value))
	}
	if cls == pkcs11.CKO_PUBLIC_KEY {
		return o
	}
	if a, err := p.GetAttributeValue(sh, h, []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, nil),
		pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, nil),
	}); err == nil {
		o.Sensitive = len(a[0].Value) == 1 && a[0].Value[0] != 0
		o.Extractable = len(a[1].Value) == 1 && a[1].Value[0] != 0
	}
	return o
}

func keyTypeName(p *pkcs11.Ctx, sh pkcs11.SessionHandle, h pkcs11.ObjectHandle, kt uint) string {
	switch kt {
	case pkcs11.CKK_EC:
		a, err := p.GetAttributeValue(sh, h, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_EC_PARAMS, nil)})
		if err == nil {
			switch string(a[0].Value) {
			case string(ecParamsP256):
				return "EC P-256"
			case string(ecParamsP384):
				return "EC P-384"
			}
		}
		return "EC"
	case pkcs11.CKK_RSA:
		a, err := p.GetAttributeValue(sh, h, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_MODULUS, nil)})
		if err == nil && len(a[0].Value) > 0 {
			return fmt.Sprintf("RSA %d", len(a[0].Value)*8)
		}
		return "RSA"
	case pkcs11.CKK_AES:
		a, err := p.GetAttributeValue(sh, h, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_VALUE_LEN, nil)})
		if err == nil {
			return fmt.Sprintf("AES %d", bytesToUint(a[0].Value)*8)
		}
		return "AES"
	default:
		return fmt.Sprintf("key-type-%#x", kt)
	}
}

// bytesToUint decodes a CK_ULONG attribute (host byte order, host size).
func bytesToUint(b []byte) uint {
	switch len(b) {
	case 4:
		return uint(binary.NativeEndian.Uint32(b))
	case 8:
		return uint(binary.NativeEndian.Uint64(b))
	}
	return 0
}

// findKey looks the URI's private key up, listing what is there when it is
// missing.
func findKey(p *pkcs11.Ctx, sh pkcs11.SessionHandle, t tokenRef, u *URI) (keyRef, error) {
	// ParseKeyURI made sure that u names a private key.
	tmpl := []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_PRIVATE_KEY)}
	if u.Object != "" {
		tmpl = append(tmpl, pkcs11.NewAttribute(pkcs11.CKA_LABEL, u.Object))
	}
	if len(u.ID) > 0 {
		tmpl = append(tmpl, pkcs11.NewAttribute(pkcs11.CKA_ID, u.ID))
	}
	hs, err := findObjects(p, sh, tmpl)
	if err != nil {
		if isLost(err) {
			return keyRef{}, fmt.Errorf("%w: token %s: C_FindObjects: %w", ErrTokenUnavailable, t, err)
		}
		return keyRef{}, fmt.Errorf("token %s: C_FindObjects: %w", t, err)
	}
	if err := keyCountErr(u, t, len(hs), func() string { return keyList(p, sh) }); err != nil {
		return keyRef{}, err
	}
	o := describe(p, sh, hs[0])
	if len(o.ID) == 0 {
		return keyRef{}, fmt.Errorf("private key %q in token %s has no CKA_ID, which crypto11 needs to pair it with its public key; set one (pkcs11-tool --set-id)", o.Label, t)
	}
	a, err := p.GetAttributeValue(sh, hs[0], []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, nil)})
	if err != nil {
		return keyRef{}, fmt.Errorf("token %s: key %q: %w", t, o.Label, err)
	}
	return keyRef{id: o.ID, label: []byte(o.Label), keyType: bytesToUint(a[0].Value)}, nil
}

// keyList names the token's key objects (labels, ids, types; never values).
func keyList(p *pkcs11.Ctx, sh pkcs11.SessionHandle) string {
	hs, err := findObjects(p, sh, nil)
	if err != nil {
		return "(cannot list: " + err.Error() + ")"
	}
	objs := make([]Object, len(hs))
	for i, h := range hs {
		objs[i] = describe(p, sh, h)
	}
	return keyNames(objs)
}

// preflight checks module, token, PIN and (when wantKey) the key with the
// raw PKCS#11 API, producing errors that say what exists. It returns the
// token and the key found. The caller holds moduleMu.
func preflight(u *URI, pin string, wantKey bool) (tokenRef, keyRef, error) {
	var t tokenRef
	var k keyRef
	err := withModule(u.ModulePath, func(p *pkcs11.Ctx) error {
		toks, err := listTokens(p)
		if err != nil {
			return fmt.Errorf("%w: module %s: %w", ErrTokenUnavailable, u.ModulePath, err)
		}
		if t, err = pickToken(u, toks); err != nil {
			return err
		}
		sh, err := p.OpenSession(t.slot, pkcs11.CKF_SERIAL_SESSION)
		if err != nil {
			if isLost(err) {
				return fmt.Errorf("%w: token %s: C_OpenSession: %w", ErrTokenUnavailable, t, err)
			}
			return fmt.Errorf("token %s: C_OpenSession: %w", t, err)
		}
		// Closing the session (not C_Logout) keeps any login another
		// crypto11 context of this process holds on the token.
		defer p.CloseSession(sh)
		if err := login(p, sh, t, u, pin); err != nil {
			return err
		}
		if wantKey {
			k, err = findKey(p, sh, t, u)
			return err
		}
		return nil
	})
	return t, k, err
}
