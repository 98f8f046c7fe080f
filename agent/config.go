package agent

import (
	"bytes"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
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

	toml "github.com/pelletier/go-toml/v2"
	"github.com/pelletier/go-toml/v2/unstable"

	"github.com/tetherd/tether/credprovider"
	"github.com/tetherd/tether/hsm"
	"github.com/tetherd/tether/mqtt"
	"github.com/tetherd/tether/platform"
)

// DefaultConfigPath is where tether looks for its configuration when -c is not given.
const DefaultConfigPath = "/etc/tether/tether.toml"

// Config is tether's resolved configuration: the TOML file of DESIGN.md §4 with
// every default filled in. Durations are kept as they were written (Duration
// remembers its text) so `tether config check` prints what the operator wrote.
type Config struct {
	Identity IdentityConfig `toml:"identity"`
	AWS      AWSConfig      `toml:"aws"`
	Roles    []RoleConfig   `toml:"role"`
	Serve    ServeConfig    `toml:"serve"`
	MQTT     MQTTConfig     `toml:"mqtt"`
	State    StateConfig    `toml:"state"`
	Log      LogConfig      `toml:"log"`
	// Provision is what `tether provision` needs (identity.go).
	Provision ProvisionConfig `toml:"provision"`

	// File is the path the configuration was read from.
	File string `toml:"-"`
}

// IdentityConfig names the device: its thing name, certificate and private key.
type IdentityConfig struct {
	ThingName   string `toml:"thing_name"`
	Certificate string `toml:"certificate"`
	// PrivateKey is a PEM file or an RFC 7512 "pkcs11:" URI.
	PrivateKey string `toml:"private_key"`
	// Rotation of the certificate (identity.go).
	RotateBefore     Duration `toml:"rotate_before"`
	RotateAt         float64  `toml:"rotate_at"`
	RotationTemplate string   `toml:"rotation_template"`
	RetiredTopic     string   `toml:"retired_topic"`
	Fallback         Duration `toml:"fallback"`
}

// AWSConfig is the AWS IoT Core credentials provider the device role comes from.
type AWSConfig struct {
	Region             string   `toml:"region"`
	CredentialEndpoint string   `toml:"credential_endpoint"`
	RoleAlias          string   `toml:"role_alias"`
	CAFile             string   `toml:"ca_file"`
	Duration           Duration `toml:"duration"`
	// Refresh is "eager" (refresh in the background) or "deferred" (on demand).
	Refresh        string   `toml:"refresh"`
	AdvisoryWindow Duration `toml:"advisory_window"`
	// MandatoryWindow is how long before expiry credentials stop being served.
	MandatoryWindow Duration `toml:"mandatory_window"`
}

// RoleConfig is one more IAM role, assumed with STS from a source.
type RoleConfig struct {
	Name        string   `toml:"name"`
	RoleARN     string   `toml:"role_arn"`
	Source      string   `toml:"source"`
	ExternalID  string   `toml:"external_id"`
	SessionName string   `toml:"session_name"`
	Duration    Duration `toml:"duration"`
	Region      string   `toml:"region"`
	STSEndpoint string   `toml:"sts_endpoint"`
	MFASerial   string   `toml:"mfa_serial"`
	MFACommand  []string `toml:"mfa_command"`
	// MFATOTPFile is a file holding a base32 TOTP secret, for unattended gateways.
	MFATOTPFile string `toml:"mfa_totp_file"`
	// WebIdentityTokenFile switches the role to AssumeRoleWithWebIdentity.
	WebIdentityTokenFile string `toml:"web_identity_token_file"`
	// CredentialCommand switches the role to a credential_process command (argv).
	CredentialCommand []string          `toml:"credential_command"`
	Policy            string            `toml:"policy"`
	PolicyARNs        []string          `toml:"policy_arns"`
	Tags              map[string]string `toml:"tags"`
	TransitiveTagKeys []string          `toml:"transitive_tag_keys"`
	SourceIdentity    string            `toml:"source_identity"`
	AllowUIDs         []int             `toml:"allow_uids"`
	AllowGIDs         []int             `toml:"allow_gids"`
}

// ServeConfig is how local programs reach the credentials.
type ServeConfig struct {
	Socket            string `toml:"socket"`
	AllowUIDs         []int  `toml:"allow_uids"`
	AllowGIDs         []int  `toml:"allow_gids"`
	ContainerEndpoint string `toml:"container_endpoint"`
	TokenFile         string `toml:"token_file"`
}

