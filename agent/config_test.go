package agent

import (
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tetherd/tether/credprovider"
	"github.com/tetherd/tether/platform"
)

// writeIdentityFiles makes the files a configuration refers to, so validation
// of paths has something real to find.
func writeIdentityFiles(t *testing.T) (dir string) {
	t.Helper()
	dir = t.TempDir()
	for _, name := range []string{"device.crt", "device.key", "pin"} {
		require.NoError(t, os.WriteFile(filepath.Join(dir, name), []byte("x"), 0o600))
	}
	return dir
}

func minimalConfig(dir string) string {
	return `
[identity]
thing_name  = "gw-0001"
certificate = "` + dir + `/device.crt"
private_key = "` + dir + `/device.key"

[aws]
region              = "eu-west-1"
credential_endpoint = "c1abc.credentials.iot.eu-west-1.amazonaws.com"
role_alias          = "gateway-role"
`
}

// TestParseConfigDefaults ensures that a minimal file gets the documented defaults.
func TestParseConfigDefaults(t *testing.T) {
	dir := writeIdentityFiles(t)
	c, err := ParseConfig("t.toml", []byte(minimalConfig(dir)))
	require.NoError(t, err)
	assert.Zero(t, c.AWS.Duration.Duration, "no duration asked: the role alias decides")
	assert.Equal(t, 15*time.Minute, c.AWS.AdvisoryWindow.Duration)
	assert.Equal(t, 30*time.Second, c.AWS.MandatoryWindow.Duration)
	assert.Equal(t, credprovider.Eager, c.AWS.Refresh)
	assert.Equal(t, "/run/tether/tether.sock", c.Serve.Socket)
	assert.Equal(t, "/var/lib/tether/state.db", c.State.Path)
	assert.Equal(t, 8883, c.MQTT.Port)
	assert.Equal(t, "gw-0001", c.MQTT.ClientID)
}

// TestParseConfigDefaultsFollowSystemdDirectories ensures that default paths follow $STATE_DIRECTORY and $RUNTIME_DIRECTORY.
func TestParseConfigDefaultsFollowSystemdDirectories(t *testing.T) {
	dir := writeIdentityFiles(t)
	dirs := platform.DirectoriesFrom(func(k string) string {
		return map[string]string{"STATE_DIRECTORY": "/var/lib/x", "RUNTIME_DIRECTORY": "/run/x"}[k]
	})
	c, err := parseConfig("t.toml", []byte(minimalConfig(dir)), dirs)
	require.NoError(t, err)
	assert.Equal(t, "/var/lib/x/state.db", c.State.Path)
	assert.Equal(t, "/run/x/tether.sock", c.Serve.Socket)
	assert.Equal(t, "/run/x/token", c.Serve.TokenFile)
}

// TestParseConfigErrors ensures that each kind of configuration mistake is reported with its file, line, key and what to do.
func TestParseConfigErrors(t *testing.T) {
	dir := writeIdentityFiles(t)
	base := minimalConfig(dir)
	tests := []struct {
		name   string
		config string
		want   []string // each must appear in the error text
	}{
		{"unknown key names its line", base + "colour = \"blue\"\n", []string{"t.toml:11: aws.colour: unknown key"}},
		{"unknown section", base + "[mqqt]\nport = 1\n", []string{"t.toml:11: mqqt: unknown key"}},
		{"bad duration", base + "duration = \"ten minutes\"\n", []string{"t.toml:11", "is not a duration"}},
		{"duration out of range", base + "duration = \"5m\"\n", []string{"t.toml:11: aws.duration: 5m0s is out of range"}},
		{"refresh mode", base + "refresh = \"lazy\"\n", []string{"aws.refresh: \"lazy\" is not a refresh mode"}},
		{"missing file", strings.Replace(base, dir+"/device.crt", dir+"/nope.crt", 1), []string{"t.toml:4: identity.certificate:", "nope.crt: no such file"}},
		{"relative path", strings.Replace(base, dir+"/device.key", "device.key", 1), []string{"identity.private_key: \"device.key\" must be an absolute path"}},
		{"endpoint with scheme", strings.Replace(base, `"c1abc.`, `"https://c1abc.`, 1), []string{"aws.credential_endpoint", "without a scheme"}},
		{"container endpoint not loopback", base + "[serve]\ncontainer_endpoint = \"0.0.0.0:2020\"\n", []string{"serve.container_endpoint", "loopback"}},
		{"container endpoint with allow lists", base + "[serve]\ncontainer_endpoint = \"127.0.0.1:2020\"\nallow_uids = [0]\n", []string{"serve.container_endpoint: cannot be combined with serve.allow_uids"}},
		{"pkcs11 without object", strings.Replace(base, `"`+dir+`/device.key"`, `"pkcs11:token=t"`, 1), []string{"names no key"}},
		{"pkcs11 missing module", strings.Replace(base, `"`+dir+`/device.key"`, `"pkcs11:token=t;object=k?module-path=/nope/lib.so"`, 1), []string{"module-path", "/nope/lib.so"}},
		{"role arn", base + "[[role]]\nname = \"a\"\nrole_arn = \"arn:aws:iam::12:role/x\"\n", []string{"t.toml:13: role[0].role_arn", "is not an IAM role ARN"}},
		{"role duplicate", base + "[[role]]\nname = \"a\"\nrole_arn = \"arn:aws:iam::123456789012:role/x\"\n[[role]]\nname = \"a\"\nrole_arn = \"arn:aws:iam::123456789012:role/x\"\n", []string{"role[1].name: \"a\" is already the name of role[0]"}},
		{"mfa without source", base + "[[role]]\nname = \"a\"\nrole_arn = \"arn:aws:iam::123456789012:role/x\"\nmfa_serial = \"arn:aws:iam::123456789012:mfa/me\"\n", []string{"role[0].mfa_serial: is set but there is no token source"}},
		{"source loop", base + "[[role]]\nname = \"a\"\nsource = \"role:b\"\nrole_arn = \"arn:aws:iam::123456789012:role/x\"\n[[role]]\nname = \"b\"\nsource = \"role:a\"\nrole_arn = \"arn:aws:iam::123456789012:role/x\"\n", []string{"role[0].source: role \"a\" is its own source", "role[1].source: role \"b\" is its own source"}},
		{"self source", base + "[[role]]\nname = \"a\"\nsource = \"role:a\"\nrole_arn = \"arn:aws:iam::123456789012:role/x\"\n", []string{"role \"a\" is its own source"}},
		{"unknown source role", base + "[[role]]\nname = \"a\"\nsource = \"role:zz\"\nrole_arn = \"arn:aws:iam::123456789012:role/x\"\n", []string{"role \"zz\" is not defined"}},
		{"bad filter", base + "[mqtt]\nendpoint = \"a.example.com\"\n[[mqtt.subscribe]]\ntopic = \"a/#/b\"\n", []string{"t.toml:14: mqtt.subscribe[0].topic: filter \"a/#/b\": # must be the last level"}},
		{"control character in a filter", base + "[mqtt]\nendpoint = \"a.example.com\"\n[[mqtt.subscribe]]\ntopic = \"a/\\tb/#\"\n", []string{"t.toml:14: mqtt.subscribe[0].topic: filter contains U+0009"}},
		{"subscription qos", base + "[mqtt]\nendpoint = \"a.example.com\"\n[[mqtt.subscribe]]\ntopic = \"t\"\nqos = 2\n", []string{"mqtt.subscribe.qos: unknown key"}},
		{"bad source", base + "[[role]]\nname = \"a\"\nsource = \"roles:b\"\nrole_arn = \"arn:aws:iam::123456789012:role/x\"\n", []string{"t.toml:13: role[0].source: \"roles:b\" is not a source"}},
		{"bad log level", base + "[log]\nlevel = \"verbose\"\n", []string{"t.toml:12: log.level: \"verbose\" is not a level"}},
		{"source naming no role", base + "[[role]]\nname = \"a\"\nsource = \"role:\"\nrole_arn = \"arn:aws:iam::123456789012:role/x\"\n", []string{"\"role:\" is not a source"}},
		{"wrong type", base + "[mqtt]\nport = \"eight\"\n", []string{"t.toml:12"}},
		{"not toml", "[identity\n", []string{"not valid TOML"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseConfig("t.toml", []byte(tt.config))
			require.Error(t, err)
			var ce *ConfigError
			require.ErrorAs(t, err, &ce)
			for _, w := range tt.want {
				assert.Contains(t, err.Error(), w)
			}
		})
	}
}

