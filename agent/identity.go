package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	toml "github.com/pelletier/go-toml/v2"

	"github.com/tetherd/tether/hsm"
	"github.com/tetherd/tether/mqtt"
	"github.com/tetherd/tether/platform"
)

// ProvisionConfig is the [provision] section: what `tether provision` needs
// to exchange a claim certificate for the device's own (docs/identity.md).
type ProvisionConfig struct {
	// ClaimCertificate and ClaimPrivateKey are the shared claim identity
	// (the key a PEM file or a pkcs11: URI).
	ClaimCertificate string `toml:"claim_certificate"`
	ClaimPrivateKey  string `toml:"claim_private_key"`
	// Template is the fleet provisioning template's name.
	Template string `toml:"template"`
	// Parameters are the template's parameters. A value is literal, or
	// "file:PATH" (the file's first line), or "command:PROGRAM ARG..."
	// (its output's first line; run without a shell), or "env:NAME".
	Parameters map[string]string `toml:"parameters"`
	// KeyType of the new device key: ec-p256 (default), ec-p384, rsa-2048.
	KeyType string `toml:"key_type"`
	// ClientID is the MQTT client id of the claim's connection; default
	// "provision-" and a digest of the new key, the same across retries.
	ClientID string `toml:"client_id"`
}

// Rotation defaults.
const (
	// DefaultRotateAt is the fraction of the certificate's lifetime after
	// which it is renewed when neither rotate_before nor rotate_at is set
	// (Azure's identity service renews at 80 % too).
	DefaultRotateAt = 0.8
	// DefaultFallback is how long the previous identity is kept after a
	// rotation committed.
	DefaultFallback = 7 * 24 * time.Hour
)

func (c *Config) validateLifecycle(v *validator) {
	id := &c.Identity
	if id.RotateBefore.IsSet() {
		v.duration("identity.rotate_before", id.RotateBefore.Duration, time.Hour, 5*365*24*time.Hour)
	}
	if id.RotateAt != 0 && (id.RotateAt < 0.1 || id.RotateAt > 0.99) {
		v.fail("identity.rotate_at", "%v is out of range; use a fraction of the certificate's lifetime between 0.1 and 0.99, e.g. 0.8", id.RotateAt)
	}
	if id.RotationTemplate != "" && !validName(id.RotationTemplate, 36) {
		v.fail("identity.rotation_template", "%q is not a provisioning template name (1-36 of A-Z a-z 0-9 _ -)", id.RotationTemplate)
	}
	if id.RetiredTopic != "" {
		if err := mqtt.ValidatePublish(id.RetiredTopic, nil, 1); err != nil {
			v.fail("identity.retired_topic", "%v", err)
		}
	}
	if id.Fallback.IsSet() {
		v.duration("identity.fallback", id.Fallback.Duration, 0, 365*24*time.Hour)
	}
	if id.RotationTemplate != "" && c.MQTT.Endpoint == "" {
		v.fail("mqtt.endpoint", "missing, but identity.rotation_template is set; rotation talks to AWS IoT over MQTT")
	}

	p := &c.Provision
	if p.ClaimCertificate == "" && p.ClaimPrivateKey == "" && p.Template == "" {
		return
	}
	if p.Template == "" {
		v.fail("provision.template", "missing; set the fleet provisioning template's name")
	} else if !validName(p.Template, 36) {
		v.fail("provision.template", "%q is not a provisioning template name (1-36 of A-Z a-z 0-9 _ -)", p.Template)
	}
	for k, val := range p.Parameters {
		if _, _, err := parameterSource(val); err != nil {
			v.fail("provision.parameters."+k, "%v", err)
		}
	}
	switch p.KeyType {
	case "", string(hsm.KeyECP256), string(hsm.KeyECP384), string(hsm.KeyRSA2048):
	default:
		v.fail("provision.key_type", "%q is not a key type; use ec-p256, ec-p384 or rsa-2048", p.KeyType)
	}
	if len(p.ClientID) > 128 {
		v.fail("provision.client_id", "is %d bytes; AWS IoT allows at most 128", len(p.ClientID))
	}
}

