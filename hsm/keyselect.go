package hsm

import (
	"context"
	"crypto"
	"errors"
	"fmt"
)

// errAmbiguous: the URI matches several private keys.
var errAmbiguous = errors.New("ambiguous key")

// openMatching opens, among the private keys with the URI's label, the one
// whose public key is want.
func openMatching(ctx context.Context, u *URI, want crypto.PublicKey, o options) (keyBackend, error) {
	slots, err := List(ctx, u.ModulePath, u, WithGetenv(o.getenv))
	if err != nil {
		return nil, err
	}
	var tried int
	for _, s := range slots {
		if s.Token == nil || !s.Token.LoggedIn {
			continue
		}
		for _, obj := range s.Token.Objects {
			if obj.Class != "private" || obj.Label != u.Object || len(obj.ID) == 0 {
				continue
			}
			c := *u
			c.ID = obj.ID
			b, err := openPKCS11(ctx, &c, o)
			if err != nil {
				return nil, err
			}
			tried++
			if samePublic(b.Public(), want) {
				return b, nil
			}
			b.close()
		}
	}
	return nil, fmt.Errorf("%w: none of the %d private keys labelled %q in the token of %s is the certificate's", ErrKeyNotFound, tried, u.Object, u)
}

// samePublic reports whether a and b are the same public key.
func samePublic(a, b crypto.PublicKey) bool {
	eq, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && eq.Equal(b)
}
