//go:build cgo

package hsm

import (
	"context"
	"crypto"
	"crypto/cipher"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"

	"github.com/ThalesIgnite/crypto11"
	"github.com/miekg/pkcs11"
)

// PKCS11Available reports whether this build can load PKCS#11 modules: this
// cgo build can.
const PKCS11Available = true

// moduleMu serialises every C_Initialize and C_Finalize this package causes,
// directly or through crypto11.Configure and Context.Close. A module's
// initialised state is per process, and crypto11 finalises the module when a
// Configure fails even while another Context still uses it; checking the
// token, PIN and key first under this lock keeps Configure from failing.
var moduleMu sync.Mutex

// maxSessions bounds the crypto11 session pool: small secure elements allow
// only a handful of sessions, and more than a few concurrent handshakes on a
// gateway are rare.
const maxSessions = 16

// lostCodes are the PKCS#11 return values after which the sessions (or the
// whole module state) are gone and the context must be reopened.
var lostCodes = []pkcs11.Error{
	pkcs11.CKR_DEVICE_REMOVED, pkcs11.CKR_DEVICE_ERROR, pkcs11.CKR_SESSION_HANDLE_INVALID,
	pkcs11.CKR_SESSION_CLOSED, pkcs11.CKR_TOKEN_NOT_PRESENT, pkcs11.CKR_TOKEN_NOT_RECOGNIZED,
	pkcs11.CKR_CRYPTOKI_NOT_INITIALIZED, pkcs11.CKR_USER_NOT_LOGGED_IN,
	pkcs11.CKR_KEY_HANDLE_INVALID, pkcs11.CKR_OBJECT_HANDLE_INVALID, pkcs11.CKR_SLOT_ID_INVALID,
}

// isLost reports whether err means the token or its sessions went away.
// crypto11 formats some errors with %v (its AEAD does), so the name of the
// return value is matched as well as its type.
func isLost(err error) bool {
	var pe pkcs11.Error
	if errors.As(err, &pe) || errors.As(cause(err), &pe) {
		for _, c := range lostCodes {
			if pe == c {
				return true
			}
		}
		return false
	}
	msg := err.Error()
	for _, c := range lostCodes {
		if strings.Contains(msg, c.Error()[strings.LastIndex(c.Error(), " ")+1:]) {
			return true
		}
	}
	return false
}

// cause unwraps github.com/pkg/errors v0.8 wrappers (crypto11 uses them;
// they predate Unwrap).
func cause(err error) error {
	for {
		c, ok := err.(interface{ Cause() error })
		if !ok {
			return err
		}
		err = c.Cause()
	}
}

func ckr(err error, code pkcs11.Error) bool {
	var pe pkcs11.Error
	return errors.As(cause(err), &pe) && pe == code
}

// withModule loads the module at path and runs f with it initialised. The
// caller holds moduleMu. When this call initialised the module it also
// finalises it, so a later crypto11.Configure starts from a clean state (and
// SoftHSM rescans its token directory).
func withModule(path string, f func(p *pkcs11.Ctx) error) error {
	if _, err := os.Stat(path); err != nil {
		return fmt.Errorf("%w: module %s: %w; install the token's PKCS#11 library (softhsm2, tpm2-pkcs11, opensc) or fix module-path", ErrModule, path, err)
	}
	p := pkcs11.New(path)
	if p == nil {
		return fmt.Errorf("%w: module %s cannot be loaded: not a PKCS#11 library, or built for another architecture or missing its own dependencies (check with ldd)", ErrModule, path)
	}
	defer p.Destroy()
	owned := true
	if err := p.Initialize(); err != nil {
		if !ckr(err, pkcs11.CKR_CRYPTOKI_ALREADY_INITIALIZED) {
			return fmt.Errorf("%w: module %s: C_Initialize: %w", ErrModule, path, err)
		}
		owned = false
	}
	if owned {
		defer p.Finalize()
	}
	return f(p)
}

