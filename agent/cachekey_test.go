package agent

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

// TestRoleCacheKey ensures that a role's credentials are cached under a key
// that changes with what decides them and with nothing else.
func TestRoleCacheKey(t *testing.T) {
	a := &Agent{roles: roleSet{DeviceRole: {name: DeviceRole, cacheKey: "device#1"}, "base": {name: "base", cacheKey: "base#1"}}}
	base := func() RoleConfig {
		return RoleConfig{Name: "r", RoleARN: "arn:aws:iam::123456789012:role/x", SessionName: "s",
			Tags: map[string]string{"a": "1", "b": "2"}}
	}
	key := func(r RoleConfig) string { return a.roleKey(&r).storeKey(r.Name) }
	want := key(base())
	same := map[string]func(*RoleConfig){
		"allow_uids":   func(r *RoleConfig) { r.AllowUIDs = []int{1000} },
		"allow_gids":   func(r *RoleConfig) { r.AllowGIDs = []int{1000} },
		"mfa_command":  func(r *RoleConfig) { r.MFACommand = []string{"/bin/true"} },
		"sts_endpoint": func(r *RoleConfig) { r.STSEndpoint = "https://sts.example" },
		"region":       func(r *RoleConfig) { r.Region = "eu-west-3" },
		"tag order":    func(r *RoleConfig) { r.Tags = map[string]string{"b": "2", "a": "1"} },
	}
	for name, change := range same {
		r := base()
		change(&r)
		assert.Equal(t, want, key(r), name)
	}
	differs := map[string]func(*RoleConfig){
		"role_arn":     func(r *RoleConfig) { r.RoleARN = "arn:aws:iam::123456789012:role/y" },
		"session_name": func(r *RoleConfig) { r.SessionName = "t" },
		"duration":     func(r *RoleConfig) { r.Duration.Duration = 1 },
		"external_id":  func(r *RoleConfig) { r.ExternalID = "e" },
		"policy":       func(r *RoleConfig) { r.Policy = "{}" },
		"tags":         func(r *RoleConfig) { r.Tags = map[string]string{"a": "1"} },
		"mfa_serial":   func(r *RoleConfig) { r.MFASerial = "arn:aws:iam::123456789012:mfa/me" },
		"source":       func(r *RoleConfig) { r.Source = Source{Kind: SourceRole, Name: "base"} },
		"profile":      func(r *RoleConfig) { r.Source = Source{Kind: SourceProfile, Name: "p"} },
	}
	seen := map[string]string{want: "base"}
	for name, change := range differs {
		r := base()
		change(&r)
		k := key(r)
		if prev, dup := seen[k]; dup {
			t.Errorf("%s gives the same key as %s", name, prev)
		}
		seen[k] = name
	}
}
