package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tetherd/tether/agent"
	"github.com/tetherd/tether/agent/agenttest"
	"github.com/tetherd/tether/credprovider/iotcredtest"
)

// tetherBin is the binary under test, built once by TestMain, or
// TETHER_BIN when set (make bench: the release build).
var tetherBin string

// TestMain builds the tether binary once for the end-to-end tests.
func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "tether-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	tetherBin = filepath.Join(dir, "tether")
	if bin := os.Getenv("TETHER_BIN"); bin != "" {
		tetherBin = bin
	} else {
		build := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", tetherBin, ".")
		build.Stderr = os.Stderr
		if err := build.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "building tether:", err)
			os.Exit(1)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// tether runs the binary and returns its exit status, stdout and stderr.
func tether(t *testing.T, env []string, args ...string) (int, string, string) {
	t.Helper()
	cmd := exec.Command(tetherBin, args...)
	cmd.Env = append(os.Environ(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else {
		require.NoError(t, err)
	}
	return code, stdout.String(), stderr.String()
}

// agentProcess is `tether run` as a real process.
type agentProcess struct {
	cmd    *exec.Cmd
	stderr *bytes.Buffer
}

func startAgent(t *testing.T, e *agenttest.Env) *agentProcess {
	t.Helper()
	cmd := exec.Command(tetherBin, "run", "-c", e.Config)
	p := &agentProcess{cmd: cmd, stderr: &bytes.Buffer{}}
	cmd.Stderr = p.stderr
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
		if t.Failed() {
			t.Logf("agent log:\n%s", p.stderr)
		}
	})
	e.WaitNotify("READY=1")
	return p
}

func served(t *testing.T, socket, role string) *agent.Credentials {
	t.Helper()
	c, err := agent.FetchCredentials(context.Background(), socket, role)
	require.NoError(t, err)
	return c
}

// TestVersion ensures that tether version prints the version and exits 0.
func TestVersion(t *testing.T) {
	code, out, _ := tether(t, nil, "version")
	assert.Equal(t, 0, code)
	assert.Contains(t, out, "tether ")
	assert.Contains(t, out, "pkcs11 ")
}

// TestUsageErrors ensures that unknown commands and flags exit 2.
func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{{}, {"frobnicate"}, {"run", "--bogus"}, {"config"}, {"credential-process", "extra"}} {
		code, _, stderr := tether(t, nil, args...)
		assert.Equal(t, 2, code, "tether %v: %s", args, stderr)
	}
}

// TestConfigCheck ensures that config check prints the resolved configuration, reports every error at once with its line, and never prints a PIN.
func TestConfigCheck(t *testing.T) {
	e := agenttest.New(t, time.Hour, "")
	code, out, stderr := tether(t, nil, "config", "check", "-c", e.Config)
	require.Equal(t, 0, code, stderr)
	assert.Contains(t, out, "configuration OK")
	assert.Contains(t, out, "thing_name = 'gw-0001'")

	e.WriteConfig("[mqtt]\nport = 99999\n", `role_alias          = "gateway-role"`, `role_alias = "gateway-role"`+"\nduration = \"1m\"\nflavour = 1")
	code, _, stderr = tether(t, nil, "config", "check", "-c", e.Config)
	assert.Equal(t, 2, code)
	assert.Contains(t, stderr, "aws.flavour: unknown key")

	e.WriteConfig("[mqtt]\nport = 99999\n", `role_alias          = "gateway-role"`, `role_alias = "gateway-role"`+"\nduration = \"1m\"")
	code, _, stderr = tether(t, nil, "config", "check", "-c", e.Config)
	assert.Equal(t, 2, code)
	lines := strings.Split(strings.TrimSpace(stderr), "\n")
	assert.Len(t, lines, 2, "every error at once, one line each: %s", stderr)
	assert.Contains(t, stderr, "aws.duration: 1m0s is out of range")
	assert.Contains(t, stderr, "mqtt.port: 99999 is not a TCP port")

	code, _, stderr = tether(t, nil, "config", "check", "-c", filepath.Join(e.Dir, "missing.toml"))
	assert.Equal(t, 2, code)
	assert.Contains(t, stderr, "missing.toml: cannot read the configuration: no such file or directory")

	// A PIN given in the URI is never printed, not even when the token it
	// names is absent (a runtime failure: exit 1).
	pinned := `"pkcs11:token=absent;object=k?pin-value=123456"`
	e.WriteConfig("", `private_key = "`+e.KeyFile+`"`, `private_key = `+pinned)
	code, out, stderr = tether(t, nil, "config", "check", "-c", e.Config)
	assert.Equal(t, 1, code, stderr)
	assert.NotContains(t, out+stderr, "123456")
	assert.Contains(t, stderr, "pin-value=REDACTED")
}

