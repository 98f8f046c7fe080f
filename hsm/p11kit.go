package hsm

import (
	"context"
	"crypto"
	"crypto/cipher"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/asn1"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"os"
	"sync"
	"time"

	"github.com/tetherd/tether/hsm/p11rpc"
)

// This file is the PKCS#11 backend that reaches the module through p11-kit's
// RPC protocol (hsm/p11rpc): `p11-kit remote MODULE` as a child process, or
// a `p11-kit server` socket. It is what the static (CGO_ENABLED=0) build
// uses for every pkcs11: key, and what the cgo build uses when the URI says
// x-p11-kit=. Its errors read like the in-process backend's, so that the
// same fault tests hold for both.

// rpcConnectTimeout bounds dialling and initialising the module.
const rpcConnectTimeout = 30 * time.Second

// maxObjects bounds a search: no gateway token holds more.
const maxObjects = 4096

// rpcIsLost reports whether err means the token, its sessions or the
// connection to p11-kit went away.
func rpcIsLost(err error) bool {
	if p11rpc.IsTransport(err) {
		return true
	}
	var rv p11rpc.Error
	return errors.As(err, &rv) && lostRV(uint64(rv))
}

// dialP11Kit connects to the module the URI names and initialises it.
func dialP11Kit(ctx context.Context, u *URI) (*p11rpc.Client, error) {
	ctx, cancel := context.WithTimeout(ctx, rpcConnectTimeout)
	defer cancel()
	var c *p11rpc.Client
	var err error
	if u.P11KitServer != "" {
		if err := checkServerSocket(u.P11KitServer); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, err
		}
		if c, err = p11rpc.DialServer(ctx, u.P11KitServer); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrTokenUnavailable, err)
		}
	} else {
		if _, err := os.Stat(u.ModulePath); err != nil {
			return nil, fmt.Errorf("%w: module %s: %w; install the token's PKCS#11 library (softhsm2, tpm2-pkcs11, opensc) or fix module-path", ErrModule, u.ModulePath, err)
		}
		if c, err = p11rpc.DialRemote(ctx, "", u.ModulePath, nil); err != nil {
			return nil, rpcModuleErr(u, err)
		}
	}
	if err := c.Initialize(); err != nil && !errors.Is(err, p11rpc.CKR_CRYPTOKI_ALREADY_INITIALIZED) {
		c.Close()
		if u.P11KitServer == "" {
			return nil, rpcModuleErr(u, err)
		}
		return nil, fmt.Errorf("%w: %s: C_Initialize: %w", ErrTokenUnavailable, c.Peer(), err)
	}
	return c, nil
}

// rpcModuleErr explains a `p11-kit remote` that could not host the module.
func rpcModuleErr(u *URI, err error) error {
	if p11rpc.IsTransport(err) {
		return fmt.Errorf("%w: module %s cannot be loaded by p11-kit remote: not a PKCS#11 library, or built for another architecture or missing its own dependencies (check with ldd): %w", ErrModule, u.ModulePath, err)
	}
	return fmt.Errorf("%w: module %s: %w", ErrModule, u.ModulePath, err)
}

// rpcToken is a token found over RPC.
type rpcToken struct {
	slot uint
	info p11rpc.TokenInfo
}

func (t rpcToken) String() string {
	return tokenName(t.info.Label, t.info.SerialNumber, t.slot)
}

func rpcTokens(c *p11rpc.Client) ([]rpcToken, error) {
	slots, err := c.GetSlotList(true)
	if err != nil {
		return nil, fmt.Errorf("C_GetSlotList: %w", err)
	}
	var out []rpcToken
	for _, s := range slots {
		ti, err := c.GetTokenInfo(s)
		if err != nil {
			if p11rpc.IsTransport(err) {
				return nil, err
			}
			continue // removed between the two calls
		}
		out = append(out, rpcToken{slot: s, info: ti})
	}
	return out, nil
}

