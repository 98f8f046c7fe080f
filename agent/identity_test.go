package agent

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestRotateAt ensures that a rotation is due at the earlier of
// rotate_before and rotate_at, at 80 % of the lifetime by default, and
// never before half the lifetime.
func TestRotateAt(t *testing.T) {
	nb := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	na := nb.Add(100 * 24 * time.Hour)
	day := 24 * time.Hour
	dur := func(d time.Duration) Duration { return Duration{Duration: d, set: true} }
	cases := []struct {
		name string
		id   IdentityConfig
		want time.Time
	}{
		{"default 80 %", IdentityConfig{}, nb.Add(80 * day)},
		{"rotate_at", IdentityConfig{RotateAt: 0.6}, nb.Add(60 * day)},
		{"rotate_before alone", IdentityConfig{RotateBefore: dur(30 * day)}, nb.Add(70 * day)},
		{"the earlier of both", IdentityConfig{RotateAt: 0.9, RotateBefore: dur(30 * day)}, nb.Add(70 * day)},
		{"the earlier of both, other way", IdentityConfig{RotateAt: 0.6, RotateBefore: dur(30 * day)}, nb.Add(60 * day)},
		{"never before half the lifetime", IdentityConfig{RotateBefore: dur(90 * day)}, nb.Add(50 * day)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.want, tc.id.rotateAt(nb, na))
		})
	}
}

// TestValidName ensures that the agent's names are 1 to maxLen of a-z A-Z
// 0-9 _ - and nothing else.
func TestValidName(t *testing.T) {
	for _, s := range []string{"a", "telemetry", "Role_1-x", strings.Repeat("r", 64)} {
		assert.True(t, validName(s, 64), s)
	}
	for _, s := range []string{"", strings.Repeat("r", 65), "a b", "a/b", "a.b", "é", "a\n", "a:b", "a@b"} {
		assert.False(t, validName(s, 64), s)
	}
}

// TestSetTOMLKey ensures that the thing name lands in [identity], replacing
// a line that is there, keeping every other line and comment.
func TestSetTOMLKey(t *testing.T) {
	cases := []struct{ name, in, want string }{
		{"adds after the header", "# top\n[identity]\ncertificate = \"c\"\n\n[aws]\nregion = \"x\"\n",
			"# top\n[identity]\nthing_name = \"gw-1\"\ncertificate = \"c\"\n\n[aws]\nregion = \"x\"\n"},
		{"replaces", "[identity]\n  thing_name = \"old\" # comment\n[aws]\nthing_name = \"not this\"\n",
			"[identity]\nthing_name = \"gw-1\"\n[aws]\nthing_name = \"not this\"\n"},
		{"adds the section", "[aws]\nregion = \"x\"\n", "[aws]\nregion = \"x\"\n\n[identity]\nthing_name = \"gw-1\"\n"},
		{"not a longer key", "[identity]\nthing_name_old = \"a\"\n\tthing_name\t=\"b\"\n",
			"[identity]\nthing_name_old = \"a\"\nthing_name = \"gw-1\"\n"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.want, string(setTOMLKey([]byte(tc.in), "identity", "thing_name", "gw-1")))
		})
	}
}

// TestParameterSources ensures that each template parameter is read from
// where its value says, and that a bad source is refused with its name.
func TestParameterSources(t *testing.T) {
	dir := t.TempDir()
	serial := filepath.Join(dir, "serial")
	require.NoError(t, os.WriteFile(serial, []byte("  SN-7 \nsecond line\n"), 0o644))
	t.Setenv("TETHER_TEST_MODEL", "gw-pro")
	got, err := resolveParameters(t.Context(), map[string]string{
		"SerialNumber": "file:" + serial,
		"Model":        "env:TETHER_TEST_MODEL",
		"Site":         "lab",
		"Build":        "command:/bin/echo 42",
	})
	require.NoError(t, err)
	assert.Equal(t, map[string]string{"SerialNumber": "SN-7", "Model": "gw-pro", "Site": "lab", "Build": "42"}, got)

	for _, bad := range []string{"file:relative", "command:echo", "env:", "file:" + filepath.Join(dir, "missing"), "command:/bin/false", "env:TETHER_UNSET_VARIABLE"} {
		_, err := resolveParameters(t.Context(), map[string]string{"P": bad})
		require.Error(t, err, bad)
		assert.True(t, strings.HasPrefix(err.Error(), "provision.parameters.P: "), err.Error())
	}
}

// TestLifecycleConfig ensures that the rotation and provisioning keys are
// checked with config check, each error naming its key.
func TestLifecycleConfig(t *testing.T) {
	cases := []struct{ name, identity, extra, want string }{
		{"rotate_at out of range", `rotate_at = 1.5`, "", "identity.rotate_at"},
		{"rotate_before too short", `rotate_before = "1m"`, "", "identity.rotate_before"},
		{"bad template name", `rotation_template = "a/b"`, "", "identity.rotation_template"},
		{"rotation without mqtt", `rotation_template = "rot"`, "", "mqtt.endpoint"},
		{"bad retired topic", `retired_topic = "a/#"`, "", "identity.retired_topic"},
		{"provision without template", "", "[provision]\nclaim_certificate = \"/c\"\n", "provision.template"},
		{"bad key type", "", "[provision]\ntemplate = \"t\"\nkey_type = \"dsa\"\n", "provision.key_type"},
		{"bad parameter source", "", "[provision]\ntemplate = \"t\"\nparameters = { S = \"file:rel\" }\n", "provision.parameters.S"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseConfig("t.toml", []byte(lifecycleBase(t, tc.identity)+tc.extra))
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
	t.Run("all set", func(t *testing.T) {
		_, err := ParseConfig("t.toml", []byte(lifecycleBase(t, "rotation_template = \"rot\"\nrotate_before = \"720h\"\nfallback = \"24h\"\nretired_topic = \"tether/x/retired\"")+
			"[mqtt]\nendpoint = \"a1abc-ats.iot.eu-west-1.amazonaws.com\"\n"))
		require.NoError(t, err)
	})
}

func lifecycleBase(t *testing.T, identity string) string {
	dir := t.TempDir()
	cert, key := filepath.Join(dir, "c.pem"), filepath.Join(dir, "k.pem")
	require.NoError(t, os.WriteFile(cert, []byte("x"), 0o644))
	require.NoError(t, os.WriteFile(key, []byte("x"), 0o600))
	return "[identity]\nthing_name = \"gw-1\"\ncertificate = \"" + cert + "\"\nprivate_key = \"" + key + "\"\n" + identity + "\n" +
		"[aws]\ncredential_endpoint = \"c1abc.credentials.iot.eu-west-1.amazonaws.com\"\nrole_alias = \"r\"\n" +
		"[state]\npath = \"" + filepath.Join(dir, "state.db") + "\"\n"
}
