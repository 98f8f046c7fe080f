//go:build !notpm

package tpm

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"fmt"
	"os"
	"strings"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// template is the public area of a new signing key: unrestricted, a null
// scheme so that TLS picks ECDSA or RSA-PSS/PKCS#1 per handshake (as
// tpm2-openssl's keys do), fixed to this TPM and parent, authorised by its
// password, under dictionary-attack protection.
func template(keyType string) (tpm2.TPMTPublic, error) {
	attrs := tpm2.TPMAObject{
		FixedTPM: true, FixedParent: true, SensitiveDataOrigin: true,
		UserWithAuth: true, SignEncrypt: true,
	}
	switch keyType {
	case ECP256, ECP384:
		curve := tpm2.TPMECCNistP256
		if keyType == ECP384 {
			curve = tpm2.TPMECCNistP384
		}
		return tpm2.TPMTPublic{
			Type: tpm2.TPMAlgECC, NameAlg: tpm2.TPMAlgSHA256, ObjectAttributes: attrs,
			Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, &tpm2.TPMSECCParms{
				Symmetric: tpm2.TPMTSymDefObject{Algorithm: tpm2.TPMAlgNull},
				Scheme:    tpm2.TPMTECCScheme{Scheme: tpm2.TPMAlgNull},
				CurveID:   curve,
				KDF:       tpm2.TPMTKDFScheme{Scheme: tpm2.TPMAlgNull},
			}),
			Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{}),
		}, nil
	case RSA2048:
		return tpm2.TPMTPublic{
			Type: tpm2.TPMAlgRSA, NameAlg: tpm2.TPMAlgSHA256, ObjectAttributes: attrs,
			Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgRSA, &tpm2.TPMSRSAParms{
				Symmetric: tpm2.TPMTSymDefObject{Algorithm: tpm2.TPMAlgNull},
				Scheme:    tpm2.TPMTRSAScheme{Scheme: tpm2.TPMAlgNull},
				KeyBits:   2048,
			}),
			Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{}),
		}, nil
	}
	return tpm2.TPMTPublic{}, fmt.Errorf("key type %q: the TPM makes ec-p256, ec-p384 or rsa-2048", keyType)
}

// Generate creates a signing key of keyType under the SRK, with the
// authorisation value auth (nil: none). For a key file reference it writes
// the TSS2 key file (mode 0600; an existing file is never overwritten); for
// a handle reference it persists the key there (the owner hierarchy's
// authorisation must be empty). The private part never leaves the TPM.
func Generate(ctx context.Context, u *URI, keyType string, auth []byte) (crypto.PublicKey, error) {
	tmpl, err := template(keyType)
	if err != nil {
		return nil, err
	}
	if u.File != "" {
		if _, err := os.Lstat(u.File); err == nil {
			return nil, fmt.Errorf("%s exists; tether never overwrites a key file (move it away first)", u.File)
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	t, err := openTransport(u.Device)
	if err != nil {
		return nil, err
	}
	defer t.Close()
	if u.Handle != 0 {
		if _, err := (tpm2.ReadPublic{ObjectHandle: tpm2.TPMHandle(u.Handle)}).Execute(t); err == nil {
			return nil, fmt.Errorf("handle %#x already holds an object; pick a free one (tpm2_getcap handles-persistent) or free it (tpm2_evictcontrol -C o -c %#x)", u.Handle, u.Handle)
		}
	}
	srk, err := loadParent(t, tpm2.TPMRHOwner)
	if err != nil {
		return nil, err
	}
	defer srk.flush()
	rsp, err := tpm2.Create{
		// The new key's authorisation value travels encrypted.
		ParentHandle: tpm2.AuthHandle{Handle: srk.Handle, Name: srk.Name, Auth: srk.salted()},
		InSensitive:  tpm2.TPM2BSensitiveCreate{Sensitive: &tpm2.TPMSSensitiveCreate{UserAuth: tpm2.TPM2BAuth{Buffer: auth}}},
		InPublic:     tpm2.New2B(tmpl),
	}.Execute(t)
	if err != nil {
		return nil, classify(err, "TPM2_Create")
	}
	pubArea, err := rsp.OutPublic.Contents()
	if err != nil {
		return nil, err
	}
	pub, err := tpm2.Pub(*pubArea)
	if err != nil {
		return nil, err
	}
	if u.File != "" {
		kf := &KeyFile{EmptyAuth: len(auth) == 0, Parent: tpm2.TPMRHOwner, Public: rsp.OutPublic, Private: rsp.OutPrivate}
		data, err := kf.Encode()
		if err != nil {
			return nil, err
		}
		f, err := os.OpenFile(u.File, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return nil, err
		}
		if _, err := f.Write(data); err != nil {
			f.Close()
			os.Remove(u.File)
			return nil, err
		}
		return pub, f.Close()
	}
	return pub, persist(t, srk.AuthHandle, rsp, u.Handle)
}

func persist(t transport.TPM, srk tpm2.AuthHandle, c *tpm2.CreateResponse, h uint32) error {
	l, err := tpm2.Load{ParentHandle: srk, InPrivate: c.OutPrivate, InPublic: c.OutPublic}.Execute(t)
	if err != nil {
		return classify(err, "TPM2_Load")
	}
	defer tpm2.FlushContext{FlushHandle: l.ObjectHandle}.Execute(t)
	_, err = tpm2.EvictControl{
		Auth:             tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)},
		ObjectHandle:     tpm2.NamedHandle{Handle: l.ObjectHandle, Name: l.Name},
		PersistentHandle: tpm2.TPMHandle(h),
	}.Execute(t)
	if err != nil {
		if isRC(err, tpm2.TPMRCAuthFail) || isRC(err, tpm2.TPMRCBadAuth) {
			return fmt.Errorf("%w: persisting at %#x needs the owner hierarchy's authorisation, which is set; write a key file instead (tpm:file=PATH)", ErrAuth, h)
		}
		if isRC(err, tpm2.TPMRCNVSpace) {
			return fmt.Errorf("persisting at %#x: the TPM's persistent memory is full; free a handle (tpm2_evictcontrol) or write a key file instead", h)
		}
		return classify(err, fmt.Sprintf("persisting at %#x: TPM2_EvictControl", h))
	}
	return nil
}

