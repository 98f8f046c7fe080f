package p11rpc

import (
	"errors"
	"fmt"
)

// Initialize is C_Initialize. The server initialises the module with OS
// locking; CKR_CRYPTOKI_ALREADY_INITIALIZED from a shared server is
// returned as is.
func (c *Client) Initialize() error {
	return finish(c.do(callInitialize, func(e *encoder) {
		e.bytes([]byte(handshake))
		e.byte_(0) // no reserved string
		e.bytes([]byte{0})
	}))
}

// Finalize is C_Finalize.
func (c *Client) Finalize() error { return finish(c.do(callFinalize, nil)) }

// GetInfo is C_GetInfo.
func (c *Client) GetInfo() (Info, error) {
	d, err := c.do(callGetInfo, nil)
	if err != nil {
		return Info{}, err
	}
	i := Info{CryptokiVersion: d.version(), ManufacturerID: d.space(32)}
	i.Flags = uint(d.ulong())
	i.LibraryDescription = d.space(32)
	i.LibraryVersion = d.version()
	return i, d.done()
}

// ulongList runs a call answering "au" the PKCS#11 way: ask for the count,
// then for the items, again when the list grew in between.
func (c *Client) ulongList(cl call, pre func(*encoder)) ([]uint64, error) {
	var n uint32
	for range 4 {
		d, err := c.do(cl, func(e *encoder) {
			pre(e)
			e.ulongBuffer(n)
		})
		if err != nil {
			return nil, err
		}
		vs, count, ok := d.ulongs()
		if err := d.done(); err != nil {
			return nil, err
		}
		if ok {
			return vs, nil
		}
		if count == 0 && n == 0 {
			return nil, nil
		}
		n = count
	}
	return nil, fmt.Errorf("p11rpc: %s: the list kept changing size", cl.name)
}

// GetSlotList is C_GetSlotList.
func (c *Client) GetSlotList(tokenPresent bool) ([]uint, error) {
	var p byte
	if tokenPresent {
		p = 1
	}
	vs, err := c.ulongList(callGetSlotList, func(e *encoder) { e.byte_(p) })
	return toUints(vs), err
}

func toUints(vs []uint64) []uint {
	out := make([]uint, len(vs))
	for i, v := range vs {
		out[i] = uint(v)
	}
	return out
}

// GetSlotInfo is C_GetSlotInfo.
func (c *Client) GetSlotInfo(slot uint) (SlotInfo, error) {
	d, err := c.do(callGetSlotInfo, func(e *encoder) { e.ulong(uint64(slot)) })
	if err != nil {
		return SlotInfo{}, err
	}
	s := SlotInfo{SlotDescription: d.space(64), ManufacturerID: d.space(32)}
	s.Flags = uint(d.ulong())
	s.HardwareVersion, s.FirmwareVersion = d.version(), d.version()
	return s, d.done()
}

// GetTokenInfo is C_GetTokenInfo.
func (c *Client) GetTokenInfo(slot uint) (TokenInfo, error) {
	d, err := c.do(callGetTokenInfo, func(e *encoder) { e.ulong(uint64(slot)) })
	if err != nil {
		return TokenInfo{}, err
	}
	t := TokenInfo{Label: d.space(32), ManufacturerID: d.space(32), Model: d.space(16), SerialNumber: d.space(16)}
	u := func() uint { return uint(d.ulong()) }
	t.Flags = u()
	t.MaxSessionCount, t.SessionCount, t.MaxRwSessionCount, t.RwSessionCount = u(), u(), u(), u()
	t.MaxPinLen, t.MinPinLen = u(), u()
	t.TotalPublicMemory, t.FreePublicMemory, t.TotalPrivateMemory, t.FreePrivateMemory = u(), u(), u(), u()
	t.HardwareVersion, t.FirmwareVersion = d.version(), d.version()
	t.UTCTime = d.space(16)
	return t, d.done()
}

// GetMechanismList is C_GetMechanismList.
func (c *Client) GetMechanismList(slot uint) ([]uint, error) {
	vs, err := c.ulongList(callGetMechanismList, func(e *encoder) { e.ulong(uint64(slot)) })
	return toUints(vs), err
}

// InitToken is C_InitToken: it (re)initialises the token in slot with the
// security officer PIN and label, destroying its objects.
func (c *Client) InitToken(slot uint, soPIN, label string) error {
	return finish(c.do(callInitToken, func(e *encoder) {
		e.ulong(uint64(slot))
		e.bytes([]byte(soPIN))
		e.zstring(label)
	}))
}

// OpenSession is C_OpenSession; CKF_SERIAL_SESSION is always added.
func (c *Client) OpenSession(slot uint, flags uint) (SessionHandle, error) {
	d, err := c.do(callOpenSession, func(e *encoder) {
		e.ulong(uint64(slot))
		e.ulong(uint64(flags | CKF_SERIAL_SESSION))
	})
	if err != nil {
		return 0, err
	}
	h := d.ulong()
	return SessionHandle(h), d.done()
}

