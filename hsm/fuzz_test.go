package hsm

import (
	"strings"
	"testing"
)

// FuzzParseURI ensures that no PKCS#11 URI makes the parser panic, that a
// parsed URI formats to one that parses to the same attributes, and that
// neither the formatted URI, the redacted one nor an error holds a PIN value.
func FuzzParseURI(f *testing.F) {
	for _, s := range []string{
		"pkcs11:token=tether;object=device?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/etc/tether/pin",
		"pkcs11:object=k;id=%01%02;type=private?pin-value=1234",
		"pkcs11:serial=abc;slot-id=3;object=a%20b",
		"pkcs11:token=t?pin-source=credential:pin",
		"pkcs11:lable=x", "pkcs11:object=%zz", "pkcs11:", "pkcs11:?&&", "pkcs11:id=%",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		const pin = "SECRETPIN"
		in := s
		if strings.Contains(s, "pin-value=") {
			in = strings.Replace(s, "pin-value=", "pin-value="+pin, 1)
		}
		u, err := ParseURI(in)
		if red := RedactURI(in); strings.Contains(red, pin) {
			t.Fatalf("RedactURI(%q) = %q keeps the PIN", in, red)
		}
		if err != nil {
			if strings.Contains(err.Error(), pin) {
				t.Fatalf("error quotes the PIN: %v", err)
			}
			return
		}
		out := u.String()
		// The planted value is a PIN only where it became the pin-value
		// attribute and stands nowhere else in the input: inside a label
		// ("object=pin-value=…") it is a label, which String keeps.
		planted := u.PINValue == pin && !strings.Contains(strings.Replace(in, "pin-value="+pin, "", 1), pin)
		if planted && strings.Contains(out, pin) {
			t.Fatalf("String() = %q holds the PIN", out)
		}
		v, err := ParseURI(out)
		if err != nil {
			t.Fatalf("String() = %q of %q does not parse: %v", out, in, err)
		}
		if v.Token != u.Token || v.Object != u.Object || v.Serial != u.Serial || string(v.ID) != string(u.ID) ||
			v.ModulePath != u.ModulePath || v.PINSource != u.PINSource || v.Type != u.Type || v.SlotID != u.SlotID {
			t.Fatalf("round trip of %q through %q changed it: %+v vs %+v", in, out, u, v)
		}
	})
}
