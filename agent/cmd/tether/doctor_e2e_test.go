package main

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/credentials/ssocreds"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tetherd/tether/agent"
	"github.com/tetherd/tether/agent/agenttest"
	"github.com/tetherd/tether/credprovider/iotcredtest"
	"github.com/tetherd/tether/credprovider/ststest"
	"github.com/tetherd/tether/hsm"
	"github.com/tetherd/tether/hsm/hsmtest"
	"github.com/tetherd/tether/mqtt/mqtttest"
)

// doctor runs `tether doctor --json` and returns its exit status and its
// parsed findings.
func doctor(t *testing.T, env []string, args ...string) (int, *agent.Diagnosis) {
	t.Helper()
	code, out, stderr := tether(t, env, append([]string{"doctor", "--json", "--user", "-", "--timeout", "5s"}, args...)...)
	var d agent.Diagnosis
	require.NoError(t, json.Unmarshal([]byte(out), &d), "stdout: %s\nstderr: %s", out, stderr)
	return code, &d
}

// failed returns the fix of each failed check, by "area/check".
func failed(d *agent.Diagnosis) map[string]string {
	m := map[string]string{}
	for _, f := range d.Findings {
		if f.Verdict == agent.Fail {
			m[f.Area+"/"+f.Check] = f.Fix
		}
	}
	return m
}

// finding returns the finding of area/check, failing the test without one.
func finding(t *testing.T, d *agent.Diagnosis, key string) agent.Finding {
	t.Helper()
	for _, f := range d.Findings {
		if f.Area+"/"+f.Check == key {
			return f
		}
	}
	t.Fatalf("no finding %s in %+v", key, d.Findings)
	return agent.Finding{}
}

// TestDoctorHealthy ensures that a healthy gateway, with its agent running,
// passes every check (exit 0), prints no secret, and reads as a checklist.
func TestDoctorHealthy(t *testing.T) {
	e := agenttest.New(t, time.Hour, "")
	broker := mqtttest.NewBroker(t, mqtttest.Options{PKI: e.Sim.PKI})
	e.WriteConfig(fmt.Sprintf("\n[mqtt]\nendpoint = %q\nca_file = %q\n", broker.Addr, broker.CAFile))
	startAgent(t, e)
	served(t, e.Socket, agent.DeviceRole)
	waitStatus(t, e.Socket, func(st *agent.Status) bool { return st.MQTT != nil && st.MQTT.State == "connected" })
	code, d := doctor(t, nil, "-c", e.Config)
	assert.Equal(t, 0, code, "%+v", failed(d))
	assert.True(t, d.OK)
	assert.Empty(t, failed(d))
	for _, key := range []string{"clock/endpoint clock", "certificate/chain", "certificate/expiry", "certificate/key", "files/key",
		"network/credentials endpoint dns", "network/credentials endpoint tcp", "network/credentials endpoint tls",
		"network/credentials endpoint role alias", "network/MQTT endpoint tls", "network/MQTT endpoint connect",
		"agent/reachable", "agent/outbox", "roles/role device"} {
		assert.Equal(t, agent.Pass, finding(t, d, key).Verdict, key)
	}
	assert.Contains(t, finding(t, d, "network/credentials endpoint dns").Detail, "is an IP address: no lookup")

	code, out, _ := tether(t, nil, "doctor", "--user", "-", "-c", e.Config)
	assert.Equal(t, 0, code, out)
	assert.Contains(t, out, "\n  ✓ key: ")
	assert.Contains(t, out, "\n  ✓ credentials endpoint role alias: ")
	assert.Contains(t, out, "everything passes")
	noSecret(t, e, out)
	t.Logf("tether doctor:\n%s", out)
}

// noSecret fails if out holds any credential the agent serves or the token.
func noSecret(t *testing.T, e *agenttest.Env, out string) {
	t.Helper()
	c := served(t, e.Socket, agent.DeviceRole)
	for _, s := range []string{c.AccessKeyID, c.SecretAccessKey, c.Token} {
		assert.NotContains(t, out, s)
	}
	for _, g := range e.Sim.Grants() {
		assert.NotContains(t, out, g.AccessKeyID)
	}
	if tok, err := os.ReadFile(e.Token); err == nil && len(tok) > 0 {
		assert.NotContains(t, out, string(tok))
	}
}

