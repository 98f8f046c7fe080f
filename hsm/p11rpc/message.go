package p11rpc

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
)

// call identifiers and signatures, as in p11-kit's rpc-message.h. The
// signature letters: u CK_ULONG, y byte, z string, s space-padded string,
// v version, ay byte array, au ulong array, aA attribute array, fy/fu/fA
// buffers the server allocates, M mechanism.
type call struct {
	id       uint32
	name     string
	req, res string
}

var (
	callError             = call{0, "ERROR", "", "u"}
	callInitialize        = call{1, "C_Initialize", "ayyay", ""}
	callFinalize          = call{2, "C_Finalize", "", ""}
	callGetInfo           = call{3, "C_GetInfo", "", "vsusv"}
	callGetSlotList       = call{4, "C_GetSlotList", "yfu", "au"}
	callGetSlotInfo       = call{5, "C_GetSlotInfo", "u", "ssuvv"}
	callGetTokenInfo      = call{6, "C_GetTokenInfo", "u", "ssssuuuuuuuuuuuvvs"}
	callGetMechanismList  = call{7, "C_GetMechanismList", "ufu", "au"}
	callInitToken         = call{9, "C_InitToken", "uayz", ""}
	callOpenSession       = call{10, "C_OpenSession", "uu", "u"}
	callCloseSession      = call{11, "C_CloseSession", "u", ""}
	callCloseAllSessions  = call{12, "C_CloseAllSessions", "u", ""}
	callInitPIN           = call{14, "C_InitPIN", "uay", ""}
	callSetPIN            = call{15, "C_SetPIN", "uayay", ""}
	callLogin             = call{18, "C_Login", "uuay", ""}
	callLogout            = call{19, "C_Logout", "u", ""}
	callDestroyObject     = call{22, "C_DestroyObject", "uu", ""}
	callGetAttributeValue = call{24, "C_GetAttributeValue", "uufA", "aAu"}
	callFindObjectsInit   = call{26, "C_FindObjectsInit", "uaA", ""}
	callFindObjects       = call{27, "C_FindObjects", "ufu", "au"}
	callFindObjectsFinal  = call{28, "C_FindObjectsFinal", "u", ""}
	callEncryptInit       = call{29, "C_EncryptInit", "uMu", ""}
	callEncrypt           = call{30, "C_Encrypt", "uayfy", "ay"}
	callSignInit          = call{42, "C_SignInit", "uMu", ""}
	callSign              = call{43, "C_Sign", "uayfy", "ay"}
	callGenerateKey       = call{58, "C_GenerateKey", "uMaA", "u"}
	callGenerateKeyPair   = call{59, "C_GenerateKeyPair", "uMaAaA", "uu"}
)

// errProtocol marks a message that does not follow the protocol.
var errProtocol = errors.New("p11-kit RPC protocol error")

// encoder builds a request body and checks it against the call's signature,
// as p11-kit's own message code does.
type encoder struct {
	buf     []byte
	sig     string // what is left of the signature
	version byte
	err     error
}

func newEncoder(c call, version byte) *encoder {
	e := &encoder{sig: c.req, version: version}
	e.buf = binary.BigEndian.AppendUint32(e.buf, c.id)
	e.buf = binary.BigEndian.AppendUint32(e.buf, uint32(len(c.req)))
	e.buf = append(e.buf, c.req...)
	return e
}

func (e *encoder) part(p string) {
	if e.err == nil && !strings.HasPrefix(e.sig, p) {
		e.err = fmt.Errorf("p11rpc: internal: writing %q where the signature has %q", p, e.sig)
	}
	e.sig = strings.TrimPrefix(e.sig, p)
}

func (e *encoder) u32(v uint32) { e.buf = binary.BigEndian.AppendUint32(e.buf, v) }
func (e *encoder) u64(v uint64) { e.buf = binary.BigEndian.AppendUint64(e.buf, v) }

// rawBytes is p11-kit's buffer byte array: a length and the bytes, or
// 0xffffffff for NULL.
func (e *encoder) rawBytes(b []byte) {
	if b == nil {
		e.u32(0xffffffff)
		return
	}
	e.u32(uint32(len(b)))
	e.buf = append(e.buf, b...)
}

