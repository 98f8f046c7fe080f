package agent

import (
	"strings"
)

// Redacted returns the private key reference with any PIN value masked, for
// display in `tether config check` and `tether status`.
func Redacted(keyRef string) string {
	if !strings.HasPrefix(keyRef, "pkcs11:") {
		return keyRef
	}
	path, query, ok := strings.Cut(keyRef, "?")
	if !ok {
		return keyRef
	}
	parts := strings.Split(query, "&")
	for i, p := range parts {
		if strings.HasPrefix(p, "pin-value=") {
			parts[i] = "pin-value=REDACTED"
		}
	}
	return path + "?" + strings.Join(parts, "&")
}

// Redacted returns a copy of c that is safe to print.
func (c *Config) Redacted() *Config {
	out := *c
	out.Identity.PrivateKey = Redacted(c.Identity.PrivateKey)
	out.Roles = append([]RoleConfig(nil), c.Roles...)
	for i := range out.Roles {
		if out.Roles[i].ExternalID != "" {
			out.Roles[i].ExternalID = "REDACTED"
		}
	}
	return &out
}