// TestDoctorFailures ensures that each fault injected into a gateway whose
// agent runs gives exactly the failed checks it should, each with the fix
// that mends it, and exit 1.
func TestDoctorFailures(t *testing.T) {
	otherCA := func(t *testing.T, e *agenttest.Env) string {
		p, err := iotcredtest.NewPKI()
		require.NoError(t, err)
		f := filepath.Join(e.Dir, "other-ca.crt")
		require.NoError(t, os.WriteFile(f, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: p.CA.Raw}), 0o644))
		return f
	}
	for _, tc := range []struct {
		name string
		// inject breaks the gateway once its agent runs and returns the
		// edits to the configuration the doctor reads.
		inject func(t *testing.T, e *agenttest.Env) []string
		want   map[string]string // area/check → a part of its fix
	}{{
		name: "skewed Date",
		inject: func(t *testing.T, e *agenttest.Env) []string {
			// The same service, its clock two hours ahead of ours.
			sim, err := iotcredtest.NewServer(iotcredtest.WithPKI(e.Sim.PKI), iotcredtest.WithRoleAlias(agenttest.RoleAlias, time.Hour),
				iotcredtest.WithClock(func() time.Time { return time.Now().Add(2 * time.Hour) }))
			require.NoError(t, err)
			t.Cleanup(sim.Close)
			return []string{e.Sim.Endpoint, sim.Endpoint}
		},
		want: map[string]string{"clock/endpoint clock": "set the clock"},
	}, {
		name: "wrong CA",
		inject: func(t *testing.T, e *agenttest.Env) []string {
			return []string{filepath.Join(e.Dir, "ca.crt"), otherCA(t, e)}
		},
		want: map[string]string{"network/credentials endpoint tls": "ca_file"},
	}, {
		name: "refused alias",
		inject: func(*testing.T, *agenttest.Env) []string {
			return []string{`role_alias          = "` + agenttest.RoleAlias + `"`, `role_alias = "no-such-alias"`}
		},
		want: map[string]string{"network/credentials endpoint role alias": "role_alias"},
	}, {
		name: "wrong mode on the key file",
		inject: func(t *testing.T, e *agenttest.Env) []string {
			require.NoError(t, os.Chmod(e.KeyFile, 0o644))
			return nil
		},
		want: map[string]string{"files/key": "chmod 600 ", "certificate/key": "chmod 600 "},
	}, {
		name: "missing token file",
		inject: func(t *testing.T, e *agenttest.Env) []string {
			require.NoError(t, os.Remove(e.Token))
			return nil
		},
		want: map[string]string{"files/token file": "restart the agent"},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			port := agenttest.FreePort(t)
			e := agenttest.New(t, time.Hour, "")
			e.WriteConfig("", "[serve]\n", fmt.Sprintf("[serve]\ncontainer_endpoint = \"127.0.0.1:%d\"\n", port))
			startAgent(t, e)
			served(t, e.Socket, agent.DeviceRole)
			edits := tc.inject(t, e)
			e.WriteConfig("", append([]string{"[serve]\n", fmt.Sprintf("[serve]\ncontainer_endpoint = \"127.0.0.1:%d\"\n", port)}, edits...)...)
			code, d := doctor(t, nil, "-c", e.Config)
			assert.Equal(t, 1, code)
			assert.False(t, d.OK)
			got := failed(d)
			assert.Len(t, got, len(tc.want), "%+v", got)
			for key, fix := range tc.want {
				assert.Contains(t, got[key], fix, "%s: %+v", key, got)
			}
		})
	}
}

// TestDoctorUnreadableConfig ensures that a configuration that cannot be
// read or is invalid is exit 2, with its error, as for every command.
func TestDoctorUnreadableConfig(t *testing.T) {
	code, _, stderr := tether(t, nil, "doctor", "-c", filepath.Join(t.TempDir(), "nope.toml"))
	assert.Equal(t, 2, code)
	assert.Contains(t, stderr, "cannot read the configuration")
}

