package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tetherd/tether/agent"
	"github.com/tetherd/tether/agent/agenttest"
)

// inIMDSNetns marks the test binary re-run inside a network namespace of
// its own, where 169.254.169.254 is on lo.
const inIMDSNetns = "TETHER_TEST_IMDS_NETNS"

// TestIMDSOnLinkLocal ensures that with 169.254.169.254 put on lo, as the
// docs tell an operator, Debian's boto3 and AWS CLI find the credentials at
// EC2's own address with no setting at all, and that a neighbour routed to
// that address from another network (namespace) is refused although Linux
// delivers its packets. It runs in a network namespace of its own, so the
// host's network is left as it was.
func TestIMDSOnLinkLocal(t *testing.T) {
	if os.Getenv(inIMDSNetns) == "" {
		for _, tool := range []string{"unshare", "nsenter", "ip", "curl", "/usr/bin/aws", "/usr/bin/python3"} {
			_, err := exec.LookPath(tool)
			require.NoError(t, err, "%s missing: install the Debian packages util-linux, iproute2, curl, awscli, python3-boto3 (make deps)", tool)
		}
		if os.Geteuid() != 0 {
			t.Fatal("this test makes network namespaces and needs root (make test runs as root)")
		}
		cmd := exec.Command("unshare", "--net", "sh", "-ec",
			`ip link set lo up; ip addr add 169.254.169.254/32 dev lo; exec "$0" -test.run '^TestIMDSOnLinkLocal$' -test.v`, os.Args[0])
		cmd.Env = append(os.Environ(), inIMDSNetns+"=1", "TETHER_BIN="+tetherBin)
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, "in the network namespace:\n%s", out)
		require.Contains(t, string(out), "--- PASS: TestIMDSOnLinkLocal", "the test did not run in the namespace:\n%s", out)
		t.Logf("in the network namespace:\n%s", out)
		return
	}

	e := agenttest.New(t, time.Hour, "")
	e.WriteConfig("", "[serve]\n", "[serve]\nimds_endpoint = \"169.254.169.254:80\"\n")
	startAgent(t, e)
	want := served(t, e.Socket, agent.DeviceRole)
	// No endpoint setting: the clients' default, http://169.254.169.254/.
	env := []string{"PATH=/usr/bin:/bin", "HOME=" + e.Dir, "AWS_CONFIG_FILE=/dev/null", "AWS_SHARED_CREDENTIALS_FILE=/dev/null"}

	cmd := exec.Command("/usr/bin/python3", "-c", `import boto3, json
c = boto3.Session(region_name="eu-west-1").get_credentials()
f = c.get_frozen_credentials()
print(json.dumps({"AccessKeyId": f.access_key, "SecretAccessKey": f.secret_key, "SessionToken": f.token, "Method": c.method}))`)
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, string(out))
	var got struct{ AccessKeyId, SecretAccessKey, SessionToken, Method string }
	require.NoError(t, json.Unmarshal(out, &got), string(out))
	assert.Equal(t, "iam-role", got.Method)
	assert.Equal(t, want.AccessKeyID, got.AccessKeyId)
	assert.Equal(t, want.SecretAccessKey, got.SecretAccessKey)
	assert.Equal(t, want.Token, got.SessionToken)

	cmd = exec.Command("/usr/bin/aws", "configure", "export-credentials", "--format", "process")
	cmd.Env = env
	out, err = cmd.CombinedOutput()
	require.NoError(t, err, string(out))
	var proc processCredentials
	require.NoError(t, json.Unmarshal(out, &proc), string(out))
	assert.Equal(t, want.SecretAccessKey, proc.SecretAccessKey)

	// A neighbour: another network namespace on a veth link, with a route
	// to 169.254.169.254 through this one.
	neighbour := exec.Command("unshare", "--net", "sleep", "600")
	require.NoError(t, neighbour.Start())
	t.Cleanup(func() { neighbour.Process.Kill(); neighbour.Wait() })
	pid := strconv.Itoa(neighbour.Process.Pid)
	run := func(argv ...string) string {
		t.Helper()
		out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput()
		require.NoError(t, err, "%s: %s", strings.Join(argv, " "), out)
		return string(out)
	}
	inNeighbour := func(argv ...string) []string { return append([]string{"nsenter", "-t", pid, "-n"}, argv...) }
	// unshare is still in this namespace for a moment after it starts.
	self, err := os.Readlink("/proc/self/ns/net")
	require.NoError(t, err)
	waitFor(t, func() bool {
		ns, err := os.Readlink("/proc/" + pid + "/ns/net")
		return err == nil && ns != self && exec.Command("nsenter", "-t", pid, "-n", "true").Run() == nil
	})
	run("ip", "link", "add", "imds0", "type", "veth", "peer", "name", "imds1", "netns", pid)
	run("ip", "addr", "add", "10.254.0.1/24", "dev", "imds0")
	run("ip", "link", "set", "imds0", "up")
	run(inNeighbour("ip", "addr", "add", "10.254.0.2/24", "dev", "imds1")...)
	run(inNeighbour("ip", "link", "set", "imds1", "up")...)
	run(inNeighbour("ip", "route", "add", "169.254.169.254/32", "via", "10.254.0.1")...)
	body := run(inNeighbour("curl", "-s", "-m", "10", "-X", "PUT", "-H", "X-aws-ec2-metadata-token-ttl-seconds: 60",
		"-w", "\n%{http_code}", "http://169.254.169.254/latest/api/token")...)
	assert.True(t, strings.HasSuffix(body, "\n403"), "the neighbour got: %s", body)
	assert.Contains(t, body, "not_local")
	fmt.Fprintln(os.Stderr, "neighbour refused:", strings.TrimSpace(body))
}
