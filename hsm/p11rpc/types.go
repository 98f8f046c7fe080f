package p11rpc

import (
	"encoding/binary"
	"fmt"
)

// Error is a PKCS#11 return value (CK_RV) other than CKR_OK.
type Error uint64

func (e Error) Error() string {
	if n, ok := rvNames[e]; ok {
		return fmt.Sprintf("%s (%#x)", n, uint64(e))
	}
	return fmt.Sprintf("CKR_%#x", uint64(e))
}

// Return values the client and its callers tell apart.
const (
	CKR_OK                           Error = 0x000
	CKR_CANCEL                       Error = 0x001
	CKR_HOST_MEMORY                  Error = 0x002
	CKR_SLOT_ID_INVALID              Error = 0x003
	CKR_GENERAL_ERROR                Error = 0x005
	CKR_FUNCTION_FAILED              Error = 0x006
	CKR_ARGUMENTS_BAD                Error = 0x007
	CKR_ATTRIBUTE_READ_ONLY          Error = 0x010
	CKR_ATTRIBUTE_SENSITIVE          Error = 0x011
	CKR_ATTRIBUTE_TYPE_INVALID       Error = 0x012
	CKR_ATTRIBUTE_VALUE_INVALID      Error = 0x013
	CKR_DATA_INVALID                 Error = 0x020
	CKR_DATA_LEN_RANGE               Error = 0x021
	CKR_DEVICE_ERROR                 Error = 0x030
	CKR_DEVICE_MEMORY                Error = 0x031
	CKR_DEVICE_REMOVED               Error = 0x032
	CKR_ENCRYPTED_DATA_INVALID       Error = 0x040
	CKR_FUNCTION_CANCELED            Error = 0x050
	CKR_FUNCTION_NOT_SUPPORTED       Error = 0x054
	CKR_KEY_HANDLE_INVALID           Error = 0x060
	CKR_KEY_SIZE_RANGE               Error = 0x062
	CKR_KEY_TYPE_INCONSISTENT        Error = 0x063
	CKR_KEY_FUNCTION_NOT_PERMITTED   Error = 0x068
	CKR_MECHANISM_INVALID            Error = 0x070
	CKR_MECHANISM_PARAM_INVALID      Error = 0x071
	CKR_OBJECT_HANDLE_INVALID        Error = 0x082
	CKR_OPERATION_ACTIVE             Error = 0x090
	CKR_OPERATION_NOT_INITIALIZED    Error = 0x091
	CKR_PIN_INCORRECT                Error = 0x0a0
	CKR_PIN_INVALID                  Error = 0x0a1
	CKR_PIN_LEN_RANGE                Error = 0x0a2
	CKR_PIN_EXPIRED                  Error = 0x0a3
	CKR_PIN_LOCKED                   Error = 0x0a4
	CKR_SESSION_CLOSED               Error = 0x0b0
	CKR_SESSION_COUNT                Error = 0x0b1
	CKR_SESSION_HANDLE_INVALID       Error = 0x0b3
	CKR_SESSION_READ_ONLY            Error = 0x0b5
	CKR_SESSION_EXISTS               Error = 0x0b6
	CKR_SIGNATURE_INVALID            Error = 0x0c0
	CKR_SIGNATURE_LEN_RANGE          Error = 0x0c1
	CKR_TEMPLATE_INCOMPLETE          Error = 0x0d0
	CKR_TEMPLATE_INCONSISTENT        Error = 0x0d1
	CKR_TOKEN_NOT_PRESENT            Error = 0x0e0
	CKR_TOKEN_NOT_RECOGNIZED         Error = 0x0e1
	CKR_TOKEN_WRITE_PROTECTED        Error = 0x0e2
	CKR_USER_ALREADY_LOGGED_IN       Error = 0x100
	CKR_USER_NOT_LOGGED_IN           Error = 0x101
	CKR_USER_PIN_NOT_INITIALIZED     Error = 0x102
	CKR_USER_TYPE_INVALID            Error = 0x103
	CKR_USER_ANOTHER_ALREADY_LOGGED  Error = 0x104
	CKR_DOMAIN_PARAMS_INVALID        Error = 0x130
	CKR_CURVE_NOT_SUPPORTED          Error = 0x140
	CKR_BUFFER_TOO_SMALL             Error = 0x150
	CKR_CRYPTOKI_NOT_INITIALIZED     Error = 0x190
	CKR_CRYPTOKI_ALREADY_INITIALIZED Error = 0x191
	CKR_FUNCTION_REJECTED            Error = 0x200
)