// rotateAt returns when the certificate valid from notBefore to notAfter
// is due for renewal: rotate_before ahead of expiry, or rotate_at of its
// lifetime, whichever comes first.
func (id *IdentityConfig) rotateAt(notBefore, notAfter time.Time) time.Time {
	life := notAfter.Sub(notBefore)
	frac := id.RotateAt
	if frac == 0 && !id.RotateBefore.IsSet() {
		frac = DefaultRotateAt
	}
	due := notAfter
	if frac > 0 {
		due = notBefore.Add(time.Duration(float64(life) * frac))
	}
	if id.RotateBefore.IsSet() {
		if b := notAfter.Add(-id.RotateBefore.Duration); b.Before(due) {
			due = b
		}
	}
	// A rotate_before longer than the certificates AWS issues would rotate
	// again as soon as a rotation committed: never before half the lifetime
	// (tether identity rotate still can).
	if half := notBefore.Add(life / 2); due.Before(half) {
		due = half
	}
	return due
}

func (id *IdentityConfig) fallback() time.Duration {
	if id.Fallback.IsSet() {
		return id.Fallback.Duration
	}
	return DefaultFallback
}

// parameterSource splits a parameter value into its kind and argument.
func parameterSource(val string) (kind, arg string, err error) {
	for _, k := range []string{"file:", "command:", "env:"} {
		if a, ok := strings.CutPrefix(val, k); ok {
			kind, arg = strings.TrimSuffix(k, ":"), a
			switch {
			case kind == "file" && !filepath.IsAbs(a):
				return "", "", fmt.Errorf("file:%s must be an absolute path", a)
			case kind == "command" && (len(strings.Fields(a)) == 0 || !filepath.IsAbs(strings.Fields(a)[0])):
				return "", "", fmt.Errorf("command:%s must start with an absolute program path", a)
			case kind == "env" && a == "":
				return "", "", errors.New("env: names no variable")
			}
			return kind, arg, nil
		}
	}
	return "literal", val, nil
}

// resolveParameters reads each template parameter from its source.
func resolveParameters(ctx context.Context, params map[string]string) (map[string]string, error) {
	out := make(map[string]string, len(params))
	for k, val := range params {
		kind, arg, err := parameterSource(val)
		if err != nil {
			return nil, fmt.Errorf("provision.parameters.%s: %w", k, err)
		}
		var got string
		switch kind {
		case "literal":
			got = arg
		case "env":
			got = os.Getenv(arg)
		case "file":
			b, err := os.ReadFile(arg)
			if err != nil {
				return nil, fmt.Errorf("provision.parameters.%s: %w", k, unwrapPathError(err))
			}
			got = firstLine(b)
		case "command":
			f := strings.Fields(arg)
			cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			var stderr bytes.Buffer
			cmd := exec.CommandContext(cctx, f[0], f[1:]...)
			cmd.Stderr = &stderr
			b, err := cmd.Output()
			cancel()
			if err != nil {
				return nil, fmt.Errorf("provision.parameters.%s: %s: %w: %s", k, f[0], err, firstLine(stderr.Bytes()))
			}
			got = firstLine(b)
		}
		if got == "" {
			return nil, fmt.Errorf("provision.parameters.%s: %s gives an empty value", k, val)
		}
		out[k] = got
	}
	return out, nil
}

func firstLine(b []byte) string {
	line, _, _ := strings.Cut(string(b), "\n")
	return strings.TrimSpace(line)
}

