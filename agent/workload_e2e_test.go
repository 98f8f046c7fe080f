package agent

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tetherd/tether/agent/agenttest"
	"github.com/tetherd/tether/credprovider/ststest"
	"github.com/tetherd/tether/platform/cgrouptest"
)

const (
	testTelemetry = "arn:aws:iam::123456789012:role/telemetry"
	nobody        = 65534
	// uploaderPolicy narrows the uploader's session to putting objects.
	uploaderPolicy = `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:PutObject","Resource":"arn:aws:s3:::telemetry/*"}]}`
)

// program runs a real client as uid (-1: as the test, root) inside the
// cgroup g (nil: the test's own), with only env, and returns its standard
// output; a failure fails the test with its standard error.
func program(t *testing.T, g *cgrouptest.Group, uid int, env []string, argv ...string) string {
	t.Helper()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env, cmd.Dir = append([]string{"PATH=/usr/bin:/bin"}, env...), "/"
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if uid >= 0 {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: nobody}}
	}
	if g != nil {
		g.Start(t, cmd)
	} else {
		require.NoError(t, cmd.Start())
	}
	require.NoError(t, cmd.Wait(), "%s: %s", strings.Join(argv, " "), stderr.String())
	return stdout.String()
}

// shareSocket lets other users reach the agent's socket, as its group would.
func shareSocket(t *testing.T, h *harness) {
	t.Helper()
	require.NoError(t, os.Chmod(filepath.Dir(h.Dir), 0o755))
	require.NoError(t, os.Chmod(h.Dir, 0o755))
	require.NoError(t, os.Chmod(h.Socket, 0o666))
}

// curlSocket is curl asking the agent's socket for path; it prints the body
// and then the status code on a line of its own.
func curlSocket(socket, path string) []string {
	return []string{"/usr/bin/curl", "-sS", "--unix-socket", socket, "-w", "\n%{http_code}", "http://tether" + path}
}

// curlAnswer splits curlSocket's output into the status and the decoded body.
func curlAnswer(t *testing.T, out string) (int, map[string]string) {
	t.Helper()
	i := strings.LastIndexByte(out, '\n')
	require.Positive(t, i, out)
	var code int
	fmt.Sscan(out[i+1:], &code)
	body := map[string]string{}
	require.NoError(t, json.Unmarshal([]byte(out[:i]), &body), out)
	return code, body
}

// issuedTo returns the last AssumeRole call that made a session of workload
// ("": the role's own, untagged).
func issuedTo(t *testing.T, srv *ststest.Server, workload string) ststest.Call {
	t.Helper()
	calls := srv.CallsFor(testTelemetry)
	for i := len(calls) - 1; i >= 0; i-- {
		if calls[i].Tags[TagWorkload] == workload {
			return calls[i]
		}
	}
	t.Fatalf("no AssumeRole for workload %s among %d calls", workload, len(srv.CallsFor(testTelemetry)))
	return ststest.Call{}
}

