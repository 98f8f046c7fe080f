// Package greengrass holds tether's AWS IoT Greengrass component recipe; its
// tests check the recipe against the format the Greengrass developer guide
// documents ("AWS IoT Greengrass component recipe reference") and run its
// lifecycle against the IoT credentials simulator.
package greengrass

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"

	"github.com/tetherd/tether/agent/agenttest"
)

const recipeFile = "recipes/io.tetherd.Tether.yaml"

// recipe is the component recipe format, recipe format version 2020-01-25.
// Decoding with KnownFields refuses any key the format does not define.
type recipe struct {
	RecipeFormatVersion    string                `yaml:"RecipeFormatVersion"`
	ComponentName          string                `yaml:"ComponentName"`
	ComponentVersion       string                `yaml:"ComponentVersion"`
	ComponentDescription   string                `yaml:"ComponentDescription"`
	ComponentPublisher     string                `yaml:"ComponentPublisher"`
	ComponentType          string                `yaml:"ComponentType"`
	ComponentSource        string                `yaml:"ComponentSource"`
	ComponentConfiguration *componentConfig      `yaml:"ComponentConfiguration"`
	ComponentDependencies  map[string]dependency `yaml:"ComponentDependencies"`
	Manifests              []manifest            `yaml:"Manifests"`
	Lifecycle              *lifecycle            `yaml:"Lifecycle"`
}

type componentConfig struct {
	DefaultConfiguration map[string]any `yaml:"DefaultConfiguration"`
}

type dependency struct {
	VersionRequirement string `yaml:"VersionRequirement"`
	DependencyType     string `yaml:"DependencyType"`
}

type manifest struct {
	Name       string            `yaml:"Name"`
	Platform   map[string]string `yaml:"Platform"`
	Lifecycle  *lifecycle        `yaml:"Lifecycle"`
	Selections []string          `yaml:"Selections"`
	Artifacts  []artifact        `yaml:"Artifacts"`
}

type artifact struct {
	URI        string `yaml:"URI"`
	Unarchive  string `yaml:"Unarchive"`
	Permission *struct {
		Read    string `yaml:"Read"`
		Execute string `yaml:"Execute"`
	} `yaml:"Permission"`
	Digest    string `yaml:"Digest"`
	Algorithm string `yaml:"Algorithm"`
}

type lifecycle struct {
	Setenv    map[string]string `yaml:"Setenv"`
	Bootstrap *step             `yaml:"Bootstrap"`
	Install   *step             `yaml:"Install"`
	Run       *step             `yaml:"Run"`
	Startup   *step             `yaml:"Startup"`
	Shutdown  *step             `yaml:"Shutdown"`
	Recover   *step             `yaml:"Recover"`
}

type step struct {
	Script            string            `yaml:"Script"`
	RequiresPrivilege bool              `yaml:"RequiresPrivilege"`
	Skipif            string            `yaml:"Skipif"`
	Timeout           int               `yaml:"Timeout"`
	Setenv            map[string]string `yaml:"Setenv"`
}

func (l *lifecycle) steps() map[string]*step {
	return map[string]*step{"Bootstrap": l.Bootstrap, "Install": l.Install, "Run": l.Run,
		"Startup": l.Startup, "Shutdown": l.Shutdown, "Recover": l.Recover}
}

func loadRecipe(t *testing.T) *recipe {
	t.Helper()
	b, err := os.ReadFile(recipeFile)
	require.NoError(t, err)
	r, err := decodeRecipe(b)
	require.NoError(t, err, "the recipe has a key the recipe format does not define")
	return r
}

func decodeRecipe(b []byte) (*recipe, error) {
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	var r recipe
	return &r, dec.Decode(&r)
}

// TestRecipeDecodeRefusesUnknownKeys ensures the format check would catch a
// misspelt key or lifecycle phase.
func TestRecipeDecodeRefusesUnknownKeys(t *testing.T) {
	b, err := os.ReadFile(recipeFile)
	require.NoError(t, err)
	for _, typo := range [][2]string{{"  Install:", "  Instal:"}, {"RequiresPrivilege:", "RequirePrivilege:"}, {"ComponentPublisher:", "Publisher:"}} {
		_, err := decodeRecipe(bytes.Replace(b, []byte(typo[0]), []byte(typo[1]), 1))
		assert.Error(t, err, typo[1])
	}
}

var (
	semverRE = regexp.MustCompile(`^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?$`)
	// Recipe variables: {artifacts:path}, {work:path}, {configuration:/ptr},
	// {kernel:rootPath}, {iot:thingName}, optionally prefixed by a component.
	variableRE = regexp.MustCompile(`\{(?:[A-Za-z0-9._-]+:)?(artifacts:path|artifacts:decompressedPath|work:path|kernel:rootPath|iot:thingName|configuration:(/[^}]*))\}`)
	anyVarRE   = regexp.MustCompile(`\{[A-Za-z0-9._-]*:[^}\s]*\}`)
)