var rvNames = map[Error]string{
	CKR_OK: "CKR_OK", CKR_CANCEL: "CKR_CANCEL", CKR_HOST_MEMORY: "CKR_HOST_MEMORY",
	CKR_SLOT_ID_INVALID: "CKR_SLOT_ID_INVALID", CKR_GENERAL_ERROR: "CKR_GENERAL_ERROR",
	CKR_FUNCTION_FAILED: "CKR_FUNCTION_FAILED", CKR_ARGUMENTS_BAD: "CKR_ARGUMENTS_BAD",
	CKR_ATTRIBUTE_READ_ONLY: "CKR_ATTRIBUTE_READ_ONLY", CKR_ATTRIBUTE_SENSITIVE: "CKR_ATTRIBUTE_SENSITIVE",
	CKR_ATTRIBUTE_TYPE_INVALID: "CKR_ATTRIBUTE_TYPE_INVALID", CKR_ATTRIBUTE_VALUE_INVALID: "CKR_ATTRIBUTE_VALUE_INVALID",
	CKR_DATA_INVALID: "CKR_DATA_INVALID", CKR_DATA_LEN_RANGE: "CKR_DATA_LEN_RANGE",
	CKR_DEVICE_ERROR: "CKR_DEVICE_ERROR", CKR_DEVICE_MEMORY: "CKR_DEVICE_MEMORY",
	CKR_DEVICE_REMOVED: "CKR_DEVICE_REMOVED", CKR_ENCRYPTED_DATA_INVALID: "CKR_ENCRYPTED_DATA_INVALID",
	CKR_FUNCTION_CANCELED: "CKR_FUNCTION_CANCELED", CKR_FUNCTION_NOT_SUPPORTED: "CKR_FUNCTION_NOT_SUPPORTED",
	CKR_KEY_HANDLE_INVALID: "CKR_KEY_HANDLE_INVALID", CKR_KEY_SIZE_RANGE: "CKR_KEY_SIZE_RANGE",
	CKR_KEY_TYPE_INCONSISTENT: "CKR_KEY_TYPE_INCONSISTENT", CKR_KEY_FUNCTION_NOT_PERMITTED: "CKR_KEY_FUNCTION_NOT_PERMITTED",
	CKR_MECHANISM_INVALID: "CKR_MECHANISM_INVALID", CKR_MECHANISM_PARAM_INVALID: "CKR_MECHANISM_PARAM_INVALID",
	CKR_OBJECT_HANDLE_INVALID: "CKR_OBJECT_HANDLE_INVALID", CKR_OPERATION_ACTIVE: "CKR_OPERATION_ACTIVE",
	CKR_OPERATION_NOT_INITIALIZED: "CKR_OPERATION_NOT_INITIALIZED", CKR_PIN_INCORRECT: "CKR_PIN_INCORRECT",
	CKR_PIN_INVALID: "CKR_PIN_INVALID", CKR_PIN_LEN_RANGE: "CKR_PIN_LEN_RANGE", CKR_PIN_EXPIRED: "CKR_PIN_EXPIRED",
	CKR_PIN_LOCKED: "CKR_PIN_LOCKED", CKR_SESSION_CLOSED: "CKR_SESSION_CLOSED", CKR_SESSION_COUNT: "CKR_SESSION_COUNT",
	CKR_SESSION_HANDLE_INVALID: "CKR_SESSION_HANDLE_INVALID", CKR_SESSION_READ_ONLY: "CKR_SESSION_READ_ONLY",
	CKR_SESSION_EXISTS: "CKR_SESSION_EXISTS", CKR_SIGNATURE_INVALID: "CKR_SIGNATURE_INVALID",
	CKR_SIGNATURE_LEN_RANGE: "CKR_SIGNATURE_LEN_RANGE", CKR_TEMPLATE_INCOMPLETE: "CKR_TEMPLATE_INCOMPLETE",
	CKR_TEMPLATE_INCONSISTENT: "CKR_TEMPLATE_INCONSISTENT", CKR_TOKEN_NOT_PRESENT: "CKR_TOKEN_NOT_PRESENT",
	CKR_TOKEN_NOT_RECOGNIZED: "CKR_TOKEN_NOT_RECOGNIZED", CKR_TOKEN_WRITE_PROTECTED: "CKR_TOKEN_WRITE_PROTECTED",
	CKR_USER_ALREADY_LOGGED_IN: "CKR_USER_ALREADY_LOGGED_IN", CKR_USER_NOT_LOGGED_IN: "CKR_USER_NOT_LOGGED_IN",
	CKR_USER_PIN_NOT_INITIALIZED: "CKR_USER_PIN_NOT_INITIALIZED", CKR_USER_TYPE_INVALID: "CKR_USER_TYPE_INVALID",
	CKR_USER_ANOTHER_ALREADY_LOGGED: "CKR_USER_ANOTHER_ALREADY_LOGGED_IN", CKR_DOMAIN_PARAMS_INVALID: "CKR_DOMAIN_PARAMS_INVALID",
	CKR_CURVE_NOT_SUPPORTED: "CKR_CURVE_NOT_SUPPORTED", CKR_BUFFER_TOO_SMALL: "CKR_BUFFER_TOO_SMALL",
	CKR_CRYPTOKI_NOT_INITIALIZED: "CKR_CRYPTOKI_NOT_INITIALIZED", CKR_CRYPTOKI_ALREADY_INITIALIZED: "CKR_CRYPTOKI_ALREADY_INITIALIZED",
	CKR_FUNCTION_REJECTED: "CKR_FUNCTION_REJECTED",
}

