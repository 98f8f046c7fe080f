package credprovider_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tetherd/tether/credprovider"
	"github.com/tetherd/tether/credprovider/clocktest"
	"github.com/tetherd/tether/credprovider/ststest"
)

// script writes an executable /bin/sh script and returns its path.
func script(t *testing.T, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "cmd.sh")
	require.NoError(t, os.WriteFile(path, []byte("#!/bin/sh\n"+body+"\n"), 0o700))
	return path
}

// TestMFACommand ensures that an MFA command's last 6-digit number is the code and its failures carry stderr, never stdout.
func TestMFACommand(t *testing.T) {
	for _, tc := range []struct {
		name, body string
		timeout    time.Duration
		code       string
		problem    string
		stderr     string
		timedOut   bool
		retryable  bool
	}{
		{name: "last standalone code", body: `echo "device 1234567, step 42"; echo "code: 123456"; echo "token 654321 (valid 30s)"`, code: "654321"},
		{name: "code among longer numbers", body: `echo 9876543210 000042`, code: "000042"},
		{name: "fails", body: `echo 'secret-looking stdout 111111'; echo "first line" >&2; echo "  token service unreachable  " >&2; exit 3`,
			problem: "exit status 3", stderr: "token service unreachable", retryable: true},
		{name: "prints no code", body: `echo "no code here 12345 1234567"`, problem: "printed no 6-digit code"},
		{name: "hangs", body: `echo 123456; sleep 600`, timeout: 200 * time.Millisecond, problem: "no answer within 200ms", timedOut: true, retryable: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tp, err := credprovider.MFACommand([]string{script(t, tc.body), "--arg-not-reported"}, tc.timeout)
			require.NoError(t, err)
			code, err := tp(t.Context())
			if tc.code != "" {
				require.NoError(t, err)
				assert.Equal(t, tc.code, code)
				return
			}
			var ce *credprovider.CommandError
			require.ErrorAs(t, err, &ce)
			assert.Contains(t, err.Error(), "mfa_command ")
			assert.Contains(t, ce.Problem, tc.problem)
			assert.Equal(t, tc.stderr, ce.Stderr)
			assert.Equal(t, tc.timedOut, ce.TimedOut)
			assert.Equal(t, tc.retryable, credprovider.IsRetryable(err))
			assert.NotContains(t, err.Error(), "111111", "stdout is never reported")
			assert.NotContains(t, err.Error(), "--arg-not-reported")
		})
	}
	_, err := credprovider.MFACommand([]string{"oathtool"}, 0)
	assert.ErrorIs(t, err, credprovider.ErrInvalidConfig, "relative path: no PATH lookup")
	_, err = credprovider.MFACommand(nil, 0)
	assert.ErrorIs(t, err, credprovider.ErrInvalidConfig)
}

const totpSecret = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"

// TestTOTPFile ensures that a TOTP seed file yields RFC 6238 codes and is refused when empty, malformed or readable by others.
func TestTOTPFile(t *testing.T) {
	dir := t.TempDir()
	clk := clocktest.New(time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC))
	for _, tc := range []struct {
		name, content string
		mode          os.FileMode
		want          string
	}{
		{name: "base32 secret", content: totpSecret + "\n", mode: 0o600},
		{name: "grouped lower case", content: "jbsw y3dp ehpk 3pxp jbsw y3dp ehpk 3pxp", mode: 0o400},
		{name: "otpauth URI", content: "otpauth://totp/AWS:gw?secret=" + totpSecret + "&issuer=AWS", mode: 0o600},
		{name: "world readable", content: totpSecret, mode: 0o644, want: "has mode 0644"},
		{name: "group readable", content: totpSecret, mode: 0o640, want: "chmod 600"},
		{name: "empty", content: "\n", mode: 0o600, want: "is empty"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, tc.name)
			require.NoError(t, os.WriteFile(path, []byte(tc.content), tc.mode))
			require.NoError(t, os.Chmod(path, tc.mode))
			tp, err := credprovider.TOTPFile(path, clk.Now)
			if tc.want != "" {
				require.ErrorIs(t, err, credprovider.ErrInvalidConfig)
				assert.Contains(t, err.Error(), tc.want)
				assert.Contains(t, err.Error(), path)
				assert.NotContains(t, err.Error(), totpSecret)
				return
			}
			require.NoError(t, err)
			code, err := tp(t.Context())
			require.NoError(t, err)
			assert.Equal(t, credprovider.TOTPCode(totpSecret, clk.Now()), code)
		})
	}
}