// List reports what the TPM at device holds.
func List(ctx context.Context, device string) (*Info, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	t, err := openTransport(device)
	if err != nil {
		return nil, err
	}
	defer t.Close()
	info := &Info{Device: device}
	props, err := properties(t, tpm2.TPMPTManufacturer, 8)
	if err != nil {
		return nil, classify(err, "TPM2_GetCapability")
	}
	info.Manufacturer = fourCC(props[tpm2.TPMPTManufacturer])
	info.Firmware = fmt.Sprintf("%d.%d", props[tpm2.TPMPTFirmwareVersion1]>>16, props[tpm2.TPMPTFirmwareVersion1]&0xffff)
	if props, err = properties(t, tpm2.TPMPTPermanent, 20); err != nil {
		return nil, classify(err, "TPM2_GetCapability")
	}
	info.LockoutCounter, info.MaxAuthFail, info.LockoutRecovery = props[tpm2.TPMPTLockoutCounter], props[tpm2.TPMPTMaxAuthFail], props[tpm2.TPMPTLockoutRecovery]
	info.InLockout = props[tpm2.TPMPTPermanent]&(1<<9) != 0 // TPMA_PERMANENT.inLockout
	caps, err := tpm2.GetCapability{Capability: tpm2.TPMCapHandles, Property: FirstPersistent, PropertyCount: 64}.Execute(t)
	if err != nil {
		return nil, classify(err, "TPM2_GetCapability")
	}
	hs, err := caps.CapabilityData.Data.Handles()
	if err != nil {
		return nil, err
	}
	for _, h := range hs.Handle {
		if h > LastPersistent {
			break
		}
		p := Persistent{Handle: uint32(h), Type: "unreadable"}
		if rsp, err := (tpm2.ReadPublic{ObjectHandle: h}).Execute(t); err == nil {
			if pub, err := rsp.OutPublic.Contents(); err == nil {
				p.Type = describe(pub)
			}
		}
		info.Persistent = append(info.Persistent, p)
	}
	return info, nil
}

func properties(t transport.TPM, first tpm2.TPMPT, n uint32) (map[tpm2.TPMPT]uint32, error) {
	rsp, err := tpm2.GetCapability{Capability: tpm2.TPMCapTPMProperties, Property: uint32(first), PropertyCount: n}.Execute(t)
	if err != nil {
		return nil, err
	}
	ps, err := rsp.CapabilityData.Data.TPMProperties()
	if err != nil {
		return nil, err
	}
	m := map[tpm2.TPMPT]uint32{}
	for _, p := range ps.TPMProperty {
		m[p.Property] = p.Value
	}
	return m, nil
}

func fourCC(v uint32) string {
	b := []byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}
	return strings.TrimRight(string(b), "\x00 ")
}

func describe(pub *tpm2.TPMTPublic) string {
	var kind string
	switch p, err := tpm2.Pub(*pub); {
	case err != nil:
		kind = fmt.Sprintf("type %#x", uint16(pub.Type))
	default:
		kind = keyDesc(p)
	}
	a := pub.ObjectAttributes
	switch {
	case a.SignEncrypt && !a.Restricted:
		kind += " signing"
	case a.Restricted && a.Decrypt:
		kind += " storage"
	case a.Restricted && a.SignEncrypt:
		kind += " attestation"
	}
	return kind
}

// keyDesc names a public key's type: "EC P-256", "RSA 2048".
func keyDesc(p crypto.PublicKey) string {
	switch p := p.(type) {
	case *ecdsa.PublicKey:
		return "EC " + p.Curve.Params().Name
	case *rsa.PublicKey:
		return fmt.Sprintf("RSA %d", p.N.BitLen())
	}
	return fmt.Sprintf("%T", p)
}