// TestCredentialProcessDirect ensures that credential-process --direct fetches with the device identity itself, without an agent.
func TestCredentialProcessDirect(t *testing.T) {
	e := agenttest.New(t, time.Hour, "")
	code, out, stderr := tether(t, nil, "credential-process", "--direct", "-c", e.Config)
	require.Equal(t, 0, code, stderr)
	var pc processCredentials
	require.NoError(t, json.Unmarshal([]byte(out), &pc))
	assert.Equal(t, 1, pc.Version)
	grants := e.Sim.Grants()
	require.Len(t, grants, 1)
	assert.Equal(t, grants[0].AccessKeyID, pc.AccessKeyID)
	assert.NotEmpty(t, pc.SecretAccessKey)
	assert.NotEmpty(t, pc.SessionToken)
	assert.Empty(t, stderr)

	t.Run("retryable failures are retried", func(t *testing.T) {
		e.Sim.Fail(2, iotcredtest.FaultUnavailable)
		code, _, stderr := tether(t, nil, "credential-process", "--direct", "-c", e.Config)
		assert.Equal(t, 0, code, stderr)
	})
	t.Run("gives up after the timeout", func(t *testing.T) {
		e.Sim.Fail(1000, iotcredtest.FaultThrottled)
		defer e.Sim.Fail(0, iotcredtest.FaultThrottled)
		code, out, stderr := tether(t, nil, "credential-process", "--direct", "-c", e.Config, "--timeout", "1500ms")
		assert.Equal(t, 1, code)
		assert.Empty(t, out)
		assert.Equal(t, 1, strings.Count(stderr, "\n"), stderr)
		assert.Contains(t, stderr, "gave up")
	})
	t.Run("refused role alias", func(t *testing.T) {
		e.WriteConfig("", `role_alias          = "gateway-role"`, `role_alias = "not-mine"`)
		code, out, stderr := tether(t, nil, "credential-process", "--direct", "-c", e.Config)
		assert.Equal(t, 1, code)
		assert.Empty(t, out)
		assert.Contains(t, stderr, "not-mine")
		assert.Equal(t, 1, strings.Count(stderr, "\n"), stderr)
	})
	t.Run("bad PEM", func(t *testing.T) {
		e.WriteConfig("")
		require.NoError(t, os.WriteFile(e.KeyFile, []byte("-----BEGIN PRIVATE KEY-----\nnot base64\n-----END PRIVATE KEY-----\n"), 0o600))
		code, out, stderr := tether(t, nil, "credential-process", "--direct", "-c", e.Config)
		assert.Equal(t, 2, code)
		assert.Empty(t, out)
		assert.Contains(t, stderr, e.KeyFile)
	})
}

