//go:build !notpm

package tpm

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/asn1"
	"errors"
	"fmt"
	"io"
	"math/big"
	"sync"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// Key is a signing key inside a TPM, usable as a crypto.Signer. It holds one
// connection to the TPM; calls are serialised on it. It is safe for
// concurrent use.
type Key struct {
	uri  *URI
	auth []byte

	mu     sync.Mutex
	tpm    transport.TPMCloser
	handle tpm2.TPMHandle // transient when loaded from a file, else persistent
	name   tpm2.TPM2BName
	public tpm2.TPMTPublic
	pub    crypto.PublicKey
	// session authorises signatures (HMAC, salted); endSession flushes it.
	session    tpm2.Session
	endSession func() error
	// refused is set once the TPM refused auth; no later call sends it again.
	refused error
}

// Open connects to the TPM u names, loads the key and proves the
// authorisation value auth (nil for a key with an empty one) with one
// signature, so that a wrong value is found at start-up and sent once only.
func Open(ctx context.Context, u *URI, auth []byte) (*Key, error) {
	k := &Key{uri: u, auth: auth}
	if err := k.load(ctx); err != nil {
		return nil, err
	}
	if err := k.probe(); err != nil {
		k.Close()
		return nil, err
	}
	return k, nil
}

// load opens the transport and makes the key usable; k.mu is held or k is
// not shared yet.
func (k *Key) load(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	var kf *KeyFile
	if k.uri.File != "" {
		var err error
		if kf, err = ReadKeyFile(k.uri.File); err != nil {
			return err
		}
		if !kf.EmptyAuth && len(k.auth) == 0 {
			return fmt.Errorf("%w: key file %s says the key needs an authorisation value; add pin-source=file:PATH or pin-source=credential:NAME to %s", ErrAuth, k.uri.File, k.uri)
		}
	}
	t, err := openTransport(k.uri.Device)
	if err != nil {
		return err
	}
	if kf != nil {
		err = k.loadFile(t, kf)
	} else {
		err = k.readPersistent(t)
	}
	if err != nil {
		t.Close()
		return err
	}
	k.tpm = t
	return nil
}

func (k *Key) loadFile(t transport.TPM, kf *KeyFile) error {
	pub, err := kf.Public.Contents()
	if err != nil {
		return fmt.Errorf("%w: %s: %w", ErrKeyFile, k.uri.File, err)
	}
	parent, err := loadParent(t, kf.Parent)
	if err != nil {
		return fmt.Errorf("key file %s: %w", k.uri.File, err)
	}
	defer parent.flush()
	rsp, err := tpm2.Load{ParentHandle: parent.AuthHandle, InPrivate: kf.Private, InPublic: kf.Public}.Execute(t)
	if err != nil {
		if isRC(err, tpm2.TPMRCIntegrity) || isRC(err, tpm2.TPMRCSize) || isRC(err, tpm2.TPMRCValue) {
			return fmt.Errorf("%w: this TPM cannot load key file %s (TPM2_Load: %v): it was made by another TPM, under another parent, or before the TPM was cleared; make a new key here (tether hsm keygen) and have its certificate issued", ErrWrongTPM, k.uri.File, err)
		}
		return classify(err, fmt.Sprintf("key file %s: TPM2_Load", k.uri.File))
	}
	k.handle, k.name = rsp.ObjectHandle, rsp.Name
	if err := k.setPublic(pub); err != nil {
		return err
	}
	return k.startSession(t, parent)
}

// startSession starts the HMAC session that authorises the key's
// signatures: the authorisation value never crosses the bus, only HMACs
// keyed with it, and with a salt (encrypted to the storage key) that a
// listener on the bus cannot get, those cannot be tested offline against
// guesses either. salt nil: an unsalted session, still no plain value.
func (k *Key) startSession(t transport.TPM, salt *parentKey) error {
	opts := []tpm2.AuthOption{tpm2.Auth(k.auth)}
	if salt != nil {
		opts = append(opts, tpm2.Salted(salt.Handle, salt.public))
	}
	s, end, err := tpm2.HMACSession(t, tpm2.TPMAlgSHA256, 16, opts...)
	if err != nil {
		return classify(err, fmt.Sprintf("%s: TPM2_StartAuthSession", k.uri))
	}
	k.session, k.endSession = s, end
	return nil
}

