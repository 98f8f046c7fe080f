package tpm

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"strconv"
	"strings"
)

// DefaultDevice is the kernel's TPM resource manager. tether never defaults
// to /dev/tpm0: that device admits one user at a time and tpm2-abrmd may
// own it.
const DefaultDevice = "/dev/tpmrm0"

// Persistent handles a device key may live at: the owner's range of the TCG
// handle registry (0x81000000–0x817FFFFF) and the platform's
// (0x81800000–0x81FFFFFF).
const (
	FirstPersistent = 0x81000000
	LastPersistent  = 0x81FFFFFF
)

// URI is a parsed "tpm:" key reference:
//
//	tpm:file=/etc/tether/device.tss2?pin-source=file:/etc/tether/tpm-pin
//	tpm:handle=0x81000002?device=/dev/tpmrm0
//
// Exactly one of file= (a TSS2 key file) and handle= (a persistent handle)
// names the key. Query attributes: device= (default /dev/tpmrm0; a
// character device or the Unix socket of a simulator) and pin-source= (the
// key's authorisation value, in the forms the pkcs11: URIs take:
// file:PATH or credential:NAME).
type URI struct {
	// File is the TSS2 key file; empty when Handle names the key.
	File string
	// Handle is the persistent handle; 0 when File names the key.
	Handle uint32
	// Device is the TPM character device or simulator socket.
	Device string
	// PINSource is where the key's authorisation value comes from; empty
	// for a key with an empty authorisation.
	PINSource string
}

// ErrSyntax marks a "tpm:" reference that does not parse.
var ErrSyntax = errors.New("tpm key reference malformed")

// IsURI reports whether s is a "tpm:" key reference rather than a file name.
func IsURI(s string) bool { return strings.HasPrefix(s, "tpm:") }

// ParseURI parses a "tpm:" key reference. Unknown attributes are refused: a
// typo would otherwise name another key or device.
func ParseURI(s string) (*URI, error) {
	if !IsURI(s) {
		return nil, fmt.Errorf("%w: %q must start with \"tpm:\"", ErrSyntax, s)
	}
	path, query, _ := strings.Cut(strings.TrimPrefix(s, "tpm:"), "?")
	u := &URI{Device: DefaultDevice}
	var hasHandle bool
	for attr := range strings.SplitSeq(path, ";") {
		if attr == "" {
			continue
		}
		name, val, err := attribute(s, attr)
		if err != nil {
			return nil, err
		}
		switch name {
		case "file":
			if val == "" {
				return nil, fmt.Errorf("%w: %s: file= is empty", ErrSyntax, s)
			}
			u.File = val
		case "handle":
			h, err := ParseHandle(val)
			if err != nil {
				return nil, fmt.Errorf("%w: %s: %w", ErrSyntax, s, err)
			}
			u.Handle, hasHandle = h, true
		default:
			return nil, fmt.Errorf("%w: %s: unknown attribute %q (known: file, handle; query: device, pin-source)", ErrSyntax, s, name)
		}
	}
	switch {
	case u.File == "" && !hasHandle:
		return nil, fmt.Errorf("%w: %s names no key; write tpm:file=PATH (a TSS2 key file) or tpm:handle=0x81000002 (a persistent handle)", ErrSyntax, s)
	case u.File != "" && hasHandle:
		return nil, fmt.Errorf("%w: %s names a key file and a handle; keep one", ErrSyntax, s)
	}
	for attr := range strings.SplitSeq(query, "&") {
		if attr == "" {
			continue
		}
		name, val, err := attribute(s, attr)
		if err != nil {
			return nil, err
		}
		switch name {
		case "device":
			if val == "" {
				return nil, fmt.Errorf("%w: %s: device= is empty", ErrSyntax, s)
			}
			u.Device = val
		case "pin-source":
			u.PINSource = val
		case "pin-value":
			return nil, fmt.Errorf("%w: %s: pin-value= is not accepted for TPM keys (it would leak into files and process listings); use pin-source=file:PATH or pin-source=credential:NAME", ErrSyntax, redact(s))
		default:
			return nil, fmt.Errorf("%w: %s: unknown query attribute %q (known: device, pin-source)", ErrSyntax, s, name)
		}
	}
	return u, nil
}

func attribute(s, attr string) (name, val string, err error) {
	name, raw, ok := strings.Cut(attr, "=")
	if !ok {
		return "", "", fmt.Errorf("%w: %s: attribute %q has no '=' (write name=value)", ErrSyntax, redact(s), name)
	}
	val, err = url.PathUnescape(raw)
	if err != nil {
		return "", "", fmt.Errorf("%w: %s: attribute %s: bad percent-encoding: %w", ErrSyntax, redact(s), name, err)
	}
	return name, val, nil
}

// redact hides a pin-value so that a refusal can quote the reference.
func redact(s string) string {
	i := strings.Index(s, "pin-value=")
	if i < 0 {
		return s
	}
	j := strings.IndexByte(s[i:], '&')
	if j < 0 {
		return s[:i] + "pin-value=REDACTED"
	}
	return s[:i] + "pin-value=REDACTED" + s[i+j:]
}

// ParseHandle reads a persistent handle written in hex (0x81000002) or
// decimal and checks that it is in the persistent range.
func ParseHandle(s string) (uint32, error) {
	n, err := strconv.ParseUint(s, 0, 32)
	if err != nil {
		return 0, fmt.Errorf("handle %q is not a number (write it in hex, e.g. 0x81000002)", s)
	}
	if n < FirstPersistent || n > LastPersistent {
		return 0, fmt.Errorf("handle %#x is not a persistent handle (0x81000000-0x81FFFFFF)", n)
	}
	return uint32(n), nil
}

// String formats u for logs and errors; a URI holds no secret.
func (u *URI) String() string {
	var s string
	if u.File != "" {
		s = "tpm:file=" + escape(u.File)
	} else {
		s = fmt.Sprintf("tpm:handle=%#x", u.Handle)
	}
	var q []string
	if u.Device != DefaultDevice {
		q = append(q, "device="+escape(u.Device))
	}
	if u.PINSource != "" {
		q = append(q, "pin-source="+escape(u.PINSource))
	}
	if len(q) > 0 {
		s += "?" + strings.Join(q, "&")
	}
	return s
}

// escape percent-encodes what would end an attribute; paths stay readable.
func escape(v string) string {
	var b strings.Builder
	for i := 0; i < len(v); i++ {
		c := v[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9',
			strings.IndexByte("-._~/:", c) >= 0:
			b.WriteByte(c)
		default:
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

// Check does what `tether config check` can do without talking to the TPM:
// the key file exists, is not readable by others and holds a TSS2 key this
// package loads; the device exists. The pin-source form is the caller's to
// check (it is shared with the pkcs11: URIs).
func (u *URI) Check() error {
	if u.File != "" {
		if _, err := ReadKeyFile(u.File); err != nil {
			return err
		}
	}
	if _, err := os.Stat(u.Device); err != nil {
		return fmt.Errorf("%w: %s: %w; is the TPM enabled in the firmware and its driver loaded (tpm_tis, tpm_crb)?", ErrNoDevice, u.Device, err)
	}
	return nil
}
