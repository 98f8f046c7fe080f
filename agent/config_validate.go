package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/tetherd/tether/credprovider"
	// Named so, as agent has an endpoint type of its own (the container
	// endpoint's socket).
	"github.com/tetherd/tether/hsm"
	"github.com/tetherd/tether/hsm/tpm"
	"github.com/tetherd/tether/mqtt"
	addr "github.com/tetherd/tether/platform/endpoint"
)

// Validation checks what the file says, before anything starts. A rule about
// a thing another package owns (a URI grammar, an STS limit, a CA bundle) is
// that package's: validation calls it with the same values `tether run`
// will pass, and names the TOML key and line of what the package refuses.

// validName is the agent's own rule for the names it gives things (a role's
// name is a URL path segment; a provisioning template's name is AWS IoT's
// rule): 1 to maxLen of a-z A-Z 0-9 _ -. Byte by byte, not a regexp: each
// compiled regexp is ~10 KB of heap for the life of the agent.
func validName(s string, maxLen int) bool {
	if s == "" || len(s) > maxLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// iotKeys names the TOML keys of the device role's IoT options.
var iotKeys = map[string]string{
	"IoTOptions.Endpoint":  "aws.credential_endpoint",
	"IoTOptions.RoleAlias": "aws.role_alias",
	"IoTOptions.ThingName": "identity.thing_name",
	"IoTOptions.Duration":  "aws.duration",
	"IoTOptions.CAFile":    "aws.ca_file",
}

// mqttKeys names the [mqtt] keys of the session's settings.
var mqttKeys = map[string]string{
	"Config.Endpoint": "mqtt.endpoint",
	"Config.Port":     "mqtt.port",
	"Config.ClientID": "mqtt.client_id",
}

// refreshKeys names the [aws] keys of the refresh engine's options.
var refreshKeys = map[string]string{
	"RefreshOptions.Mode":            "aws.refresh",
	"RefreshOptions.MandatoryWindow": "aws.mandatory_window",
}

// roleKeys names the keys of a [[role]] for the options credprovider checks.
var roleKeys = map[string]string{
	"STSOptions.Region":                   "region",
	"STSOptions.Endpoint":                 "sts_endpoint",
	"AssumeRoleOptions.RoleARN":           "role_arn",
	"AssumeRoleOptions.SessionName":       "session_name",
	"AssumeRoleOptions.Duration":          "duration",
	"AssumeRoleOptions.ExternalID":        "external_id",
	"AssumeRoleOptions.Policy":            "policy",
	"AssumeRoleOptions.PolicyARNs":        "policy_arns",
	"AssumeRoleOptions.Tags":              "tags",
	"AssumeRoleOptions.TransitiveTagKeys": "transitive_tag_keys",
	"AssumeRoleOptions.SourceIdentity":    "source_identity",
	"AssumeRoleOptions.MFASerial":         "mfa_serial",
	"WebIdentityOptions.RoleARN":          "role_arn",
	"WebIdentityOptions.SessionName":      "session_name",
	"WebIdentityOptions.Duration":         "duration",
	"WebIdentityOptions.TokenFile":        "web_identity_token_file",
	"WebIdentityOptions.Policy":           "policy",
	"WebIdentityOptions.PolicyARNs":       "policy_arns",
	"CommandOptions.Argv":                 "credential_command",
	"MFACommand.argv":                     "mfa_command",
	"TOTPFile.path":                       "mfa_totp_file",
}

func (c *Config) validate(v *validator) {
	id := &c.Identity
	if id.ThingName == "" {
		v.fail("identity.thing_name", "missing; set it to the device's AWS IoT thing name")
	}
	v.file_("identity.certificate", id.Certificate, true)
	switch {
	case id.PrivateKey == "":
		v.fail("identity.private_key", "missing; set a PEM key file, a pkcs11: URI or a tpm: reference")
	case tpm.IsURI(id.PrivateKey):
		if err := hsm.CheckTPMKey(id.PrivateKey, os.Getenv); err != nil {
			v.fail("identity.private_key", "%v", err)
		}
	case hsm.IsURI(id.PrivateKey):
		v.pkcs11URI("identity.private_key", id.PrivateKey)
	case strings.HasPrefix(strings.ToLower(id.PrivateKey), "pkcs11:") || hsm.RedactURI(id.PrivateKey) != id.PrivateKey:
		// A URI with its scheme in the wrong case would be taken for a file
		// name and quoted whole, PIN included.
		v.fail("identity.private_key", "%q is neither a file nor a pkcs11: URI; write the scheme in lower case (pkcs11:)", hsm.RedactURI(id.PrivateKey))
	default:
		v.file_("identity.private_key", id.PrivateKey, true)
	}

	a := &c.AWS
	if a.Region != "" && !credprovider.ValidRegion(a.Region) {
		v.fail("aws.region", "%q is not an AWS region name like eu-west-1", a.Region)
	}
	v.options("", iotKeys, deviceOptions(c).Validate())
	// The agent's own bounds on the windows; how they relate, and the
	// mandatory window's minimum, are the refresh engine's rules.
	v.duration("aws.advisory_window", a.AdvisoryWindow.Duration, time.Minute, 6*time.Hour)
	if a.MandatoryWindow.Duration > time.Hour {
		v.fail("aws.mandatory_window", "%s is out of range; use at most 1h", a.MandatoryWindow.Duration)
	}
	v.options("", refreshKeys, refreshOptions(c).Validate())

	c.validateRoles(v)
	c.validateWorkloads(v)
	c.validateLifecycle(v)

	s := &c.Serve
	if !filepath.IsAbs(s.Socket) {
		v.fail("serve.socket", "%q must be an absolute path", s.Socket)
	} else if len(s.Socket) > 107 {
		v.fail("serve.socket", "%q is longer than a Unix socket path may be (107 bytes)", s.Socket)
	}
	v.ids("serve.allow_uids", s.AllowUIDs)
	v.ids("serve.allow_gids", s.AllowGIDs)
	if s.ContainerEndpoint != "" {
		if _, err := addr.ParseLoopback(s.ContainerEndpoint); err != nil {
			v.fail("serve.container_endpoint", "%v", err)
		}
	}
	if s.IMDSEndpoint != "" {
		if _, err := addr.ParseLocal(s.IMDSEndpoint); err != nil {
			v.fail("serve.imds_endpoint", "%v", err)
		}
	}
	if !filepath.IsAbs(s.TokenFile) {
		v.fail("serve.token_file", "%q must be an absolute path", s.TokenFile)
	}

	m := &c.MQTT
	// Without an endpoint there is no session, but the other settings are
	// still held to the session's rules.
	for _, err := range flatten(sessionOptions(c).Validate()) {
		if field, _, _ := optionField(err); field == "Config.Endpoint" && m.Endpoint == "" {
			continue
		}
		v.options("", mqttKeys, err)
	}
	if m.CAFile != "" {
		// Loaded as startMQTT loads it.
		if _, err := credprovider.LoadCAFile(m.CAFile); err != nil {
			v.fail("mqtt.ca_file", "%s", issue(err))
		}
	}
	v.duration("mqtt.keep_alive", m.KeepAlive.Duration, 5*time.Second, 20*time.Minute)
	v.duration("mqtt.backoff_cap", m.BackoffCap.Duration, time.Second, time.Hour)
	v.duration("mqtt.session_expiry", m.SessionExpiry.Duration, 0, 7*24*time.Hour)
	if m.OutboxMaxMessages < 1 {
		v.fail("mqtt.outbox_max_messages", "must be at least 1")
	}
	if m.OutboxMaxBytes < 1<<17 {
		v.fail("mqtt.outbox_max_bytes", "must be at least 131072 (one AWS IoT message)")
	}
	for i, sub := range m.Subscribe {
		key := fmt.Sprintf("mqtt.subscribe.%d", i)
		if sub.Topic == "" {
			v.fail(key+".topic", "missing; set the topic filter to subscribe to")
		} else if err := mqtt.ValidateFilter(sub.Topic); err != nil {
			v.fail(key+".topic", "%v", err)
		}
	}
	if len(m.Subscribe) > 0 && m.Endpoint == "" {
		v.fail("mqtt.endpoint", "missing, but [[mqtt.subscribe]] is set; set the AWS IoT data endpoint (aws iot describe-endpoint --endpoint-type iot:Data-ATS)")
	}

	if !filepath.IsAbs(c.State.Path) {
		v.fail("state.path", "%q must be an absolute path", c.State.Path)
	} else if st, err := os.Stat(filepath.Dir(c.State.Path)); err == nil && !st.IsDir() {
		v.fail("state.path", "%q is not a directory", filepath.Dir(c.State.Path))
	}
}

func (c *Config) validateRoles(v *validator) {
	byName := map[string]int{}
	for i := range c.Roles {
		r := &c.Roles[i]
		key := fmt.Sprintf("role.%d", i)
		if r.Name == DeviceRole {
			v.fail(key+".name", "\"device\" is the IoT role alias's own name; choose another")
			continue
		}
		v.name(key, "role", r.Name, "it is the path /v1/credentials/NAME", i, byName)
	}
	for i := range c.Roles {
		r := &c.Roles[i]
		key := fmt.Sprintf("role.%d", i)
		if r.Source.Kind == SourceRole {
			if _, ok := byName[r.Source.Name]; !ok {
				v.fail(key+".source", "role %q is not defined; name a [[role]] above, \"device\" or \"profile:NAME\"", r.Source.Name)
			}
		}
		v.roleOptions(key, r)
		if r.WebIdentityTokenFile != "" {
			v.file_(key+".web_identity_token_file", r.WebIdentityTokenFile, false)
		}
		v.ids(key+".allow_uids", r.AllowUIDs)
		v.ids(key+".allow_gids", r.AllowGIDs)
		v.roleExtras(key, r)
	}
	// A role may not, through its sources, depend on itself.
	for i := range c.Roles {
		seen := map[string]bool{}
		name := c.Roles[i].Name
		for cur := c.Roles[i].Source; cur.Kind == SourceRole; {
			src := cur.Name
			if src == name {
				v.fail(fmt.Sprintf("role.%d.source", i), "role %q is its own source (through %s); break the loop", name, strings.Join(sortedKeys(seen), ", "))
				break
			}
			j, ok := byName[src]
			if !ok || seen[src] {
				break
			}
			seen[src] = true
			cur = c.Roles[j].Source
		}
	}
}

// name checks the name of the i-th [[kind]] at key: given (why says what it
// is for), 1-64 of a-z A-Z 0-9 _ - (a URL path segment), and not the name of
// an earlier one in seen, where it is recorded.
func (v *validator) name(key, kind, name, why string, i int, seen map[string]int) {
	switch {
	case name == "":
		v.fail(key+".name", "missing; every [[%s]] needs a name (%s)", kind, why)
	case !validName(name, 64):
		v.fail(key+".name", "%q is not a valid %s name (1-64 of a-z A-Z 0-9 _ -)", name, kind)
	default:
		if j, dup := seen[name]; dup {
			v.fail(key+".name", "%q is already the name of %s[%d]", name, kind, j)
		}
		seen[name] = i
	}
}

// roleOptions checks the options a role gives credprovider with
// credprovider's own Validate, built as roleProvider builds them.
func (v *validator) roleOptions(key string, r *RoleConfig) {
	switch {
	case len(r.CredentialCommand) > 0:
		v.options(key+".", roleKeys, commandOptions(r).Validate())
	case r.WebIdentityTokenFile != "":
		v.options(key+".", roleKeys, webIdentityOptions(r).Validate())
	default:
		o := assumeRoleOptions(r)
		tok, err := mfaToken(r)
		v.options(key+".", roleKeys, err)
		if err != nil {
			// Reported above; the pairing of serial and source still holds.
			tok = func(context.Context) (string, error) { return "", err }
		}
		o.MFAToken = tok
		v.options(key+".", roleKeys, o.Validate())
	}
}

// roleExtras checks combinations of keys that make no sense together and the
// role-chaining cap, which are about the file's shape rather than about any
// one provider's options.
func (v *validator) roleExtras(key string, r *RoleConfig) {
	custom := len(r.CredentialCommand) > 0
	webID := r.WebIdentityTokenFile != ""
	if custom {
		for _, f := range []struct {
			name string
			set  bool
		}{{"role_arn", r.RoleARN != ""}, {"web_identity_token_file", webID}, {"mfa_serial", r.MFASerial != ""},
			{"external_id", r.ExternalID != ""}, {"policy", r.Policy != ""}, {"policy_arns", len(r.PolicyARNs) > 0}, {"tags", len(r.Tags) > 0}} {
			if f.set {
				v.fail(key+"."+f.name, "is set, but credential_command supplies the credentials itself; remove one of them")
			}
		}
	}
	if webID && r.MFASerial != "" {
		v.fail(key+".mfa_serial", "AssumeRoleWithWebIdentity takes no MFA; remove mfa_serial or web_identity_token_file")
	}
	if webID && (len(r.Tags) > 0 || r.ExternalID != "" || r.SourceIdentity != "") {
		v.fail(key+".web_identity_token_file", "AssumeRoleWithWebIdentity takes no tags, external_id or source_identity; remove them")
	}
	if len(r.MFACommand) > 0 && r.MFATOTPFile != "" {
		v.fail(key+".mfa_command", "and mfa_totp_file are both set; keep one token source")
	}
	// Credentials of a role (the IoT credentials provider's included) may
	// assume another role only for up to an hour: AWS's role-chaining cap.
	d := r.Duration.Duration
	if r.Source.Chained() && !custom && !webID && d > credprovider.MaxChainedDuration && d <= credprovider.MaxRoleDuration {
		v.fail(key+".duration", "%s exceeds 1h, the longest session AWS grants to a role assumed with another role's credentials (source %q); use 1h or less", d, r.Source)
	}
	if r.Source.Kind == SourceProfile && !custom && !webID {
		if err := checkProfile(r.Source.Name); err != nil {
			v.fail(key+".source", "%v", err)
		}
	}
}

// options reports what a credprovider Validate refused (errors.Join of
// *credprovider.OptionError), each under the TOML key keys gives its Go
// name, after prefix.
func (v *validator) options(prefix string, keys map[string]string, err error) {
	for _, e := range flatten(err) {
		if field, issue, ok := optionField(e); ok {
			if k, ok := keys[field]; ok {
				v.fail(prefix+k, "%s", issue)
				continue
			}
		}
		// A Go name without a TOML key: still reported, by its Go name.
		v.fail(strings.TrimSuffix(prefix, "."), "%v", e)
	}
}

// optionField is the Go name of the setting a library refuses and what is
// wrong with it, for the libraries that name their settings so.
func optionField(err error) (field, issue string, ok bool) {
	var oe *credprovider.OptionError
	if errors.As(err, &oe) {
		return oe.Field, oe.Issue, true
	}
	var ce *mqtt.ConfigError
	if errors.As(err, &ce) {
		return ce.Field, ce.Issue, true
	}
	return "", "", false
}

// flatten lists the errors errors.Join put together (nil gives none).
func flatten(err error) []error {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, flatten(e)...)
		}
		return out
	}
	return []error{err}
}