func (k *Key) readPersistent(t transport.TPM) error {
	h := tpm2.TPMHandle(k.uri.Handle)
	rsp, err := tpm2.ReadPublic{ObjectHandle: h}.Execute(t)
	if err != nil {
		if isRC(err, tpm2.TPMRCHandle) {
			return fmt.Errorf("%w: nothing is persisted at handle %#x in %s; list them with tpm2_getcap handles-persistent, or create one with tether hsm keygen --key %s", ErrKeyNotFound, k.uri.Handle, k.uri.Device, k.uri)
		}
		return classify(err, fmt.Sprintf("handle %#x: TPM2_ReadPublic", k.uri.Handle))
	}
	pub, err := rsp.OutPublic.Contents()
	if err != nil {
		return fmt.Errorf("handle %#x: public area: %w", k.uri.Handle, err)
	}
	k.handle, k.name = h, rsp.Name
	if err := k.setPublic(pub); err != nil {
		return err
	}
	// The SRK salts the session; where the owner hierarchy has an
	// authorisation value and it cannot be made, the session goes unsalted.
	srk, err := loadParent(t, tpm2.TPMRHOwner)
	if err != nil {
		return k.startSession(t, nil)
	}
	defer srk.flush()
	return k.startSession(t, srk)
}

// setPublic checks that pub is a signing key tether can use.
func (k *Key) setPublic(pub *tpm2.TPMTPublic) error {
	a := pub.ObjectAttributes
	if !a.SignEncrypt || a.Restricted {
		return fmt.Errorf("%s is not an unrestricted signing key (sign=%t restricted=%t); create one with tether hsm keygen", k.uri, a.SignEncrypt, a.Restricted)
	}
	p, err := tpm2.Pub(*pub)
	if err != nil {
		return fmt.Errorf("%s: public key: %w", k.uri, err)
	}
	// Which curves and sizes a device may use is hsm's policy, not this
	// package's: ECDSA and RSA are what it signs with.
	switch p.(type) {
	case *ecdsa.PublicKey, *rsa.PublicKey:
	default:
		return fmt.Errorf("%s: key type %T not supported", k.uri, p)
	}
	k.public, k.pub = *pub, p
	return nil
}

// probe signs once, so that Open reports a wrong authorisation at once.
func (k *Key) probe() error {
	d := sha256.Sum256([]byte("tether tpm key probe"))
	var opts crypto.SignerOpts = crypto.SHA256
	if _, ok := k.pub.(*rsa.PublicKey); ok {
		opts = &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: crypto.SHA256}
	}
	_, err := k.Sign(nil, d[:], opts)
	return err
}

// Public returns the public key.
func (k *Key) Public() crypto.PublicKey { return k.pub }

// URI returns the key's reference.
func (k *Key) URI() *URI { return k.uri }

// Name returns the key's TPM name (the hash of its public area).
func (k *Key) Name() []byte { return k.name.Buffer }

// Sign signs digest in the TPM: ECDSA for EC keys, RSA-PSS when opts is an
// *rsa.PSSOptions and PKCS#1 v1.5 otherwise for RSA keys. rand is unused
// (the TPM draws its own). A connection that fails is reopened once; a
// refused authorisation is not sent again.
func (k *Key) Sign(_ io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.refused != nil {
		return nil, k.refused
	}
	if k.tpm == nil {
		if err := k.load(context.Background()); err != nil {
			return nil, err
		}
	}
	sig, err := k.sign(digest, opts)
	if err != nil && isConnLost(err) {
		k.drop()
		k.tpm.Close()
		k.tpm = nil
		if rerr := k.load(context.Background()); rerr != nil {
			return nil, fmt.Errorf("%s: reopening the TPM after %v: %w", k.uri, err, rerr)
		}
		sig, err = k.sign(digest, opts)
	}
	if errors.Is(err, ErrAuth) {
		k.refused = err
	}
	return sig, err
}

func (k *Key) sign(digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	halg, err := hashAlg(opts.HashFunc())
	if err != nil {
		return nil, err
	}
	if len(digest) != opts.HashFunc().Size() {
		return nil, fmt.Errorf("digest is %d bytes, %v needs %d", len(digest), opts.HashFunc(), opts.HashFunc().Size())
	}
	scheme := tpm2.TPMAlgECDSA
	if k.public.Type == tpm2.TPMAlgRSA {
		scheme = tpm2.TPMAlgRSASSA
		if _, ok := opts.(*rsa.PSSOptions); ok {
			scheme = tpm2.TPMAlgRSAPSS
		}
	}
	in, err := k.inScheme(scheme, halg)
	if err != nil {
		return nil, err
	}
	rsp, err := tpm2.Sign{
		KeyHandle:  tpm2.AuthHandle{Handle: k.handle, Name: k.name, Auth: k.session},
		Digest:     tpm2.TPM2BDigest{Buffer: digest},
		InScheme:   in,
		Validation: tpm2.TPMTTKHashCheck{Tag: tpm2.TPMSTHashCheck, Hierarchy: tpm2.TPMRHNull},
	}.Execute(k.tpm)
	if err != nil {
		return nil, k.classifyAuth(err, "TPM2_Sign")
	}
	switch scheme {
	case tpm2.TPMAlgECDSA:
		s, err := rsp.Signature.Signature.ECDSA()
		if err != nil {
			return nil, err
		}
		return asn1.Marshal(struct{ R, S *big.Int }{
			new(big.Int).SetBytes(s.SignatureR.Buffer), new(big.Int).SetBytes(s.SignatureS.Buffer),
		})
	case tpm2.TPMAlgRSAPSS:
		s, err := rsp.Signature.Signature.RSAPSS()
		if err != nil {
			return nil, err
		}
		return s.Sig.Buffer, nil
	default:
		s, err := rsp.Signature.Signature.RSASSA()
		if err != nil {
			return nil, err
		}
		return s.Sig.Buffer, nil
	}
}