// rpcPickToken finds the token the URI selects; see pickToken.
func rpcPickToken(u *URI, toks []rpcToken) (rpcToken, error) {
	cands := make([]tokenCandidate, len(toks))
	for i, t := range toks {
		cands[i] = tokenCandidate{slot: t.slot, label: t.info.Label, serial: t.info.SerialNumber,
			initialized: t.info.Flags&p11rpc.CKF_TOKEN_INITIALIZED != 0, name: t.String()}
	}
	i, err := chooseToken(u, u.moduleHost(), cands)
	if err != nil {
		return rpcToken{}, err
	}
	return toks[i], nil
}

// rpcLogin logs the session in; a wrong PIN is never tried again.
func rpcLogin(c *p11rpc.Client, sh p11rpc.SessionHandle, t rpcToken, u *URI, pin string) error {
	return doLogin(t, u, pin, t.info.Flags&p11rpc.CKF_USER_PIN_LOCKED != 0, t.info.Flags&p11rpc.CKF_LOGIN_REQUIRED != 0,
		func() (loginResult, error) {
			err := c.Login(sh, p11rpc.CKU_USER, pin)
			switch {
			case err == nil, errors.Is(err, p11rpc.CKR_USER_ALREADY_LOGGED_IN):
				return loginOK, nil
			case errors.Is(err, p11rpc.CKR_PIN_INCORRECT):
				return loginPINIncorrect, err
			case errors.Is(err, p11rpc.CKR_PIN_LOCKED):
				return loginPINLocked, err
			case rpcIsLost(err):
				return loginLost, err
			}
			return loginFailed, err
		})
}

// rpcDescribe reads an object's description (never a value).
func rpcDescribe(c *p11rpc.Client, sh p11rpc.SessionHandle, h p11rpc.ObjectHandle) Object {
	a, err := c.GetAttributeValue(sh, h, []uint{p11rpc.CKA_CLASS, p11rpc.CKA_LABEL, p11rpc.CKA_ID})
	if err != nil && a == nil {
		return Object{Class: "unreadable"}
	}
	cls := a[0].Uint()
	o := Object{Class: rpcClassName(cls), Label: string(a[1].Value), ID: a[2].Value}
	if cls != p11rpc.CKO_PRIVATE_KEY && cls != p11rpc.CKO_PUBLIC_KEY && cls != p11rpc.CKO_SECRET_KEY {
		return o
	}
	kt, err := c.GetAttributeValue(sh, h, []uint{p11rpc.CKA_KEY_TYPE})
	if err == nil {
		o.KeyType = rpcKeyTypeName(c, sh, h, kt[0].Uint())
	}
	if cls == p11rpc.CKO_PUBLIC_KEY {
		return o
	}
	if f, err := c.GetAttributeValue(sh, h, []uint{p11rpc.CKA_SENSITIVE, p11rpc.CKA_EXTRACTABLE}); err == nil {
		o.Sensitive, o.Extractable = f[0].Bool(), f[1].Bool()
	}
	return o
}

func rpcClassName(cls uint64) string {
	switch cls {
	case p11rpc.CKO_PRIVATE_KEY:
		return "private"
	case p11rpc.CKO_PUBLIC_KEY:
		return "public"
	case p11rpc.CKO_SECRET_KEY:
		return "secret-key"
	case p11rpc.CKO_CERTIFICATE:
		return "cert"
	case p11rpc.CKO_DATA:
		return "data"
	}
	return fmt.Sprintf("class-%#x", cls)
}

func rpcKeyTypeName(c *p11rpc.Client, sh p11rpc.SessionHandle, h p11rpc.ObjectHandle, kt uint64) string {
	get := func(t uint) []byte {
		a, err := c.GetAttributeValue(sh, h, []uint{t})
		if err != nil {
			return nil
		}
		return a[0].Value
	}
	switch kt {
	case p11rpc.CKK_EC:
		if curve := curveOf(get(p11rpc.CKA_EC_PARAMS)); curve != nil {
			return "EC " + curve.Params().Name
		}
		return "EC"
	case p11rpc.CKK_RSA:
		if m := get(p11rpc.CKA_MODULUS); len(m) > 0 {
			return fmt.Sprintf("RSA %d", len(m)*8)
		}
		return "RSA"
	case p11rpc.CKK_AES:
		if v := get(p11rpc.CKA_VALUE_LEN); len(v) == 8 {
			return fmt.Sprintf("AES %d", binary.BigEndian.Uint64(v)*8)
		}
		return "AES"
	}
	return fmt.Sprintf("key-type-%#x", kt)
}

