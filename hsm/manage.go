package hsm

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
