package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tetherd/tether/agent"
	"github.com/tetherd/tether/agent/agenttest"
	"github.com/tetherd/tether/credprovider/ststest"
)

// TestIMDSRealClients ensures that Debian's AWS CLI and boto3, which find
// no other credentials, take the device role's from the IMDS endpoint
// (IMDSv2: the endpoint refuses v1) and sign calls with them that a local
// STS verifies, with and without the CA bundle variables of this machine in
// their environment.
func TestIMDSRealClients(t *testing.T) {
	for _, bin := range []string{"/usr/bin/aws", "/usr/bin/python3"} {
		_, err := os.Stat(bin)
		require.NoError(t, err, "%s missing: install the Debian packages awscli and python3-boto3 (make deps)", bin)
	}
	const callerARN = "arn:aws:sts::123456789012:assumed-role/gateway/gw-0001"
	var socket string
	// us-east-1: Debian's botocore signs STS calls for the global endpoint
	// there whatever the region, as AWS's legacy STS endpoints expect.
	sts := ststest.NewServer(ststest.WithLookup(deviceLookup(&socket, callerARN)))
	t.Cleanup(sts.Close)

	port := agenttest.FreePort(t)
	e := agenttest.New(t, time.Hour, "")
	e.WriteConfig("", "[serve]\n", fmt.Sprintf("[serve]\nimds_endpoint = \"127.0.0.1:%d\"\n", port))
	socket = e.Socket
	startAgent(t, e)
	want := served(t, e.Socket, agent.DeviceRole)

	// No credentials, profile or region of the test runner's: IMDS is all
	// the clients have.
	clean := []string{"PATH=/usr/bin:/bin", "HOME=" + e.Dir, "AWS_CONFIG_FILE=/dev/null", "AWS_SHARED_CREDENTIALS_FILE=/dev/null",
		fmt.Sprintf("AWS_EC2_METADATA_SERVICE_ENDPOINT=http://127.0.0.1:%d/", port),
		// Newer SDKs' switch; Debian 12's botocore ignores it, and the
		// endpoint refuses IMDSv1 anyway.
		"AWS_EC2_METADATA_V1_DISABLED=true"}
	withBundles := clean
	for _, k := range []string{"AWS_CA_BUNDLE", "SSL_CERT_FILE", "SSL_CERT_DIR"} {
		if v, ok := os.LookupEnv(k); ok {
			withBundles = append(withBundles[:len(withBundles):len(withBundles)], k+"="+v)
		}
	}
	for name, env := range map[string][]string{"clean environment": clean, "CA bundle variables": withBundles} {
		t.Run(name, func(t *testing.T) {
			t.Run("aws configure export-credentials", func(t *testing.T) {
				cmd := exec.Command("/usr/bin/aws", "configure", "export-credentials", "--format", "process")
				cmd.Env = env
				out, err := cmd.CombinedOutput()
				require.NoError(t, err, string(out))
				var got processCredentials
				require.NoError(t, json.Unmarshal(out, &got), string(out))
				assert.Equal(t, want.AccessKeyID, got.AccessKeyID)
				assert.Equal(t, want.SecretAccessKey, got.SecretAccessKey)
				assert.Equal(t, want.Token, got.SessionToken)
				assertSameTime(t, want.Expiration, got.Expiration)
			})
			t.Run("aws sts get-caller-identity", func(t *testing.T) {
				cmd := exec.Command("/usr/bin/aws", "sts", "get-caller-identity", "--endpoint-url", sts.URL, "--region", "us-east-1", "--output", "json")
				cmd.Env = env
				out, err := cmd.CombinedOutput()
				require.NoError(t, err, string(out))
				var got struct{ Arn string }
				require.NoError(t, json.Unmarshal(out, &got), string(out))
				assert.Equal(t, callerARN, got.Arn)
			})
			t.Run("boto3", func(t *testing.T) {
				cmd := exec.Command("/usr/bin/python3", "-c", `import boto3, json, sys
s = boto3.Session(region_name="us-east-1")
c = s.get_credentials()
f = c.get_frozen_credentials()
who = s.client("sts", endpoint_url=sys.argv[1]).get_caller_identity()
print(json.dumps({"AccessKeyId": f.access_key, "SecretAccessKey": f.secret_key, "SessionToken": f.token, "Method": c.method, "Arn": who["Arn"]}))`, sts.URL)
				cmd.Env = env
				out, err := cmd.CombinedOutput()
				require.NoError(t, err, string(out))
				var got struct{ AccessKeyId, SecretAccessKey, SessionToken, Method, Arn string }
				require.NoError(t, json.Unmarshal(out, &got), string(out))
				assert.Equal(t, "iam-role", got.Method)
				assert.Equal(t, want.AccessKeyID, got.AccessKeyId)
				assert.Equal(t, want.SecretAccessKey, got.SecretAccessKey)
				assert.Equal(t, want.Token, got.SessionToken)
				assert.Equal(t, callerARN, got.Arn)
			})
		})
	}
	t.Run("aws-sdk-go-v2", func(t *testing.T) {
		for _, kv := range clean {
			k, v, _ := strings.Cut(kv, "=")
			t.Setenv(k, v)
		}
		for _, k := range []string{"AWS_PROFILE", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_CONTAINER_CREDENTIALS_FULL_URI"} {
			t.Setenv(k, "")
			os.Unsetenv(k)
		}
		// The region too comes from the endpoint (placement/region).
		cfg, err := config.LoadDefaultConfig(context.Background(), config.WithEC2IMDSRegion())
		require.NoError(t, err)
		assert.Equal(t, "eu-west-1", cfg.Region)
		got, err := cfg.Credentials.Retrieve(context.Background())
		require.NoError(t, err)
		assert.Equal(t, "EC2RoleProvider", got.Source)
		assert.Equal(t, want.AccessKeyID, got.AccessKeyID)
		assert.Equal(t, want.SecretAccessKey, got.SecretAccessKey)
		assert.Equal(t, want.Token, got.SessionToken)
	})
	// Every STS call above was signed with the device role's credentials.
	for _, c := range sts.Calls() {
		assert.Equal(t, "GetCallerIdentity", c.Action)
		assert.Equal(t, want.AccessKeyID, c.AccessKeyID)
	}
	assert.Len(t, sts.Calls(), 4)
}

// TestIMDSConfigCheck ensures that config check refuses an IMDS address
// that is not loopback, in one line, with exit status 2.
func TestIMDSConfigCheck(t *testing.T) {
	e := agenttest.New(t, time.Hour, "")
	e.WriteConfig("", "[serve]\n", "[serve]\nimds_endpoint = \"0.0.0.0:80\"\n")
	stderr := checkRefuses(t, e, 1)
	assert.Contains(t, stderr, "serve.imds_endpoint")
	assert.Contains(t, stderr, "loopback")
}
