//go:build !notpm

package tpm

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/sha256"
	"fmt"

	"github.com/google/go-tpm/tpm2"
)

// Sealer returns an AES-256-GCM AEAD for sealing stored state under label.
// Its key is an HMAC of label computed inside the TPM with an HMAC key that
// never leaves it: a primary object of the owner hierarchy whose template
// carries the device key's name. So the sealing key is bound to this TPM
// (tpm2_clear changes it) and to this device key (a new key changes it), and
// nothing has to be stored for it: data sealed under an old key or another
// TPM reads as undecryptable, not as garbage. The AES key itself lives in
// process memory only.
func (k *Key) Sealer(ctx context.Context, label string) (cipher.AEAD, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.tpm == nil {
		if err := k.load(ctx); err != nil {
			return nil, err
		}
	}
	unique := sha256.Sum256(append([]byte("tether sealer v1\x00"), k.name.Buffer...))
	p, err := tpm2.CreatePrimary{
		PrimaryHandle: tpm2.TPMRHOwner,
		InPublic: tpm2.New2B(tpm2.TPMTPublic{
			Type: tpm2.TPMAlgKeyedHash, NameAlg: tpm2.TPMAlgSHA256,
			ObjectAttributes: tpm2.TPMAObject{
				FixedTPM: true, FixedParent: true, SensitiveDataOrigin: true,
				UserWithAuth: true, NoDA: true, SignEncrypt: true,
			},
			Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgKeyedHash, &tpm2.TPMSKeyedHashParms{
				Scheme: tpm2.TPMTKeyedHashScheme{
					Scheme:  tpm2.TPMAlgHMAC,
					Details: tpm2.NewTPMUSchemeKeyedHash(tpm2.TPMAlgHMAC, &tpm2.TPMSSchemeHMAC{HashAlg: tpm2.TPMAlgSHA256}),
				},
			}),
			Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgKeyedHash, &tpm2.TPM2BDigest{Buffer: unique[:]}),
		}),
	}.Execute(k.tpm)
	if err != nil {
		return nil, classify(err, fmt.Sprintf("sealer %q: TPM2_CreatePrimary", label))
	}
	defer tpm2.FlushContext{FlushHandle: p.ObjectHandle}.Execute(k.tpm)
	h, err := tpm2.Hmac{
		Handle:  tpm2.AuthHandle{Handle: p.ObjectHandle, Name: p.Name, Auth: tpm2.PasswordAuth(nil)},
		Buffer:  tpm2.TPM2BMaxBuffer{Buffer: []byte(label)},
		HashAlg: tpm2.TPMAlgSHA256,
	}.Execute(k.tpm)
	if err != nil {
		return nil, classify(err, fmt.Sprintf("sealer %q: TPM2_HMAC", label))
	}
	block, err := aes.NewCipher(h.OutHMAC.Buffer)
	if err != nil {
		return nil, fmt.Errorf("sealer %q: %w", label, err)
	}
	return cipher.NewGCM(block)
}
