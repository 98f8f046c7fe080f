package hsm

import (
	"crypto/rand"
	"fmt"
	"strings"

	"github.com/tetherd/tether/hsm/p11rpc"
)

// This file holds what both PKCS#11 backends (in-process and through
// p11-kit) decide the same way about a token: which one a URI selects, and
// what a login outcome means. Each backend supplies the facts.

// tokenCandidate is what choosing a token needs to know about one.
type tokenCandidate struct {
	slot          uint
	label, serial string
	initialized   bool
	name          string // for messages: label, serial and slot
}

// chooseToken returns the index of the one initialised token u selects
// among cands; host names the module (or server) for messages.
func chooseToken(u *URI, host string, cands []tokenCandidate) (int, error) {
	found := -1
	n := 0
	var names []string
	for i, t := range cands {
		if !t.initialized {
			continue
		}
		names = append(names, t.name)
		var match bool
		switch {
		case u.Token != "":
			match = t.label == u.Token
		case u.Serial != "":
			match = t.serial == u.Serial
		case u.HasSlotID:
			match = t.slot == u.SlotID
		default:
			match = true
		}
		if match {
			found, n = i, n+1
		}
	}
	if n == 1 {
		return found, nil
	}
	present := "no initialised token is present"
	if len(names) > 0 {
		present = "tokens present: " + strings.Join(names, ", ")
	}
	if n == 0 {
		return -1, fmt.Errorf("%w: no token with %s in %s; %s", ErrTokenUnavailable, u.selector(), host, present)
	}
	return -1, fmt.Errorf("%d tokens match %s in %s; add token=, serial= or slot-id= to the URI; %s", n, u.selector(), host, present)
}

// tokenName is how messages name a token.
func tokenName(label, serial string, slot uint) string {
	return fmt.Sprintf("%q (serial %s, slot-id %d)", label, serial, slot)
}

// loginResult classifies what C_Login returned.
type loginResult int

const (
	loginOK loginResult = iota
	loginPINIncorrect
	loginPINLocked
	loginLost
	loginFailed
)

// doLogin logs in when the token needs it: locked, required and login are
// the backend's facts and call. A wrong PIN is reported at once and never
// tried again: tokens lock after a few failures.
func doLogin(t fmt.Stringer, u *URI, pin string, locked, required bool, login func() (loginResult, error)) error {
	if locked {
		return fmt.Errorf("%w: token %s: the user PIN is locked after too many wrong PINs; unlock it with the SO PIN (pkcs11-tool --init-pin --login --login-type so)", ErrPINIncorrect, t)
	}
	if !required {
		return nil
	}
	if pin == "" {
		return fmt.Errorf("%w: token %s needs a PIN; add pin-source=file:PATH (mode 0600) or pin-source=credential:NAME to %s", ErrPINSource, t, u)
	}
	res, err := login()
	switch res {
	case loginOK:
		return nil
	case loginPINIncorrect:
		return fmt.Errorf("%w: token %s refused the PIN from %s; fix the PIN source (not retried: the token locks after repeated failures)", ErrPINIncorrect, t, pinOrigin(u))
	case loginPINLocked:
		return fmt.Errorf("%w: token %s: the user PIN is locked; unlock it with the SO PIN", ErrPINIncorrect, t)
	case loginLost:
		return fmt.Errorf("%w: token %s: C_Login: %w", ErrTokenUnavailable, t, err)
	default:
		return fmt.Errorf("token %s: C_Login: %w", t, err)
	}
}

// keyCountErr says what is wrong when n private keys match the URI.
func keyCountErr(u *URI, t fmt.Stringer, n int, list func() string) error {
	switch n {
	case 1:
		return nil
	case 0:
		return fmt.Errorf("%w: no private key matches %s in token %s; keys there: %s", ErrKeyNotFound, u, t, list())
	}
	return fmt.Errorf("%w: %d private keys match %s in token %s; add id= to pick one: %s", errAmbiguous, n, u, t, list())
}

// keyNames lists the key objects among objs (labels, ids, types; never
// values).
func keyNames(objs []Object) string {
	var s []string
	for _, o := range objs {
		if o.Class == "private" || o.Class == "public" || o.Class == "secret-key" {
			s = append(s, o.String())
		}
	}
	if len(s) == 0 {
		return "none (private keys are visible only after a successful login)"
	}
	return strings.Join(s, "; ")
}

// sealerRoundTrip seals and opens a test text, so that a token that cannot
// run the sealer's mechanism fails when the sealer is made rather than at
// the first Seal.
func sealerRoundTrip(nonceSize int, seal, open func(dst, nonce, text, additionalData []byte) ([]byte, error)) error {
	nonce := make([]byte, nonceSize)
	if _, err := rand.Read(nonce); err != nil {
		return err
	}
	ct, err := seal(nil, nonce, []byte("tether sealer self-test"), nil)
	if err == nil {
		_, err = open(nil, nonce, ct, nil)
	}
	return err
}

// lostCodes are the PKCS#11 return values after which the sessions (or the
// whole module state) are gone and the key must reopen the token.
var lostCodes = []p11rpc.Error{
	p11rpc.CKR_DEVICE_REMOVED, p11rpc.CKR_DEVICE_ERROR, p11rpc.CKR_SESSION_HANDLE_INVALID,
	p11rpc.CKR_SESSION_CLOSED, p11rpc.CKR_TOKEN_NOT_PRESENT, p11rpc.CKR_TOKEN_NOT_RECOGNIZED,
	p11rpc.CKR_CRYPTOKI_NOT_INITIALIZED, p11rpc.CKR_USER_NOT_LOGGED_IN,
	p11rpc.CKR_KEY_HANDLE_INVALID, p11rpc.CKR_OBJECT_HANDLE_INVALID, p11rpc.CKR_SLOT_ID_INVALID,
}

// lostRV reports whether the CK_RV rv is one of lostCodes.
func lostRV(rv uint64) bool {
	for _, c := range lostCodes {
		if rv == uint64(c) {
			return true
		}
	}
	return false
}

// keyPIN reads the PIN for opening u's key, warning when the URI carries
// it in the clear.
func keyPIN(u *URI, o options) (string, error) {
	if u.PINValue != "" {
		o.logger.Warn("pkcs11 URI carries pin-value; the PIN is then readable wherever the configuration is; use pin-source=file:PATH or credential:NAME", "key", u.String())
	}
	return u.readPIN(o.getenv)
}