// TestParseConfigReportsEveryError ensures that one parse reports every validation error, not only the first.
func TestParseConfigReportsEveryError(t *testing.T) {
	_, err := ParseConfig("t.toml", []byte("[aws]\nduration = \"1s\"\nadvisory_window = \"1s\"\n"))
	var ce *ConfigError
	require.ErrorAs(t, err, &ce)
	assert.GreaterOrEqual(t, len(ce.Errors), 6, err.Error())
	var fe *FieldError
	assert.ErrorAs(t, err, &fe)
}

// TestRedacted ensures that the configuration `tether config check` prints
// holds neither a PIN value nor an external id.
func TestRedacted(t *testing.T) {
	c := &Config{Identity: IdentityConfig{PrivateKey: "pkcs11:token=t;object=k?module-path=/m.so&pin-value=1234"},
		Roles: []RoleConfig{{Name: "a", ExternalID: "s3cr3t-id"}}}
	b, err := c.Redacted().Marshal()
	require.NoError(t, err)
	assert.NotContains(t, string(b), "1234")
	assert.NotContains(t, string(b), "s3cr3t-id")
	assert.Contains(t, string(b), "pin-value=REDACTED")
	assert.Equal(t, "s3cr3t-id", c.Roles[0].ExternalID, "the original is left alone")
}

// TestPackagedConfig ensures that the shipped /etc/tether/tether.toml uses only known keys and is wrong only in the device's paths.
//
// TestPackagedConfig checks that the default /etc/tether/tether.toml we ship
// uses only keys the parser knows and is wrong only in the paths a device
// provides.
func TestPackagedConfig(t *testing.T) {
	b, err := os.ReadFile("../packaging/tether.toml")
	require.NoError(t, err)
	_, err = ParseConfig("tether.toml", b)
	if err == nil {
		return
	}
	var ce *ConfigError
	require.ErrorAs(t, err, &ce)
	for _, fe := range ce.Errors {
		assert.Contains(t, []string{"identity.certificate", "identity.private_key"}, fe.Key, fe.Error())
		assert.Contains(t, fe.Issue, "no such file", fe.Error())
	}
}

// TestParseConfigEmptyValuesAreDefaults ensures that source, refresh and
// log.level written as "" mean their defaults, as when they are left out.
func TestParseConfigEmptyValuesAreDefaults(t *testing.T) {
	dir := writeIdentityFiles(t)
	c, err := ParseConfig("t.toml", []byte(minimalConfig(dir)+"refresh = \"\"\n[log]\nlevel = \"\"\n[[role]]\nname = \"a\"\nsource = \"\"\nrole_arn = \"arn:aws:iam::123456789012:role/x\"\n"))
	require.NoError(t, err)
	assert.Equal(t, credprovider.Eager, c.AWS.Refresh)
	assert.Equal(t, slog.LevelInfo, c.Log.Level.Level)
	assert.Equal(t, Source{Kind: SourceDevice}, c.Roles[0].Source)
}
