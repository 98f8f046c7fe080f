// Package tpm holds device keys in a TPM 2.0 and signs with them in pure Go
// (github.com/google/go-tpm), so that a static CGO_ENABLED=0 binary uses a
// hardware identity with no C library.
//
// A key is named by a "tpm:" reference (see ParseURI): a TSS2 key file
// ("-----BEGIN TSS2 PRIVATE KEY-----", as tpm2-openssl, tpm2-tss-engine,
// tpm2_encodeobject and the IAM Roles Anywhere helper write it) or a
// persistent handle in 0x81000000–0x81FFFFFF. The TPM is reached through the
// kernel's resource manager /dev/tpmrm0 by default; device= names another
// character device or the Unix socket of a TPM simulator (swtpm's unixio
// server speaks the raw TPM 2.0 command stream).
//
// Keys made here live under the storage root key (SRK) the TCG provisioning
// guidance defines, recreated on demand from the owner hierarchy, so key
// files made by tpm2-tools or OpenSSL's tpm2 provider load too, and keys
// made here load there. The private part never leaves the TPM: a key file
// holds it encrypted by the SRK, and only this TPM can load it.
//
// Authorisation values (the key's PIN) are passed in by the caller; a TPM
// that refuses one is never asked again with the same value, since every
// failure counts toward its dictionary-attack lockout.
package tpm
