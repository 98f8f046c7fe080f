//go:build !notpm

package tpm

import (
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// srkTemplate is the storage root key's template for keys of type alg: the
// TCG provisioning guidance's ECC P-256 SRK for every key, as tpm2-openssl,
// tpm2-tss-engine and the key file specification use for parent
// TPM_RH_OWNER.
func srkTemplate() tpm2.TPMTPublic {
	t := tpm2.ECCSRKTemplate
	// The key file specification's primary has an empty unique field (the
	// TCG template's 32 zero bytes would derive a different key).
	t.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{})
	return t
}

// parentKey is a loaded storage key: the parent of a key file, which also
// salts the sessions that carry a key's authorisation value.
type parentKey struct {
	tpm2.AuthHandle
	public tpm2.TPMTPublic
	flush  func()
}

// loadParent makes the parent of a key file usable: the SRK is created from
// its template in the owner hierarchy (and flushed by flush), a persistent
// parent is used where it is.
func loadParent(t transport.TPM, parent tpm2.TPMHandle) (*parentKey, error) {
	if parent != tpm2.TPMRHOwner {
		rsp, err := tpm2.ReadPublic{ObjectHandle: parent}.Execute(t)
		if err != nil {
			if isRC(err, tpm2.TPMRCHandle) {
				return nil, fmt.Errorf("%w: its parent, persistent handle %#x, is not in this TPM", ErrWrongTPM, uint32(parent))
			}
			return nil, classify(err, fmt.Sprintf("parent %#x: TPM2_ReadPublic", uint32(parent)))
		}
		pub, err := rsp.OutPublic.Contents()
		if err != nil {
			return nil, fmt.Errorf("parent %#x: %w", uint32(parent), err)
		}
		return &parentKey{tpm2.AuthHandle{Handle: parent, Name: rsp.Name, Auth: tpm2.PasswordAuth(nil)}, *pub, func() {}}, nil
	}
	rsp, err := tpm2.CreatePrimary{
		PrimaryHandle: tpm2.TPMRHOwner,
		InPublic:      tpm2.New2B(srkTemplate()),
	}.Execute(t)
	if err != nil {
		if isRC(err, tpm2.TPMRCAuthFail) || isRC(err, tpm2.TPMRCBadAuth) {
			return nil, fmt.Errorf("%w: creating the storage root key: the owner hierarchy has an authorisation value set; persist the SRK (tpm2_createprimary -C o -P OWNERAUTH -c srk.ctx && tpm2_evictcontrol -c srk.ctx 0x81000001) and make keys under it", ErrAuth)
		}
		return nil, classify(err, "creating the storage root key: TPM2_CreatePrimary")
	}
	pub, err := rsp.OutPublic.Contents()
	if err != nil {
		tpm2.FlushContext{FlushHandle: rsp.ObjectHandle}.Execute(t)
		return nil, fmt.Errorf("storage root key: %w", err)
	}
	flush := func() { _, _ = tpm2.FlushContext{FlushHandle: rsp.ObjectHandle}.Execute(t) }
	return &parentKey{tpm2.AuthHandle{Handle: rsp.ObjectHandle, Name: rsp.Name, Auth: tpm2.PasswordAuth(nil)}, *pub, flush}, nil
}

// salted is a one-use HMAC session for a command on p's child with an
// empty authorisation whose first parameter is encrypted (AES-128-CFB)
// under a key only the TPM can derive: it carries a new key's
// authorisation value to TPM2_Create without showing it on the bus.
func (p *parentKey) salted() tpm2.Session {
	return tpm2.HMAC(tpm2.TPMAlgSHA256, 16, tpm2.Auth(nil),
		tpm2.Salted(p.Handle, p.public), tpm2.AESEncryption(128, tpm2.EncryptIn))
}

// isRC reports whether err is the TPM response code rc (any handle,
// parameter or session index).
func isRC(err error, rc tpm2.TPMRC) bool {
	var got tpm2.TPMRC
	return errors.As(err, &got) && got.Is(rc)
}

// isConnLost reports whether err means the connection to the TPM broke
// (a simulator restarted, a device reset), after which reopening may help.
func isConnLost(err error) bool {
	var ne net.Error
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, net.ErrClosed) ||
		errors.As(err, &ne) || isRC(err, tpm2.TPMRCInitialize)
}

// classify turns a TPM response code into one of the package's errors with
// what to do about it.
func classify(err error, what string) error {
	switch {
	case isRC(err, tpm2.TPMRCLockout):
		return fmt.Errorf("%w: %s: the TPM is in dictionary-attack lockout after too many wrong authorisations; it recovers by itself after its recovery time (tpm2_getcap properties-variable: TPM2_PT_LOCKOUT_RECOVERY), or clear it with tpm2_dictionarylockout --clear-lockout", ErrBusy, what)
	case isRC(err, tpm2.TPMRCRetry), isRC(err, tpm2.TPMRCYielded), isRC(err, tpm2.TPMRCTesting),
		isRC(err, tpm2.TPMRCNVRate), isRC(err, tpm2.TPMRCNVUnavailable):
		return fmt.Errorf("%w: %s: %v; try again shortly", ErrBusy, what, err)
	case isRC(err, tpm2.TPMRCObjectMemory), isRC(err, tpm2.TPMRCSessionMemory),
		isRC(err, tpm2.TPMRCObjectHandles), isRC(err, tpm2.TPMRCSessionHandles):
		return fmt.Errorf("%w: %s: the TPM has no room for another object (%v); use the resource manager /dev/tpmrm0, or stop programs that leave objects loaded", ErrBusy, what, err)
	case isConnLost(err):
		return fmt.Errorf("%w: %s: connection to the TPM lost: %w", ErrNoDevice, what, err)
	}
	return fmt.Errorf("%s: %w", what, err)
}

// Available reports whether this binary talks to TPMs: it does, unless it
// was built with -tags notpm.
const Available = true