type tokenRef struct {
	slot uint
	info pkcs11.TokenInfo
}

func (t tokenRef) String() string {
	return fmt.Sprintf("%q (serial %s, slot-id %d)", t.info.Label, strings.TrimSpace(t.info.SerialNumber), t.slot)
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
	var found []tokenRef
	for _, t := range toks {
		if t.info.Flags&pkcs11.CKF_TOKEN_INITIALIZED == 0 {
			continue
		}
		switch {
		case u.Token != "":
			if t.info.Label == u.Token {
				found = append(found, t)
			}
		case u.Serial != "":
			if strings.TrimSpace(t.info.SerialNumber) == u.Serial {
				found = append(found, t)
			}
		case u.HasSlotID:
			if t.slot == u.SlotID {
				found = append(found, t)
			}
		default:
			found = append(found, t)
		}
	}
	if len(found) == 1 {
		return found[0], nil
	}
	var names []string
	for _, t := range toks {
		if t.info.Flags&pkcs11.CKF_TOKEN_INITIALIZED != 0 {
			names = append(names, t.String())
		}
	}
	present := "no initialised token is present"
	if len(names) > 0 {
		present = "tokens present: " + strings.Join(names, ", ")
	}
	if len(found) == 0 {
		return tokenRef{}, fmt.Errorf("%w: no token with %s in module %s; %s", ErrTokenUnavailable, u.selector(), u.ModulePath, present)
	}
	return tokenRef{}, fmt.Errorf("%d tokens match %s in module %s; add token=, serial= or slot-id= to the URI; %s", len(found), u.selector(), u.ModulePath, present)
}

// login logs the session's application in. A wrong PIN is reported at once
// and never tried again by this package: tokens lock after a few failures.
func login(p *pkcs11.Ctx, sh pkcs11.SessionHandle, t tokenRef, u *URI, pin string) error {
	if t.info.Flags&pkcs11.CKF_USER_PIN_LOCKED != 0 {
		return fmt.Errorf("%w: token %s: the user PIN is locked after too many wrong PINs; unlock it with the SO PIN (pkcs11-tool --init-pin --login --login-type so)", ErrPINIncorrect, t)
	}
	if t.info.Flags&pkcs11.CKF_LOGIN_REQUIRED == 0 {
		return nil
	}
	if pin == "" {
		return fmt.Errorf("%w: token %s needs a PIN; add pin-source=file:PATH (mode 0600) or pin-source=credential:NAME to %s", ErrPINSource, t, u)
	}
	err := p.Login(sh, pkcs11.CKU_USER, pin)
	switch {
	case err == nil, ckr(err, pkcs11.CKR_USER_ALREADY_LOGGED_IN):
		return nil
	case ckr(err, pkcs11.CKR_PIN_INCORRECT):
		return fmt.Errorf("%w: token %s refused the PIN from %s; fix the PIN source (not retried: the token locks after repeated failures)", ErrPINIncorrect, t, pinOrigin(u))
	case ckr(err, pkcs11.CKR_PIN_LOCKED):
		return fmt.Errorf("%w: token %s: the user PIN is locked; unlock it with the SO PIN", ErrPINIncorrect, t)
	case isLost(err):
		return fmt.Errorf("%w: token %s: C_Login: %w", ErrTokenUnavailable, t, err)
	default:
		return fmt.Errorf("token %s: C_Login: %w", t, err)
	}
}

