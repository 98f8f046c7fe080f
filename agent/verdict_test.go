package agent

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	toml "github.com/pelletier/go-toml/v2"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tetherd/tether/credprovider"
	"github.com/tetherd/tether/credprovider/iotcredtest"
	"github.com/tetherd/tether/hsm"
	"github.com/tetherd/tether/platform"
)

// The tests in this file feed the same input to ParseConfig and to the
// package that owns the rule, and expect the same verdict: `tether config
// check` exists to say OK exactly when `tether run` will start.

// configVerdict parses text and returns the errors reported under key
// (a display key such as "identity.private_key" or "role[0].region").
func configVerdict(t *testing.T, text, key string) []string {
	t.Helper()
	_, err := ParseConfig("t.toml", []byte(text))
	if err == nil {
		return nil
	}
	var ce *ConfigError
	require.ErrorAs(t, err, &ce, "%v", err)
	var out []string
	for _, fe := range ce.Errors {
		if fe.Key == key || strings.HasPrefix(fe.Key, key+".") || strings.HasPrefix(fe.Key, key+" ") {
			out = append(out, fe.Error())
		}
	}
	return out
}

// decoded is text decoded and defaulted but not validated: the values
// `tether run` would hand the libraries.
func decoded(t *testing.T, text string) *Config {
	t.Helper()
	c := &Config{}
	require.NoError(t, toml.NewDecoder(bytes.NewReader([]byte(text))).DisallowUnknownFields().Decode(c))
	c.applyDefaults(platform.Directories())
	return c
}

// keysVerdict is configVerdict for each TOML key of keys.
func keysVerdict(t *testing.T, text string, keys map[string]string) []string {
	t.Helper()
	var out []string
	for _, key := range keys {
		out = append(out, configVerdict(t, text, key)...)
	}
	return out
}

func sameVerdict(t *testing.T, input string, libErr error, cfgErrs []string) {
	t.Helper()
	if libErr == nil {
		assert.Empty(t, cfgErrs, "%s: the library accepts it, config check must too", input)
	} else {
		assert.NotEmpty(t, cfgErrs, "%s: the library refuses it (%v), config check must too", input, libErr)
	}
}

// TestVerdictKeyURI ensures that config check accepts a pkcs11: key
// reference exactly when hsm accepts it: the typos lable= and pin-vaule=
// are refused, pin-source=/abs/path is accepted, and the files named are
// checked alike.
func TestVerdictKeyURI(t *testing.T) {
	if !hsm.PKCS11Available {
		t.Skip("a static build refuses every pkcs11: key (TestPKCS11KeyNeedsCgoBuild)")
	}
	dir := writeIdentityFiles(t)
	module := filepath.Join(dir, "module.so")
	require.NoError(t, os.WriteFile(module, []byte("x"), 0o644))
	pin := filepath.Join(dir, "pin")
	openPIN := filepath.Join(dir, "open-pin")
	require.NoError(t, os.WriteFile(openPIN, []byte("1234"), 0o644))
	for _, uri := range []string{
		"pkcs11:token=t;object=k?module-path=" + module,
		"pkcs11:token=t;lable=k?module-path=" + module,
		"pkcs11:token=t;object=k;lable=x?module-path=" + module,
		"pkcs11:token=t;object=k?module-path=" + module + "&pin-vaule=1234",
		"pkcs11:token=t;object=k?module-path=" + module + "&pin-source=" + pin,
		"pkcs11:token=t;object=k?module-path=" + module + "&pin-source=file:" + pin,
		"pkcs11:token=t;object=k?module-path=" + module + "&pin-source=file:" + openPIN,
		"pkcs11:token=t;object=k?module-path=" + module + "&pin-source=credential:pin",
		"pkcs11:token=t;object=k?module-path=" + module + "&pin-source=env:PIN",
		"pkcs11:token=t;object=k?module-path=" + filepath.Join(dir, "missing.so"),
		"pkcs11:token=t?module-path=" + module,
		"pkcs11:token=t;object=k;type=cert?module-path=" + module,
		"pkcs11:token=t;object=%zz?module-path=" + module,
		"pkcs11:slot-id=x;object=k?module-path=" + module,
	} {
		u, libErr := hsm.ParseKeyURI(uri)
		if libErr == nil {
			libErr = u.CheckFiles(os.Getenv)
		}
		text := strings.Replace(minimalConfig(dir), `"`+dir+`/device.key"`, `"`+uri+`"`, 1)
		sameVerdict(t, uri, libErr, configVerdict(t, text, "identity.private_key"))
	}
}

