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
	attrs, err := attributes(path, ";")
	if err != nil {
		return nil, err
	}
	for _, a := range attrs {
		switch a.name {
		case "file":
			u.File = a.val
		case "handle":
			h, err := ParseHandle(a.val)
			if err != nil {
				return nil, fmt.Errorf("%w: %s: %w", ErrSyntax, s, err)
			}
			u.Handle, hasHandle = h, true
		default:
			return nil, fmt.Errorf("%w: %s: unknown attribute %q (known: file, handle; query: device, pin-source)", ErrSyntax, s, a.name)
		}
	}
	switch {
	case u.File == "" && !hasHandle:
		return nil, fmt.Errorf("%w: %s names no key; write tpm:file=PATH (a TSS2 key file) or tpm:handle=0x81000002 (a persistent handle)", ErrSyntax, s)
	case u.File != "" && hasHandle:
		return nil, fmt.Errorf("%w: %s names a key file and a handle; keep one", ErrSyntax, s)
	}
	if attrs, err = attributes(query, "&"); err != nil {
		return nil, err
	}
	for _, a := range attrs {
		switch a.name {
		case "device":
			u.Device = a.val
		case "pin-source":
			u.PINSource = a.val
		case "pin-value":
			// s is not quoted: it holds the value.
			return nil, fmt.Errorf("%w: pin-value= is not accepted for TPM keys (it would leak into files and process listings); use pin-source=file:PATH or pin-source=credential:NAME", ErrSyntax)
		default:
			return nil, fmt.Errorf("%w: %s: unknown query attribute %q (known: device, pin-source)", ErrSyntax, s, a.name)
		}
	}
	return u, nil
}

type attr struct{ name, val string }

// attributes splits part at sep into name=value pairs with percent-decoded,
// non-empty values. Errors name the attribute, not the reference, which
// may hold a pin-value.
func attributes(part, sep string) ([]attr, error) {
	var out []attr
	for kv := range strings.SplitSeq(part, sep) {
		if kv == "" {
			continue
		}
		name, raw, ok := strings.Cut(kv, "=")
		if !ok {
			return nil, fmt.Errorf("%w: attribute %q has no '=' (write name=value)", ErrSyntax, name)
		}
		val, err := url.PathUnescape(raw)
		if err != nil {
			return nil, fmt.Errorf("%w: attribute %s: bad percent-encoding: %w", ErrSyntax, name, err)
		}
		if val == "" {
			return nil, fmt.Errorf("%w: attribute %s is empty", ErrSyntax, name)
		}
		out = append(out, attr{name, val})
	}
	return out, nil
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

// escape percent-encodes what would end an attribute or change its
// value when parsed back; paths stay readable.
var escape = strings.NewReplacer("%", "%25", ";", "%3B", "?", "%3F", "&", "%26", " ", "%20", "=", "%3D").Replace

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