func pinOrigin(u *URI) string {
	if u.PINSource != "" {
		return "pin-source=" + u.PINSource
	}
	return "pin-value"
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

// Object describes a token object without any secret: what `tether hsm
// list` prints and what key-not-found errors list.
type Object struct {
	Class   string // private, public, secret-key, cert, data
	Label   string
	ID      []byte
	KeyType string // "EC P-256", "RSA 2048", "AES 256", ...
	// Sensitive and Extractable are set for private and secret keys.
	Sensitive, Extractable bool
}

func (o Object) String() string {
	s := fmt.Sprintf("%s %q id=%s", o.Class, o.Label, hexID(o.ID))
	if o.KeyType != "" {
		s += " " + o.KeyType
	}
	return s
}

func hexID(id []byte) string {
	var b strings.Builder
	for _, c := range id {
		fmt.Fprintf(&b, "%%%02x", c)
	}
	if b.Len() == 0 {
		return "(none)"
	}
	return b.String()
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
			case string(oidP256):
				return "EC P-256"
			case string(oidP384):
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

// DER-encoded named-curve OIDs as CKA_EC_PARAMS holds them.
var (
	oidP256 = []byte{0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07}
	oidP384 = []byte{0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22}
)

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
	if u.Type != "" && u.Type != "private" {
		return keyRef{}, fmt.Errorf("%s: type=%s; the device key must be type=private (or leave type out)", u, u.Type)
	}
	if u.Object == "" && len(u.ID) == 0 {
		return keyRef{}, fmt.Errorf("%s: name the key with object=LABEL and/or id=%%XX; keys in token %s: %s", u, t, keyList(p, sh))
	}
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
	switch len(hs) {
	case 0:
		return keyRef{}, fmt.Errorf("%w: no private key matches %s in token %s; keys there: %s", ErrKeyNotFound, u, t, keyList(p, sh))
	case 1:
	default:
		return keyRef{}, fmt.Errorf("%w: %d private keys match %s in token %s; add id= to pick one: %s", errAmbiguous, len(hs), u, t, keyList(p, sh))
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
	var s []string
	for _, h := range hs {
		o := describe(p, sh, h)
		if o.Class == "private" || o.Class == "public" || o.Class == "secret-key" {
			s = append(s, o.String())
		}
	}
	if len(s) == 0 {
		return "none (private keys are visible only after a successful login)"
	}
	return strings.Join(s, "; ")
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

// configure opens a crypto11 context on the token found by preflight.
func configure(u *URI, t tokenRef, pin string) (*crypto11.Context, error) {
	cfg := &crypto11.Config{
		Path:        u.ModulePath,
		Pin:         pin,
		MaxSessions: maxSessions,
		GCMIVLength: 12, // the NIST-recommended 96-bit GCM nonce
	}
	switch {
	case t.info.Label != "":
		cfg.TokenLabel = t.info.Label
	case strings.TrimSpace(t.info.SerialNumber) != "":
		cfg.TokenSerial = t.info.SerialNumber
	default:
		slot := int(t.slot)
		cfg.SlotNumber = &slot
	}
	if t.info.Flags&pkcs11.CKF_LOGIN_REQUIRED == 0 {
		cfg.LoginNotSupported = true
	}
	c, err := crypto11.Configure(cfg)
	if err != nil {
		if isLost(err) {
			return nil, fmt.Errorf("%w: token %s: %w", ErrTokenUnavailable, t, err)
		}
		return nil, fmt.Errorf("token %s: %w", t, err)
	}
	return c, nil
}

// closeContext closes c under moduleMu (it may finalise the module).
func closeContext(c *crypto11.Context) {
	moduleMu.Lock()
	defer moduleMu.Unlock()
	_ = c.Close()
}

// p11Key is a token key that reopens its context when the token was removed
// or its sessions were lost.
type p11Key struct {
	uri *URI
	pin string
	log *slog.Logger
	ref keyRef
	pub crypto.PublicKey

	mu     sync.Mutex // guards the fields below; held while reopening
	c      *crypto11.Context
	signer crypto11.Signer
	gen    uint64 // bumped whenever c changes, so concurrent failures reopen once
	pinErr error  // a refused PIN: never tried again
	closed bool

	secretMu sync.Mutex // serialises find-or-generate of secret keys
}

func openPKCS11(ctx context.Context, u *URI, o options) (keyBackend, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if u.PINValue != "" {
		o.logger.Warn("pkcs11 URI carries pin-value; the PIN is then readable wherever the configuration is; use pin-source=file:PATH or credential:NAME", "key", u.String())
	}
	pin, err := u.readPIN(o.getenv)
	if err != nil {
		return nil, err
	}
	k := &p11Key{uri: u, pin: pin, log: o.logger}
	k.mu.Lock()
	defer k.mu.Unlock()
	if err := k.connectLocked(); err != nil {
		return nil, err
	}
	k.pub = k.signer.Public()
	return k, nil
}

// connectLocked opens a fresh context and finds the key. k.mu is held.
func (k *p11Key) connectLocked() error {
	k.log.Debug("pkcs11 opening token", "key", k.uri.String())
	moduleMu.Lock()
	t, ref, err := preflight(k.uri, k.pin, true)
	if err != nil {
		moduleMu.Unlock()
		if errors.Is(err, ErrPINIncorrect) {
			k.pinErr = err
		}
		return err
	}
	c, err := configure(k.uri, t, k.pin)
	moduleMu.Unlock()
	if err != nil {
		return err
	}
	s, err := c.FindKeyPair(ref.id, ref.label)
	if err == nil && s == nil {
		err = fmt.Errorf("%w: private key %q in token %s has no public key object with the same CKA_ID and label; crypto11 needs it (import the public key or regenerate with tether hsm keygen)", ErrKeyNotFound, ref.label, t)
	}
	if err == nil {
		err = checkSignerType(k.uri, s.Public())
	}
	if err == nil && k.pub != nil {
		if eq, ok := k.pub.(interface{ Equal(crypto.PublicKey) bool }); !ok || !eq.Equal(s.Public()) {
			err = fmt.Errorf("%w: key %s in token %s is not the key opened before the token was reopened", ErrKeyNotFound, k.uri, t)
		}
	}
	if err != nil {
		closeContext(c)
		if isLost(err) {
			return fmt.Errorf("%w: %s: %w", ErrTokenUnavailable, k.uri, err)
		}
		return err
	}
	k.c, k.signer, k.ref = c, s, ref
	k.gen++
	return nil
}

func checkSignerType(u *URI, pub crypto.PublicKey) error {
	switch p := pub.(type) {
	case *ecdsa.PublicKey:
		if p.Curve == elliptic.P256() || p.Curve == elliptic.P384() {
			return nil
		}
		return fmt.Errorf("key %s: EC curve %s not supported; use P-256 or P-384", u, p.Curve.Params().Name)
	case *rsa.PublicKey:
		if p.N.BitLen() >= 2048 {
			return nil
		}
		return fmt.Errorf("key %s: RSA %d bits is too short; use 2048 or more", u, p.N.BitLen())
	default:
		return fmt.Errorf("key %s: key type %T not supported; use EC P-256/P-384 or RSA", u, pub)
	}
}

// current returns a usable context, reopening it when a fault dropped it.
func (k *p11Key) current() (*crypto11.Context, crypto11.Signer, uint64, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.closed {
		return nil, nil, 0, fmt.Errorf("pkcs11 key %s: closed", k.uri)
	}
	if k.pinErr != nil {
		return nil, nil, 0, k.pinErr
	}
	if k.c == nil {
		if err := k.connectLocked(); err != nil {
			return nil, nil, 0, err
		}
		k.log.Info("pkcs11 token reopened", "key", k.uri.String())
	}
	return k.c, k.signer, k.gen, nil
}

// drop discards the context of generation gen after a fault; the next use
// reopens. Other goroutines failing on the same generation do nothing.
func (k *p11Key) drop(gen uint64, cause error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.gen != gen || k.c == nil {
		return
	}
	k.log.Warn("pkcs11 token lost; reopening on next use", "key", k.uri.String(), "error", cause)
	old := k.c
	k.c, k.signer = nil, nil
	k.gen++
	// Close waits until every pooled session is back; callers still inside
	// a crypto11 call on old return theirs when that call fails.
	closeContext(old)
}

// retryable reports whether a failed call on generation gen should be
// retried: the token was lost, or another goroutine already replaced the
// context under it.
func (k *p11Key) retryable(gen uint64, err error) bool {
	if isLost(err) {
		return true
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.gen != gen
}

func (k *p11Key) Public() crypto.PublicKey { return k.pub }

// Sign signs in the token. crypto11 cannot sign PSS with
// PSSSaltLengthAuto, so that becomes PSSSaltLengthEqualsHash, which every
// verifier accepting "auto" accepts too (TLS 1.3 uses EqualsHash anyway).
func (k *p11Key) Sign(_ io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	if pss, ok := opts.(*rsa.PSSOptions); ok && pss.SaltLength == rsa.PSSSaltLengthAuto {
		opts = &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: pss.Hash}
	}
	for attempt := 0; ; attempt++ {
		_, s, gen, err := k.current()
		if err != nil {
			return nil, fmt.Errorf("pkcs11 sign with %s: %w", k.uri, err)
		}
		sig, err := s.Sign(nil, digest, opts)
		if err == nil {
			return sig, nil
		}
		if attempt == 0 && k.retryable(gen, err) {
			k.drop(gen, err)
			continue
		}
		if isLost(err) {
			k.drop(gen, err)
			return nil, fmt.Errorf("pkcs11 sign with %s: %w: %w", k.uri, ErrTokenUnavailable, err)
		}
		return nil, fmt.Errorf("pkcs11 sign with %s: %w", k.uri, err)
	}
}

func (k *p11Key) location() string { return k.uri.String() }

func (k *p11Key) close() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.closed {
		return nil
	}
	k.closed = true
	if k.c != nil {
		closeContext(k.c)
		k.c, k.signer = nil, nil
	}
	return nil
}

// sealer returns an AES-256-GCM AEAD whose key never leaves the token.
func (k *p11Key) sealer(ctx context.Context, label string) (cipher.AEAD, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if label == "" {
		return nil, errors.New("sealer: empty label")
	}
	a := &p11AEAD{k: k, label: label}
	// A round trip now turns a token without CKM_AES_GCM into an error at
	// start-up rather than a panic in the first Seal.
	nonce := make([]byte, a.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	ct, err := a.SealErr(nil, nonce, []byte("tether sealer self-test"), nil)
	if err == nil {
		_, err = a.Open(nil, nonce, ct, nil)
	}
	if err != nil {
		return nil, fmt.Errorf("sealer %q in token %s: AES-GCM round trip failed (does the token support CKM_AES_GCM?): %w", label, k.uri, err)
	}
	return a, nil
}

// secretKey finds the AES key labelled label in c, generating it when
// missing: sensitive, never extractable, on the token.
func (k *p11Key) secretKey(c *crypto11.Context, label string) (*crypto11.SecretKey, error) {
	k.secretMu.Lock()
	defer k.secretMu.Unlock()
	sk, err := c.FindKey(nil, []byte(label))
	if err != nil {
		return nil, err
	}
	if sk == nil {
		id := make([]byte, 16)
		if _, err := rand.Read(id); err != nil {
			return nil, err
		}
		tmpl, err := crypto11.NewAttributeSetWithIDAndLabel(id, []byte(label))
		if err != nil {
			return nil, err
		}
		// CKA_PRIVATE makes generation fail, instead of creating a second
		// key, when the login was lost and FindKey could not see the first.
		if err := tmpl.Set(crypto11.CkaPrivate, true); err != nil {
			return nil, err
		}
		if sk, err = c.GenerateSecretKeyWithAttributes(tmpl, 256, crypto11.CipherAES); err != nil {
			return nil, fmt.Errorf("generate AES-256 key %q: %w", label, err)
		}
		k.log.Info("pkcs11 sealing key generated in token", "key", k.uri.String(), "label", label)
	}
	attrs, err := c.GetAttributes(sk, []crypto11.AttributeType{crypto11.CkaExtractable, crypto11.CkaSensitive})
	if err != nil {
		return nil, err
	}
	if v := attrs[crypto11.CkaExtractable]; v == nil || len(v.Value) != 1 || v.Value[0] != 0 {
		return nil, fmt.Errorf("secret key %q in token is extractable; tether only seals with non-extractable keys: delete it or pick another label", label)
	}
	if v := attrs[crypto11.CkaSensitive]; v == nil || len(v.Value) != 1 || v.Value[0] == 0 {
		return nil, fmt.Errorf("secret key %q in token is not sensitive; delete it or pick another label", label)
	}
	if sk.Cipher != crypto11.CipherAES {
		return nil, fmt.Errorf("secret key %q in token is not an AES key", label)
	}
	return sk, nil
}

// p11AEAD is crypto11's token GCM, re-bound to the new context after a
// reopen.
type p11AEAD struct {
	k     *p11Key
	label string

	mu   sync.Mutex
	gen  uint64
	aead cipher.AEAD
}

func (a *p11AEAD) NonceSize() int { return 12 }
func (a *p11AEAD) Overhead() int  { return 16 }

func (a *p11AEAD) bind() (cipher.AEAD, uint64, error) {
	c, _, gen, err := a.k.current()
	if err != nil {
		return nil, 0, err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.aead != nil && a.gen == gen {
		return a.aead, gen, nil
	}
	sk, err := a.k.secretKey(c, a.label)
	if err != nil {
		return nil, gen, err
	}
	g, err := sk.NewGCM()
	if err != nil {
		return nil, gen, err
	}
	a.aead, a.gen = g, gen
	return g, gen, nil
}

// do runs f on the bound AEAD, reopening the token once when it was lost.
func (a *p11AEAD) do(op string, f func(cipher.AEAD) ([]byte, error)) ([]byte, error) {
	for attempt := 0; ; attempt++ {
		g, gen, err := a.bind()
		if err == nil {
			var out []byte
			if out, err = f(g); err == nil {
				return out, nil
			}
		}
		if attempt == 0 && gen != 0 && a.k.retryable(gen, err) {
			a.k.drop(gen, err)
			continue
		}
		if isLost(err) {
			return nil, fmt.Errorf("pkcs11 %s with key %q in %s: %w: %w", op, a.label, a.k.uri, ErrTokenUnavailable, err)
		}
		return nil, fmt.Errorf("pkcs11 %s with key %q in %s: %w", op, a.label, a.k.uri, err)
	}
}

// SealErr is Seal returning token failures as errors; see the package
// function Seal.
func (a *p11AEAD) SealErr(dst, nonce, plaintext, additionalData []byte) ([]byte, error) {
	if len(nonce) != a.NonceSize() {
		return nil, fmt.Errorf("seal: nonce is %d bytes, want %d", len(nonce), a.NonceSize())
	}
	return a.do("seal", func(g cipher.AEAD) (out []byte, err error) {
		defer func() { // crypto11's Seal panics on token errors
			if r := recover(); r != nil {
				if e, ok := r.(error); ok {
					err = e
				} else {
					err = fmt.Errorf("%v", r)
				}
			}
		}()
		return g.Seal(dst, nonce, plaintext, additionalData), nil
	})
}

// Seal panics on token failure, as cipher.AEAD gives it no error to return.
func (a *p11AEAD) Seal(dst, nonce, plaintext, additionalData []byte) []byte {
	out, err := a.SealErr(dst, nonce, plaintext, additionalData)
	if err != nil {
		panic(err)
	}
	return out
}

func (a *p11AEAD) Open(dst, nonce, ciphertext, additionalData []byte) ([]byte, error) {
	if len(nonce) != a.NonceSize() {
		return nil, fmt.Errorf("open: nonce is %d bytes, want %d", len(nonce), a.NonceSize())
	}
	return a.do("open", func(g cipher.AEAD) ([]byte, error) {
		return g.Open(dst, nonce, ciphertext, additionalData)
	})
}
