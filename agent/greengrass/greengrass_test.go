package greengrass_test

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tetherd/tether/agent/greengrass"
)

// classic is an effectiveConfig.yaml as the Greengrass developer guide shows
// it for manual provisioning, with the keys nucleus classic adds at run time.
const classic = `---
system:
  certificateFilePath: "/greengrass/v2/device.pem.crt"
  privateKeyPath: "/greengrass/v2/private.pem.key"
  rootCaPath: "/greengrass/v2/AmazonRootCA1.pem"
  rootpath: "/greengrass/v2"
  thingName: "MyGreengrassCore"
services:
  aws.greengrass.Nucleus:
    componentType: "NUCLEUS"
    version: "2.14.3"
    configuration:
      awsRegion: "us-west-2"
      iotRoleAlias: "GreengrassCoreTokenExchangeRoleAlias"
      iotDataEndpoint: "device-data-prefix-ats.iot.us-west-2.amazonaws.com"
      iotCredEndpoint: "device-credentials-prefix.credentials.iot.us-west-2.amazonaws.com"
      mqtt:
        port: 443
      greengrassDataPlanePort: 8443
    dependencies: []
    lifecycle: {}
  main:
    dependencies:
    - "aws.greengrass.Nucleus"
    lifecycle: {}
`

// lite is nucleus lite's config.yaml, after its docs/examples/sample_nucleus_config.yaml.
const lite = `---
system:
  privateKeyPath: "/var/lib/greengrass/device.key"
  certificateFilePath: "/var/lib/greengrass/device.pem"
  rootCaPath: "/var/lib/greengrass/AmazonRootCA1.pem"
  rootPath: "/var/lib/greengrass"
  thingName: "ExampleGGDevice"
services:
  aws.greengrass.NucleusLite:
    componentType: "NUCLEUS"
    configuration:
      awsRegion: "eu-west-1"
      iotCredEndpoint: "c1abc.credentials.iot.eu-west-1.amazonaws.com"
      iotDataEndpoint: "a1abc-ats.iot.eu-west-1.amazonaws.com"
      iotRoleAlias: "GreengrassV2TokenExchangeRoleAlias"
      runWithDefault:
        posixUser: "gg_component:gg_component"
      greengrassDataPlanePort: "8443"
`

// classicHSM is nucleus classic with the PKCS#11 provider plugin, as the
// developer guide's "Hardware security integration" configures it.
const classicHSM = `system:
  certificateFilePath: "/greengrass/v2/device.pem.crt"
  privateKeyPath: "pkcs11:object=iotdevicekey;type=private"
  rootCaPath: "/greengrass/v2/AmazonRootCA1.pem"
  rootpath: "/greengrass/v2"
  thingName: "MyGreengrassCore"
services:
  aws.greengrass.Nucleus:
    configuration:
      awsRegion: "us-west-2"
      iotRoleAlias: "GreengrassCoreTokenExchangeRoleAlias"
      iotDataEndpoint: "device-data-prefix-ats.iot.us-west-2.amazonaws.com"
      iotCredEndpoint: "device-credentials-prefix.credentials.iot.us-west-2.amazonaws.com"
  aws.greengrass.crypto.Pkcs11Provider:
    configuration:
      name: "softhsm_pkcs11"
      library: "/usr/lib/softhsm/libsofthsm2.so"
      slot: 1
      userPin: 1234
`

// liteHSM is nucleus lite with its built-in PKCS#11 support (docs/PKCS11_SUPPORT.md).
const liteHSM = `system:
  privateKeyPath: "pkcs11:token=ggl;object=key;pin-value=1234"
  certificateFilePath: "/var/lib/greengrass/device.pem"
  rootCaPath: "/var/lib/greengrass/AmazonRootCA1.pem"
  thingName: "MyThing"
services:
  aws.greengrass.NucleusLite:
    configuration:
      awsRegion: "eu-west-1"
      iotCredEndpoint: "c1abc.credentials.iot.eu-west-1.amazonaws.com"
      iotRoleAlias: "GreengrassV2TokenExchangeRoleAlias"
`