// MQTTConfig is the device's one MQTT v5 session to AWS IoT Core.
type MQTTConfig struct {
	Endpoint          string          `toml:"endpoint"`
	Port              int             `toml:"port"`
	CAFile            string          `toml:"ca_file"`
	ClientID          string          `toml:"client_id"`
	KeepAlive         Duration        `toml:"keep_alive"`
	SessionExpiry     Duration        `toml:"session_expiry"`
	BackoffCap        Duration        `toml:"backoff_cap"`
	OutboxMaxMessages int             `toml:"outbox_max_messages"`
	OutboxMaxBytes    int64           `toml:"outbox_max_bytes"`
	Subscribe         []MQTTSubscribe `toml:"subscribe"`
}

// MQTTSubscribe is a subscription the agent holds for the whole device, at
// QoS 1 (the highest AWS IoT Core offers; each message arrives at the lower
// of its publish QoS and this).
type MQTTSubscribe struct {
	Topic string `toml:"topic"`
}

// StateConfig is where the bbolt state lives.
type StateConfig struct {
	Path string `toml:"path"`
}

// LogConfig sets the daemon's log level: debug, info, warn or error.
type LogConfig struct {
	Level string `toml:"level"`
}

// Duration is a time.Duration written as a Go duration string ("15m", "1h").
type Duration struct {
	time.Duration
	set bool
}

// UnmarshalText parses a Go duration string.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("%q is not a duration; write it like \"90s\", \"15m\" or \"1h\"", b)
	}
	d.Duration, d.set = v, true
	return nil
}

// MarshalText writes the duration back as a Go duration string.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// IsSet reports whether the file gave the duration (rather than a default).
func (d Duration) IsSet() bool { return d.set }

func (d *Duration) orDefault(v time.Duration) {
	if !d.set {
		d.Duration = v
	}
}

// FieldError is one thing wrong in a configuration file.
type FieldError struct {
	File  string
	Line  int // 0 when the key is absent from the file
	Key   string
	Issue string // what is wrong and what to do
}

func (e *FieldError) Error() string {
	loc := e.File
	if e.Line > 0 {
		loc = fmt.Sprintf("%s:%d", e.File, e.Line)
	}
	if e.Key == "" {
		return fmt.Sprintf("%s: %s", loc, e.Issue)
	}
	return fmt.Sprintf("%s: %s: %s", loc, e.Key, e.Issue)
}

// ConfigError holds every error found in a configuration, so one run of
// `tether config check` reports them all.
type ConfigError struct {
	Errors []*FieldError
}

func (e *ConfigError) Error() string {
	lines := make([]string, len(e.Errors))
	for i, fe := range e.Errors {
		lines[i] = fe.Error()
	}
	return strings.Join(lines, "\n")
}

// Unwrap lets errors.As reach each FieldError.
func (e *ConfigError) Unwrap() []error {
	errs := make([]error, len(e.Errors))
	for i, fe := range e.Errors {
		errs[i] = fe
	}
	return errs
}

// LoadConfig reads, decodes and validates the configuration file at path.
// Every problem is reported at once as a *ConfigError; nothing is started.
func LoadConfig(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, &ConfigError{Errors: []*FieldError{{File: path, Issue: fmt.Sprintf("cannot read the configuration: %v; pass the right file with -c", unwrapPathError(err))}}}
	}
	return ParseConfig(path, b)
}

// ParseConfig decodes and validates a configuration held in memory; name is
// used in error messages.
func ParseConfig(name string, b []byte) (*Config, error) {
	return parseConfig(name, b, platform.Directories())
}

// parseConfig is ParseConfig with the service manager's directories, which
// give the defaults of paths the file leaves out.
func parseConfig(name string, b []byte, dirs platform.Dirs) (*Config, error) {
	c := &Config{File: name}
	lines, perr := keyLines(b)
	if perr != nil {
		return nil, &ConfigError{Errors: []*FieldError{tomlError(name, perr)}}
	}
	dec := toml.NewDecoder(bytes.NewReader(b)).DisallowUnknownFields()
	if err := dec.Decode(c); err != nil {
		var strict *toml.StrictMissingError
		if errors.As(err, &strict) {
			ce := &ConfigError{}
			for i := range strict.Errors {
				de := &strict.Errors[i]
				row, _ := de.Position()
				ce.Errors = append(ce.Errors, &FieldError{File: name, Line: row, Key: strings.Join(de.Key(), "."),
					Issue: "unknown key; check its spelling and section against the configuration reference in README.md"})
			}
			return nil, ce
		}
		return nil, &ConfigError{Errors: []*FieldError{tomlError(name, err)}}
	}
	v := &validator{file: name, lines: lines}
	c.applyDefaults(dirs)
	c.validate(v)
	if len(v.errs) > 0 {
		return nil, &ConfigError{Errors: v.errs}
	}
	return c, nil
}

