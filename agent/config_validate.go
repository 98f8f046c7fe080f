package agent

import (
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/tetherd/tether/credprovider"
	"github.com/tetherd/tether/hsm"
	"github.com/tetherd/tether/mqtt"
)

var (
	thingNameRE = lazyRegexp(`^[a-zA-Z0-9:_-]{1,128}$`)
	roleAliasRE = lazyRegexp(`^[\w=,@-]{1,128}$`)
	roleNameRE  = lazyRegexp(`^[a-zA-Z0-9_-]{1,64}$`)
	policyARNRE = lazyRegexp(`^arn:aws[a-z-]*:iam::(aws|\d{12}):policy/[\w+=,.@/-]{1,512}$`)
	mfaSerialRE = lazyRegexp(`^[\w+=/:,.@-]{9,256}$`)
	externalRE  = lazyRegexp(`^[\w+=,.@:/-]{2,1000}$`)
)

func (c *Config) validate(v *validator) {
	id := &c.Identity
	switch {
	case id.ThingName == "":
		v.fail("identity.thing_name", "missing; set it to the device's AWS IoT thing name")
	case !thingNameRE().MatchString(id.ThingName):
		v.fail("identity.thing_name", "%q is not a valid thing name (1-128 of a-z A-Z 0-9 : _ -)", id.ThingName)
	}
	v.file_("identity.certificate", id.Certificate, true)
	switch {
	case id.PrivateKey == "":
		v.fail("identity.private_key", "missing; set a PEM key file or a pkcs11: URI")
	case hsm.IsURI(id.PrivateKey):
		v.pkcs11URI("identity.private_key", id.PrivateKey)
	default:
		v.file_("identity.private_key", id.PrivateKey, true)
	}

	a := &c.AWS
	if a.Region != "" && !credprovider.ValidRegion(a.Region) {
		v.fail("aws.region", "%q is not an AWS region name like eu-west-1", a.Region)
	}
	if a.CredentialEndpoint == "" {
		v.fail("aws.credential_endpoint", "missing; set it to your account's endpoint (aws iot describe-endpoint --endpoint-type iot:CredentialProvider)")
	} else {
		v.hostPort("aws.credential_endpoint", a.CredentialEndpoint, false)
	}
	switch {
	case a.RoleAlias == "":
		v.fail("aws.role_alias", "missing; set it to the IoT role alias the device certificate's policy allows")
	case !roleAliasRE().MatchString(a.RoleAlias):
		v.fail("aws.role_alias", "%q is not a valid role alias (1-128 of letters, digits and =,@-_)", a.RoleAlias)
	}
	v.caFile("aws.ca_file", a.CAFile)
	if a.Duration.IsSet() {
		v.duration("aws.duration", a.Duration.Duration, 15*time.Minute, 12*time.Hour)
	}
	v.duration("aws.advisory_window", a.AdvisoryWindow.Duration, time.Minute, 6*time.Hour)
	v.duration("aws.mandatory_window", a.MandatoryWindow.Duration, 30*time.Second, time.Hour)
	if a.MandatoryWindow.Duration >= a.AdvisoryWindow.Duration && a.AdvisoryWindow.Duration > 0 {
		v.fail("aws.mandatory_window", "%s must be shorter than advisory_window (%s)", a.MandatoryWindow.Duration, a.AdvisoryWindow.Duration)
	}

	c.validateRoles(v)

	s := &c.Serve
	if !filepath.IsAbs(s.Socket) {
		v.fail("serve.socket", "%q must be an absolute path", s.Socket)
	} else if len(s.Socket) > 107 {
		v.fail("serve.socket", "%q is longer than a Unix socket path may be (107 bytes)", s.Socket)
	}
	v.ids("serve.allow_uids", s.AllowUIDs)
	v.ids("serve.allow_gids", s.AllowGIDs)
	if s.ContainerEndpoint != "" {
		v.hostPort("serve.container_endpoint", s.ContainerEndpoint, true)
		if len(s.AllowUIDs) > 0 || len(s.AllowGIDs) > 0 {
			// The token file is readable by the socket's group: with allow
			// lists narrowing that group, the endpoint would let the others
			// in, and a TCP peer has no uid to check.
			v.fail("serve.container_endpoint", "cannot be combined with serve.allow_uids or allow_gids (a TCP peer has no uid to check); use the Unix socket, or drop the allow lists")
		}
	}
	if !filepath.IsAbs(s.TokenFile) {
		v.fail("serve.token_file", "%q must be an absolute path", s.TokenFile)
	}

	m := &c.MQTT
	if m.Endpoint != "" {
		v.hostPort("mqtt.endpoint", m.Endpoint, false)
	}
	if m.Port < 1 || m.Port > 65535 {
		v.fail("mqtt.port", "%d is not a TCP port; use 8883, or 443 (ALPN x-amzn-mqtt-ca)", m.Port)
	}
	v.caFile("mqtt.ca_file", m.CAFile)
	if len(m.ClientID) > 128 {
		v.fail("mqtt.client_id", "is %d bytes; AWS IoT allows at most 128", len(m.ClientID))
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
		switch {
		case r.Name == "":
			v.fail(key+".name", "missing; every [[role]] needs a name (it is the path /v1/credentials/NAME)")
		case !roleNameRE().MatchString(r.Name):
			v.fail(key+".name", "%q is not a valid role name (1-64 of a-z A-Z 0-9 _ -)", r.Name)
		case r.Name == "device":
			v.fail(key+".name", "\"device\" is the IoT role alias's own name; choose another")
		default:
			if j, dup := byName[r.Name]; dup {
				v.fail(key+".name", "%q is already the name of role[%d]", r.Name, j)
			}
			byName[r.Name] = i
		}
	}
	for i := range c.Roles {
		r := &c.Roles[i]
		key := fmt.Sprintf("role.%d", i)
		custom := len(r.CredentialCommand) > 0
		if !custom && !credprovider.ValidRoleARN(r.RoleARN) {
			if r.RoleARN == "" {
				v.fail(key+".role_arn", "missing; set the ARN of the role to assume (arn:aws:iam::ACCOUNT:role/NAME)")
			} else {
				v.fail(key+".role_arn", "%q is not an IAM role ARN (arn:aws:iam::ACCOUNT:role/NAME)", r.RoleARN)
			}
		}
		if r.Source.Kind == SourceRole {
			if _, ok := byName[r.Source.Name]; !ok {
				v.fail(key+".source", "role %q is not defined; name a [[role]] above, \"device\" or \"profile:NAME\"", r.Source.Name)
			}
		}
		if !credprovider.ValidSessionName(r.SessionName) {
			v.fail(key+".session_name", "%q is not a valid session name (2-64 of letters, digits and +=,.@-)", r.SessionName)
		}
		if r.ExternalID != "" && !externalRE().MatchString(r.ExternalID) {
			v.fail(key+".external_id", "is not valid (2-1000 of letters, digits and +=,.@:/-)")
		}
		v.duration(key+".duration", r.Duration.Duration, 15*time.Minute, 12*time.Hour)
		if r.Region != "" && !credprovider.ValidRegion(r.Region) {
			v.fail(key+".region", "%q is not an AWS region name like eu-west-1", r.Region)
		}
		if r.Region == "" && !custom {
			v.fail(key+".region", "missing; set it here or as aws.region")
		}
		if r.STSEndpoint != "" {
			if u, err := url.Parse(r.STSEndpoint); err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
				v.fail(key+".sts_endpoint", "%q is not a URL like https://sts.eu-west-1.amazonaws.com", r.STSEndpoint)
			}
		}
		if r.MFASerial != "" {
			if !mfaSerialRE().MatchString(r.MFASerial) {
				v.fail(key+".mfa_serial", "%q is not an MFA device serial or ARN", r.MFASerial)
			}
			if len(r.MFACommand) == 0 && r.MFATOTPFile == "" {
				v.fail(key+".mfa_serial", "is set but there is no token source; set mfa_command or mfa_totp_file")
			}
		} else if len(r.MFACommand) > 0 || r.MFATOTPFile != "" {
			v.fail(key+".mfa_serial", "missing, but an MFA token source is set; set the MFA device's serial or ARN")
		}
		if len(r.MFACommand) > 0 && !filepath.IsAbs(r.MFACommand[0]) {
			v.fail(key+".mfa_command", "%q must be an absolute path (no shell, no PATH lookup)", r.MFACommand[0])
		}
		if r.MFATOTPFile != "" {
			v.file_(key+".mfa_totp_file", r.MFATOTPFile, true)
		}
		if r.WebIdentityTokenFile != "" {
			v.file_(key+".web_identity_token_file", r.WebIdentityTokenFile, false)
		}
		if custom && !filepath.IsAbs(r.CredentialCommand[0]) {
			v.fail(key+".credential_command", "%q must be an absolute path (no shell, no PATH lookup)", r.CredentialCommand[0])
		}
		for _, arn := range r.PolicyARNs {
			if !policyARNRE().MatchString(arn) {
				v.fail(key+".policy_arns", "%q is not an IAM policy ARN", arn)
			}
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

var sourceIdentityRE = lazyRegexp(`^[\w+=,.@-]{2,64}$`)

// roleExtras checks what STS would refuse and combinations that make no
// sense, so that `tether config check` reports them before anything starts.
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
	if r.MFATOTPFile != "" && filepath.IsAbs(r.MFATOTPFile) {
		if st, err := os.Stat(r.MFATOTPFile); err == nil && st.Mode().IsRegular() && st.Mode().Perm()&0o077 != 0 {
			v.fail(key+".mfa_totp_file", "%s has mode %04o but holds a secret; chmod 600 it", r.MFATOTPFile, st.Mode().Perm())
		}
	}
	// Credentials of a role (the IoT credentials provider's included) may
	// assume another role only for up to an hour: AWS's role-chaining cap.
	if r.Source.Chained() && !custom && !webID && r.Duration.Duration > time.Hour && r.Duration.Duration <= 12*time.Hour {
		v.fail(key+".duration", "%s exceeds 1h, the longest session AWS grants to a role assumed with another role's credentials (source %q); use 1h or less", r.Duration.Duration, r.Source)
	}
	if r.Policy != "" {
		if !json.Valid([]byte(r.Policy)) {
			v.fail(key+".policy", "is not valid JSON; give an IAM policy document")
		} else if len(r.Policy) > 2048 {
			v.fail(key+".policy", "is %d bytes; STS accepts at most 2048", len(r.Policy))
		}
	}
	if len(r.PolicyARNs) > 10 {
		v.fail(key+".policy_arns", "has %d ARNs; STS accepts at most 10", len(r.PolicyARNs))
	}
	if len(r.Tags) > 50 {
		v.fail(key+".tags", "has %d tags; STS accepts at most 50", len(r.Tags))
	}
	for k, val := range r.Tags {
		if k == "" || len(k) > 128 || len(val) > 256 {
			v.fail(key+".tags", "tag %q: keys are 1-128 characters, values at most 256", k)
		}
	}
	for _, k := range r.TransitiveTagKeys {
		if _, ok := r.Tags[k]; !ok {
			v.fail(key+".transitive_tag_keys", "%q is not a key of tags", k)
		}
	}
	if r.SourceIdentity != "" && !sourceIdentityRE().MatchString(r.SourceIdentity) {
		v.fail(key+".source_identity", "%q is not valid (2-64 of letters, digits and +=,.@-)", r.SourceIdentity)
	}
	if r.Source.Kind == SourceProfile && !custom && !webID {
		if err := checkProfile(r.Source.Name); err != nil {
			v.fail(key+".source", "%v", err)
		}
	}
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

func (v *validator) caFile(key, path string) {
	if path == "" {
		return
	}
	before := len(v.errs)
	v.file_(key, path, true)
	if len(v.errs) > before {
		return
	}
	b, err := os.ReadFile(path)
	if err != nil {
		v.fail(key, "%s: %v", path, unwrapPathError(err))
		return
	}
	if !containsCertificate(b) {
		v.fail(key, "%s holds no PEM certificate; point it at the CA bundle that signs the server", path)
	}
}

func containsCertificate(b []byte) bool {
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			return false
		}
		if blk.Type == "CERTIFICATE" {
			if _, err := x509.ParseCertificate(blk.Bytes); err == nil {
				return true
			}
		}
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

// hostPort checks "host" or "host:port"; loopback requires a loopback IP with a port.
func (v *validator) hostPort(key, s string, loopback bool) {
	if strings.Contains(s, "/") {
		v.fail(key, "%q must be a host or host:port, without a scheme or path", s)
		return
	}
	host, port := s, ""
	if h, p, err := net.SplitHostPort(s); err == nil {
		host, port = h, p
	}
	if port != "" {
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			v.fail(key, "%q has an invalid port", s)
			return
		}
	}
	if host == "" {
		v.fail(key, "%q has no host", s)
		return
	}
	if loopback {
		ip := net.ParseIP(host)
		if ip == nil || !ip.IsLoopback() || port == "" {
			v.fail(key, "%q must be a loopback address with a port, like 127.0.0.1:2020 (it is never exposed beyond this device)", s)
		}
		return
	}
	if net.ParseIP(host) == nil && !validHostname(host) {
		v.fail(key, "%q is not a valid host name", host)
	}
}

func validHostname(h string) bool {
	if len(h) > 253 {
		return false
	}
	for _, label := range strings.Split(h, ".") {
		if label == "" || len(label) > 63 {
			return false
		}
		for _, r := range label {
			if !(r == '-' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z') {
				return false
			}
		}
	}
	return true
}

// pkcs11URI checks a key URI as hsm.Open will read it: parsed by
// hsm.ParseKeyURI, then the module and PIN files it names.
func (v *validator) pkcs11URI(key, uri string) {
	if !hsm.PKCS11Available {
		v.fail(key, "%v", hsm.ErrPKCS11Unavailable)
	}
	u, err := hsm.ParseKeyURI(uri)
	if err != nil {
		v.fail(key, "%v", err)
		return
	}
	if err := u.CheckFiles(os.Getenv); err != nil {
		v.fail(key, "%v", err)
	}
}

// lazyRegexp compiles the expression on first use: the patterns with long
// repetition counts cost milliseconds to compile, which every start of
// `tether credential-process` would otherwise pay.
func lazyRegexp(expr string) func() *regexp.Regexp {
	return sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(expr) })
}