// TestParse ensures that both nuclei's files yield the same identity fields.
func TestParse(t *testing.T) {
	for _, tc := range []struct {
		name, yaml string
		want       greengrass.Device
	}{
		{"classic", classic, greengrass.Device{Nucleus: greengrass.Classic, ThingName: "MyGreengrassCore",
			Certificate: "/greengrass/v2/device.pem.crt", PrivateKey: "/greengrass/v2/private.pem.key", RootCA: "/greengrass/v2/AmazonRootCA1.pem",
			Region: "us-west-2", CredentialEndpoint: "device-credentials-prefix.credentials.iot.us-west-2.amazonaws.com",
			RoleAlias: "GreengrassCoreTokenExchangeRoleAlias", DataEndpoint: "device-data-prefix-ats.iot.us-west-2.amazonaws.com", MQTTPort: 443}},
		{"lite", lite, greengrass.Device{Nucleus: greengrass.Lite, ThingName: "ExampleGGDevice",
			Certificate: "/var/lib/greengrass/device.pem", PrivateKey: "/var/lib/greengrass/device.key", RootCA: "/var/lib/greengrass/AmazonRootCA1.pem",
			Region: "eu-west-1", CredentialEndpoint: "c1abc.credentials.iot.eu-west-1.amazonaws.com",
			RoleAlias: "GreengrassV2TokenExchangeRoleAlias", DataEndpoint: "a1abc-ats.iot.eu-west-1.amazonaws.com"}},
		{"classic relative paths", strings.NewReplacer(`"/greengrass/v2/device.pem.crt"`, `"device.pem.crt"`,
			`"/greengrass/v2/private.pem.key"`, `"file:///greengrass/v2/private.pem.key"`).Replace(classic),
			greengrass.Device{Nucleus: greengrass.Classic, ThingName: "MyGreengrassCore",
				Certificate: "/greengrass/v2/device.pem.crt", PrivateKey: "/greengrass/v2/private.pem.key", RootCA: "/greengrass/v2/AmazonRootCA1.pem",
				Region: "us-west-2", CredentialEndpoint: "device-credentials-prefix.credentials.iot.us-west-2.amazonaws.com",
				RoleAlias: "GreengrassCoreTokenExchangeRoleAlias", DataEndpoint: "device-data-prefix-ats.iot.us-west-2.amazonaws.com", MQTTPort: 443}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, err := greengrass.Parse("config.yaml", []byte(tc.yaml))
			require.NoError(t, err)
			tc.want.File = "config.yaml"
			assert.Equal(t, &tc.want, d)
		})
	}
}

// TestParseBroken ensures that a broken or partial file gets one error that
// names the key at fault, and its line where the file has one.
func TestParseBroken(t *testing.T) {
	for _, tc := range []struct {
		name, yaml, want string
	}{
		{"no thing name", strings.Replace(classic, `  thingName: "MyGreengrassCore"`+"\n", "", 1),
			"config.yaml:3: system.thingName: missing"},
		{"empty role alias", strings.Replace(lite, `"GreengrassV2TokenExchangeRoleAlias"`, `""`, 1),
			"config.yaml:15: services.aws.greengrass.NucleusLite.configuration.iotRoleAlias: is empty"},
		{"placeholder", strings.Replace(lite, `"c1abc.credentials.iot.eu-west-1.amazonaws.com"`, `"<CONFIGURE_THIS>"`, 1),
			"services.aws.greengrass.NucleusLite.configuration.iotCredEndpoint: is still the placeholder <CONFIGURE_THIS>"},
		{"no nucleus", "system:\n  thingName: x\nservices:\n  main: {}\n",
			"config.yaml:4: services.aws.greengrass.Nucleus: missing (and no services.aws.greengrass.NucleusLite)"},
		{"no services", "system:\n  thingName: x\n", "config.yaml:1: services: missing"},
		{"no configuration", "system:\n  thingName: x\nservices:\n  aws.greengrass.Nucleus:\n    version: 2.14.0\n",
			"services.aws.greengrass.Nucleus.configuration: missing"},
		{"no key path", strings.Replace(classic, `  privateKeyPath: "/greengrass/v2/private.pem.key"`+"\n", "", 1),
			"system.privateKeyPath: missing"},
		{"relative without root", strings.NewReplacer(`"/greengrass/v2/device.pem.crt"`, `"device.pem.crt"`, `  rootpath: "/greengrass/v2"`+"\n", "").Replace(classic),
			"system.certificateFilePath: \"device.pem.crt\" is relative"},
		{"not yaml", "system: [\n", "config.yaml: not valid YAML"},
		{"not a mapping", "- a\n- b\n", "is not a Greengrass configuration"},
		{"bad port", strings.Replace(classic, "port: 443", "port: https", 1),
			"services.aws.greengrass.Nucleus.configuration.mqtt.port: \"https\" is not a port number"},
		{"provider without library", strings.Replace(classicHSM, `      library: "/usr/lib/softhsm/libsofthsm2.so"`+"\n", "", 1),
			"services.aws.greengrass.crypto.Pkcs11Provider.configuration.library: missing"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := greengrass.Parse("config.yaml", []byte(tc.yaml))
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
			assert.NotContains(t, err.Error(), "\n", "one line")
		})
	}
}