func tomlError(name string, err error) *FieldError {
	var de *toml.DecodeError
	if errors.As(err, &de) {
		row, _ := de.Position()
		msg := de.Error()
		msg = strings.TrimPrefix(msg, "toml: ")
		return &FieldError{File: name, Line: row, Key: strings.Join(de.Key(), "."), Issue: msg}
	}
	var pe *unstable.ParserError
	if errors.As(err, &pe) {
		return &FieldError{File: name, Issue: "not valid TOML: " + pe.Message}
	}
	return &FieldError{File: name, Issue: "not valid TOML: " + err.Error()}
}

func unwrapPathError(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// keyLines maps every dotted key of the document ("aws.duration",
// "role.1.role_arn") to its line, so validation errors can point at the line
// the operator has to change.
func keyLines(b []byte) (map[string]int, error) {
	lines := map[string]int{}
	var p unstable.Parser
	p.Reset(b)
	var table []string
	arrays := map[string]int{}
	lineOf := func(n *unstable.Node) int {
		return p.Shape(n.Raw).Start.Line
	}
	keyOf := func(it unstable.Iterator) ([]string, *unstable.Node) {
		var parts []string
		var first *unstable.Node
		for it.Next() {
			n := it.Node()
			if first == nil {
				first = n
			}
			parts = append(parts, string(n.Data))
		}
		return parts, first
	}
	for p.NextExpression() {
		e := p.Expression()
		switch e.Kind {
		case unstable.Table:
			parts, first := keyOf(e.Key())
			table = parts
			if first != nil {
				lines[strings.Join(table, ".")] = lineOf(first)
			}
		case unstable.ArrayTable:
			parts, first := keyOf(e.Key())
			name := strings.Join(parts, ".")
			idx := arrays[name]
			arrays[name] = idx + 1
			table = append(parts, strconv.Itoa(idx))
			if first != nil {
				lines[strings.Join(table, ".")] = lineOf(first)
			}
		case unstable.KeyValue:
			parts, first := keyOf(e.Key())
			if first != nil {
				lines[strings.Join(append(append([]string{}, table...), parts...), ".")] = lineOf(first)
			}
		}
	}
	return lines, p.Error()
}

// validator collects field errors with their lines.
type validator struct {
	file  string
	lines map[string]int
	errs  []*FieldError
}

func (v *validator) fail(key, format string, args ...any) {
	line := v.lines[key]
	if line == 0 {
		// A missing key: point at its section, if the file has one.
		if i := strings.LastIndex(key, "."); i > 0 {
			line = v.lines[key[:i]]
		}
	}
	v.errs = append(v.errs, &FieldError{File: v.file, Line: line, Key: displayKey(key), Issue: fmt.Sprintf(format, args...)})
}

// displayKey turns "role.1.role_arn" into "role[1].role_arn".
func displayKey(key string) string {
	parts := strings.Split(key, ".")
	var out strings.Builder
	for i, p := range parts {
		if _, err := strconv.Atoi(p); err == nil && i > 0 {
			out.WriteString("[" + p + "]")
			continue
		}
		if i > 0 {
			out.WriteByte('.')
		}
		out.WriteString(p)
	}
	return out.String()
}

// applyDefaults fills what the file left out; paths default into the
// directories systemd made for the unit ($STATE_DIRECTORY,
// $RUNTIME_DIRECTORY) when it runs tether.
func (c *Config) applyDefaults(dirs platform.Dirs) {
	a := &c.AWS
	a.AdvisoryWindow.orDefault(15 * time.Minute)
	a.MandatoryWindow.orDefault(30 * time.Second)
	if a.Refresh == "" {
		a.Refresh = "eager"
	}
	if c.Serve.Socket == "" {
		c.Serve.Socket = filepath.Join(dirs.Runtime, "tether.sock")
	}
	if c.Serve.TokenFile == "" {
		c.Serve.TokenFile = filepath.Join(dirs.Runtime, "token")
	}
	m := &c.MQTT
	if m.Port == 0 {
		m.Port = 8883
	}
	if m.ClientID == "" {
		m.ClientID = c.Identity.ThingName
	}
	m.KeepAlive.orDefault(30 * time.Second)
	m.SessionExpiry.orDefault(24 * time.Hour)
	m.BackoffCap.orDefault(2 * time.Minute)
	if m.OutboxMaxMessages == 0 {
		m.OutboxMaxMessages = 100_000
	}
	if m.OutboxMaxBytes == 0 {
		m.OutboxMaxBytes = 64 << 20
	}
	if c.State.Path == "" {
		c.State.Path = filepath.Join(dirs.State, "state.db")
	}
	if c.Log.Level == "" {
		c.Log.Level = "info"
	}
	for i := range c.Roles {
		r := &c.Roles[i]
		if r.Source == "" {
			r.Source = "device"
		}
		if r.SessionName == "" {
			r.SessionName = "tether-" + c.Identity.ThingName
		}
		r.Duration.orDefault(time.Hour)
		if r.Region == "" {
			r.Region = c.AWS.Region
		}
	}
}

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
	case strings.HasPrefix(id.PrivateKey, "pkcs11:"):
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
	if a.Refresh != "eager" && a.Refresh != "deferred" {
		v.fail("aws.refresh", "%q is not a refresh mode; use \"eager\" or \"deferred\"", a.Refresh)
	}
	v.duration("aws.advisory_window", a.AdvisoryWindow.Duration, time.Minute, 6*time.Hour)
	v.duration("aws.mandatory_window", a.MandatoryWindow.Duration, 30*time.Second, time.Hour)
	if a.MandatoryWindow.Duration >= a.AdvisoryWindow.Duration && a.AdvisoryWindow.Duration > 0 {
		v.fail("aws.mandatory_window", "%s must be shorter than advisory_window (%s)", a.MandatoryWindow.Duration, a.AdvisoryWindow.Duration)
	}

	c.validateRoles(v)
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
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		v.fail("log.level", "%q is not a level; use debug, info, warn or error", c.Log.Level)
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
		switch {
		case r.Source == "device":
		case strings.HasPrefix(r.Source, "profile:") && len(r.Source) > len("profile:"):
		case strings.HasPrefix(r.Source, "role:"):
			src := strings.TrimPrefix(r.Source, "role:")
			if _, ok := byName[src]; !ok {
				v.fail(key+".source", "role %q is not defined; name a [[role]] above, \"device\" or \"profile:NAME\"", src)
			}
		default:
			v.fail(key+".source", "%q is not a source; use \"device\", \"role:NAME\" or \"profile:NAME\"", r.Source)
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
		for cur := c.Roles[i].Source; strings.HasPrefix(cur, "role:"); {
			src := strings.TrimPrefix(cur, "role:")
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
	chained := r.Source == "device" || strings.HasPrefix(r.Source, "role:")
	if chained && !custom && !webID && r.Duration.Duration > time.Hour && r.Duration.Duration <= 12*time.Hour {
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
	if name, ok := strings.CutPrefix(r.Source, "profile:"); ok && name != "" && !custom && !webID {
		if err := checkProfile(name); err != nil {
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

// pkcs11URI checks the parts of an RFC 7512 URI that can be checked without
// loading the module: syntax, the module path and the PIN source.
func (v *validator) pkcs11URI(key, uri string) {
	if !hsm.PKCS11Available {
		v.fail(key, "%v", hsm.ErrPKCS11Unavailable)
	}
	rest := strings.TrimPrefix(uri, "pkcs11:")
	path, query, _ := strings.Cut(rest, "?")
	attrs := map[string]string{}
	for _, kv := range strings.Split(path, ";") {
		if kv == "" {
			continue
		}
		k, val, ok := strings.Cut(kv, "=")
		if !ok {
			v.fail(key, "pkcs11 URI attribute %q has no value (write name=value)", k)
			continue
		}
		if _, err := url.PathUnescape(val); err != nil {
			v.fail(key, "pkcs11 URI attribute %q is not percent-encoded correctly", k)
		}
		attrs[k] = val
	}
	if attrs["object"] == "" && attrs["id"] == "" {
		v.fail(key, "pkcs11 URI names no key; add object=LABEL or id=%%XX")
	}
	q, err := url.ParseQuery(query)
	if err != nil {
		v.fail(key, "pkcs11 URI query is malformed: %v", err)
		return
	}
	if mp := q.Get("module-path"); mp != "" {
		v.file_(key+" (module-path)", mp, true)
	}
	if ps := q.Get("pin-source"); ps != "" {
		switch {
		case strings.HasPrefix(ps, "file:"):
			v.file_(key+" (pin-source)", strings.TrimPrefix(strings.TrimPrefix(ps, "file:"), "//"), true)
		case strings.HasPrefix(ps, "credential:"):
		default:
			v.fail(key, "pin-source %q is not supported; use file:/path or credential:NAME", ps)
		}
	}
}

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

// Marshal writes the configuration as TOML.
func (c *Config) Marshal() ([]byte, error) {
	var buf bytes.Buffer
	enc := toml.NewEncoder(&buf)
	enc.SetIndentTables(false)
	if err := enc.Encode(c); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// lazyRegexp compiles the expression on first use: the patterns with long
// repetition counts cost milliseconds to compile, which every start of
// `tether credential-process` would otherwise pay.
func lazyRegexp(expr string) func() *regexp.Regexp {
	return sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(expr) })
}
