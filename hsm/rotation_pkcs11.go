//go:build cgo && !nopkcs11

package hsm

import (
	"bytes"
	"context"
	"fmt"

	"github.com/miekg/pkcs11"
)

// DeleteKeys destroys the key pairs (private and public objects) the URI
// names by its label (and id, when it has one), except those whose CKA_ID
// is keep: the end of a certificate rotation removes the previous key, and
// an abandoned rotation its pending one. Secret keys (the state sealer) are
// never touched.
func DeleteKeys(ctx context.Context, uri string, keep []byte, opts ...Option) error {
	u, err := deleteKeysArgs(ctx, uri)
	if err != nil {
		return err
	}
	o := buildOptions(opts)
	if u.viaP11Kit() {
		return rpcDeleteKeys(ctx, u, keep, o)
	}
	pin, err := u.readPIN(o.getenv)
	if err != nil {
		return err
	}
	moduleMu.Lock()
	defer moduleMu.Unlock()
	return withModule(u.ModulePath, func(p *pkcs11.Ctx) error {
		toks, err := listTokens(p)
		if err != nil {
			return fmt.Errorf("%w: module %s: %w", ErrTokenUnavailable, u.ModulePath, err)
		}
		t, err := pickToken(u, toks)
		if err != nil {
			return err
		}
		sh, err := p.OpenSession(t.slot, pkcs11.CKF_SERIAL_SESSION|pkcs11.CKF_RW_SESSION)
		if err != nil {
			return fmt.Errorf("token %s: C_OpenSession: %w", t, err)
		}
		defer p.CloseSession(sh)
		if err := login(p, sh, t, u, pin); err != nil {
			return err
		}
		for _, class := range []uint{pkcs11.CKO_PRIVATE_KEY, pkcs11.CKO_PUBLIC_KEY} {
			tmpl := []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_CLASS, class)}
			if u.Object != "" {
				tmpl = append(tmpl, pkcs11.NewAttribute(pkcs11.CKA_LABEL, u.Object))
			}
			if len(u.ID) > 0 {
				tmpl = append(tmpl, pkcs11.NewAttribute(pkcs11.CKA_ID, u.ID))
			}
			hs, err := findObjects(p, sh, tmpl)
			if err != nil {
				return fmt.Errorf("token %s: C_FindObjects: %w", t, err)
			}
			for _, h := range hs {
				if keep != nil && bytes.Equal(describe(p, sh, h).ID, keep) {
					continue
				}
				if err := p.DestroyObject(sh, h); err != nil {
					return fmt.Errorf("token %s: C_DestroyObject: %w", t, err)
				}
			}
		}
		return nil
	})
}