// Object classes, key types, attribute types, mechanisms and flags used by
// tether, with their PKCS#11 values.
const (
	CKO_DATA        = 0
	CKO_CERTIFICATE = 1
	CKO_PUBLIC_KEY  = 2
	CKO_PRIVATE_KEY = 3
	CKO_SECRET_KEY  = 4

	CKK_RSA = 0x00
	CKK_EC  = 0x03
	CKK_AES = 0x1f

	CKA_CLASS           = 0x000
	CKA_TOKEN           = 0x001
	CKA_PRIVATE         = 0x002
	CKA_LABEL           = 0x003
	CKA_VALUE           = 0x011
	CKA_KEY_TYPE        = 0x100
	CKA_ID              = 0x102
	CKA_SENSITIVE       = 0x103
	CKA_ENCRYPT         = 0x104
	CKA_DECRYPT         = 0x105
	CKA_WRAP            = 0x106
	CKA_UNWRAP          = 0x107
	CKA_SIGN            = 0x108
	CKA_VERIFY          = 0x10a
	CKA_DERIVE          = 0x10c
	CKA_MODULUS         = 0x120
	CKA_MODULUS_BITS    = 0x121
	CKA_PUBLIC_EXPONENT = 0x122
	CKA_VALUE_LEN       = 0x161
	CKA_EXTRACTABLE     = 0x162
	CKA_EC_PARAMS       = 0x180
	CKA_EC_POINT        = 0x181

	CKM_RSA_PKCS_KEY_PAIR_GEN = 0x0000
	CKM_RSA_PKCS              = 0x0001
	CKM_RSA_PKCS_PSS          = 0x000d
	CKM_EC_KEY_PAIR_GEN       = 0x1040
	CKM_ECDSA                 = 0x1041
	CKM_AES_KEY_GEN           = 0x1080
	CKM_AES_ECB               = 0x1081
	CKM_SHA_1                 = 0x0220
	CKM_SHA256                = 0x0250
	CKM_SHA384                = 0x0260
	CKM_SHA512                = 0x0270

	CKG_MGF1_SHA1   = 1
	CKG_MGF1_SHA256 = 2
	CKG_MGF1_SHA384 = 3
	CKG_MGF1_SHA512 = 4

	CKU_SO   = 0
	CKU_USER = 1

	CKF_RW_SESSION     = 0x2
	CKF_SERIAL_SESSION = 0x4

	CKF_TOKEN_PRESENT = 0x1 // slot flags

	CKF_LOGIN_REQUIRED       = 0x004 // token flags
	CKF_USER_PIN_INITIALIZED = 0x008
	CKF_TOKEN_INITIALIZED    = 0x400
	CKF_USER_PIN_LOCKED      = 0x40000
)

