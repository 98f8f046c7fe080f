package agent

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strings"

	toml "github.com/pelletier/go-toml/v2"

	"github.com/tetherd/tether/credprovider"
	"github.com/tetherd/tether/platform"
)

// DefaultConfigPath is where tether looks for its configuration when -c is not given.
const DefaultConfigPath = "/etc/tether/tether.toml"

// Config is tether's resolved configuration: the TOML file the README's
// configuration reference describes, with every default filled in.
// Durations are kept as they were written (Duration remembers its text) so
// `tether config check` prints what the operator wrote.
type Config struct {
	Identity IdentityConfig `toml:"identity"`
	AWS      AWSConfig      `toml:"aws"`
	Roles    []RoleConfig   `toml:"role"`
	Serve    ServeConfig    `toml:"serve"`
	MQTT     MQTTConfig     `toml:"mqtt"`
	State    StateConfig    `toml:"state"`
	Log      LogConfig      `toml:"log"`

	// Workloads map local programs to the credentials they get (workload.go).
	Workloads []WorkloadConfig `toml:"workload"`
	// Greengrass is set when the device runs AWS IoT Greengrass too.
	Greengrass GreengrassConfig `toml:"greengrass"`
	// Provision is what `tether provision` needs (identity.go).
	Provision ProvisionConfig `toml:"provision"`

	// File is the path the configuration was read from.
	File string `toml:"-"`
}

// IdentityConfig names the device: its thing name, certificate and private key.
type IdentityConfig struct {
	ThingName   string `toml:"thing_name"`
	Certificate string `toml:"certificate"`
	// PrivateKey is a PEM file, an RFC 7512 "pkcs11:" URI or a "tpm:"
	// reference (see hsm/tpm).
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
	// Refresh is eager (refresh in the background) or deferred (on demand).
	Refresh        credprovider.Mode `toml:"refresh"`
	AdvisoryWindow Duration          `toml:"advisory_window"`
	// MandatoryWindow is how long before expiry credentials stop being served.
	MandatoryWindow Duration `toml:"mandatory_window"`
}

// RoleConfig is one more IAM role, assumed with STS from a source.
type RoleConfig struct {
	Name        string   `toml:"name"`
	RoleARN     string   `toml:"role_arn"`
	Source      Source   `toml:"source"`
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

	// workload is set on the role session of a [[workload]] (scopedRole).
	workload string
}

// ServeConfig is how local programs reach the credentials.
type ServeConfig struct {
	Socket            string `toml:"socket"`
	AllowUIDs         []int  `toml:"allow_uids"`
	AllowGIDs         []int  `toml:"allow_gids"`
	ContainerEndpoint string `toml:"container_endpoint"`
	TokenFile         string `toml:"token_file"`
	// IMDSEndpoint is the optional IMDSv2-compatible endpoint's address.
	IMDSEndpoint string `toml:"imds_endpoint"`
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
	Level LogLevel `toml:"level"`
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
		return nil, &ConfigError{Errors: []*FieldError{tomlError(name, perr, nil)}}
	}
	if errs := checkTypes(name, b); len(errs) > 0 {
		return nil, &ConfigError{Errors: errs}
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
		return nil, &ConfigError{Errors: []*FieldError{tomlError(name, err, lines)}}
	}
	v := &validator{file: name, lines: lines}
	c.applyDefaults(dirs)
	c.validate(v)
	if len(v.errs) > 0 {
		return nil, &ConfigError{Errors: v.errs}
	}
	return c, nil
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