// CloseSession is C_CloseSession.
func (c *Client) CloseSession(sh SessionHandle) error {
	return finish(c.do(callCloseSession, func(e *encoder) { e.ulong(uint64(sh)) }))
}

// CloseAllSessions is C_CloseAllSessions.
func (c *Client) CloseAllSessions(slot uint) error {
	return finish(c.do(callCloseAllSessions, func(e *encoder) { e.ulong(uint64(slot)) }))
}

// InitPIN is C_InitPIN (the SO sets the user PIN).
func (c *Client) InitPIN(sh SessionHandle, pin string) error {
	return finish(c.do(callInitPIN, func(e *encoder) {
		e.ulong(uint64(sh))
		e.bytes([]byte(pin))
	}))
}

// SetPIN is C_SetPIN.
func (c *Client) SetPIN(sh SessionHandle, oldPIN, newPIN string) error {
	return finish(c.do(callSetPIN, func(e *encoder) {
		e.ulong(uint64(sh))
		e.bytes([]byte(oldPIN))
		e.bytes([]byte(newPIN))
	}))
}

// Login is C_Login. The PIN travels to the server in the request and is
// kept nowhere by the client.
func (c *Client) Login(sh SessionHandle, userType uint, pin string) error {
	return finish(c.do(callLogin, func(e *encoder) {
		e.ulong(uint64(sh))
		e.ulong(uint64(userType))
		e.bytes([]byte(pin))
	}))
}

// Logout is C_Logout.
func (c *Client) Logout(sh SessionHandle) error {
	return finish(c.do(callLogout, func(e *encoder) { e.ulong(uint64(sh)) }))
}

// DestroyObject is C_DestroyObject.
func (c *Client) DestroyObject(sh SessionHandle, o ObjectHandle) error {
	return finish(c.do(callDestroyObject, func(e *encoder) {
		e.ulong(uint64(sh))
		e.ulong(uint64(o))
	}))
}

// GetAttributeValue is C_GetAttributeValue for the given types, asking the
// sizes first. Attributes the module cannot return (sensitive, not
// present) come back with a nil Value, together with the CKR_ error
// (CKR_ATTRIBUTE_SENSITIVE or CKR_ATTRIBUTE_TYPE_INVALID) that says so.
func (c *Client) GetAttributeValue(sh SessionHandle, o ObjectHandle, types []uint) ([]Attribute, error) {
	// First the sizes, then the values with buffers of those sizes;
	// unavailable (-1) and empty (0) values are asked with length 0,
	// which asks for nothing.
	_, sizes, _, err := c.getAttributes(sh, o, types, make([]uint32, len(types)))
	if err != nil {
		return nil, err
	}
	lens := make([]uint32, len(types))
	for i, l := range sizes {
		if l != 0xffffffff {
			lens[i] = l
		}
	}
	attrs, _, soft, err := c.getAttributes(sh, o, types, lens)
	if err != nil {
		return nil, err
	}
	for i := range attrs {
		switch sizes[i] {
		case 0xffffffff:
			attrs[i].Value = nil
		case 0:
			attrs[i].Value = []byte{}
		}
	}
	if soft != CKR_OK {
		return attrs, soft
	}
	return attrs, nil
}

// getAttributes is one C_GetAttributeValue round with buffers of lens. It
// returns the attributes, the lengths the module reported, and the CK_RV
// of a partial answer (CKR_ATTRIBUTE_SENSITIVE, CKR_ATTRIBUTE_TYPE_INVALID;
// CKR_OK for a whole one).
func (c *Client) getAttributes(sh SessionHandle, o ObjectHandle, types []uint, lens []uint32) ([]Attribute, []uint32, Error, error) {
	d, err := c.do(callGetAttributeValue, func(e *encoder) {
		e.ulong(uint64(sh))
		e.ulong(uint64(o))
		e.attrBuffer(types, lens)
	})
	if err != nil {
		return nil, nil, CKR_OK, err
	}
	attrs, got := d.attrs()
	rv := Error(d.ulong())
	if err := d.done(); err != nil {
		return nil, nil, CKR_OK, err
	}
	if len(attrs) != len(types) {
		return nil, nil, CKR_OK, fmt.Errorf("%w: C_GetAttributeValue returned %d attributes for %d asked", errProtocol, len(attrs), len(types))
	}
	for i := range attrs {
		if attrs[i].Type != types[i] {
			return nil, nil, CKR_OK, fmt.Errorf("%w: C_GetAttributeValue returned attributes in another order", errProtocol)
		}
	}
	switch rv {
	case CKR_OK:
		return attrs, got, CKR_OK, nil
	case CKR_ATTRIBUTE_SENSITIVE, CKR_ATTRIBUTE_TYPE_INVALID:
		return attrs, got, rv, nil
	}
	return nil, nil, CKR_OK, rv
}

// FindObjectsInit, FindObjects and FindObjectsFinal are the search calls.
func (c *Client) FindObjectsInit(sh SessionHandle, tmpl []Attribute) error {
	return finish(c.do(callFindObjectsInit, func(e *encoder) {
		e.ulong(uint64(sh))
		e.attrs(tmpl)
	}))
}

