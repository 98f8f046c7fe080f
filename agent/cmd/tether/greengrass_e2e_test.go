package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tetherd/tether/agent/agenttest"
)

// greengrassYAML writes a Greengrass configuration of the given nucleus
// (component name) for the identity and simulator of e, after the layout the
// Greengrass developer guide documents; key is system.privateKeyPath, extra
// is appended under services.
func greengrassYAML(t *testing.T, e *agenttest.Env, nucleus, cert, key, extra string) string {
	t.Helper()
	file := filepath.Join(e.Dir, nucleus+".yaml")
	y := fmt.Sprintf(`---
system:
  certificateFilePath: %q
  privateKeyPath: %q
  rootCaPath: %q
  rootpath: %q
  thingName: %q
services:
  %s:
    componentType: "NUCLEUS"
    configuration:
      awsRegion: "eu-west-1"
      iotRoleAlias: %q
      iotDataEndpoint: "a1abc-ats.iot.eu-west-1.amazonaws.com"
      iotCredEndpoint: %q
%s`, cert, key, filepath.Join(e.Dir, "ca.crt"), e.Dir, agenttest.ThingName, nucleus, agenttest.RoleAlias, e.Sim.Endpoint, extra)
	require.NoError(t, os.WriteFile(file, []byte(y), 0o600))
	return file
}

// importAndFetch imports file, checks the result with `tether config check`
// and fetches the device role's credentials with it from the simulator.
func importAndFetch(t *testing.T, e *agenttest.Env, file string, flags ...string) (config, checkStderr string) {
	t.Helper()
	code, out, stderr := tether(t, nil, append(append([]string{"config", "import", "greengrass"}, flags...), file)...)
	require.Equal(t, 0, code, stderr)
	config = filepath.Join(e.Dir, "imported.toml")
	// The imported file names no state or socket paths: keep this test's own.
	extra := fmt.Sprintf("\n[state]\npath = %q\n", e.State)
	require.NoError(t, os.WriteFile(config, []byte(out+extra), 0o600))

	code, _, checkStderr = tether(t, nil, "config", "check", "-c", config)
	require.Equal(t, 0, code, checkStderr)

	before := len(e.Sim.Grants())
	code, out, stderr = tether(t, nil, "credential-process", "--direct", "-c", config)
	require.Equal(t, 0, code, stderr)
	var pc processCredentials
	require.NoError(t, json.Unmarshal([]byte(out), &pc))
	grants := e.Sim.Grants()
	require.Len(t, grants, before+1)
	assert.Equal(t, grants[len(grants)-1].AccessKeyID, pc.AccessKeyID)
	assert.Equal(t, agenttest.ThingName, e.Sim.ThingNames()[len(e.Sim.ThingNames())-1])
	return config, checkStderr
}

// TestGreengrassImport ensures that nucleus classic's effectiveConfig.yaml
// and nucleus lite's config.yaml become configurations that `config check`
// accepts and that fetch credentials with Greengrass's own identity, and
// that tether's MQTT client id then differs from Greengrass's.
func TestGreengrassImport(t *testing.T) {
	e := agenttest.New(t, time.Hour, "")
	for _, nucleus := range []string{"aws.greengrass.Nucleus", "aws.greengrass.NucleusLite"} {
		t.Run(nucleus, func(t *testing.T) {
			file := greengrassYAML(t, e, nucleus, e.CertFile, e.KeyFile, "")
			config, _ := importAndFetch(t, e, file)
			code, out, stderr := tether(t, nil, "config", "check", "-c", config)
			require.Equal(t, 0, code, stderr)
			assert.Contains(t, out, `client_id = 'gw-0001-tether'`)
			assert.NotContains(t, stderr, "warning")
		})
	}
}

// TestGreengrassClientIDWarning ensures that `config check` warns when a
// configuration shared with Greengrass uses the thing name as its client id.
func TestGreengrassClientIDWarning(t *testing.T) {
	e := agenttest.New(t, time.Hour, fmt.Sprintf(`
[mqtt]
endpoint  = "a1abc-ats.iot.eu-west-1.amazonaws.com"
client_id = %q

[greengrass]
config = "/greengrass/v2/config/effectiveConfig.yaml"
`, agenttest.ThingName))
	code, _, stderr := tether(t, nil, "config", "check", "-c", e.Config)
	require.Equal(t, 0, code, stderr)
	assert.Contains(t, stderr, `tether: warning: `+e.Config+`: mqtt.client_id: "gw-0001" is the thing name, the client id Greengrass`)
	assert.Equal(t, 1, strings.Count(stderr, "\n"), stderr)
}

// TestGreengrassImportBroken ensures that a partial, missing or non-YAML
// Greengrass file gets one line naming what is wrong, and exit status 2.
func TestGreengrassImportBroken(t *testing.T) {
	e := agenttest.New(t, time.Hour, "")
	full := greengrassYAML(t, e, "aws.greengrass.Nucleus", e.CertFile, e.KeyFile, "")
	b, err := os.ReadFile(full)
	require.NoError(t, err)
	partial := filepath.Join(e.Dir, "partial.yaml")
	require.NoError(t, os.WriteFile(partial, []byte(strings.Replace(string(b), "      iotCredEndpoint:", "      iotCredEndpointX:", 1)), 0o600))
	garbage := filepath.Join(e.Dir, "garbage.yaml")
	require.NoError(t, os.WriteFile(garbage, []byte("system: [unclosed\n"), 0o600))

	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"partial", []string{partial}, partial + ":12: services.aws.greengrass.Nucleus.configuration.iotCredEndpoint: missing"},
		{"missing file", []string{filepath.Join(e.Dir, "nope.yaml")}, "nope.yaml: cannot read it: no such file or directory"},
		{"not yaml", []string{garbage}, garbage + ": not valid YAML"},
		{"no file", nil, "usage: tether config import greengrass"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out, stderr := tether(t, nil, append([]string{"config", "import", "greengrass"}, tc.args...)...)
			assert.Equal(t, 2, code)
			assert.Empty(t, out)
			assert.Contains(t, stderr, tc.want)
			assert.Equal(t, 1, strings.Count(stderr, "\n"), stderr)
		})
	}
}
