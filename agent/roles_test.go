package agent

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tetherd/tether/credprovider/ststest"
)

const (
	testRoleA = "arn:aws:iam::123456789012:role/role-a"
	testRoleB = "arn:aws:iam::210987654321:role/role-b"
)

// stsForAgent starts the STS endpoint for an agent harness. The device
// role's credentials come from the IoT simulator, which keeps no secrets, so
// the server asks the agent itself for them: the signature of role A's
// AssumeRole is checked against exactly what the agent holds.
func stsForAgent(t *testing.T, socket *string) *ststest.Server {
	srv := ststest.NewServer(ststest.WithRegion("eu-west-1"), ststest.WithLookup(func(akid string) (aws.Credentials, string, bool) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c, err := FetchCredentials(ctx, *socket, DeviceRole)
		if err != nil || c.AccessKeyID != akid {
			return aws.Credentials{}, "", false
		}
		return aws.Credentials{AccessKeyID: c.AccessKeyID, SecretAccessKey: c.SecretAccessKey, SessionToken: c.Token},
			"arn:aws:sts::123456789012:assumed-role/gateway/gw-0001", true
	}))
	t.Cleanup(srv.Close)
	srv.AddRole(ststest.Role{ARN: testRoleA, ExternalID: "ext-7"})
	srv.AddRole(ststest.Role{ARN: testRoleB, Trust: func(caller string) bool { return strings.Contains(caller, "assumed-role/role-a/") }})
	return srv
}

// TestAgentServesAssumedRoles ensures that [[role]] sections are assumed with STS from their sources, chained roles included, and served per role.
func TestAgentServesAssumedRoles(t *testing.T) {
	var socket string
	srv := stsForAgent(t, &socket)
	h := newHarness(t, time.Hour, fmt.Sprintf(`
[[role]]
name         = "telemetry"
role_arn     = %q
external_id  = "ext-7"
sts_endpoint = %q
allow_uids   = [0]
tags         = { site = "plant-7" }

[[role]]
name         = "audit"
role_arn     = %q
source       = "role:telemetry"
sts_endpoint = %q
`, testRoleA, srv.URL, testRoleB, srv.URL))
	socket = h.Socket
	h.start()

	device := h.credentials("/v1/credentials")
	telemetry := h.credentials("/v1/credentials/telemetry")
	audit := h.credentials("/v1/credentials/audit")

	callsA, callsB := srv.CallsFor(testRoleA), srv.CallsFor(testRoleB)
	require.Len(t, callsA, 1)
	require.Len(t, callsB, 1)
	assert.Equal(t, device.AccessKeyID, callsA[0].AccessKeyID, "telemetry assumed with the device role")
	assert.Equal(t, telemetry.AccessKeyID, callsA[0].Issued)
	assert.Equal(t, "ext-7", callsA[0].Params.Get("ExternalId"))
	assert.Equal(t, "tether-gw-0001", callsA[0].Params.Get("RoleSessionName"))
	assert.Equal(t, "plant-7", callsA[0].Params.Get("Tags.member.1.Value"))
	assert.Equal(t, telemetry.AccessKeyID, callsB[0].AccessKeyID, "audit assumed with telemetry's credentials")
	assert.Equal(t, audit.AccessKeyID, callsB[0].Issued)

	assert.Equal(t, []string{"device", "audit", "telemetry"}, h.validRoles())

	// Persisted like the device role: a restart with STS gone serves at once.
	h.stop()
	srv.Close()
	h.start()
	assert.Equal(t, telemetry, h.credentials("/v1/credentials/telemetry"))
	assert.Equal(t, audit, h.credentials("/v1/credentials/audit"))
}

// TestAgentRoleFailureIsReported ensures that a role STS refuses gets 503 with its error in status, while the other roles keep being served.
func TestAgentRoleFailureIsReported(t *testing.T) {
	var socket string
	srv := stsForAgent(t, &socket)
	// Role B trusts only role A; sourced from the device it is refused.
	h := newHarness(t, time.Hour, fmt.Sprintf("[[role]]\nname = \"audit\"\nrole_arn = %q\nsts_endpoint = %q\n", testRoleB, srv.URL))
	socket = h.Socket
	h.start()
	code, body, hdr := h.get("/v1/credentials/audit")
	assert.Equal(t, http.StatusServiceUnavailable, code)
	assert.NotEmpty(t, hdr.Get("Retry-After"))
	assert.Contains(t, string(body), "AccessDenied")
	h.credentials("/v1/credentials") // the device role is unaffected
}