func (e *encoder) ulong(v uint64) { e.part("u"); e.u64(v) }
func (e *encoder) byte_(v byte)   { e.part("y"); e.buf = append(e.buf, v) }

// bytes writes "ay": a present flag, then the array.
func (e *encoder) bytes(b []byte) {
	e.part("ay")
	if b == nil {
		b = []byte{}
	}
	e.buf = append(e.buf, 1)
	e.rawBytes(b)
}

func (e *encoder) zstring(s string)     { e.part("z"); e.rawBytes([]byte(s)) }
func (e *encoder) byteBuffer(n uint32)  { e.part("fy"); e.u32(n) }
func (e *encoder) ulongBuffer(n uint32) { e.part("fu"); e.u32(n) }

// attrBuffer writes "fA": the types and the buffer lengths asked for.
func (e *encoder) attrBuffer(types []uint, lens []uint32) {
	e.part("fA")
	e.u32(uint32(len(types)))
	for i, t := range types {
		e.u32(uint32(t))
		e.u32(lens[i])
	}
}

// attrs writes "aA": each attribute with its value serialised by type.
func (e *encoder) attrs(as []Attribute) {
	e.part("aA")
	e.u32(uint32(len(as)))
	for _, a := range as {
		e.u32(uint32(a.Type))
		if a.Value == nil {
			e.buf = append(e.buf, 0)
			continue
		}
		e.buf = append(e.buf, 1)
		switch valueType(a.Type) {
		case valueByte:
			if len(a.Value) != 1 {
				e.fail("attribute %#x is a CK_BBOOL: want 1 byte, have %d", a.Type, len(a.Value))
				return
			}
			e.u32(1)
			e.buf = append(e.buf, a.Value[0])
		case valueUlong:
			if len(a.Value) != 8 {
				e.fail("attribute %#x is a CK_ULONG: want 8 bytes, have %d", a.Type, len(a.Value))
				return
			}
			// The length is the sender's sizeof(CK_ULONG); 8 is at least
			// what any server needs, and the value travels as 64 bits.
			e.u32(8)
			e.buf = append(e.buf, a.Value...)
		case valueByteArray:
			e.u32(uint32(len(a.Value)))
			e.rawBytes(a.Value)
		default:
			e.fail("attribute %#x: arrays and dates are not supported", a.Type)
			return
		}
	}
}

// mechanism writes "M". Version 2 (p11-kit 0.25.6+) sends nothing after a
// parameterless mechanism and a presence byte before a parameter; earlier
// versions send a NULL byte array and the parameter without that byte.
func (e *encoder) mechanism(m Mechanism) {
	e.part("M")
	e.u32(uint32(m.Type))
	if m.PSS == nil {
		if e.version < 2 {
			e.rawBytes(nil)
		}
		return
	}
	if m.Type != CKM_RSA_PKCS_PSS {
		e.fail("mechanism %#x: only CKM_RSA_PKCS_PSS takes parameters here", m.Type)
		return
	}
	if e.version >= 2 {
		e.buf = append(e.buf, 1)
	}
	e.u64(uint64(m.PSS.Hash))
	e.u64(uint64(m.PSS.MGF))
	e.u64(uint64(m.PSS.SaltLength))
}

func (e *encoder) fail(format string, args ...any) {
	if e.err == nil {
		e.err = fmt.Errorf("p11rpc: "+format, args...)
	}
}

func (e *encoder) finish() ([]byte, error) {
	if e.err == nil && e.sig != "" {
		e.err = fmt.Errorf("p11rpc: internal: request ends before %q", e.sig)
	}
	return e.buf, e.err
}

// decoder reads a response body. Every read is bounds-checked; the first
// failure sticks and is reported by err.
type decoder struct {
	c   *Client // marked broken by a malformed payload
	b   []byte
	off int
	sig string
	err error
}