// Attribute is one PKCS#11 attribute. Value holds CK_ULONG values as 8 bytes
// big-endian and CK_BBOOL values as one byte (as the protocol carries them),
// everything else as the raw bytes. A nil Value in a GetAttributeValue result
// means the module could not return it (sensitive or not present).
type Attribute struct {
	Type  uint
	Value []byte
}

// Bool makes a CK_BBOOL attribute.
func Bool(typ uint, v bool) Attribute {
	if v {
		return Attribute{typ, []byte{1}}
	}
	return Attribute{typ, []byte{0}}
}

// Ulong makes a CK_ULONG attribute (CKA_CLASS, CKA_KEY_TYPE, CKA_VALUE_LEN,
// CKA_MODULUS_BITS, ...).
func Ulong(typ uint, v uint64) Attribute { return Attribute{typ, ulongBytes(v)} }

// Bytes makes a byte-array attribute (CKA_ID, CKA_EC_PARAMS, ...).
func Bytes(typ uint, v []byte) Attribute { return Attribute{typ, v} }

// String makes a byte-array attribute from a string (CKA_LABEL).
func String(typ uint, v string) Attribute { return Attribute{typ, []byte(v)} }

func ulongBytes(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }

// Uint returns the attribute as a CK_ULONG (0 when it is not one).
func (a Attribute) Uint() uint64 {
	if len(a.Value) == 8 {
		return binary.BigEndian.Uint64(a.Value)
	}
	return 0
}

// Bool returns the attribute as a CK_BBOOL.
func (a Attribute) Bool() bool { return len(a.Value) == 1 && a.Value[0] != 0 }

// Mechanism is a PKCS#11 mechanism with its parameter. Only parameters the
// client knows how to serialise can be sent: none, or PSS (see PSSParams).
type Mechanism struct {
	Type uint
	PSS  *PSSParams
}

// PSSParams is CK_RSA_PKCS_PSS_PARAMS.
type PSSParams struct {
	Hash, MGF, SaltLength uint
}

// Version is CK_VERSION.
type Version struct{ Major, Minor byte }

// Info is CK_INFO.
type Info struct {
	CryptokiVersion    Version
	ManufacturerID     string
	Flags              uint
	LibraryDescription string
	LibraryVersion     Version
}

// SlotInfo is CK_SLOT_INFO.
type SlotInfo struct {
	SlotDescription, ManufacturerID  string
	Flags                            uint
	HardwareVersion, FirmwareVersion Version
}

// TokenInfo is CK_TOKEN_INFO; strings have their space padding removed.
type TokenInfo struct {
	Label, ManufacturerID, Model, SerialNumber string
	Flags                                      uint
	MaxSessionCount, SessionCount              uint
	MaxRwSessionCount, RwSessionCount          uint
	MaxPinLen, MinPinLen                       uint
	TotalPublicMemory, FreePublicMemory        uint
	TotalPrivateMemory, FreePrivateMemory      uint
	HardwareVersion, FirmwareVersion           Version
	UTCTime                                    string
}

// SessionHandle and ObjectHandle are CK_SESSION_HANDLE and CK_OBJECT_HANDLE.
type (
	SessionHandle uint
	ObjectHandle  uint
)