// curveOf maps CKA_EC_PARAMS (a DER named-curve OID) to its curve.
func curveOf(params []byte) elliptic.Curve {
	switch string(params) {
	case string(ecParamsP256):
		return elliptic.P256()
	case string(ecParamsP384):
		return elliptic.P384()
	}
	return nil
}

// DER-encoded named-curve OIDs as CKA_EC_PARAMS holds them.
var (
	ecParamsP256 = []byte{0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07}
	ecParamsP384 = []byte{0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22}
)

// rpcKeyList names the token's keys (labels, ids, types; never values).
func rpcKeyList(c *p11rpc.Client, sh p11rpc.SessionHandle) string {
	hs, err := c.FindAll(sh, nil, maxObjects)
	if err != nil {
		return "(cannot list: " + err.Error() + ")"
	}
	objs := make([]Object, len(hs))
	for i, h := range hs {
		objs[i] = rpcDescribe(c, sh, h)
	}
	return keyNames(objs)
}

// rpcSession is an open, logged-in session with the key found in it.
type rpcSession struct {
	c    *p11rpc.Client
	tok  rpcToken
	sh   p11rpc.SessionHandle
	key  p11rpc.ObjectHandle
	kt   uint64
	pub  crypto.PublicKey
	rw   bool
	keys map[string]p11rpc.ObjectHandle // sealing keys by label
}

func (s *rpcSession) close() {
	_ = s.c.CloseSession(s.sh)
	_ = s.c.Finalize()
	_ = s.c.Close()
}

// rpcOpen dials, picks the token, opens a session and logs in.
func rpcOpen(ctx context.Context, u *URI, pin string) (*rpcSession, error) {
	c, err := dialP11Kit(ctx, u)
	if err != nil {
		return nil, err
	}
	s := &rpcSession{c: c, keys: map[string]p11rpc.ObjectHandle{}}
	fail := func(err error) (*rpcSession, error) {
		_ = c.Finalize()
		c.Close()
		return nil, err
	}
	toks, err := rpcTokens(c)
	if err != nil {
		return fail(fmt.Errorf("%w: %s: %w", ErrTokenUnavailable, u.moduleHost(), err))
	}
	if s.tok, err = rpcPickToken(u, toks); err != nil {
		return fail(err)
	}
	// Read-write, so that the sealing key can be made; read-only tokens
	// still sign.
	s.sh, err = c.OpenSession(s.tok.slot, p11rpc.CKF_RW_SESSION)
	s.rw = err == nil
	if errors.Is(err, p11rpc.CKR_TOKEN_WRITE_PROTECTED) {
		s.sh, err = c.OpenSession(s.tok.slot, 0)
	}
	if err != nil {
		if rpcIsLost(err) {
			return fail(fmt.Errorf("%w: token %s: C_OpenSession: %w", ErrTokenUnavailable, s.tok, err))
		}
		return fail(fmt.Errorf("token %s: C_OpenSession: %w", s.tok, err))
	}
	if err := rpcLogin(c, s.sh, s.tok, u, pin); err != nil {
		return fail(err)
	}
	return s, nil
}

// findKey finds the URI's private key and its public half.
func (s *rpcSession) findKey(u *URI) error {
	c, sh, t := s.c, s.sh, s.tok
	// ParseKeyURI made sure that u names a private key.
	list := func() string { return rpcKeyList(c, sh) }
	tmpl := []p11rpc.Attribute{p11rpc.Ulong(p11rpc.CKA_CLASS, p11rpc.CKO_PRIVATE_KEY)}
	if u.Object != "" {
		tmpl = append(tmpl, p11rpc.String(p11rpc.CKA_LABEL, u.Object))
	}
	if len(u.ID) > 0 {
		tmpl = append(tmpl, p11rpc.Bytes(p11rpc.CKA_ID, u.ID))
	}
	hs, err := c.FindAll(sh, tmpl, maxObjects)
	if err != nil {
		if rpcIsLost(err) {
			return fmt.Errorf("%w: token %s: C_FindObjects: %w", ErrTokenUnavailable, t, err)
		}
		return fmt.Errorf("token %s: C_FindObjects: %w", t, err)
	}
	if err := keyCountErr(u, t, len(hs), list); err != nil {
		return err
	}
	a, err := c.GetAttributeValue(sh, hs[0], []uint{p11rpc.CKA_KEY_TYPE, p11rpc.CKA_ID, p11rpc.CKA_LABEL})
	if err != nil {
		return fmt.Errorf("token %s: key %s: %w", t, u, err)
	}
	s.key, s.kt = hs[0], a[0].Uint()
	s.pub, err = s.publicKey(hs[0], a[1].Value, string(a[2].Value))
	if err == nil {
		if err = checkPublicKey(s.pub); err != nil {
			err = fmt.Errorf("key %s: %w", u, err)
		}
	}
	return err
}