// newDecoder checks the response header: the call id must be c's (or the
// error call, whose CK_RV is then returned), and the signature must match.
func newDecoder(c call, body []byte) (*decoder, error) {
	d := &decoder{b: body}
	id := d.u32()
	sig := d.rawBytes()
	if d.err != nil {
		return nil, fmt.Errorf("%w: %s response header: %w", errProtocol, c.name, d.err)
	}
	if id == callError.id {
		if string(sig) != callError.res {
			return nil, fmt.Errorf("%w: %s: error response with signature %q", errProtocol, c.name, sig)
		}
		rv := d.u64()
		if d.err != nil {
			return nil, fmt.Errorf("%w: %s: error response: %w", errProtocol, c.name, d.err)
		}
		if rv == 0 {
			return nil, fmt.Errorf("%w: %s: error response carrying CKR_OK", errProtocol, c.name)
		}
		return nil, Error(rv)
	}
	if id != c.id {
		return nil, fmt.Errorf("%w: %s answered with call id %d", errProtocol, c.name, id)
	}
	if string(sig) != c.res {
		return nil, fmt.Errorf("%w: %s answered with signature %q, want %q", errProtocol, c.name, sig, c.res)
	}
	d.sig = c.res
	return d, nil
}

func (d *decoder) need(n int) []byte {
	if d.err != nil {
		return nil
	}
	if n < 0 || len(d.b)-d.off < n {
		d.err = fmt.Errorf("message truncated: need %d bytes at offset %d of %d", n, d.off, len(d.b))
		return nil
	}
	p := d.b[d.off : d.off+n]
	d.off += n
	return p
}

func (d *decoder) part(p string) {
	if d.err == nil && !strings.HasPrefix(d.sig, p) {
		d.err = fmt.Errorf("internal: reading %q where the signature has %q", p, d.sig)
	}
	d.sig = strings.TrimPrefix(d.sig, p)
}

func (d *decoder) u8() byte {
	if p := d.need(1); p != nil {
		return p[0]
	}
	return 0
}

func (d *decoder) u32() uint32 {
	if p := d.need(4); p != nil {
		return binary.BigEndian.Uint32(p)
	}
	return 0
}

func (d *decoder) u64() uint64 {
	if p := d.need(8); p != nil {
		return binary.BigEndian.Uint64(p)
	}
	return 0
}

// rawBytes reads a length-prefixed array; nil for NULL (0xffffffff).
func (d *decoder) rawBytes() []byte {
	n := d.u32()
	if d.err != nil || n == 0xffffffff {
		return nil
	}
	if n >= 0x7fffffff {
		d.err = fmt.Errorf("array length %d out of range", n)
		return nil
	}
	p := d.need(int(n))
	if p == nil {
		return nil
	}
	return append([]byte{}, p...)
}

func (d *decoder) ulong() uint64 { d.part("u"); return d.u64() }

func (d *decoder) version() Version {
	d.part("v")
	return Version{d.u8(), d.u8()}
}

// space reads a space-padded string of exactly n bytes and trims it.
func (d *decoder) space(n int) string {
	d.part("s")
	b := d.rawBytes()
	if d.err == nil && len(b) != n {
		d.err = fmt.Errorf("space-padded string of %d bytes, want %d", len(b), n)
	}
	return strings.TrimRight(string(b), " \x00")
}

// bytes reads "ay". A missing array carries only the length the module
// wanted, which the caller turns into CKR_BUFFER_TOO_SMALL.
func (d *decoder) bytes() (b []byte, need uint32, ok bool) {
	d.part("ay")
	if d.u8() == 0 {
		return nil, d.u32(), false
	}
	b = d.rawBytes()
	if b == nil {
		b = []byte{}
	}
	return b, uint32(len(b)), true
}

// ulongs reads "au", bounded by the message size.
func (d *decoder) ulongs() (vs []uint64, count uint32, ok bool) {
	d.part("au")
	valid := d.u8()
	count = d.u32()
	if d.err != nil || valid == 0 {
		return nil, count, false
	}
	if int(count) > (len(d.b)-d.off)/8 {
		d.err = fmt.Errorf("ulong array of %d items in %d bytes", count, len(d.b)-d.off)
		return nil, count, false
	}
	vs = make([]uint64, count)
	for i := range vs {
		vs[i] = d.u64()
	}
	return vs, count, true
}

