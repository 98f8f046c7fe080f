package hsm

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"errors"
	"fmt"

	"github.com/tetherd/tether/hsm/p11rpc"
)

// rpcList is List over p11-kit's RPC; see List.
func rpcList(ctx context.Context, u *URI, login bool, o options) ([]Slot, error) {
	pin := ""
	if login {
		var err error
		if pin, err = u.readPIN(o.getenv); err != nil {
			return nil, err
		}
	}
	c, err := dialP11Kit(ctx, u)
	if err != nil {
		return nil, err
	}
	defer func() {
		_ = c.Finalize()
		c.Close()
	}()
	slots, err := c.GetSlotList(false)
	if err != nil {
		return nil, fmt.Errorf("%s: C_GetSlotList: %w", u.moduleHost(), err)
	}
	var chosen *rpcToken
	if login {
		toks, err := rpcTokens(c)
		if err != nil {
			return nil, err
		}
		t, err := rpcPickToken(u, toks)
		if err != nil {
			return nil, err
		}
		chosen = &t
	}
	var out []Slot
	for _, s := range slots {
		si, err := c.GetSlotInfo(s)
		if err != nil {
			if p11rpc.IsTransport(err) {
				return nil, err
			}
			continue
		}
		slot := Slot{ID: s, Description: si.SlotDescription}
		if si.Flags&p11rpc.CKF_TOKEN_PRESENT != 0 {
			if ti, err := c.GetTokenInfo(s); err == nil {
				tok, err := rpcListToken(c, rpcToken{slot: s, info: ti}, chosen, u, pin)
				if err != nil {
					return nil, err
				}
				slot.Token = tok
			}
		}
		out = append(out, slot)
	}
	return out, nil
}

func rpcListToken(c *p11rpc.Client, t rpcToken, chosen *rpcToken, u *URI, pin string) (*Token, error) {
	f := t.info.Flags
	tok := &Token{
		Label: t.info.Label, Serial: t.info.SerialNumber, Model: t.info.Model, Manufacturer: t.info.ManufacturerID,
		Initialized:   f&p11rpc.CKF_TOKEN_INITIALIZED != 0,
		LoginRequired: f&p11rpc.CKF_LOGIN_REQUIRED != 0,
		UserPINLocked: f&p11rpc.CKF_USER_PIN_LOCKED != 0,
	}
	if !tok.Initialized {
		return tok, nil
	}
	sh, err := c.OpenSession(t.slot, 0)
	if err != nil {
		return tok, nil
	}
	defer c.CloseSession(sh)
	if chosen != nil && chosen.slot == t.slot {
		if err := rpcLogin(c, sh, t, u, pin); err != nil {
			return nil, err
		}
		tok.LoggedIn = true
	}
	hs, err := c.FindAll(sh, nil, maxObjects)
	if err != nil {
		return tok, nil
	}
	for _, h := range hs {
		tok.Objects = append(tok.Objects, rpcDescribe(c, sh, h))
	}
	return tok, nil
}