// publicKey reads the key's public half: RSA from the private key object,
// EC from the public key object with the same CKA_ID.
func (s *rpcSession) publicKey(priv p11rpc.ObjectHandle, id []byte, label string) (crypto.PublicKey, error) {
	c, sh := s.c, s.sh
	switch s.kt {
	case p11rpc.CKK_RSA:
		a, err := c.GetAttributeValue(sh, priv, []uint{p11rpc.CKA_MODULUS, p11rpc.CKA_PUBLIC_EXPONENT})
		if err != nil || len(a[0].Value) == 0 {
			return nil, fmt.Errorf("token %s: RSA key %q: cannot read its modulus: %v", s.tok, label, err)
		}
		e := new(big.Int).SetBytes(a[1].Value)
		if !e.IsInt64() || e.Int64() > 1<<31-1 || e.Int64() < 3 {
			return nil, fmt.Errorf("token %s: RSA key %q: public exponent out of range", s.tok, label)
		}
		return &rsa.PublicKey{N: new(big.Int).SetBytes(a[0].Value), E: int(e.Int64())}, nil
	case p11rpc.CKK_EC:
		if len(id) == 0 {
			return nil, fmt.Errorf("private key %q in token %s has no CKA_ID, which pairs it with its public key; set one (pkcs11-tool --set-id)", label, s.tok)
		}
		hs, err := c.FindAll(sh, []p11rpc.Attribute{
			p11rpc.Ulong(p11rpc.CKA_CLASS, p11rpc.CKO_PUBLIC_KEY), p11rpc.Bytes(p11rpc.CKA_ID, id),
		}, 2)
		if err != nil {
			return nil, err
		}
		if len(hs) != 1 {
			return nil, fmt.Errorf("%w: private key %q in token %s has %d public key objects with the same CKA_ID, want one (import the public key or regenerate with tether hsm keygen)", ErrKeyNotFound, label, s.tok, len(hs))
		}
		a, err := c.GetAttributeValue(sh, hs[0], []uint{p11rpc.CKA_EC_PARAMS, p11rpc.CKA_EC_POINT})
		if err != nil {
			return nil, fmt.Errorf("token %s: EC key %q: %w", s.tok, label, err)
		}
		return parseECPoint(a[0].Value, a[1].Value)
	}
	return nil, fmt.Errorf("token %s: key %q: key type %#x not supported; use EC P-256/P-384 or RSA", s.tok, label, s.kt)
}

// parseECPoint decodes CKA_EC_POINT, DER-wrapped (as PKCS#11 says) or raw
// (as some modules return it).
func parseECPoint(params, point []byte) (*ecdsa.PublicKey, error) {
	curve := curveOf(params)
	if curve == nil {
		return nil, fmt.Errorf("EC curve with parameters %x not supported; use P-256 or P-384", params)
	}
	var raw []byte
	if rest, err := asn1.Unmarshal(point, &raw); err != nil || len(rest) != 0 {
		raw = point
	}
	return ecdsa.ParseUncompressedPublicKey(curve, raw)
}