// attrs reads "aA": each attribute's value as its type serialises it.
// lens receives the lengths the module reported (for size queries).
func (d *decoder) attrs() ([]Attribute, []uint32) {
	d.part("aA")
	n := d.u32()
	if d.err != nil {
		return nil, nil
	}
	if int(n) > (len(d.b)-d.off)/5 {
		d.err = fmt.Errorf("attribute array of %d items in %d bytes", n, len(d.b)-d.off)
		return nil, nil
	}
	out := make([]Attribute, n)
	lens := make([]uint32, n)
	for i := range out {
		out[i].Type = uint(d.u32())
		if d.u8() == 0 {
			lens[i] = 0xffffffff
			continue
		}
		lens[i] = d.u32()
		switch valueType(out[i].Type) {
		case valueByte:
			out[i].Value = []byte{d.u8()}
		case valueUlong:
			out[i].Value = ulongBytes(d.u64())
		case valueByteArray, valueDate:
			out[i].Value = d.rawBytes()
		default:
			d.err = fmt.Errorf("attribute %#x: nested arrays are not supported", out[i].Type)
		}
		if d.err != nil {
			return nil, nil
		}
	}
	return out, lens
}

func (d *decoder) done() error {
	if d.err == nil && d.sig != "" {
		d.err = fmt.Errorf("internal: response read stops before %q", d.sig)
	}
	if d.err != nil {
		err := fmt.Errorf("%w: %w: %w", ErrTransport, errProtocol, d.err)
		if d.c != nil {
			err = fmt.Errorf("%w: %s: %w: %w", ErrTransport, d.c.peer, errProtocol, d.err)
			d.c.markBroken(err)
		}
		return err
	}
	return nil
}

type valueKind int

const (
	valueByte valueKind = iota
	valueUlong
	valueAttrArray
	valueMechArray
	valueDate
	valueByteArray
)

// valueType is p11-kit's map_attribute_to_value_type: how an attribute's
// value travels. Anything not listed is a byte array.
func valueType(t uint) valueKind {
	switch t {
	case 0x001, 0x002, 0x086, 0x103, 0x104, 0x105, 0x106, 0x107, 0x108, 0x109, 0x10a, 0x10b, 0x10c,
		0x162, 0x163, 0x164, 0x165, 0x170, 0x171, 0x200, 0x202, 0x210, 0x301, 0x302, 0x405:
		// TOKEN PRIVATE TRUSTED SENSITIVE ENCRYPT DECRYPT WRAP UNWRAP SIGN
		// SIGN_RECOVER VERIFY VERIFY_RECOVER DERIVE EXTRACTABLE LOCAL
		// NEVER_EXTRACTABLE ALWAYS_SENSITIVE MODIFIABLE COPYABLE
		// SECONDARY_AUTH ALWAYS_AUTHENTICATE WRAP_WITH_TRUSTED RESET_ON_INIT
		// HAS_RESET COLOR
		return valueByte
	case 0x000, 0x080, 0x087, 0x088, 0x100, 0x121, 0x133, 0x134, 0x160, 0x161, 0x166, 0x201,
		0x300, 0x400, 0x401, 0x402, 0x403, 0x404, 0x406, 0x500:
		// CLASS CERTIFICATE_TYPE CERTIFICATE_CATEGORY JAVA_MIDP_SECURITY_DOMAIN
		// KEY_TYPE MODULUS_BITS PRIME_BITS SUB_PRIME_BITS VALUE_BITS VALUE_LEN
		// KEY_GEN_MECHANISM AUTH_PIN_FLAGS HW_FEATURE_TYPE PIXEL_X PIXEL_Y
		// RESOLUTION CHAR_ROWS CHAR_COLUMNS BITS_PER_PIXEL MECHANISM_TYPE
		return valueUlong
	case 0x40000211, 0x40000212, 0x40000213:
		return valueAttrArray
	case 0x40000600:
		return valueMechArray
	case 0x110, 0x111:
		return valueDate
	}
	return valueByteArray
}