// inScheme is the scheme to ask TPM2_Sign for: the one wanted when the key
// leaves it open (TPM_ALG_NULL, as tpm2-openssl and tether make keys), else
// the key's own, which must then be the one wanted.
func (k *Key) inScheme(scheme tpm2.TPMAlgID, halg tpm2.TPMIAlgHash) (tpm2.TPMTSigScheme, error) {
	fixed, fixedHash := k.keyScheme()
	if fixed == tpm2.TPMAlgNull {
		return tpm2.TPMTSigScheme{Scheme: scheme, Details: tpm2.NewTPMUSigScheme(scheme, &tpm2.TPMSSchemeHash{HashAlg: halg})}, nil
	}
	if fixed != scheme || fixedHash != halg {
		return tpm2.TPMTSigScheme{}, fmt.Errorf("%s is bound to signature scheme %v with %v, not %v with %v; create the key with a null scheme (tether hsm keygen does)", k.uri, fixed, fixedHash, scheme, halg)
	}
	return tpm2.TPMTSigScheme{Scheme: tpm2.TPMAlgNull}, nil
}

func (k *Key) keyScheme() (tpm2.TPMAlgID, tpm2.TPMIAlgHash) {
	var s *tpm2.TPMUAsymScheme
	var alg tpm2.TPMAlgID
	switch k.public.Type {
	case tpm2.TPMAlgECC:
		d, err := k.public.Parameters.ECCDetail()
		if err != nil {
			return tpm2.TPMAlgNull, 0
		}
		s, alg = &d.Scheme.Details, d.Scheme.Scheme
	case tpm2.TPMAlgRSA:
		d, err := k.public.Parameters.RSADetail()
		if err != nil {
			return tpm2.TPMAlgNull, 0
		}
		s, alg = &d.Scheme.Details, d.Scheme.Scheme
	}
	var h *tpm2.TPMSSchemeHash
	switch alg {
	case tpm2.TPMAlgECDSA:
		if x, err := s.ECDSA(); err == nil {
			h = (*tpm2.TPMSSchemeHash)(x)
		}
	case tpm2.TPMAlgRSASSA:
		if x, err := s.RSASSA(); err == nil {
			h = (*tpm2.TPMSSchemeHash)(x)
		}
	case tpm2.TPMAlgRSAPSS:
		if x, err := s.RSAPSS(); err == nil {
			h = (*tpm2.TPMSSchemeHash)(x)
		}
	default:
		return tpm2.TPMAlgNull, 0
	}
	if h == nil {
		return alg, 0
	}
	return alg, h.HashAlg
}

func hashAlg(h crypto.Hash) (tpm2.TPMIAlgHash, error) {
	switch h {
	case crypto.SHA1:
		return tpm2.TPMAlgSHA1, nil
	case crypto.SHA256:
		return tpm2.TPMAlgSHA256, nil
	case crypto.SHA384:
		return tpm2.TPMAlgSHA384, nil
	case crypto.SHA512:
		return tpm2.TPMAlgSHA512, nil
	}
	return 0, fmt.Errorf("hash %v not supported by TPM signing", h)
}

// classifyAuth is classify for commands that send the key's authorisation.
func (k *Key) classifyAuth(err error, what string) error {
	if isRC(err, tpm2.TPMRCAuthFail) || isRC(err, tpm2.TPMRCBadAuth) {
		src := "an empty authorisation"
		if k.uri.PINSource != "" {
			src = "the value from pin-source=" + k.uri.PINSource
		}
		return fmt.Errorf("%w: the TPM refused %s for %s; fix the PIN source (not retried: each failure counts toward the TPM's dictionary-attack lockout, which would lock the device out)", ErrAuth, src, k.uri)
	}
	return classify(err, fmt.Sprintf("%s: %s", k.uri, what))
}

// Close flushes a key loaded from a file and closes the connection.
func (k *Key) Close() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.tpm == nil {
		return nil
	}
	k.drop()
	err := k.tpm.Close()
	k.tpm = nil
	return err
}

// Type names the key's type: "EC P-256", "RSA 2048".
func (k *Key) Type() string { return keyDesc(k.pub) }

// drop flushes the session and a key loaded from a file; k.mu is held.
func (k *Key) drop() {
	if k.endSession != nil {
		_ = k.endSession()
		k.session, k.endSession = nil, nil
	}
	if k.uri.File != "" {
		_, _ = tpm2.FlushContext{FlushHandle: k.handle}.Execute(k.tpm)
	}
}