// digestInfo prefixes for PKCS#1 v1.5 (RFC 8017 §9.2, note 1).
var digestInfo = map[crypto.Hash][]byte{
	crypto.SHA1:   {0x30, 0x21, 0x30, 0x09, 0x06, 0x05, 0x2b, 0x0e, 0x03, 0x02, 0x1a, 0x05, 0x00, 0x04, 0x14},
	crypto.SHA256: {0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04, 0x20},
	crypto.SHA384: {0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02, 0x05, 0x00, 0x04, 0x30},
	crypto.SHA512: {0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03, 0x05, 0x00, 0x04, 0x40},
}

var pssHash = map[crypto.Hash][2]uint{
	crypto.SHA1:   {p11rpc.CKM_SHA_1, p11rpc.CKG_MGF1_SHA1},
	crypto.SHA256: {p11rpc.CKM_SHA256, p11rpc.CKG_MGF1_SHA256},
	crypto.SHA384: {p11rpc.CKM_SHA384, p11rpc.CKG_MGF1_SHA384},
	crypto.SHA512: {p11rpc.CKM_SHA512, p11rpc.CKG_MGF1_SHA512},
}

// signRequest turns a crypto.Signer call into a mechanism, the data the
// token signs and the signature's maximum length.
func signRequest(pub crypto.PublicKey, digest []byte, opts crypto.SignerOpts) (p11rpc.Mechanism, []byte, int, error) {
	h := opts.HashFunc()
	if h != 0 && len(digest) != h.Size() {
		return p11rpc.Mechanism{}, nil, 0, fmt.Errorf("digest is %d bytes, %v needs %d", len(digest), h, h.Size())
	}
	switch p := pub.(type) {
	case *ecdsa.PublicKey:
		return p11rpc.Mechanism{Type: p11rpc.CKM_ECDSA}, digest, 2 * ((p.Curve.Params().BitSize + 7) / 8), nil
	case *rsa.PublicKey:
		size := (p.N.BitLen() + 7) / 8
		if pss, ok := opts.(*rsa.PSSOptions); ok {
			hm, ok := pssHash[h]
			if !ok {
				return p11rpc.Mechanism{}, nil, 0, fmt.Errorf("RSA-PSS with %v not supported", h)
			}
			salt := pss.SaltLength
			if salt == rsa.PSSSaltLengthAuto || salt == rsa.PSSSaltLengthEqualsHash {
				// "Auto" verifies any salt; the hash length is what TLS 1.3 uses.
				salt = h.Size()
			}
			return p11rpc.Mechanism{Type: p11rpc.CKM_RSA_PKCS_PSS, PSS: &p11rpc.PSSParams{Hash: hm[0], MGF: hm[1], SaltLength: uint(salt)}}, digest, size, nil
		}
		if h == 0 {
			return p11rpc.Mechanism{Type: p11rpc.CKM_RSA_PKCS}, digest, size, nil
		}
		prefix, ok := digestInfo[h]
		if !ok {
			return p11rpc.Mechanism{}, nil, 0, fmt.Errorf("RSA PKCS#1 v1.5 with %v not supported", h)
		}
		return p11rpc.Mechanism{Type: p11rpc.CKM_RSA_PKCS}, append(append([]byte{}, prefix...), digest...), size, nil
	}
	return p11rpc.Mechanism{}, nil, 0, fmt.Errorf("key type %T not supported", pub)
}

// rpcKey is a token key over p11-kit's RPC that reopens its connection when
// the token, its sessions or the p11-kit process went away. All use goes
// through one session, under mu: the protocol serialises calls anyway.
type rpcKey struct {
	uri *URI
	pin string
	log *slog.Logger
	pub crypto.PublicKey

	mu     sync.Mutex
	s      *rpcSession // nil after a fault: the next use reopens
	gen    uint64      // bumped at each reopen, for the sealers' key handles
	pinErr error       // a refused PIN: never tried again
	closed bool
}

func openP11Kit(ctx context.Context, u *URI, o options) (keyBackend, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	pin, err := keyPIN(u, o)
	if err != nil {
		return nil, err
	}
	k := &rpcKey{uri: u, pin: pin, log: o.logger}
	k.mu.Lock()
	defer k.mu.Unlock()
	if err := k.connectLocked(ctx); err != nil {
		return nil, err
	}
	k.pub = k.s.pub
	return k, nil
}