// TestRealClients ensures that the AWS CLI, boto3 and aws-sdk-go-v2 receive exactly what the agent serves.
//
// TestRealClients checks that Debian's AWS CLI, Debian's boto3 and
// aws-sdk-go-v2 each receive exactly what the agent serves, through
// credential_process and through the container endpoint.
func TestRealClients(t *testing.T) {
	for _, bin := range []string{"/usr/bin/aws", "/usr/bin/python3"} {
		_, err := os.Stat(bin)
		require.NoError(t, err, "%s missing: install the Debian packages awscli and python3-boto3 (make deps)", bin)
	}
	port := agenttest.FreePort(t)
	e := agenttest.New(t, time.Hour, "")
	e.WriteConfig("", "[serve]\n", fmt.Sprintf("[serve]\ncontainer_endpoint = \"127.0.0.1:%d\"\n", port))
	startAgent(t, e)
	want := served(t, e.Socket, "device")

	awsConfig := filepath.Join(e.Dir, "aws-config")
	require.NoError(t, os.WriteFile(awsConfig, []byte(fmt.Sprintf("[profile gw]\ncredential_process = %s credential-process --socket %s\nregion = eu-west-1\n", tetherBin, e.Socket)), 0o600))
	// A clean environment: no credentials or profile of the test runner's.
	baseEnv := []string{"PATH=/usr/bin:/bin", "HOME=" + e.Dir, "AWS_CONFIG_FILE=" + awsConfig,
		"AWS_SHARED_CREDENTIALS_FILE=" + filepath.Join(e.Dir, "nope"), "AWS_EC2_METADATA_DISABLED=true"}
	containerEnv := []string{"PATH=/usr/bin:/bin", "HOME=" + e.Dir, "AWS_CONFIG_FILE=/dev/null", "AWS_SHARED_CREDENTIALS_FILE=/dev/null", "AWS_EC2_METADATA_DISABLED=true",
		fmt.Sprintf("AWS_CONTAINER_CREDENTIALS_FULL_URI=http://127.0.0.1:%d/2016-11-01/credentialprovider/", port),
		"AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE=" + e.Token}
	token, err := os.ReadFile(e.Token)
	require.NoError(t, err)

	t.Run("aws CLI credential_process", func(t *testing.T) {
		cmd := exec.Command("/usr/bin/aws", "configure", "export-credentials", "--profile", "gw", "--format", "process")
		cmd.Env = baseEnv
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, string(out))
		var got processCredentials
		require.NoError(t, json.Unmarshal(out, &got))
		assert.Equal(t, want.AccessKeyID, got.AccessKeyID)
		assert.Equal(t, want.SecretAccessKey, got.SecretAccessKey)
		assert.Equal(t, want.Token, got.SessionToken)
		assertSameTime(t, want.Expiration, got.Expiration)
	})
	t.Run("boto3 container endpoint", func(t *testing.T) {
		cmd := exec.Command("/usr/bin/python3", "-c", `import boto3, json
c = boto3.Session(region_name="eu-west-1").get_credentials()
f = c.get_frozen_credentials()
print(json.dumps({"AccessKeyId": f.access_key, "SecretAccessKey": f.secret_key, "SessionToken": f.token, "Method": c.method}))`)
		// Debian 12's botocore predates AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE:
		// it takes the token itself.
		cmd.Env = append(containerEnv[:len(containerEnv)-1], "AWS_CONTAINER_AUTHORIZATION_TOKEN="+string(token))
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, string(out))
		var got struct{ AccessKeyId, SecretAccessKey, SessionToken, Method string }
		require.NoError(t, json.Unmarshal(out, &got), string(out))
		assert.Equal(t, "container-role", got.Method)
		assert.Equal(t, want.AccessKeyID, got.AccessKeyId)
		assert.Equal(t, want.SecretAccessKey, got.SecretAccessKey)
		assert.Equal(t, want.Token, got.SessionToken)
	})
	t.Run("aws-sdk-go-v2", func(t *testing.T) {
		for name, env := range map[string][]string{"credential_process": baseEnv, "container endpoint": containerEnv} {
			t.Run(name, func(t *testing.T) {
				for _, kv := range env {
					k, v, _ := strings.Cut(kv, "=")
					t.Setenv(k, v)
				}
				os.Unsetenv("AWS_PROFILE")
				var opts []func(*config.LoadOptions) error
				if name == "credential_process" {
					opts = append(opts, config.WithSharedConfigProfile("gw"))
				}
				cfg, err := config.LoadDefaultConfig(context.Background(), append(opts, config.WithRegion("eu-west-1"))...)
				require.NoError(t, err)
				got, err := cfg.Credentials.Retrieve(context.Background())
				require.NoError(t, err)
				assert.Equal(t, want.AccessKeyID, got.AccessKeyID)
				assert.Equal(t, want.SecretAccessKey, got.SecretAccessKey)
				assert.Equal(t, want.Token, got.SessionToken)
				// The SDK's credentials cache moves Expires earlier by its
				// expiry window (5 min for the container provider).
				w, err := time.Parse(time.RFC3339, want.Expiration)
				require.NoError(t, err)
				assert.False(t, got.Expires.After(w), "served %s, SDK holds %s", w, got.Expires)
				assert.LessOrEqual(t, w.Sub(got.Expires), 5*time.Minute)
			})
		}
	})
}

