package agent

import "github.com/tetherd/tether/hsm"

// Redacted returns a copy of c that is safe to print.
func (c *Config) Redacted() *Config {
	out := *c
	out.Identity.PrivateKey = hsm.RedactURI(c.Identity.PrivateKey)
	out.Provision.ClaimPrivateKey = hsm.RedactURI(c.Provision.ClaimPrivateKey)
	out.Roles = append([]RoleConfig(nil), c.Roles...)
	for i := range out.Roles {
		if out.Roles[i].ExternalID != "" {
			out.Roles[i].ExternalID = "REDACTED"
		}
	}
	return &out
}
