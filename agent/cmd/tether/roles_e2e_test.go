package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tetherd/tether/agent"
	"github.com/tetherd/tether/agent/agenttest"
	"github.com/tetherd/tether/credprovider/ststest"
)

// deviceLookup is a ststest lookup for the device role of the agent on
// *socket, as arn: the simulator keeps no secrets, so it asks the agent for
// the credentials that must have signed each request.
func deviceLookup(socket *string, arn string) func(string) (aws.Credentials, string, bool) {
	return func(akid string) (aws.Credentials, string, bool) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c, err := agent.FetchCredentials(ctx, *socket, agent.DeviceRole)
		if err != nil || c.AccessKeyID != akid {
			return aws.Credentials{}, "", false
		}
		return aws.Credentials{AccessKeyID: c.AccessKeyID, SecretAccessKey: c.SecretAccessKey, SessionToken: c.Token}, arn, true
	}
}

// TestRoleThroughCredentialProcess ensures that the AWS CLI gets an assumed role's credentials through tether credential-process --role.
//
// Debian's AWS CLI gets an assumed
// [[role]]'s credentials from `tether credential-process --role NAME`, the
// agent having assumed it at a local STS endpoint that checks every
// signature against the device role's credentials.
func TestRoleThroughCredentialProcess(t *testing.T) {
	_, err := os.Stat("/usr/bin/aws")
	require.NoError(t, err, "/usr/bin/aws missing: install the Debian package awscli (make deps)")
	const roleARN = "arn:aws:iam::123456789012:role/telemetry"
	var socket string
	srv := ststest.NewServer(ststest.WithRegion("eu-west-1"), ststest.WithLookup(deviceLookup(&socket, "arn:aws:sts::123456789012:assumed-role/gateway/gw-0001")))
	t.Cleanup(srv.Close)
	srv.AddRole(ststest.Role{ARN: roleARN})

	e := agenttest.New(t, time.Hour, fmt.Sprintf("[[role]]\nname = \"telemetry\"\nrole_arn = %q\nsts_endpoint = %q\n", roleARN, srv.URL))
	socket = e.Socket
	startAgent(t, e)

	awsConfig := filepath.Join(e.Dir, "aws-config")
	require.NoError(t, os.WriteFile(awsConfig, []byte(fmt.Sprintf(
		"[profile telemetry]\ncredential_process = %s credential-process --role telemetry --socket %s\nregion = eu-west-1\n", tetherBin, e.Socket)), 0o600))
	cmd := exec.Command("/usr/bin/aws", "configure", "export-credentials", "--profile", "telemetry", "--format", "process")
	cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=" + e.Dir, "AWS_CONFIG_FILE=" + awsConfig,
		"AWS_SHARED_CREDENTIALS_FILE=" + filepath.Join(e.Dir, "nope"), "AWS_EC2_METADATA_DISABLED=true"}
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, string(out))
	var got processCredentials
	require.NoError(t, json.Unmarshal(out, &got), string(out))

	calls := srv.CallsFor(roleARN)
	require.Len(t, calls, 1)
	assert.Equal(t, calls[0].Issued, got.AccessKeyID, "the CLI got the assumed role's credentials")
	device := served(t, e.Socket, agent.DeviceRole)
	assert.Equal(t, device.AccessKeyID, calls[0].AccessKeyID, "assumed with the device role's credentials")
	want := served(t, e.Socket, "telemetry")
	assert.Equal(t, want.SecretAccessKey, got.SecretAccessKey)
	assert.Equal(t, want.Token, got.SessionToken)
	assertSameTime(t, want.Expiration, got.Expiration)
}

// TestConfigCheckRoleErrors ensures that config check reports a role's source loop and out-of-range duration, one line each.
func TestConfigCheckRoleErrors(t *testing.T) {
	e := agenttest.New(t, time.Hour, "[[role]]\nname = \"loop\"\nsource = \"role:loop\"\nrole_arn = \"arn:aws:iam::123456789012:role/x\"\nduration = \"20h\"\n")
	stderr := checkRefuses(t, e, 2)
	assert.Contains(t, stderr, "role[0].source: role \"loop\" is its own source")
	assert.Contains(t, stderr, "role[0].duration: 20h0m0s is out of range")
}

// checkRefuses runs tether config check on e's configuration, which must
// exit 2 with n lines on stderr, and returns them.
func checkRefuses(t *testing.T, e *agenttest.Env, n int) string {
	t.Helper()
	code, _, stderr := tether(t, []string{"AWS_CONFIG_FILE=/dev/null"}, "config", "check", "-c", e.Config)
	assert.Equal(t, 2, code)
	lines := strings.Split(strings.TrimSpace(stderr), "\n")
	assert.Len(t, lines, n, stderr)
	return stderr
}