// TestRecipeFormat ensures that the recipe has the keys, values and
// lifecycle phases the recipe reference defines, and nothing else.
func TestRecipeFormat(t *testing.T) {
	r := loadRecipe(t)
	assert.Equal(t, "2020-01-25", r.RecipeFormatVersion)
	assert.Regexp(t, `^[A-Za-z0-9][A-Za-z0-9._-]*$`, r.ComponentName)
	assert.False(t, strings.HasPrefix(r.ComponentName, "aws.greengrass"), "the aws.greengrass prefix would replace a public component")
	assert.Regexp(t, semverRE, r.ComponentVersion, "a semantic version")
	assert.NotEmpty(t, r.ComponentPublisher, "ComponentPublisher is required")
	assert.Empty(t, r.ComponentType, "Greengrass sets the type; aws.greengrass.generic")
	for name, d := range r.ComponentDependencies {
		assert.NotEmpty(t, d.VersionRequirement, name)
		assert.Contains(t, []string{"", "HARD", "SOFT"}, d.DependencyType, name)
	}

	require.NotEmpty(t, r.Manifests)
	arches := map[string]bool{}
	for i, m := range r.Manifests {
		assert.Equal(t, "linux", m.Platform["os"], "manifest %d: tether runs on Linux", i)
		arch := m.Platform["architecture"]
		assert.Contains(t, []string{"aarch64", "arm", "amd64"}, arch, "manifest %d", i)
		arches[arch] = true
		if m.Platform == nil {
			assert.Equal(t, len(r.Manifests)-1, i, "a manifest for all platforms must be last")
		}
		names := map[string]bool{}
		for _, a := range m.Artifacts {
			assert.Regexp(t, `^(s3|greengrass)://`, a.URI, "manifest %d", i)
			base := path.Base(a.URI)
			assert.False(t, names[base], "manifest %d: artifact file names must be unique: %s", i, base)
			names[base] = true
			assert.Contains(t, []string{"", "NONE", "ZIP"}, a.Unarchive)
			assert.Empty(t, a.Digest, "Digest is read-only")
			assert.Empty(t, a.Algorithm, "Algorithm is read-only")
			require.NotNil(t, a.Permission)
			assert.Contains(t, []string{"", "NONE", "OWNER", "ALL"}, a.Permission.Read)
			assert.Contains(t, []string{"NONE", "OWNER", "ALL"}, a.Permission.Execute)
			assert.NotEqual(t, "NONE", a.Permission.Execute, "tether is a binary")
			assert.Contains(t, a.URI, "/"+r.ComponentVersion+"/", "artifacts are laid out by component version")
		}
		assert.Equal(t, "tether", strings.Join(keys(names), ","), "manifest %d: the global lifecycle runs {artifacts:path}/tether", i)
	}
	assert.Equal(t, map[string]bool{"aarch64": true, "arm": true, "amd64": true}, arches, "a manifest per static build")

	require.NotNil(t, r.Lifecycle, "the global lifecycle")
	l := r.Lifecycle
	require.NotNil(t, l.Install)
	require.NotNil(t, l.Run)
	assert.False(t, l.Run != nil && l.Startup != nil, "only one of Run and Startup")
	assert.False(t, l.Run.RequiresPrivilege, "tether runs unprivileged")
	defaults := r.ComponentConfiguration.DefaultConfiguration
	for _, s := range append(values(l.Setenv), scripts(l)...) {
		for _, v := range anyVarRE.FindAllString(s, -1) {
			m := variableRE.FindStringSubmatch(v)
			if assert.NotNil(t, m, "unknown recipe variable %s", v) && m[2] != "" {
				_, ok := defaults[strings.TrimPrefix(m[2], "/")]
				assert.True(t, ok, "%s has no DefaultConfiguration entry", v)
			}
		}
	}
	for _, k := range []string{"Socket", "ContainerEndpoint", "TokenFile"} {
		assert.Contains(t, defaults, k, "components find tether through configuration:/%s", k)
	}
	assert.Equal(t, "127.0.0.1:2020", defaults["ContainerEndpoint"], "loopback only")
}