// TestDoctorTokenKey ensures that the doctor opens a SoftHSM key itself
// when no agent runs (a missing token is ✗ with the fix), and asks the
// running agent instead of logging in a second time when one holds it.
func TestDoctorTokenKey(t *testing.T) {
	if testing.Short() {
		t.Skip("SoftHSM integration test")
	}
	tk := hsmtest.NewToken(t, "doctor")
	uri, pub := tk.GenerateKey(t, "device", hsm.KeyECP256)
	e := agenttest.New(t, time.Hour, "")
	cert, err := e.Sim.PKI.Sign(agenttest.ThingName, pub)
	require.NoError(t, err)
	certFile := filepath.Join(e.Dir, "token-device.crt")
	require.NoError(t, os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}), 0o644))
	e.WriteConfig("", e.CertFile, certFile, `"`+e.KeyFile+`"`, `"`+uri+`"`)

	// No agent: the doctor opens the token and fetches credentials itself.
	code, d := doctor(t, nil, "-c", e.Config)
	assert.Equal(t, 1, code)
	assert.Equal(t, map[string]string{"agent/reachable": "start it (systemctl start tether) or pass --socket"}, failed(d))
	assert.Contains(t, finding(t, d, "certificate/key").Detail, "opened and matches the certificate")
	assert.Equal(t, agent.Pass, finding(t, d, "network/credentials endpoint role alias").Verdict)

	tk.Remove(t)
	code, d = doctor(t, nil, "-c", e.Config)
	assert.Equal(t, 1, code)
	got := failed(d)
	assert.Len(t, got, 2, "%+v", got)
	assert.Contains(t, got["certificate/key"], "insert or initialise the token")
	tk.Restore(t)

	startAgent(t, e)
	served(t, e.Socket, agent.DeviceRole)
	code, d = doctor(t, nil, "-c", e.Config)
	assert.Equal(t, 0, code, "%+v", failed(d))
	assert.Contains(t, finding(t, d, "certificate/key").Detail, "held by the running agent")
	assert.Equal(t, agent.Pass, finding(t, d, "clock/endpoint clock").Verdict, "the agent's view of the endpoint's clock")
	assert.Equal(t, agent.Pass, finding(t, d, "network/credentials endpoint role alias").Verdict)
}

// TestSSOExpired ensures that a role sourced from an SSO profile whose
// cached sign-in expired is named with its profile and the fix, by
// `tether status` and by `tether doctor`, without any network request.
func TestSSOExpired(t *testing.T) {
	home := t.TempDir()
	awsDir := filepath.Join(home, ".aws")
	require.NoError(t, os.Mkdir(awsDir, 0o700))
	require.NoError(t, os.WriteFile(filepath.Join(awsDir, "config"), []byte(`[profile dev]
sso_session = corp
sso_account_id = 123456789012
sso_role_name = Gateway
region = eu-west-1

[sso-session corp]
sso_start_url = https://corp.awsapps.com/start
sso_region = eu-west-1
`), 0o600))
	t.Setenv("HOME", home)
	// The cache file the SDK names after the sso_session.
	cache, err := ssocreds.StandardCachedTokenFilepath("corp")
	require.NoError(t, err)
	require.NoError(t, os.MkdirAll(filepath.Dir(cache), 0o700))
	expired := time.Now().Add(-time.Hour).UTC().Format(time.RFC3339)
	require.NoError(t, os.WriteFile(cache,
		[]byte(`{"accessToken":"expired-token","expiresAt":"`+expired+`","region":"eu-west-1","startUrl":"https://corp.awsapps.com/start"}`), 0o600))
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(awsDir, "config"))
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(awsDir, "credentials"))

	sts := ststest.NewServer(ststest.WithRegion("eu-west-1"))
	t.Cleanup(sts.Close)
	e := agenttest.New(t, time.Hour, fmt.Sprintf(`[[role]]
name = "ops"
role_arn = "arn:aws:iam::123456789012:role/ops"
source = "profile:dev"
sts_endpoint = %q
`, sts.URL))
	startAgent(t, e)
	const fix = "aws sso login --profile dev"
	var st *agent.Status
	waitFor(t, func() bool {
		var err error
		st, err = agent.FetchStatus(context.Background(), e.Socket)
		require.NoError(t, err)
		for _, r := range st.Roles {
			if r.Name == "ops" && r.LastError != "" {
				return true
			}
		}
		return false
	})
	code, out, _ := tether(t, nil, "status", "--socket", e.Socket)
	assert.Equal(t, 0, code)
	assert.Contains(t, out, "profile dev has an SSO sign-in that expired at")
	assert.Contains(t, out, "fix")
	assert.Contains(t, out, fix)
	assert.NotContains(t, out, "expired-token")
	t.Logf("tether status:\n%s", out)

	code, d := doctor(t, nil, "-c", e.Config)
	assert.Equal(t, 1, code)
	assert.Equal(t, map[string]string{"roles/role ops": "run `" + fix + "` as the user tether runs as"}, failed(d))
	assert.Equal(t, sts.URL, "http://"+strings.TrimPrefix(finding(t, d, "network/STS "+strings.TrimPrefix(sts.URL, "http://")+" tcp").Detail, "connected to "))
}