// LoadProvisionConfig reads the configuration `tether provision` completes:
// like LoadConfig, but the identity it is about to create may be missing
// (no thing_name yet, no certificate or key file yet). [provision] must be
// set.
func LoadProvisionConfig(path string) (*Config, error) {
	c, err := LoadConfig(path)
	if err == nil {
		return c, requireProvision(c)
	}
	var ce *ConfigError
	if !errors.As(err, &ce) {
		return nil, err
	}
	b, rerr := os.ReadFile(path)
	if rerr != nil {
		return nil, err
	}
	// Decode once more without the identity's checks: thing_name is
	// filled from RegisterThing, and the files are what provisioning
	// writes. Everything else must be right.
	var probe struct {
		Identity IdentityConfig `toml:"identity"`
		MQTT     struct {
			ClientID string `toml:"client_id"`
		} `toml:"mqtt"`
	}
	if derr := toml.Unmarshal(b, &probe); derr != nil {
		return nil, err
	}
	var rest []*FieldError
	for _, fe := range ce.Errors {
		switch fe.Key {
		case "identity.thing_name":
			if probe.Identity.ThingName == "" {
				continue
			}
		case "mqtt.client_id":
			// It defaults to the thing name provisioning is about to write.
			if probe.Identity.ThingName == "" && probe.MQTT.ClientID == "" {
				continue
			}
		case "identity.certificate", "identity.private_key":
			val := probe.Identity.Certificate
			if fe.Key == "identity.private_key" {
				// The file a key reference names (PEM, TPM key file).
				val, _ = hsm.KeyFile(probe.Identity.PrivateKey)
			}
			if filepath.IsAbs(val) {
				if _, serr := os.Stat(val); errors.Is(serr, os.ErrNotExist) {
					continue
				}
			}
		}
		rest = append(rest, fe)
	}
	if len(rest) > 0 {
		return nil, &ConfigError{Errors: rest}
	}
	c = &Config{File: path}
	if derr := toml.Unmarshal(b, c); derr != nil {
		return nil, &ConfigError{Errors: []*FieldError{tomlError(path, derr, nil)}}
	}
	c.applyDefaults(platform.Directories())
	return c, requireProvision(c)
}

func requireProvision(c *Config) error {
	p := &c.Provision
	var errs []*FieldError
	need := func(key, val, what string) {
		if val == "" {
			errs = append(errs, &FieldError{File: c.File, Key: key, Issue: "missing; " + what})
		}
	}
	need("provision.claim_certificate", p.ClaimCertificate, "set the claim certificate's file")
	need("provision.claim_private_key", p.ClaimPrivateKey, "set the claim key's PEM file or pkcs11: URI")
	need("provision.template", p.Template, "set the fleet provisioning template's name")
	need("identity.certificate", c.Identity.Certificate, "set where the device certificate goes")
	need("identity.private_key", c.Identity.PrivateKey, "set where the device key goes: a new PEM file or a pkcs11: URI")
	need("mqtt.endpoint", c.MQTT.Endpoint, "set the AWS IoT data endpoint (aws iot describe-endpoint --endpoint-type iot:Data-ATS)")
	if len(errs) > 0 {
		return &ConfigError{Errors: errs}
	}
	return nil
}

// isKeyLine reports whether line assigns key (`key = …`, spaces allowed).
func isKeyLine(line, key string) bool {
	const space = " \t\r\n\f"
	rest, ok := strings.CutPrefix(strings.TrimLeft(line, space), key)
	return ok && strings.HasPrefix(strings.TrimLeft(rest, space), "=")
}

// setTOMLKey sets key = "value" in [section] of a TOML document, keeping
// every other line (comments included): it replaces the key's line, or
// adds one after the section header, or adds the section.
func setTOMLKey(doc []byte, section, key, value string) []byte {
	lines := strings.Split(string(doc), "\n")
	line := fmt.Sprintf("%s = %q", key, value)
	in, header := false, -1
	for i, l := range lines {
		t := strings.TrimSpace(l)
		if strings.HasPrefix(t, "[") {
			in = t == "["+section+"]"
			if in {
				header = i
			}
			continue
		}
		if in && isKeyLine(l, key) {
			lines[i] = line
			return []byte(strings.Join(lines, "\n"))
		}
	}
	if header < 0 {
		out := strings.TrimRight(string(doc), "\n") + "\n\n[" + section + "]\n" + line + "\n"
		return []byte(out)
	}
	lines = append(lines[:header+1], append([]string{line}, lines[header+1:]...)...)
	return []byte(strings.Join(lines, "\n"))
}
