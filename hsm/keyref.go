package hsm

import (
	"context"
	"crypto"

	"github.com/tetherd/tether/hsm/tpm"
)

// KeyFile returns the file that holds the key ref names: the PEM file
// itself, or a TPM key file (tpm:file=). Keys inside a PKCS#11 token or at a
// TPM persistent handle are not files: ok is false.
func KeyFile(ref string) (file string, ok bool) {
	switch {
	case IsURI(ref):
		return "", false
	case tpm.IsURI(ref):
		u, err := tpm.ParseURI(ref)
		if err != nil || u.File == "" {
			return "", false
		}
		return u.File, true
	}
	return ref, true
}

// PINFile returns the file a pkcs11: or tpm: reference's pin-source names,
// with the rule Open reads it by; "" when the PIN is a systemd credential,
// written in the URI, or absent (and for PEM keys).
func PINFile(ref string, getenv func(string) string) (string, error) {
	var u URI
	switch {
	case IsURI(ref):
		p, err := ParseKeyURI(ref)
		if err != nil {
			return "", err
		}
		u = *p
	case tpm.IsURI(ref):
		t, err := tpm.ParseURI(ref)
		if err != nil {
			return "", err
		}
		u.PINSource = t.PINSource
	default:
		return "", nil
	}
	return u.pinFile(getenv)
}

// WithKeyFile returns ref with its key file replaced by file (see KeyFile):
// where a new key is staged beside the one ref names. Other references are
// returned unchanged.
func WithKeyFile(ref, file string) string {
	switch {
	case IsURI(ref):
		return ref
	case tpm.IsURI(ref):
		u, err := tpm.ParseURI(ref)
		if err != nil || u.File == "" {
			return ref
		}
		u.File = file
		return u.String()
	}
	return file
}

// Generate creates a key of type kt where ref says: a new PEM file, a key
// in the PKCS#11 token of a pkcs11: URI (labelled and identified by it), or
// a key in the TPM of a tpm: reference (a new TSS2 key file, or a
// persistent handle).
func Generate(ctx context.Context, ref string, kt KeyType, opts ...Option) (crypto.PublicKey, error) {
	if kt == "" {
		kt = KeyECP256
	}
	switch {
	case IsURI(ref):
		return GenerateKey(ctx, ref, kt, opts...)
	case tpm.IsURI(ref):
		return GenerateTPMKey(ctx, ref, kt, opts...)
	}
	return GeneratePEMKey(ref, kt)
}