// issue is what a library says is wrong, without its name for the setting,
// for a message that names the TOML key instead.
func issue(err error) string {
	var oe *credprovider.OptionError
	if errors.As(err, &oe) {
		return oe.Issue
	}
	return err.Error()
}

func sortedKeys(m map[string]bool) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	if len(ks) == 0 {
		return []string{"itself"}
	}
	return ks
}

// file_ checks that path names a readable regular file.
func (v *validator) file_(key, path string, required bool) {
	if path == "" {
		if required {
			v.fail(key, "missing; set the path of the file")
		}
		return
	}
	if !filepath.IsAbs(path) {
		v.fail(key, "%q must be an absolute path", path)
		return
	}
	st, err := os.Stat(path)
	switch {
	case err != nil:
		v.fail(key, "%s: %v", path, unwrapPathError(err))
	case !st.Mode().IsRegular():
		v.fail(key, "%s is not a regular file", path)
	}
}

func (v *validator) duration(key string, d, lo, hi time.Duration) {
	if d < lo || d > hi {
		v.fail(key, "%s is out of range; use a duration between %s and %s", d, lo, hi)
	}
}

func (v *validator) ids(key string, ids []int) {
	for _, id := range ids {
		if id < 0 || id > 1<<31-2 {
			v.fail(key, "%d is not a valid id", id)
		}
	}
}

// pkcs11URI checks a key URI as hsm.Open will read it: parsed by
// hsm.ParseKeyURI, then what reaching the module needs and the PIN file.
func (v *validator) pkcs11URI(key, uri string) {
	u, err := hsm.ParseKeyURI(uri)
	if err != nil {
		v.fail(key, "%v", err)
		return
	}
	if err := u.CheckFiles(os.Getenv); err != nil {
		v.fail(key, "%v", err)
	}
}