// FindObjects returns up to max more handles; none when the search is done.
func (c *Client) FindObjects(sh SessionHandle, max int) ([]ObjectHandle, error) {
	d, err := c.do(callFindObjects, func(e *encoder) {
		e.ulong(uint64(sh))
		e.ulongBuffer(uint32(max))
	})
	if err != nil {
		return nil, err
	}
	vs, _, _ := d.ulongs()
	if err := d.done(); err != nil {
		return nil, err
	}
	if len(vs) > max {
		return nil, fmt.Errorf("%w: C_FindObjects returned %d handles for %d asked", errProtocol, len(vs), max)
	}
	out := make([]ObjectHandle, len(vs))
	for i, v := range vs {
		out[i] = ObjectHandle(v)
	}
	return out, nil
}

// FindObjectsFinal ends a search.
func (c *Client) FindObjectsFinal(sh SessionHandle) error {
	return finish(c.do(callFindObjectsFinal, func(e *encoder) { e.ulong(uint64(sh)) }))
}

// FindAll runs a whole search, bounded to limit objects.
func (c *Client) FindAll(sh SessionHandle, tmpl []Attribute, limit int) ([]ObjectHandle, error) {
	if err := c.FindObjectsInit(sh, tmpl); err != nil {
		return nil, err
	}
	var all []ObjectHandle
	for len(all) < limit {
		hs, err := c.FindObjects(sh, min(64, limit-len(all)))
		if err != nil {
			_ = c.FindObjectsFinal(sh)
			return nil, err
		}
		if len(hs) == 0 {
			break
		}
		all = append(all, hs...)
	}
	return all, c.FindObjectsFinal(sh)
}

// bytesOut reads an "ay" result of a one-shot operation. The buffer asked
// for is always large enough (the caller sizes it), so a missing array is
// CKR_BUFFER_TOO_SMALL.
func bytesOut(d *decoder, err error) ([]byte, error) {
	if err != nil {
		return nil, err
	}
	b, _, ok := d.bytes()
	if err := d.done(); err != nil {
		return nil, err
	}
	if !ok {
		return nil, CKR_BUFFER_TOO_SMALL
	}
	return b, nil
}

// SignInit is C_SignInit.
func (c *Client) SignInit(sh SessionHandle, m Mechanism, key ObjectHandle) error {
	return finish(c.do(callSignInit, func(e *encoder) {
		e.ulong(uint64(sh))
		e.mechanism(m)
		e.ulong(uint64(key))
	}))
}

// Sign is C_Sign; maxLen must be at least the signature's length (the
// modulus size for RSA, twice the field size for ECDSA).
func (c *Client) Sign(sh SessionHandle, data []byte, maxLen int) ([]byte, error) {
	return bytesOut(c.do(callSign, func(e *encoder) {
		e.ulong(uint64(sh))
		e.bytes(data)
		e.byteBuffer(uint32(maxLen))
	}))
}

// EncryptInit is C_EncryptInit.
func (c *Client) EncryptInit(sh SessionHandle, m Mechanism, key ObjectHandle) error {
	return finish(c.do(callEncryptInit, func(e *encoder) {
		e.ulong(uint64(sh))
		e.mechanism(m)
		e.ulong(uint64(key))
	}))
}

// Encrypt is C_Encrypt; maxLen must be at least the ciphertext's length.
func (c *Client) Encrypt(sh SessionHandle, data []byte, maxLen int) ([]byte, error) {
	return bytesOut(c.do(callEncrypt, func(e *encoder) {
		e.ulong(uint64(sh))
		e.bytes(data)
		e.byteBuffer(uint32(maxLen))
	}))
}

// GenerateKey is C_GenerateKey.
func (c *Client) GenerateKey(sh SessionHandle, m Mechanism, tmpl []Attribute) (ObjectHandle, error) {
	d, err := c.do(callGenerateKey, func(e *encoder) {
		e.ulong(uint64(sh))
		e.mechanism(m)
		e.attrs(tmpl)
	})
	if err != nil {
		return 0, err
	}
	h := d.ulong()
	return ObjectHandle(h), d.done()
}

// GenerateKeyPair is C_GenerateKeyPair; it returns the public and the
// private key's handles.
func (c *Client) GenerateKeyPair(sh SessionHandle, m Mechanism, pub, priv []Attribute) (ObjectHandle, ObjectHandle, error) {
	d, err := c.do(callGenerateKeyPair, func(e *encoder) {
		e.ulong(uint64(sh))
		e.mechanism(m)
		e.attrs(pub)
		e.attrs(priv)
	})
	if err != nil {
		return 0, 0, err
	}
	pu, pr := d.ulong(), d.ulong()
	return ObjectHandle(pu), ObjectHandle(pr), d.done()
}

// IsTransport reports whether err is a connection failure rather than a
// PKCS#11 return value.
func IsTransport(err error) bool { return errors.Is(err, ErrTransport) }