func (k *rpcKey) connectLocked(ctx context.Context) error {
	k.log.Debug("pkcs11 opening token", "key", k.uri.String(), "via", k.uri.moduleHost())
	s, err := rpcOpen(ctx, k.uri, k.pin)
	if err != nil {
		if errors.Is(err, ErrPINIncorrect) {
			k.pinErr = err
		}
		return err
	}
	if err := s.findKey(k.uri); err != nil {
		s.close()
		if rpcIsLost(err) && !errors.Is(err, ErrTokenUnavailable) {
			return fmt.Errorf("%w: %s: %w", ErrTokenUnavailable, k.uri, err)
		}
		return err
	}
	if k.pub != nil {
		if eq, ok := k.pub.(interface{ Equal(crypto.PublicKey) bool }); !ok || !eq.Equal(s.pub) {
			s.close()
			return fmt.Errorf("%w: key %s in token %s is not the key opened before the token was reopened", ErrKeyNotFound, k.uri, s.tok)
		}
	}
	k.s = s
	k.gen++
	return nil
}

// do runs f on the session, reopening once when the token, its sessions
// or the connection were lost.
func (k *rpcKey) do(op string, f func(s *rpcSession) error) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.closed {
		return fmt.Errorf("pkcs11 %s with %s: closed", op, k.uri)
	}
	for attempt := 0; ; attempt++ {
		if k.pinErr != nil {
			return fmt.Errorf("pkcs11 %s with %s: %w", op, k.uri, k.pinErr)
		}
		if k.s == nil {
			if err := k.connectLocked(context.Background()); err != nil {
				return fmt.Errorf("pkcs11 %s with %s: %w", op, k.uri, err)
			}
			k.log.Info("pkcs11 token reopened", "key", k.uri.String())
		}
		err := f(k.s)
		if err == nil {
			return nil
		}
		if !rpcIsLost(err) {
			return fmt.Errorf("pkcs11 %s with %s: %w", op, k.uri, err)
		}
		k.log.Warn("pkcs11 token lost; reopening", "key", k.uri.String(), "error", err)
		k.s.close()
		k.s = nil
		if attempt > 0 {
			return fmt.Errorf("pkcs11 %s with %s: %w: %w", op, k.uri, ErrTokenUnavailable, err)
		}
	}
}

func (k *rpcKey) Public() crypto.PublicKey { return k.pub }

// Sign signs in the token: ECDSA (the token's r||s re-encoded as DER), RSA
// PKCS#1 v1.5 and PSS.
func (k *rpcKey) Sign(_ io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	mech, data, maxLen, err := signRequest(k.pub, digest, opts)
	if err != nil {
		return nil, fmt.Errorf("pkcs11 sign with %s: %w", k.uri, err)
	}
	var sig []byte
	err = k.do("sign", func(s *rpcSession) error {
		if err := s.c.SignInit(s.sh, mech, s.key); err != nil {
			return err
		}
		var err error
		sig, err = s.c.Sign(s.sh, data, maxLen)
		return err
	})
	if err != nil {
		return nil, err
	}
	if _, ok := k.pub.(*ecdsa.PublicKey); ok {
		if len(sig) != maxLen {
			return nil, fmt.Errorf("pkcs11 sign with %s: ECDSA signature of %d bytes, want %d", k.uri, len(sig), maxLen)
		}
		return asn1.Marshal(struct{ R, S *big.Int }{
			new(big.Int).SetBytes(sig[:maxLen/2]), new(big.Int).SetBytes(sig[maxLen/2:]),
		})
	}
	return sig, nil
}

func (k *rpcKey) location() string { return k.uri.String() }

func (k *rpcKey) close() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.closed {
		return nil
	}
	k.closed = true
	if k.s != nil {
		k.s.close()
		k.s = nil
	}
	return nil
}

// maxSealed bounds what one Seal or Open handles (cached credentials are a
// few kilobytes); it keeps the keystream request far below p11rpc's limit.
const maxSealed = 256 << 10