// TestConfigPKCS11 ensures that a key in a token becomes a pkcs11: URI with
// the module, the slot and a pin-source file, and that the PIN Greengrass
// keeps in its file is handed back apart, never in the configuration text.
func TestConfigPKCS11(t *testing.T) {
	for _, tc := range []struct {
		name, yaml string
		opts       greengrass.Options
		wantKey    string
		wantPIN    string
	}{
		{"classic provider", classicHSM, greengrass.Options{},
			`private_key = "pkcs11:slot-id=1;object=iotdevicekey;type=private?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/etc/tether/pin"`, "1234"},
		{"lite with module", liteHSM, greengrass.Options{PKCS11Module: "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so", PINFile: "/run/pin"},
			`private_key = "pkcs11:token=ggl;object=key?module-path=/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so&pin-source=file:/run/pin"`, "1234"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, err := greengrass.Parse("/etc/greengrass/config.yaml", []byte(tc.yaml))
			require.NoError(t, err)
			im, err := d.Config(tc.opts)
			require.NoError(t, err)
			assert.Contains(t, string(im.TOML), tc.wantKey)
			assert.Equal(t, tc.wantPIN, im.PIN)
			assert.NotContains(t, string(im.TOML), "1234", "the PIN never appears in the configuration")
		})
	}

	t.Run("lite without module", func(t *testing.T) {
		d, err := greengrass.Parse("config.yaml", []byte(liteHSM))
		require.NoError(t, err)
		_, err = d.Config(greengrass.Options{})
		require.Error(t, err)
		assert.Contains(t, err.Error(), "system.privateKeyPath: is a pkcs11: URI but the file names no PKCS#11 module")
		assert.Contains(t, err.Error(), "--pkcs11-module")
		assert.NotContains(t, err.Error(), "1234")
	})
	t.Run("certificate in the token", func(t *testing.T) {
		y := strings.Replace(liteHSM, `"/var/lib/greengrass/device.pem"`, `"pkcs11:token=ggl;object=cert;type=cert"`, 1)
		d, err := greengrass.Parse("config.yaml", []byte(y))
		require.NoError(t, err)
		_, err = d.Config(greengrass.Options{PKCS11Module: "/lib/m.so"})
		require.ErrorContains(t, err, "system.certificateFilePath: is a pkcs11: URI; tether reads the certificate from a file")
		im, err := d.Config(greengrass.Options{PKCS11Module: "/lib/m.so", Certificate: "/etc/tether/device.crt"})
		require.NoError(t, err)
		assert.Contains(t, string(im.TOML), `certificate = "/etc/tether/device.crt"`)
	})
}

// TestConfigText ensures the printed configuration carries every imported
// field and marks the device as shared with Greengrass.
func TestConfigText(t *testing.T) {
	d, err := greengrass.Parse("/greengrass/v2/config/effectiveConfig.yaml", []byte(classic))
	require.NoError(t, err)
	im, err := d.Config(greengrass.Options{})
	require.NoError(t, err)
	s := string(im.TOML)
	for _, want := range []string{
		`thing_name = "MyGreengrassCore"`,
		`certificate = "/greengrass/v2/device.pem.crt"`,
		`private_key = "/greengrass/v2/private.pem.key"`,
		`region   = "us-west-2"`,
		`credential_endpoint = "device-credentials-prefix.credentials.iot.us-west-2.amazonaws.com"`,
		`role_alias = "GreengrassCoreTokenExchangeRoleAlias"`,
		`ca_file  = "/greengrass/v2/AmazonRootCA1.pem"`,
		`endpoint = "device-data-prefix-ats.iot.us-west-2.amazonaws.com"`,
		"port     = 443",
		"[greengrass]\nconfig   = \"/greengrass/v2/config/effectiveConfig.yaml\"",
	} {
		assert.Contains(t, s, want)
	}
	assert.Empty(t, im.PINFile)
}