func assertSameTime(t *testing.T, want, got string) {
	t.Helper()
	w, err := time.Parse(time.RFC3339, want)
	require.NoError(t, err)
	g, err := time.Parse(time.RFC3339, got)
	require.NoError(t, err, got)
	assert.True(t, w.Equal(g), "expiration: want %s, got %s", want, got)
}

// TestKill9WarmRestart ensures that an agent restarted after SIGKILL serves its cached credentials at once, with the endpoint down.
//
// TestKill9WarmRestart kills the agent with SIGKILL, stops the simulator and
// starts the agent again: the cached credentials are served at once, and the
// state file never held the secret in plaintext.
func TestKill9WarmRestart(t *testing.T) {
	e := agenttest.New(t, time.Hour, "")
	p := startAgent(t, e)
	first := served(t, e.Socket, "device")
	kill9Sealed(t, p, e, first)

	startAgent(t, e)
	again := served(t, e.Socket, "device")
	assert.Equal(t, *first, *again)

	code, out, stderr := tether(t, nil, "status", "--socket", e.Socket)
	require.Equal(t, 0, code, stderr)
	assert.Contains(t, out, "role device")
	assert.Contains(t, out, "valid, expires")
	assert.NotContains(t, out, first.SecretAccessKey)
	code, out, _ = tether(t, nil, "status", "--json", "--socket", e.Socket)
	require.Equal(t, 0, code)
	var st agent.Status
	require.NoError(t, json.Unmarshal([]byte(out), &st))
	assert.Equal(t, "gw-0001", st.Identity.ThingName)
}

// kill9Sealed kills the agent with SIGKILL, stops the simulator (so what
// is served next comes from the state file) and checks that the file holds
// the credentials the agent served sealed, not in plaintext.
func kill9Sealed(t *testing.T, p *agentProcess, e *agenttest.Env, served *agent.Credentials) {
	t.Helper()
	require.NoError(t, p.cmd.Process.Kill())
	p.cmd.Wait()
	e.Sim.Close()
	raw, err := os.ReadFile(e.State)
	require.NoError(t, err)
	assert.False(t, bytes.Contains(raw, []byte(served.SecretAccessKey)), "secret access key in plaintext in the state file")
	assert.False(t, bytes.Contains(raw, []byte(served.Token)), "session token in plaintext in the state file")
}