// sealer returns AES-256-GCM with the key in the token. p11-kit before
// 0.25 cannot carry CKM_AES_GCM's parameters, so the token computes the
// AES blocks (CKM_AES_ECB: the hash key and the counter blocks, one call per
// Seal or Open) and Go's GCM does the rest. The result is standard GCM: the
// same key seals and opens the same way in-process (CKM_AES_GCM).
func (k *rpcKey) sealer(ctx context.Context, label string) (Sealer, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if label == "" {
		return nil, errors.New("sealer: empty label")
	}
	a := &rpcAEAD{k: k, label: label}
	if err := sealerRoundTrip(a.NonceSize(), a.Seal, a.Open); err != nil {
		return nil, fmt.Errorf("sealer %q in token %s: AES round trip failed (does the token support CKM_AES_ECB?): %w", label, k.uri, err)
	}
	return a, nil
}

// secretKey finds the AES key labelled label, generating it when missing:
// sensitive, never extractable, private, on the token.
func (s *rpcSession) secretKey(label string, log *slog.Logger, uri *URI) (p11rpc.ObjectHandle, error) {
	if h, ok := s.keys[label]; ok {
		return h, nil
	}
	c, sh := s.c, s.sh
	hs, err := c.FindAll(sh, []p11rpc.Attribute{
		p11rpc.Ulong(p11rpc.CKA_CLASS, p11rpc.CKO_SECRET_KEY), p11rpc.String(p11rpc.CKA_LABEL, label),
	}, 2)
	if err != nil {
		return 0, err
	}
	var h p11rpc.ObjectHandle
	switch len(hs) {
	case 0:
		if !s.rw {
			return 0, fmt.Errorf("token %s is read-only: the sealing key %q cannot be created", s.tok, label)
		}
		id := make([]byte, 16)
		if _, err := rand.Read(id); err != nil {
			return 0, err
		}
		h, err = c.GenerateKey(sh, p11rpc.Mechanism{Type: p11rpc.CKM_AES_KEY_GEN}, []p11rpc.Attribute{
			p11rpc.Ulong(p11rpc.CKA_CLASS, p11rpc.CKO_SECRET_KEY),
			p11rpc.Ulong(p11rpc.CKA_KEY_TYPE, p11rpc.CKK_AES),
			p11rpc.Bool(p11rpc.CKA_TOKEN, true),
			// CKA_PRIVATE makes generation fail, instead of creating a
			// second key, when the login was lost and the search missed it.
			p11rpc.Bool(p11rpc.CKA_PRIVATE, true),
			p11rpc.Bool(p11rpc.CKA_SENSITIVE, true),
			p11rpc.Bool(p11rpc.CKA_EXTRACTABLE, false),
			p11rpc.Bool(p11rpc.CKA_ENCRYPT, true),
			p11rpc.Bool(p11rpc.CKA_DECRYPT, true),
			p11rpc.Ulong(p11rpc.CKA_VALUE_LEN, 32),
			p11rpc.String(p11rpc.CKA_LABEL, label),
			p11rpc.Bytes(p11rpc.CKA_ID, id),
		})
		if err != nil {
			return 0, fmt.Errorf("generate AES-256 key %q: %w", label, err)
		}
		log.Info("pkcs11 sealing key generated in token", "key", uri.String(), "label", label)
	case 1:
		h = hs[0]
	default:
		return 0, fmt.Errorf("%d secret keys labelled %q in token %s; delete the extra ones", len(hs), label, s.tok)
	}
	a, err := c.GetAttributeValue(sh, h, []uint{p11rpc.CKA_KEY_TYPE, p11rpc.CKA_EXTRACTABLE, p11rpc.CKA_SENSITIVE, p11rpc.CKA_VALUE_LEN})
	if err != nil {
		return 0, err
	}
	switch {
	case a[0].Uint() != p11rpc.CKK_AES:
		return 0, fmt.Errorf("secret key %q in token is not an AES key", label)
	case a[1].Value == nil || a[1].Bool():
		return 0, fmt.Errorf("secret key %q in token is extractable; tether only seals with non-extractable keys: delete it or pick another label", label)
	case !a[2].Bool():
		return 0, fmt.Errorf("secret key %q in token is not sensitive; delete it or pick another label", label)
	case a[3].Uint() != 32:
		return 0, fmt.Errorf("secret key %q in token is AES-%d; tether seals with AES-256", label, a[3].Uint()*8)
	}
	s.keys[label] = h
	return h, nil
}