// TestVerdictCAFile ensures that config check accepts a CA bundle exactly
// when credprovider.LoadCAFile does, for aws.ca_file and mqtt.ca_file: a
// bundle with one broken certificate among good ones is refused.
func TestVerdictCAFile(t *testing.T) {
	dir := writeIdentityFiles(t)
	pki, err := iotcredtest.NewPKI()
	require.NoError(t, err)
	broken := "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGUgZGVy\n-----END CERTIFICATE-----\n"
	files := map[string][]byte{
		"good.pem":          pki.CAPEM,
		"one-broken.pem":    append(append([]byte{}, pki.CAPEM...), broken...),
		"broken-first.pem":  append([]byte(broken), pki.CAPEM...),
		"no-cert.pem":       []byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"),
		"not-pem.pem":       []byte("hello"),
		"cert-and-junk.pem": append(append([]byte{}, pki.CAPEM...), "trailing junk\n"...),
	}
	var paths []string
	for name, b := range files {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, b, 0o644))
		paths = append(paths, p)
	}
	paths = append(paths, filepath.Join(dir, "missing.pem"))
	for _, p := range paths {
		_, libErr := credprovider.LoadCAFile(p)
		base := minimalConfig(dir)
		sameVerdict(t, "aws.ca_file="+p, libErr, configVerdict(t, base+"ca_file = \""+p+"\"\n", "aws.ca_file"))
		sameVerdict(t, "mqtt.ca_file="+p, libErr, configVerdict(t, base+"[mqtt]\nendpoint = \"a.example.com\"\nca_file = \""+p+"\"\n", "mqtt.ca_file"))
	}
}

// TestVerdictDeviceOptions ensures that config check accepts the [aws] and
// [identity] values the device role is built from exactly when
// credprovider.NewIoT does.
func TestVerdictDeviceOptions(t *testing.T) {
	dir := writeIdentityFiles(t)
	base := minimalConfig(dir)
	for _, edit := range []struct{ from, to string }{
		{"", ""},
		{`"c1abc.credentials.iot.eu-west-1.amazonaws.com"`, `"c1abc.credentials.iot.eu-west-1.amazonaws.com:8443"`},
		{`"c1abc.credentials.iot.eu-west-1.amazonaws.com"`, `"https://c1abc.example.com"`},
		{`"c1abc.credentials.iot.eu-west-1.amazonaws.com"`, `"c1abc.example.com:0"`},
		{`"c1abc.credentials.iot.eu-west-1.amazonaws.com"`, `"bad_host.example.com"`},
		{`"c1abc.credentials.iot.eu-west-1.amazonaws.com"`, `"127.0.0.1:443"`},
		{`"gateway-role"`, `"gateway/role"`},
		{`"gateway-role"`, `""`},
		{`"gw-0001"`, `"gw 0001"`},
		{`role_alias`, "duration = \"5m\"\nrole_alias"},
		{`role_alias`, "duration = \"1h0m0.5s\"\nrole_alias"},
		{`role_alias`, "duration = \"12h\"\nrole_alias"},
	} {
		text := strings.Replace(base, edit.from, edit.to, 1)
		o := deviceOptions(decoded(t, text))
		sameVerdict(t, edit.to, o.Validate(), keysVerdict(t, text, iotKeys))
	}
}