func keys(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

func values(m map[string]string) []string {
	var out []string
	for _, v := range m {
		out = append(out, v)
	}
	return out
}

func scripts(l *lifecycle) []string {
	var out []string
	for _, s := range l.steps() {
		if s != nil {
			out = append(out, s.Script)
			out = append(out, values(s.Setenv)...)
		}
	}
	return out
}

// interpolate replaces recipe variables as the nucleus does.
func interpolate(s string, vars map[string]string) string {
	return variableRE.ReplaceAllStringFunc(s, func(v string) string {
		key := strings.Trim(v, "{}")
		if val, ok := vars[key]; ok {
			return val
		}
		return v
	})
}

// TestRecipeLifecycle ensures that the recipe's Install imports the
// identity of a Greengrass core device from its effectiveConfig.yaml and
// that Run then serves the device role on the Token Exchange Service path,
// where boto3 reading AWS_CONTAINER_CREDENTIALS_FULL_URI gets credentials
// from the simulator.
func TestRecipeLifecycle(t *testing.T) {
	if testing.Short() {
		t.Skip("builds tether and runs the component's lifecycle")
	}
	python := "/usr/bin/python3"
	if err := exec.Command(python, "-c", "import boto3").Run(); err != nil {
		t.Fatalf("Debian's python3-boto3 is needed (apt-get install python3-boto3): %v", err)
	}
	e := agenttest.New(t, time.Hour, "")
	root := filepath.Join(e.Dir, "greengrass")
	artifacts := filepath.Join(root, "packages", "artifacts", "io.tetherd.Tether", "0.1.0")
	work := filepath.Join(root, "work", "io.tetherd.Tether")
	run := filepath.Join(e.Dir, "run")
	for _, d := range []string{artifacts, work, filepath.Join(root, "config")} {
		require.NoError(t, os.MkdirAll(d, 0o755))
	}
	build := exec.Command("go", "build", "-trimpath", "-o", filepath.Join(artifacts, "tether"), "../../agent/cmd/tether")
	out, err := build.CombinedOutput()
	require.NoError(t, err, "%s", out)

	// effectiveConfig.yaml as nucleus classic writes it (the developer
	// guide's manual provisioning layout), for the simulator's device.
	gg := fmt.Sprintf(`system:
  certificateFilePath: %q
  privateKeyPath: %q
  rootCaPath: %q
  rootpath: %q
  thingName: %q
services:
  aws.greengrass.Nucleus:
    componentType: NUCLEUS
    configuration:
      awsRegion: eu-west-1
      iotRoleAlias: %q
      iotCredEndpoint: %q
`, e.CertFile, e.KeyFile, filepath.Join(e.Dir, "ca.crt"), root, agenttest.ThingName, agenttest.RoleAlias, e.Sim.Endpoint)
	require.NoError(t, os.WriteFile(filepath.Join(root, "config", "effectiveConfig.yaml"), []byte(gg), 0o600))

	r := loadRecipe(t)
	endpoint := fmt.Sprintf("127.0.0.1:%d", agenttest.FreePort(t))
	vars := map[string]string{
		"artifacts:path":                   artifacts,
		"work:path":                        work,
		"kernel:rootPath":                  root,
		"configuration:/GreengrassConfig":  "",
		"configuration:/PosixUser":         userName(t) + ":" + groupName(t),
		"configuration:/Socket":            filepath.Join(run, "tether.sock"),
		"configuration:/ContainerEndpoint": endpoint,
		"configuration:/TokenFile":         filepath.Join(run, "token"),
		"configuration:/PKCS11Module":      "",
	}
	env := os.Environ()
	for k, v := range r.Lifecycle.Setenv {
		env = append(env, k+"="+interpolate(v, vars))
	}
	sh := func(s *step) *exec.Cmd {
		cmd := exec.Command("/bin/sh", "-c", interpolate(s.Script, vars))
		cmd.Env = env
		return cmd
	}

	out, err = sh(r.Lifecycle.Install).CombinedOutput()
	require.NoError(t, err, "Install:\n%s", out)
	conf, err := os.ReadFile(filepath.Join(work, "tether.toml"))
	require.NoError(t, err)
	assert.Contains(t, string(conf), `private_key = "`+filepath.Join(work, "device.key")+`"`)
	st, err := os.Stat(filepath.Join(work, "device.key"))
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), st.Mode().Perm())

	cmd := sh(r.Lifecycle.Run)
	var logs bytes.Buffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		cmd.Wait()
		if t.Failed() {
			t.Logf("tether:\n%s", logs.String())
		}
	})
	e.WaitNotify("READY=1")

	// A component, as Greengrass's TES would configure it. Debian 12's
	// botocore predates AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE: pass the
	// token's value, as a component's run script would.
	token, err := os.ReadFile(filepath.Join(run, "token"))
	require.NoError(t, err)
	py := exec.Command(python, "-c", `import boto3; print(boto3.Session().get_credentials().get_frozen_credentials().access_key)`)
	py.Env = append(os.Environ(),
		"AWS_CONTAINER_CREDENTIALS_FULL_URI=http://"+endpoint+"/2016-11-01/credentialprovider/",
		"AWS_CONTAINER_AUTHORIZATION_TOKEN="+strings.TrimSpace(string(token)),
		"AWS_EC2_METADATA_DISABLED=true", "AWS_CONFIG_FILE=/dev/null", "AWS_SHARED_CREDENTIALS_FILE=/dev/null")
	pyOut, err := py.CombinedOutput()
	require.NoError(t, err, "%s", pyOut)
	grants := e.Sim.Grants()
	require.NotEmpty(t, grants)
	assert.Equal(t, grants[len(grants)-1].AccessKeyID, strings.TrimSpace(string(pyOut)))

	// Without the token, the endpoint refuses.
	req, _ := http.NewRequestWithContext(context.Background(), "GET", "http://"+endpoint+"/2016-11-01/credentialprovider/", nil)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusUnauthorized, resp.StatusCode)
}

func userName(t *testing.T) string {
	out, err := exec.Command("id", "-un").Output()
	require.NoError(t, err)
	return strings.TrimSpace(string(out))
}

func groupName(t *testing.T) string {
	out, err := exec.Command("id", "-gn").Output()
	require.NoError(t, err)
	return strings.TrimSpace(string(out))
}