// TestAgentStartFailures ensures that a bad start is one line and the right exit status, before READY.
func TestAgentStartFailures(t *testing.T) {
	e := agenttest.New(t, time.Hour, "")
	e.WriteConfig("", e.Socket, filepath.Join(e.Dir, "missing", "tether.sock"))
	code, _, stderr := tether(t, nil, "run", "-c", e.Config)
	assert.Equal(t, 2, code)
	assert.Equal(t, 1, strings.Count(stderr, "\n"), stderr)
	assert.Contains(t, stderr, "does not exist")

	e2 := agenttest.New(t, time.Hour, "")
	ro := filepath.Join(e2.Dir, "ro")
	require.NoError(t, os.Mkdir(ro, 0o500))
	e2.WriteConfig("", e2.State, filepath.Join(ro, "state.db"))
	if os.Geteuid() == 0 {
		// root writes anywhere; make the directory a file's child instead.
		e2.WriteConfig("", e2.State, filepath.Join(e2.KeyFile, "state.db"))
	}
	code, _, stderr = tether(t, nil, "run", "-c", e2.Config)
	assert.NotEqual(t, 0, code)
	assert.Equal(t, 1, strings.Count(stderr, "\n"), stderr)
	assert.Contains(t, stderr, "state")
}

// TestRefreshShortLived ensures that with 30-second credentials every credential served is unexpired and fresh ones keep coming.
//
// With 30-second credentials from the simulator, for
// two minutes every credential served is unexpired and at least three
// distinct ones were served. The poll interval paces the clients; nothing
// waits on a sleep to happen.
func TestRefreshShortLived(t *testing.T) {
	if testing.Short() {
		t.Skip("two minutes of real refreshes; run without -short")
	}
	e := agenttest.New(t, 30*time.Second, "")
	startAgent(t, e)
	seen := map[string]bool{}
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	end := time.Now().Add(2 * time.Minute)
	for n := 0; time.Now().Before(end); n++ {
		c := served(t, e.Socket, "device")
		exp, err := time.Parse(time.RFC3339, c.Expiration)
		require.NoError(t, err)
		now := time.Now()
		require.True(t, exp.After(now), "request %d served credentials that expired at %s (now %s)", n, exp, now)
		// The simulator's own record says when they really expire.
		for _, g := range e.Sim.Grants() {
			if g.AccessKeyID == c.AccessKeyID {
				require.True(t, g.Expiration.After(now), "served %s after its real expiry", c.AccessKeyID)
			}
		}
		seen[c.AccessKeyID] = true
		<-tick.C
	}
	assert.GreaterOrEqual(t, len(seen), 3, "distinct credentials served in two minutes")
	t.Logf("%d distinct credentials served, %d issued", len(seen), len(e.Sim.Grants()))
}

// TestSocketActivation ensures that the agent serves on the socket systemd-socket-activate passes it.
//
// Systemd's own systemd-socket-activate holds the
// socket (as tether.socket would) and starts the agent on the first
// connection, passing the listener as LISTEN_FDS with the name "api".
func TestSocketActivation(t *testing.T) {
	activate, err := exec.LookPath("systemd-socket-activate")
	require.NoError(t, err, "systemd-socket-activate missing: install the Debian package systemd")
	e := agenttest.New(t, time.Hour, "")
	sock := filepath.Join(e.Dir, "activated.sock")
	cmd := exec.Command(activate, "--listen="+sock, "--fdname=api", tetherBin, "run", "-c", e.Config)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	require.NoError(t, cmd.Start())
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			cmd.Process.Signal(syscall.SIGTERM)
			cmd.Wait()
		}
	}
	t.Cleanup(stop)
	// The socket exists before the agent runs; the first request starts it.
	// It is listening only a moment after its file appears.
	waitFor(t, func() bool {
		c, err := net.Dial("unix", sock)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	c, err := agent.FetchCredentials(context.Background(), sock, "device")
	require.NoError(t, err)
	assert.Equal(t, e.Sim.Grants()[0].AccessKeyID, c.AccessKeyID)
	stop()
	assert.Contains(t, stderr.String(), "using the socket passed by the service manager")
	_, err = os.Stat(e.Socket)
	assert.True(t, os.IsNotExist(err), "the agent must not create its own socket when one is passed")
}

// waitFor polls cond every 20 ms for at most 10 s.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); {
		require.True(t, time.Now().Before(deadline), "condition not met within 10 s")
		time.Sleep(20 * time.Millisecond)
	}
}