// TestRoleConfigErrors ensures that each [[role]] mistake is reported with the role's index, key and line.
func TestRoleConfigErrors(t *testing.T) {
	dir := writeIdentityFiles(t)
	base := minimalConfig(dir)
	totp := filepath.Join(dir, "totp")
	require.NoError(t, os.WriteFile(totp, []byte("JBSWY3DPEHPK3PXP"), 0o644))
	awsConfig := filepath.Join(dir, "aws-config")
	require.NoError(t, os.WriteFile(awsConfig, []byte("[profile ops]\nregion = eu-west-1\n"), 0o600))
	t.Setenv("AWS_CONFIG_FILE", awsConfig)
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(dir, "no-credentials"))
	role := func(extra string) string {
		return base + "[[role]]\nname = \"r\"\nrole_arn = \"arn:aws:iam::123456789012:role/x\"\n" + extra
	}
	for _, tc := range []struct {
		name, cfg string
		want      []string
	}{
		{"malformed ARN", base + "[[role]]\nname = \"r\"\nrole_arn = \"arn:aws:iam::123456789012:user/x\"\n", []string{"role[0].role_arn", "is not an IAM role ARN"}},
		{"duration out of range", role("source = \"profile:ops\"\nduration = \"13h\"\n"), []string{"role[0].duration: 13h0m0s is out of range"}},
		{"chained duration", role("duration = \"2h\"\n"), []string{"role[0].duration: 2h0m0s exceeds 1h", "source \"device\""}},
		{"MFA serial without token source", role("mfa_serial = \"arn:aws:iam::123456789012:mfa/gw\"\n"), []string{"role[0].mfa_serial: is set but there is no token source"}},
		{"readable TOTP secret", role("mfa_serial = \"arn:aws:iam::123456789012:mfa/gw\"\nmfa_totp_file = \"" + totp + "\"\n"), []string{"role[0].mfa_totp_file", "mode 0644", "chmod 600"}},
		{"missing profile", role("source = \"profile:nope\"\n"), []string{"role[0].source: profile \"nope\" is not in the shared config files (" + awsConfig}},
		{"source loop", role("source = \"role:r\"\n"), []string{"role[0].source: role \"r\" is its own source"}},
		{"policy not JSON", role("policy = \"{nope\"\n"), []string{"role[0].policy: is not valid JSON"}},
		{"transitive key not a tag", role("transitive_tag_keys = [\"site\"]\n"), []string{"role[0].transitive_tag_keys: \"site\" is not one of the tag keys"}},
		{"command and role_arn", role("credential_command = [\"/usr/bin/vault-creds\"]\n"), []string{"role[0].role_arn: is set, but credential_command supplies the credentials itself"}},
		{"web identity with MFA", role("web_identity_token_file = \"" + filepath.Join(dir, "pin") + "\"\nmfa_serial = \"arn:aws:iam::123456789012:mfa/gw\"\nmfa_command = [\"/usr/bin/x\"]\n"), []string{"role[0].mfa_serial: AssumeRoleWithWebIdentity takes no MFA"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseConfig("t.toml", []byte(tc.cfg))
			require.Error(t, err)
			for _, w := range tc.want {
				assert.Contains(t, err.Error(), w)
			}
		})
	}
	// An existing profile passes, and so does a chained role of 1 h.
	_, err := ParseConfig("t.toml", []byte(role("source = \"profile:ops\"\nduration = \"12h\"\n")))
	require.NoError(t, err)
	_, err = ParseConfig("t.toml", []byte(role("")))
	require.NoError(t, err)
}

// TestAgentRoleFromProfile ensures that a profile: source is resolved by the SDK's shared-config providers.
//
// A profile: source is resolved by the SDK's
// shared-config providers, here static keys of an IAM user in AWS_CONFIG_FILE.
func TestAgentRoleFromProfile(t *testing.T) {
	var socket string
	srv := stsForAgent(t, &socket)
	user := srv.NewUser("ops")
	h := newHarness(t, time.Hour, fmt.Sprintf("[[role]]\nname = \"ops\"\nrole_arn = %q\nsource = \"profile:ops\"\nexternal_id = \"ext-7\"\nduration = \"2h\"\nsts_endpoint = %q\n", testRoleA, srv.URL))
	socket = h.Socket
	awsConfig := filepath.Join(h.Dir, "aws-config")
	require.NoError(t, os.WriteFile(awsConfig, []byte(fmt.Sprintf("[profile ops]\naws_access_key_id = %s\naws_secret_access_key = %s\n",
		user.AccessKeyID, user.SecretAccessKey)), 0o600))
	t.Setenv("AWS_CONFIG_FILE", awsConfig)
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(h.Dir, "none"))
	h.start()
	c := h.credentials("/v1/credentials/ops")
	calls := srv.CallsFor(testRoleA)
	require.Len(t, calls, 1)
	assert.Equal(t, user.AccessKeyID, calls[0].AccessKeyID, "signed with the profile's keys")
	assert.Equal(t, "7200", calls[0].Params.Get("DurationSeconds"), "a user's session may last beyond 1h")
	assert.Equal(t, calls[0].Issued, c.AccessKeyID)
}