// rpcGenerateKey is GenerateKey over p11-kit's RPC; see GenerateKey.
func rpcGenerateKey(ctx context.Context, u *URI, kt KeyType, o options) (crypto.PublicKey, error) {
	pin, err := u.readPIN(o.getenv)
	if err != nil {
		return nil, err
	}
	s, err := rpcOpen(ctx, u, pin)
	if err != nil {
		return nil, fmt.Errorf("keygen: %w", err)
	}
	defer s.close()
	switch err := s.findKey(u); {
	case err == nil:
		return nil, fmt.Errorf("keygen %s: a private key with that label/id already exists in token %s; pick another object= or delete it first", u, s.tok)
	case !errors.Is(err, ErrKeyNotFound):
		return nil, fmt.Errorf("keygen: %w", err)
	}
	if !s.rw {
		return nil, fmt.Errorf("keygen %s: token %s is read-only", u, s.tok)
	}
	id := u.ID
	if len(id) == 0 {
		id = make([]byte, 16)
		if _, err := rand.Read(id); err != nil {
			return nil, err
		}
	}
	common := []p11rpc.Attribute{
		p11rpc.Bool(p11rpc.CKA_TOKEN, true),
		p11rpc.String(p11rpc.CKA_LABEL, u.Object),
		p11rpc.Bytes(p11rpc.CKA_ID, id),
	}
	// The public half is readable without login; the private half needs it
	// and stays sensitive and non-extractable.
	pub := append([]p11rpc.Attribute{
		p11rpc.Ulong(p11rpc.CKA_CLASS, p11rpc.CKO_PUBLIC_KEY),
		p11rpc.Bool(p11rpc.CKA_PRIVATE, false),
		p11rpc.Bool(p11rpc.CKA_VERIFY, true),
	}, common...)
	priv := append([]p11rpc.Attribute{
		p11rpc.Ulong(p11rpc.CKA_CLASS, p11rpc.CKO_PRIVATE_KEY),
		p11rpc.Bool(p11rpc.CKA_PRIVATE, true),
		p11rpc.Bool(p11rpc.CKA_SIGN, true),
		p11rpc.Bool(p11rpc.CKA_SENSITIVE, true),
		p11rpc.Bool(p11rpc.CKA_EXTRACTABLE, false),
	}, common...)
	var mech p11rpc.Mechanism
	switch kt {
	case KeyECP256, KeyECP384:
		params := ecParamsP256
		if kt == KeyECP384 {
			params = ecParamsP384
		}
		mech = p11rpc.Mechanism{Type: p11rpc.CKM_EC_KEY_PAIR_GEN}
		pub = append(pub, p11rpc.Ulong(p11rpc.CKA_KEY_TYPE, p11rpc.CKK_EC), p11rpc.Bytes(p11rpc.CKA_EC_PARAMS, params))
		priv = append(priv, p11rpc.Ulong(p11rpc.CKA_KEY_TYPE, p11rpc.CKK_EC))
	case KeyRSA2048:
		mech = p11rpc.Mechanism{Type: p11rpc.CKM_RSA_PKCS_KEY_PAIR_GEN}
		pub = append(pub, p11rpc.Ulong(p11rpc.CKA_KEY_TYPE, p11rpc.CKK_RSA),
			p11rpc.Ulong(p11rpc.CKA_MODULUS_BITS, 2048), p11rpc.Bytes(p11rpc.CKA_PUBLIC_EXPONENT, []byte{1, 0, 1}))
		priv = append(priv, p11rpc.Ulong(p11rpc.CKA_KEY_TYPE, p11rpc.CKK_RSA))
	}
	if _, _, err := s.c.GenerateKeyPair(s.sh, mech, pub, priv); err != nil {
		return nil, fmt.Errorf("keygen %s in token %s: %w", u, s.tok, err)
	}
	if err := s.findKey(u); err != nil {
		return nil, fmt.Errorf("keygen %s in token %s: the new key: %w", u, s.tok, err)
	}
	return s.pub, nil
}

// keygenArgs parses and checks GenerateKey's arguments, for both backends.
func keygenArgs(ctx context.Context, uri string, kt KeyType) (*URI, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	u, err := ParseURI(uri)
	if err != nil {
		return nil, err
	}
	if u.Object == "" {
		return nil, fmt.Errorf("keygen %s: name the key with object=LABEL", u)
	}
	switch kt {
	case KeyECP256, KeyECP384, KeyRSA2048:
	default:
		return nil, fmt.Errorf("keygen: key type %q: want ec-p256, ec-p384 or rsa-2048", kt)
	}
	return u, nil
}

// deleteKeysArgs parses and checks DeleteKeys's arguments, for both
// backends.
func deleteKeysArgs(ctx context.Context, uri string) (*URI, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	u, err := ParseURI(uri)
	if err != nil {
		return nil, err
	}
	if u.Object == "" && len(u.ID) == 0 {
		return nil, fmt.Errorf("delete keys %s: the URI names no key", u)
	}
	return u, nil
}

// rpcDeleteKeys is DeleteKeys over p11-kit's RPC; see DeleteKeys.
func rpcDeleteKeys(ctx context.Context, u *URI, keep []byte, o options) error {
	pin, err := u.readPIN(o.getenv)
	if err != nil {
		return err
	}
	s, err := rpcOpen(ctx, u, pin)
	if err != nil {
		return fmt.Errorf("delete keys: %w", err)
	}
	defer s.close()
	if !s.rw {
		return fmt.Errorf("delete keys %s: token %s is read-only", u, s.tok)
	}
	for _, class := range []uint64{p11rpc.CKO_PRIVATE_KEY, p11rpc.CKO_PUBLIC_KEY} {
		tmpl := []p11rpc.Attribute{p11rpc.Ulong(p11rpc.CKA_CLASS, class)}
		if u.Object != "" {
			tmpl = append(tmpl, p11rpc.String(p11rpc.CKA_LABEL, u.Object))
		}
		if len(u.ID) > 0 {
			tmpl = append(tmpl, p11rpc.Bytes(p11rpc.CKA_ID, u.ID))
		}
		hs, err := s.c.FindAll(s.sh, tmpl, maxObjects)
		if err != nil {
			return fmt.Errorf("token %s: C_FindObjects: %w", s.tok, err)
		}
		for _, h := range hs {
			if keep != nil && bytes.Equal(rpcDescribe(s.c, s.sh, h).ID, keep) {
				continue
			}
			if err := s.c.DestroyObject(s.sh, h); err != nil {
				return fmt.Errorf("token %s: C_DestroyObject: %w", s.tok, err)
			}
		}
	}
	return nil
}
