//go:build !notpm

package tpm

import (
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
	"os"

	"github.com/google/go-tpm/tpm2"

	"github.com/tetherd/tether/platform/secretfile"
)

// OIDs of the TSS2 key file's type field ("ASN.1 Specification for TPM 2.0
// Key Files"); only loadable keys are device keys.
var (
	oidLoadableKey   = asn1.ObjectIdentifier{2, 23, 133, 10, 1, 3}
	oidImportableKey = asn1.ObjectIdentifier{2, 23, 133, 10, 1, 4}
	oidSealedData    = asn1.ObjectIdentifier{2, 23, 133, 10, 1, 5}
)

// tpmKeyASN1 is the TPMKey SEQUENCE. The policy, secret and authPolicy
// fields are read only to refuse keys that need them.
// EmptyAuth is read raw: tpm2-openssl writes TRUE as 0x01, which is BER
// but not the DER encoding/asn1 insists on.
type tpmKeyASN1 struct {
	Type       asn1.ObjectIdentifier
	EmptyAuth  asn1.RawValue `asn1:"tag:0,optional"`
	Policy     asn1.RawValue `asn1:"explicit,tag:1,optional"`
	Secret     []byte        `asn1:"explicit,tag:2,optional"`
	AuthPolicy asn1.RawValue `asn1:"explicit,tag:3,optional"`
	Parent     int64
	PubKey     []byte
	PrivKey    []byte
}

// KeyFile is a decoded TSS2 key file: a key's public area and its private
// area encrypted by its parent, which only the TPM that made it can load.
type KeyFile struct {
	// EmptyAuth says the key needs no authorisation value.
	EmptyAuth bool
	// Parent is the parent's handle: TPM_RH_OWNER (0x40000001) for a key
	// under the SRK created from the standard template, or a persistent
	// handle holding the parent.
	Parent tpm2.TPMHandle
	// Public is the key's TPM2B_PUBLIC.
	Public tpm2.TPM2BPublic
	// Private is the key's TPM2B_PRIVATE.
	Private tpm2.TPM2BPrivate
}

// ReadKeyFile reads and decodes the TSS2 key file at path. Like a PEM key it
// must not be readable by group or others: it cannot be used elsewhere, but
// with the TPM at hand it is the device's identity.
func ReadKeyFile(path string) (*KeyFile, error) {
	if err := secretfile.Check(path); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrKeyFile, err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrKeyFile, err)
	}
	kf, err := DecodeKeyFile(data)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrKeyFile, path, err)
	}
	return kf, nil
}

// DecodeKeyFile decodes the first TSS2 PRIVATE KEY block of data.
func DecodeKeyFile(data []byte) (*KeyFile, error) {
	var b *pem.Block
	for rest := data; ; {
		b, rest = pem.Decode(rest)
		if b == nil {
			return nil, errors.New("no \"TSS2 PRIVATE KEY\" PEM block; want a TSS2 key file (tpm2-openssl, tpm2_encodeobject, tether hsm keygen)")
		}
		if b.Type == KeyFilePEMType {
			break
		}
	}
	var k tpmKeyASN1
	rest, err := asn1.Unmarshal(b.Bytes, &k)
	if err != nil {
		return nil, fmt.Errorf("TSS2 key: %w", err)
	}
	if len(rest) > 0 {
		return nil, errors.New("TSS2 key: trailing data after the key")
	}
	switch {
	case k.Type.Equal(oidLoadableKey):
	case k.Type.Equal(oidImportableKey):
		return nil, errors.New("an importable key (wrapped for import, not yet loaded into this TPM); import it first (tpm2_import) and encode the result")
	case k.Type.Equal(oidSealedData):
		return nil, errors.New("sealed data, not a signing key")
	default:
		return nil, fmt.Errorf("TSS2 key type %s is not a loadable key (%s)", k.Type, oidLoadableKey)
	}
	if len(k.Policy.FullBytes) > 0 || len(k.AuthPolicy.FullBytes) > 0 || len(k.Secret) > 0 {
		return nil, errors.New("the key is bound to a policy (PCRs, signed policy or import secret); tether loads keys authorised by a password only")
	}
	if k.Parent < 0 || k.Parent > 0xFFFFFFFF {
		return nil, fmt.Errorf("parent handle %d out of range", k.Parent)
	}
	parent := tpm2.TPMHandle(k.Parent)
	if parent != tpm2.TPMRHOwner && (parent < FirstPersistent || parent > LastPersistent) {
		return nil, fmt.Errorf("parent %#x is neither the owner hierarchy (0x40000001) nor a persistent handle", uint32(parent))
	}
	pub, err := tpm2.Unmarshal[tpm2.TPM2BPublic](k.PubKey)
	if err != nil {
		return nil, fmt.Errorf("TSS2 key: public area: %w", err)
	}
	if _, err := pub.Contents(); err != nil {
		return nil, fmt.Errorf("TSS2 key: public area: %w", err)
	}
	priv, err := tpm2.Unmarshal[tpm2.TPM2BPrivate](k.PrivKey)
	if err != nil {
		return nil, fmt.Errorf("TSS2 key: private area: %w", err)
	}
	emptyAuth := false
	if len(k.EmptyAuth.FullBytes) > 0 {
		// [0] EXPLICIT wraps a BOOLEAN: 01 01 xx.
		b := k.EmptyAuth.Bytes
		if len(b) != 3 || b[0] != asn1.TagBoolean || b[1] != 1 {
			return nil, errors.New("TSS2 key: emptyAuth is not a BOOLEAN")
		}
		emptyAuth = b[2] != 0
	}
	return &KeyFile{EmptyAuth: emptyAuth, Parent: parent, Public: *pub, Private: *priv}, nil
}

// Encode returns the key file in PEM, as tpm2-openssl writes it.
func (kf *KeyFile) Encode() ([]byte, error) {
	k := tpmKeyASN1{Type: oidLoadableKey, Parent: int64(kf.Parent), PubKey: tpm2.Marshal(kf.Public), PrivKey: tpm2.Marshal(kf.Private)}
	// emptyAuth is written either way, as tpm2-openssl does: it reads an
	// absent field as "no authorisation" and would send an empty one.
	b := byte(0)
	if kf.EmptyAuth {
		b = 0xff
	}
	k.EmptyAuth = asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 0, IsCompound: true, Bytes: []byte{asn1.TagBoolean, 1, b}}
	der, err := asn1.Marshal(k)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: KeyFilePEMType, Bytes: der}), nil
}