// TestAgentServesWorkloads ensures, with real programs (curl, boto3, the AWS
// CLI) run as different users and in cgroups named like systemd units, that
// each [[workload]] gets a session of its role of its own, narrowed by its
// policy and carrying tags and a source identity that name the unit and
// the device; that the STS calls its credentials sign are recorded with that
// context, as CloudTrail records them; that a unit wins over a uid; that a
// workload is refused other roles; and that other programs get what they got
// before, on the socket, the container endpoint and the IMDS endpoint alike.
func TestAgentServesWorkloads(t *testing.T) {
	if err := cgrouptest.Available(); err != nil {
		t.Skipf("needs cgroups: %v", err)
	}
	for _, bin := range []string{"/usr/bin/curl", "/usr/bin/python3", "/usr/bin/aws"} {
		_, err := os.Stat(bin)
		require.NoError(t, err, "%s missing: make deps installs it", bin)
	}
	var socket string
	srv := stsForAgent(t, &socket)
	srv.AddRole(ststest.Role{ARN: testTelemetry})
	port, imdsPort := fmt.Sprint(agenttest.FreePort(t)), fmt.Sprint(agenttest.FreePort(t))
	extra := fmt.Sprintf(`
[[role]]
name         = "telemetry"
role_arn     = %q
sts_endpoint = %q

[[workload]]
name   = "uploader"
unit   = "uploader.service"
role   = "telemetry"
policy = '%s'

[[workload]]
name = "batch"
uid  = %d
role = "telemetry"
`, testTelemetry, srv.URL, uploaderPolicy, nobody)
	h := newHarness(t, time.Hour, extra)
	h.WriteConfig(extra, "[serve]\n", "[serve]\ncontainer_endpoint = \"127.0.0.1:"+port+"\"\nimds_endpoint = \"127.0.0.1:"+imdsPort+"\"\n")
	socket = h.Socket
	h.start()
	shareSocket(t, h)

	// Every session is fetched at start, in the background.
	require.Eventually(t, func() bool { return len(srv.CallsFor(testTelemetry)) == 3 }, 30*time.Second, 10*time.Millisecond)

	uploader := cgrouptest.New(t, "uploader.service")
	other := cgrouptest.New(t, "other.service")

	up := issuedTo(t, srv, "uploader")
	assert.Equal(t, map[string]string{TagThing: "gw-0001", TagWorkload: "uploader", TagUnit: "uploader.service"}, up.Tags)
	assert.Equal(t, "uploader.service@gw-0001", up.SourceIdentity)
	assert.Equal(t, "uploader@gw-0001", up.Params.Get("RoleSessionName"))
	assert.Equal(t, uploaderPolicy, up.Policy)
	batch := issuedTo(t, srv, "batch")
	assert.Equal(t, map[string]string{TagThing: "gw-0001", TagWorkload: "batch", TagUID: "65534"}, batch.Tags)
	assert.Equal(t, "batch@gw-0001", batch.SourceIdentity)
	assert.Empty(t, batch.Policy)
	device := h.credentials("/v1/credentials")
	for _, c := range []ststest.Call{up, batch} {
		assert.Equal(t, device.AccessKeyID, c.AccessKeyID, "assumed with the device role, as the role is")
	}

	t.Run("on the socket", func(t *testing.T) {
		for _, tc := range []struct {
			name string
			g    *cgrouptest.Group
			uid  int
			path string
			want string // access key id
		}{
			{"the unit gets its session", uploader, -1, "/v1/credentials", up.Issued},
			{"and by its role's name", uploader, -1, "/v1/credentials/telemetry", up.Issued},
			{"the unit wins over the uid", uploader, nobody, "/v1/credentials", up.Issued},
			{"the uid gets its session", nil, nobody, "/v1/credentials", batch.Issued},
			{"in another unit too", other, nobody, "/v1/credentials", batch.Issued},
			{"other programs: the device role", other, -1, "/v1/credentials", device.AccessKeyID},
			{"other programs: the role unscoped", nil, -1, "/v1/credentials/telemetry", issuedTo(t, srv, "").Issued},
		} {
			t.Run(tc.name, func(t *testing.T) {
				code, body := curlAnswer(t, program(t, tc.g, tc.uid, nil, curlSocket(h.Socket, tc.path)...))
				require.Equal(t, http.StatusOK, code, body)
				assert.Equal(t, tc.want, body["AccessKeyId"])
			})
		}

		code, body := curlAnswer(t, program(t, uploader, -1, nil, curlSocket(h.Socket, "/v1/credentials/device")...))
		assert.Equal(t, http.StatusForbidden, code)
		assert.Equal(t, "workload_role", body["code"])
		assert.Contains(t, body["message"], "workload uploader (unit uploader.service), which gets role telemetry only")
		code, body = curlAnswer(t, program(t, nil, -1, nil, curlSocket(h.Socket, "/v1/credentials/telemetry%2Fuploader")...))
		assert.Equal(t, http.StatusNotFound, code, "a workload's session is not a role anyone may name")
		assert.Equal(t, "unknown_role", body["code"])
	})

	t.Run("CloudTrail tells the programs apart", func(t *testing.T) {
		// The AWS CLI, with the uploader's credentials, calls STS: the call is
		// recorded with the session's source identity and tags.
		code, body := curlAnswer(t, program(t, uploader, nobody, nil, curlSocket(h.Socket, "/v1/credentials")...))
		require.Equal(t, http.StatusOK, code)
		out := program(t, nil, -1, []string{"AWS_ACCESS_KEY_ID=" + body["AccessKeyId"], "AWS_SECRET_ACCESS_KEY=" + body["SecretAccessKey"],
			"AWS_SESSION_TOKEN=" + body["Token"], "AWS_REGION=eu-west-1", "AWS_CONFIG_FILE=/dev/null", "AWS_EC2_METADATA_DISABLED=true", "HOME=" + h.Dir},
			"/usr/bin/aws", "sts", "get-caller-identity", "--endpoint-url", srv.URL, "--output", "text", "--query", "Arn")
		assert.Equal(t, "arn:aws:sts::123456789012:assumed-role/telemetry/uploader@gw-0001", strings.TrimSpace(out))
		calls := srv.CallsSignedBy(body["AccessKeyId"])
		require.Len(t, calls, 1)
		assert.Equal(t, "uploader.service@gw-0001", calls[0].Session.SourceIdentity)
		assert.Equal(t, "uploader.service", calls[0].Session.Tags[TagUnit])
		assert.Equal(t, "gw-0001", calls[0].Session.Tags[TagThing])
	})

	t.Run("boto3 on the container endpoint", func(t *testing.T) {
		token, err := os.ReadFile(h.Token)
		require.NoError(t, err)
		// The SDK's own container provider, then an STS call signed with
		// what it got.
		script := `
import boto3
s = boto3.Session()
c = s.get_credentials().get_frozen_credentials()
arn = s.client("sts", endpoint_url="` + srv.URL + `").get_caller_identity()["Arn"]
print(c.access_key, arn)
`
		env := []string{"AWS_DEFAULT_REGION=eu-west-1", "AWS_CONTAINER_CREDENTIALS_FULL_URI=http://127.0.0.1:" + port + "/v1/credentials",
			"AWS_CONTAINER_AUTHORIZATION_TOKEN=" + string(token), "AWS_REGION=eu-west-1", "AWS_CONFIG_FILE=/dev/null",
			"AWS_SHARED_CREDENTIALS_FILE=/dev/null", "AWS_EC2_METADATA_DISABLED=true"}
		for _, tc := range []struct {
			name string
			g    *cgrouptest.Group
			uid  int
			want string
		}{
			{"the unit, found by its socket's cgroup", uploader, nobody, up.Issued + " arn:aws:sts::123456789012:assumed-role/telemetry/uploader@gw-0001"},
			{"the uid, found by sock_diag", other, nobody, batch.Issued + " arn:aws:sts::123456789012:assumed-role/telemetry/batch@gw-0001"},
			{"others: the device role", other, -1, device.AccessKeyID + " arn:aws:sts::123456789012:assumed-role/gateway/gw-0001"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				assert.Equal(t, tc.want, strings.TrimSpace(program(t, tc.g, tc.uid, env, "/usr/bin/python3", "-c", script)))
			})
		}
	})

	t.Run("boto3 on the IMDS endpoint", func(t *testing.T) {
		// botocore's own IMDS provider (token PUT, the role's name, its
		// credentials), then an STS call signed with what it got.
		script := `
import boto3
s = boto3.Session()
c = s.get_credentials()
f = c.get_frozen_credentials()
arn = s.client("sts", endpoint_url="` + srv.URL + `").get_caller_identity()["Arn"]
print(c.method, f.access_key, arn)
`
		env := []string{"AWS_DEFAULT_REGION=eu-west-1", "AWS_EC2_METADATA_SERVICE_ENDPOINT=http://127.0.0.1:" + imdsPort + "/",
			"AWS_REGION=eu-west-1", "AWS_CONFIG_FILE=/dev/null", "AWS_SHARED_CREDENTIALS_FILE=/dev/null"}
		for _, tc := range []struct {
			name string
			g    *cgrouptest.Group
			uid  int
			want string
		}{
			{"the unit, found by its socket's cgroup", uploader, nobody, "iam-role " + up.Issued + " arn:aws:sts::123456789012:assumed-role/telemetry/uploader@gw-0001"},
			{"the uid, found by sock_diag", other, nobody, "iam-role " + batch.Issued + " arn:aws:sts::123456789012:assumed-role/telemetry/batch@gw-0001"},
			{"others: the device role", other, -1, "iam-role " + device.AccessKeyID + " arn:aws:sts::123456789012:assumed-role/gateway/gw-0001"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				assert.Equal(t, tc.want, strings.TrimSpace(program(t, tc.g, tc.uid, env, "/usr/bin/python3", "-c", script)))
			})
		}
		// A workload's session is listed under its role's name, and no
		// other role is served to it.
		list := `import sys, urllib.request as u
b = "http://127.0.0.1:` + imdsPort + `"
tok = u.urlopen(u.Request(b + "/latest/api/token", method="PUT", headers={"X-aws-ec2-metadata-token-ttl-seconds": "60"})).read().decode()
name = u.urlopen(u.Request(b + "/latest/meta-data/iam/security-credentials/", headers={"X-aws-ec2-metadata-token": tok})).read().decode()
try:
    u.urlopen(u.Request(b + "/latest/meta-data/iam/security-credentials/device", headers={"X-aws-ec2-metadata-token": tok}))
    other = 200
except u.HTTPError as e:
    other = e.code
print(name, other)
`
		assert.Equal(t, "telemetry 404", strings.TrimSpace(program(t, uploader, nobody, nil, "/usr/bin/python3", "-c", list)))
		assert.Equal(t, "device 200", strings.TrimSpace(program(t, other, -1, nil, "/usr/bin/python3", "-c", list)))
	})

	t.Run("status lists each workload's session", func(t *testing.T) {
		assert.Equal(t, []string{"device", "telemetry", "telemetry/batch", "telemetry/uploader"}, h.validRoles())
	})
}

