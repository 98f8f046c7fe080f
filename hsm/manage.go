package hsm

import (
	"fmt"
	"strings"
)

// KeyType names a key kind `tether hsm keygen` can create.
type KeyType string

// Key types AWS IoT accepts for device certificates.
const (
	KeyECP256  KeyType = "ec-p256"
	KeyECP384  KeyType = "ec-p384"
	KeyRSA2048 KeyType = "rsa-2048"
)

// Slot is a PKCS#11 slot as List reports it.
type Slot struct {
	ID          uint
	Description string
	// Token is nil when the slot is empty.
	Token *Token
}

// Token describes a token and the objects visible in it. Private objects
// are listed only for the token List was asked to log into.
type Token struct {
	Label, Serial, Model, Manufacturer string
	Initialized, LoginRequired         bool
	UserPINLocked                      bool
	LoggedIn                           bool
	Objects                            []Object
}

// Object describes a token object without any secret: what `tether hsm
// list` prints and what key-not-found errors list.
type Object struct {
	Class   string // private, public, secret-key, cert, data
	Label   string
	ID      []byte
	KeyType string // "EC P-256", "RSA 2048", "AES 256", ...
	// Sensitive and Extractable are set for private and secret keys.
	Sensitive, Extractable bool
}

func (o Object) String() string {
	s := fmt.Sprintf("%s %q id=%s", o.Class, o.Label, hexID(o.ID))
	if o.KeyType != "" {
		s += " " + o.KeyType
	}
	return s
}

func hexID(id []byte) string {
	var b strings.Builder
	for _, c := range id {
		fmt.Fprintf(&b, "%%%02x", c)
	}
	if b.Len() == 0 {
		return "(none)"
	}
	return b.String()
}