// TestVerdictRoleOptions ensures that config check accepts a [[role]]'s
// provider options exactly when credprovider's constructors accept them,
// built by roleProvider from the same decoded file.
func TestVerdictRoleOptions(t *testing.T) {
	dir := writeIdentityFiles(t)
	totp := filepath.Join(dir, "totp")
	require.NoError(t, os.WriteFile(totp, []byte("JBSWY3DPEHPK3PXP"), 0o600))
	openTOTP := filepath.Join(dir, "open-totp")
	require.NoError(t, os.WriteFile(openTOTP, []byte("JBSWY3DPEHPK3PXP"), 0o644))
	long := strings.Repeat("x", 2100)
	for _, role := range []string{
		`role_arn = "arn:aws:iam::123456789012:role/a"`,
		`role_arn = "arn:aws:iam::12:role/a"`,
		`role_arn = "arn:aws:iam::123456789012:role/a"` + "\nsession_name = \"x\"",
		`role_arn = "arn:aws:iam::123456789012:role/a"` + "\nduration = \"10m\"",
		`role_arn = "arn:aws:iam::123456789012:role/a"` + "\nexternal_id = \"x\"",
		`role_arn = "arn:aws:iam::123456789012:role/a"` + "\npolicy = \"{\"",
		`role_arn = "arn:aws:iam::123456789012:role/a"` + "\npolicy = '\"" + long + "\"'",
		`role_arn = "arn:aws:iam::123456789012:role/a"` + "\npolicy_arns = [\"arn:aws:iam::aws:policy/ReadOnlyAccess\"]",
		`role_arn = "arn:aws:iam::123456789012:role/a"` + "\npolicy_arns = [\"arn:aws:iam::aws:role/x\"]",
		`role_arn = "arn:aws:iam::123456789012:role/a"` + "\ntags = { a = \"1\" }\ntransitive_tag_keys = [\"b\"]",
		`role_arn = "arn:aws:iam::123456789012:role/a"` + "\nsource_identity = \"a b\"",
		`role_arn = "arn:aws:iam::123456789012:role/a"` + "\nsts_endpoint = \"sts.example.com\"",
		`role_arn = "arn:aws:iam::123456789012:role/a"` + "\nregion = \"mars\"",
		`role_arn = "arn:aws:iam::123456789012:role/a"` + "\nmfa_serial = \"arn:aws:iam::123456789012:mfa/gw\"\nmfa_totp_file = \"" + totp + "\"",
		`role_arn = "arn:aws:iam::123456789012:role/a"` + "\nmfa_serial = \"arn:aws:iam::123456789012:mfa/gw\"\nmfa_totp_file = \"" + openTOTP + "\"",
		`role_arn = "arn:aws:iam::123456789012:role/a"` + "\nmfa_serial = \"arn:aws:iam::123456789012:mfa/gw\"\nmfa_command = [\"oathtool\"]",
		`role_arn = "arn:aws:iam::123456789012:role/a"` + "\nmfa_serial = \"arn:aws:iam::123456789012:mfa/gw\"",
		`role_arn = "arn:aws:iam::123456789012:role/a"` + "\nmfa_serial = \"short\"\nmfa_command = [\"/bin/true\"]",
		`credential_command = ["/usr/bin/helper", "--json"]`,
		`credential_command = ["helper"]`,
		`role_arn = "arn:aws:iam::123456789012:role/a"` + "\nweb_identity_token_file = \"" + totp + "\"\nsession_name = \"x\"",
	} {
		text := minimalConfig(writeIdentityFiles(t)) + "[[role]]\nname = \"r\"\n" + role + "\n"
		r := decoded(t, text).Roles[0]
		_, libErr := roleProvider(&r, aws.AnonymousCredentials{})
		sameVerdict(t, role, libErr, configVerdict(t, text, "role[0]"))
	}
}

// TestVerdictRefreshOptions ensures that config check accepts the [aws]
// refresh windows exactly when the refresh engine does, within the agent's
// own bounds (advisory window 1m-6h, mandatory at most 1h).
func TestVerdictRefreshOptions(t *testing.T) {
	dir := writeIdentityFiles(t)
	for _, windows := range []string{
		"",
		"advisory_window = \"10m\"\nmandatory_window = \"1m\"\n",
		"mandatory_window = \"10s\"\n",
		"advisory_window = \"5m\"\nmandatory_window = \"5m\"\n",
		"advisory_window = \"2m\"\nmandatory_window = \"3m\"\n",
		"refresh = \"deferred\"\nmandatory_window = \"30s\"\n",
	} {
		text := minimalConfig(dir) + windows
		libErr := refreshOptions(decoded(t, text)).Validate()
		sameVerdict(t, windows, libErr, keysVerdict(t, text, refreshKeys))
	}
}

// TestVerdictMQTTSettings ensures that config check accepts the [mqtt]
// endpoint, port and client id exactly when mqtt.New does.
func TestVerdictMQTTSettings(t *testing.T) {
	dir := writeIdentityFiles(t)
	for _, mqttSection := range []string{
		"endpoint = \"a1-ats.iot.eu-west-1.amazonaws.com\"\n",
		"endpoint = \"a1-ats.iot.eu-west-1.amazonaws.com:443\"\n",
		"endpoint = \"mqtts://a1-ats.iot.eu-west-1.amazonaws.com\"\n",
		"endpoint = \"a1-ats.iot.eu-west-1.amazonaws.com:70000\"\n",
		"endpoint = \"a1.example.com\"\nport = 99999\n",
		"endpoint = \"a1.example.com\"\nclient_id = \"" + strings.Repeat("c", 129) + "\"\n",
		"endpoint = \"a1.example.com\"\nclient_id = \"" + strings.Repeat("c", 128) + "\"\n",
	} {
		text := minimalConfig(dir) + "[mqtt]\n" + mqttSection
		libErr := sessionOptions(decoded(t, text)).Validate()
		sameVerdict(t, mqttSection, libErr, keysVerdict(t, text, mqttKeys))
	}
}