// rpcAEAD is AES-256-GCM whose block cipher runs in the token.
type rpcAEAD struct {
	k     *rpcKey
	label string
}

func (a *rpcAEAD) NonceSize() int { return 12 }
func (a *rpcAEAD) Overhead() int  { return 16 }

// gcm returns a GCM over the blocks the token encrypted for a text of n
// bytes under nonce: the hash key E(0) and the counters nonce||1.. .
func (a *rpcAEAD) gcm(op string, nonce []byte, n int) (cipher.AEAD, *tableBlock, error) {
	if len(nonce) != a.NonceSize() {
		return nil, nil, fmt.Errorf("%s: nonce is %d bytes, want %d", op, len(nonce), a.NonceSize())
	}
	if n > maxSealed {
		return nil, nil, fmt.Errorf("%s: %d bytes exceed the token sealer's %d-byte limit", op, n, maxSealed)
	}
	blocks := 2 + (n+15)/16
	in := make([]byte, 16*blocks)
	for i := 1; i < blocks; i++ {
		b := in[16*i:]
		copy(b, nonce)
		binary.BigEndian.PutUint32(b[12:], uint32(i))
	}
	var out []byte
	err := a.k.do(op, func(s *rpcSession) error {
		key, err := s.secretKey(a.label, a.k.log, a.k.uri)
		if err != nil {
			return err
		}
		if err := s.c.EncryptInit(s.sh, p11rpc.Mechanism{Type: p11rpc.CKM_AES_ECB}, key); err != nil {
			return err
		}
		out, err = s.c.Encrypt(s.sh, in, len(in))
		return err
	})
	if err != nil {
		return nil, nil, err
	}
	if len(out) != len(in) {
		return nil, nil, fmt.Errorf("pkcs11 %s: the token returned %d bytes of AES-ECB for %d", op, len(out), len(in))
	}
	tb := &tableBlock{m: make(map[[16]byte][16]byte, blocks)}
	for i := 0; i < blocks; i++ {
		var k, v [16]byte
		copy(k[:], in[16*i:])
		copy(v[:], out[16*i:])
		tb.m[k] = v
	}
	g, err := cipher.NewGCM(tb)
	if err != nil {
		return nil, nil, err
	}
	return g, tb, tb.check()
}

// Seal encrypts and authenticates in one token call; see Sealer.
func (a *rpcAEAD) Seal(dst, nonce, plaintext, additionalData []byte) ([]byte, error) {
	g, tb, err := a.gcm("seal", nonce, len(plaintext))
	if err != nil {
		return nil, err
	}
	out := g.Seal(dst, nonce, plaintext, additionalData)
	if err := tb.check(); err != nil {
		return nil, err
	}
	return out, nil
}

// Open authenticates and decrypts in one token call; see Sealer.
func (a *rpcAEAD) Open(dst, nonce, ciphertext, additionalData []byte) ([]byte, error) {
	if len(ciphertext) < a.Overhead() {
		return nil, errors.New("open: ciphertext shorter than the GCM tag")
	}
	g, tb, err := a.gcm("open", nonce, len(ciphertext)-a.Overhead())
	if err != nil {
		return nil, err
	}
	out, err := g.Open(dst, nonce, ciphertext, additionalData)
	if cerr := tb.check(); cerr != nil {
		return nil, cerr
	}
	return out, err
}

// tableBlock is a cipher.Block that answers from the blocks the token
// encrypted. A block it was not given (which GCM never asks for) yields
// zeros and fails check, so no output is ever made from it.
type tableBlock struct {
	m      map[[16]byte][16]byte
	missed bool
}

func (b *tableBlock) BlockSize() int { return 16 }

func (b *tableBlock) Encrypt(dst, src []byte) {
	v, ok := b.m[[16]byte(src[:16])]
	if !ok {
		b.missed = true
	}
	copy(dst, v[:])
}

func (b *tableBlock) Decrypt(dst, src []byte) {
	b.missed = true
	clear(dst[:16])
}

func (b *tableBlock) check() error {
	if b.missed {
		return errors.New("pkcs11 sealer: internal: GCM asked for a block the token did not encrypt")
	}
	return nil
}