// TestDoctorServiceUser ensures that the files the service user could not
// read or write are each a ✗ naming the user, the file and the fix, judged
// by the modes of the files and of the directories above them.
func TestDoctorServiceUser(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to own files another user cannot read")
	}
	e := agenttest.New(t, time.Hour, "")
	for dir := e.Dir; dir != "/"; dir = filepath.Dir(dir) {
		st, err := os.Stat(dir)
		require.NoError(t, err)
		require.NoError(t, os.Chmod(dir, st.Mode().Perm()|0o055)) // t.TempDir's are 0700
	}
	startAgent(t, e)
	served(t, e.Socket, agent.DeviceRole)
	code, d := doctor(t, nil, "-c", e.Config, "--user", "nobody")
	assert.Equal(t, 1, code)
	got := failed(d)
	assert.Equal(t, []string{"files/configuration access", "files/key access", "files/state directory access"}, sortedKeys(got))
	assert.Contains(t, got["files/key access"], "let user nobody read "+e.KeyFile)
	assert.Contains(t, finding(t, d, "files/key access").Detail, "user nobody cannot read "+e.KeyFile+" (mode 0600")
	assert.Equal(t, agent.Pass, finding(t, d, "files/certificate access").Verdict)
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// TestDoctorMQTTConnect ensures that with no agent running the doctor sends
// its own CONNECT to mosquitto (accepted: ✓), and that a device certificate
// the broker revoked is a ✗ of that check with its fix.
func TestDoctorMQTTConnect(t *testing.T) {
	e := agenttest.New(t, time.Hour, "")
	broker := mqtttest.NewBroker(t, mqtttest.Options{PKI: e.Sim.PKI, CRL: true})
	e.WriteConfig(fmt.Sprintf("\n[mqtt]\nendpoint = %q\nca_file = %q\n", broker.Addr, broker.CAFile))
	code, d := doctor(t, nil, "-c", e.Config)
	assert.Equal(t, 1, code)
	assert.Equal(t, []string{"agent/reachable"}, sortedKeys(failed(d)))
	assert.Contains(t, finding(t, d, "network/MQTT endpoint connect").Detail, `CONNECT accepted for client id "gw-0001"`)

	chain, err := hsm.LoadCertificateChain(e.CertFile)
	require.NoError(t, err)
	require.NoError(t, broker.RefuseCertificates([]*big.Int{chain[0].SerialNumber}))
	code, d = doctor(t, nil, "-c", e.Config)
	assert.Equal(t, 1, code)
	got := failed(d)
	assert.Equal(t, []string{"agent/reachable", "network/MQTT endpoint connect"}, sortedKeys(got))
	assert.Contains(t, got["network/MQTT endpoint connect"], "has not revoked it")
}