// TestAssumeRoleWithTOTP ensures that an unattended gateway assumes an MFA-protected role with a fresh TOTP code at every refresh.
//
// An unattended gateway assumes an MFA-protected role
// at every refresh with a fresh RFC 6238 code, checked by the server.
func TestAssumeRoleWithTOTP(t *testing.T) {
	clk := clocktest.New(time.Now())
	srv := stsServer(t, ststest.WithClock(clk.Now))
	serial := "arn:aws:iam::123456789012:mfa/gw-0001"
	srv.AddRole(ststest.Role{ARN: roleA, MFASerial: serial, CheckMFA: func(code string, now time.Time) bool {
		return code == credprovider.TOTPCode(totpSecret, now)
	}})
	path := filepath.Join(t.TempDir(), "totp")
	require.NoError(t, os.WriteFile(path, []byte(totpSecret), 0o600))
	tp, err := credprovider.TOTPFile(path, clk.Now)
	require.NoError(t, err)
	user := srv.NewUser("ops")
	r, err := credprovider.NewRefresher(assumeRole(t, static(user), credprovider.AssumeRoleOptions{STSOptions: stsOpts(srv),
		RoleARN: roleA, MFASerial: serial, MFAToken: tp}), credprovider.RefreshOptions{Mode: credprovider.Deferred, Clock: clk})
	require.NoError(t, err)
	_, err = r.Retrieve(t.Context())
	require.NoError(t, err)
	clk.Advance(50 * time.Minute) // advisory window: a new code for the next AssumeRole
	_, err = r.Retrieve(t.Context())
	require.NoError(t, err)
	calls := srv.CallsFor(roleA)
	require.Len(t, calls, 2)
	assert.NotEqual(t, calls[0].Params.Get("TokenCode"), calls[1].Params.Get("TokenCode"))

	// A wrong secret is refused by the server, as at AWS.
	require.NoError(t, os.WriteFile(path, []byte("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"), 0o600))
	_, err = assumeRole(t, static(user), credprovider.AssumeRoleOptions{STSOptions: stsOpts(srv), RoleARN: roleA, MFASerial: serial, MFAToken: tp}).Retrieve(t.Context())
	assert.Equal(t, "AccessDenied", apiCode(err))
}

// TestAssumeRoleMFACommandFailure ensures that a failing MFA command stops the refresh before STS is asked, with its stderr in the error.
func TestAssumeRoleMFACommandFailure(t *testing.T) {
	srv := stsServer(t)
	tp, err := credprovider.MFACommand([]string{script(t, `echo "yubikey not inserted" >&2; exit 1`)}, 0)
	require.NoError(t, err)
	_, err = assumeRole(t, static(srv.NewUser("ops")), credprovider.AssumeRoleOptions{STSOptions: stsOpts(srv), RoleARN: roleA,
		MFASerial: "GAHT12345678", MFAToken: tp}).Retrieve(t.Context())
	require.Error(t, err)
	assert.Contains(t, err.Error(), "role "+roleA+": MFA token: mfa_command ")
	assert.Contains(t, err.Error(), "stderr: yubikey not inserted")
	assert.Empty(t, srv.Calls())
}

// TestCommandProvider ensures that a credential_process command's JSON becomes credentials and its failures never quote its output.
func TestCommandProvider(t *testing.T) {
	exp := time.Now().Add(time.Hour).UTC().Truncate(time.Second)
	doc, err := json.Marshal(map[string]any{"Version": 1, "AccessKeyId": "ASIACMD", "SecretAccessKey": "cmd-secret",
		"SessionToken": "cmd-token", "Expiration": exp.Format(time.RFC3339), "AccountId": "123456789012"})
	require.NoError(t, err)
	for _, tc := range []struct {
		name, body, want string
	}{
		{name: "ok", body: "cat <<'EOF'\n" + string(doc) + "\nEOF"},
		{name: "version 2", body: `echo '{"Version":2,"AccessKeyId":"A","SecretAccessKey":"S"}'`, want: "printed Version 2"},
		{name: "no secret key", body: `echo '{"Version":1,"AccessKeyId":"A"}'`, want: "no AccessKeyId or SecretAccessKey"},
		{name: "garbage with a secret", body: `echo '{"Version":1,"SecretAccessKey":"leaked-secret",'`, want: "did not print a credential_process JSON document"},
		{name: "fails", body: `echo "vault sealed" >&2; exit 2`, want: "exit status 2: stderr: vault sealed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := credprovider.NewCommand(credprovider.CommandOptions{Argv: []string{script(t, tc.body)}})
			require.NoError(t, err)
			c, err := p.Retrieve(t.Context())
			if tc.want == "" {
				require.NoError(t, err)
				assert.Equal(t, aws.Credentials{AccessKeyID: "ASIACMD", SecretAccessKey: "cmd-secret", SessionToken: "cmd-token",
					CanExpire: true, Expires: exp, AccountID: "123456789012", Source: credprovider.CommandSource}, c)
				return
			}
			require.Error(t, err)
			assert.Contains(t, err.Error(), "credential_command ")
			assert.Contains(t, err.Error(), tc.want)
			assert.NotContains(t, err.Error(), "leaked-secret")
		})
	}
	_, err = credprovider.NewCommand(credprovider.CommandOptions{Argv: []string{"tether", "credential-process"}})
	assert.ErrorIs(t, err, credprovider.ErrInvalidConfig)
}

// TestFuncThroughRefresher ensures that a plain function provider is refreshed like any other.
func TestFuncThroughRefresher(t *testing.T) {
	clk := clocktest.New(time.Now())
	var calls int
	f := credprovider.Func(func(context.Context) (aws.Credentials, error) {
		calls++
		return aws.Credentials{AccessKeyID: "AKIAFUNC", SecretAccessKey: "s", CanExpire: true, Expires: clk.Now().Add(time.Hour)}, nil
	})
	r, err := credprovider.NewRefresher(f, credprovider.RefreshOptions{Mode: credprovider.Deferred, Clock: clk})
	require.NoError(t, err)
	c, err := r.Retrieve(t.Context())
	require.NoError(t, err)
	assert.Equal(t, "CustomFunc", c.Source)
	clk.Advance(50 * time.Minute)
	_, err = r.Retrieve(t.Context())
	require.NoError(t, err)
	assert.Equal(t, 2, calls, "refreshed by the engine like any provider")

	empty := credprovider.Func(func(context.Context) (aws.Credentials, error) { return aws.Credentials{}, nil })
	_, err = empty.Retrieve(t.Context())
	assert.ErrorContains(t, err, "no access key ID")
}