// TestWorkloadReload ensures that a reload applies a changed policy file at
// once, with a new session whose policy STS receives, while a reload that
// only re-indents the file keeps the session and its credentials; and that
// a policy file made invalid is refused by the reload, the running session
// served on.
func TestWorkloadReload(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("runs curl as nobody, which needs root")
	}
	var socket string
	srv := stsForAgent(t, &socket)
	srv.AddRole(ststest.Role{ARN: testTelemetry})
	h := newHarness(t, time.Hour, "")
	policy := filepath.Join(h.Dir, "policy.json")
	require.NoError(t, os.WriteFile(policy, []byte(`{"Version":"2012-10-17","Statement":[]}`), 0o644))
	h.WriteConfig(fmt.Sprintf(`
[[role]]
name         = "telemetry"
role_arn     = %q
sts_endpoint = %q

[[workload]]
name        = "self"
uid         = %d
role        = "telemetry"
policy_file = %q
`, testTelemetry, srv.URL, nobody, policy))
	socket = h.Socket
	h.start()
	shareSocket(t, h)
	served := func() string {
		code, body := curlAnswer(t, program(t, nil, nobody, nil, curlSocket(h.Socket, "/v1/credentials")...))
		require.Equal(t, http.StatusOK, code)
		return body["AccessKeyId"]
	}
	require.Eventually(t, func() bool { return len(srv.CallsFor(testTelemetry)) == 2 }, 30*time.Second, 10*time.Millisecond)
	first := served()
	assert.Equal(t, issuedTo(t, srv, "self").Issued, first)

	require.NoError(t, os.WriteFile(policy, []byte("{\n  \"Version\": \"2012-10-17\",\n  \"Statement\": []\n}\n"), 0o644))
	h.reloadAndWait()
	assert.Equal(t, first, served(), "white space decides nothing")
	assert.Len(t, srv.CallsFor(testTelemetry), 2)

	narrower := `{"Version":"2012-10-17","Statement":[{"Effect":"Deny","Action":"*","Resource":"*"}]}`
	require.NoError(t, os.WriteFile(policy, []byte(narrower), 0o644))
	h.reloadAndWait()
	second := served()
	assert.NotEqual(t, first, second)
	call := issuedTo(t, srv, "self")
	assert.Equal(t, second, call.Issued)
	assert.Equal(t, narrower, call.Policy)

	require.NoError(t, os.WriteFile(policy, []byte(`{"Version":`), 0o644))
	h.reloadAndWait()
	assert.Equal(t, second, served(), "a broken policy file is refused; the running session is served")
}
