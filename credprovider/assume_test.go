package credprovider_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/smithy-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tetherd/tether/credprovider"
	"github.com/tetherd/tether/credprovider/clocktest"
	"github.com/tetherd/tether/credprovider/iotcredtest"
	"github.com/tetherd/tether/credprovider/ststest"
)

const (
	roleA     = "arn:aws:iam::123456789012:role/role-a"
	roleB     = "arn:aws:iam::210987654321:role/role-b"
	deviceARN = "arn:aws:sts::123456789012:assumed-role/gateway/gw-0001"
)

// stsServer starts the STS endpoint with roles A and B.
func stsServer(t *testing.T, opts ...ststest.Option) *ststest.Server {
	t.Helper()
	s := ststest.NewServer(opts...)
	t.Cleanup(s.Close)
	s.AddRole(ststest.Role{ARN: roleA})
	s.AddRole(ststest.Role{ARN: roleB, Trust: func(caller string) bool {
		return strings.Contains(caller, ":assumed-role/role-a/")
	}})
	return s
}

func stsOpts(s *ststest.Server) credprovider.STSOptions {
	return credprovider.STSOptions{Region: s.Region(), Endpoint: s.URL, MaxAttempts: 1}
}

func static(c aws.Credentials) aws.CredentialsProvider {
	return aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) { return c, nil })
}

func assumeRole(t *testing.T, src aws.CredentialsProvider, o credprovider.AssumeRoleOptions) *credprovider.AssumeRole {
	t.Helper()
	if o.SessionName == "" {
		o.SessionName = "test-session"
	}
	p, err := credprovider.NewAssumeRole(src, o)
	require.NoError(t, err)
	return p
}

func apiCode(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return ""
}

// TestAssumeRoleSendsEveryParameter ensures that every AssumeRoleOptions field reaches STS as its AssumeRole parameter.
func TestAssumeRoleSendsEveryParameter(t *testing.T) {
	srv := stsServer(t)
	srv.AddRole(ststest.Role{ARN: roleA, ExternalID: "ext-42", MFASerial: "arn:aws:iam::123456789012:mfa/gw",
		CheckMFA: func(code string, _ time.Time) bool { return code == "424242" }})
	user := srv.NewUser("ops")
	var mfaCalls int
	p := assumeRole(t, static(user), credprovider.AssumeRoleOptions{
		STSOptions: stsOpts(srv), RoleARN: roleA, SessionName: "gw-0001", Duration: 2 * time.Hour,
		ExternalID: "ext-42", Policy: `{"Version":"2012-10-17","Statement":[]}`,
		PolicyARNs: []string{"arn:aws:iam::aws:policy/ReadOnlyAccess"},
		Tags:       map[string]string{"site": "plant-7", "line": "3"}, TransitiveTagKeys: []string{"site"},
		SourceIdentity: "gw-0001", MFASerial: "arn:aws:iam::123456789012:mfa/gw",
		MFAToken: func(context.Context) (string, error) { mfaCalls++; return "424242", nil },
	})
	c, err := p.Retrieve(t.Context())
	require.NoError(t, err)
	assert.True(t, c.CanExpire)

	calls := srv.CallsFor(roleA)
	require.Len(t, calls, 1)
	got := calls[0]
	assert.Equal(t, user.AccessKeyID, got.AccessKeyID, "signed with the source's credentials")
	assert.Equal(t, c.AccessKeyID, got.Issued)
	for k, want := range map[string]string{
		"RoleSessionName": "gw-0001", "DurationSeconds": "7200", "ExternalId": "ext-42",
		"Policy": `{"Version":"2012-10-17","Statement":[]}`, "PolicyArns.member.1.arn": "arn:aws:iam::aws:policy/ReadOnlyAccess",
		"Tags.member.1.Key": "line", "Tags.member.1.Value": "3", "Tags.member.2.Key": "site", "Tags.member.2.Value": "plant-7",
		"TransitiveTagKeys.member.1": "site", "SourceIdentity": "gw-0001",
		"SerialNumber": "arn:aws:iam::123456789012:mfa/gw", "TokenCode": "424242",
	} {
		assert.Equal(t, want, got.Params.Get(k), k)
	}

	// A second refresh asks for a new MFA code.
	_, err = p.Retrieve(t.Context())
	require.NoError(t, err)
	assert.Equal(t, 2, mfaCalls)
}

// TestChainDeviceRoleARoleB ensures that a role chain device -> A -> B assumes B with A's session and reports B's identity.
//
// The device role from the IoT simulator signs
// AssumeRole A, A's session signs AssumeRole B, and the identity reported for
// B is B's, not its source's.
func TestChainDeviceRoleARoleB(t *testing.T) {
	sim, iot := deviceRole(t)

	srv := stsServer(t)
	device, err := credprovider.NewRefresher(srv.Track(iot, deviceARN), credprovider.RefreshOptions{Name: "device"})
	require.NoError(t, err)
	a, err := credprovider.NewRefresher(assumeRole(t, device, credprovider.AssumeRoleOptions{STSOptions: stsOpts(srv), RoleARN: roleA}), credprovider.RefreshOptions{})
	require.NoError(t, err)
	b, err := credprovider.NewRefresher(assumeRole(t, a, credprovider.AssumeRoleOptions{STSOptions: stsOpts(srv), RoleARN: roleB}), credprovider.RefreshOptions{})
	require.NoError(t, err)

	cb, err := b.Retrieve(t.Context())
	require.NoError(t, err)
	grants := sim.Grants()
	require.Len(t, grants, 1)
	callsA, callsB := srv.CallsFor(roleA), srv.CallsFor(roleB)
	require.Len(t, callsA, 1)
	require.Len(t, callsB, 1)
	assert.Equal(t, grants[0].AccessKeyID, callsA[0].AccessKeyID, "A assumed with the device role's credentials")
	assert.Equal(t, callsA[0].Issued, callsB[0].AccessKeyID, "B assumed with A's credentials")
	assert.Equal(t, callsB[0].Issued, cb.AccessKeyID)

	cfg := aws.Config{Region: srv.Region(), BaseEndpoint: aws.String(srv.URL), Credentials: b}
	id, err := credprovider.CallerIdentity(t.Context(), cfg)
	require.NoError(t, err)
	assert.Equal(t, "arn:aws:sts::210987654321:assumed-role/role-b/test-session", id.ARN, "the assumed role's identity, not the source's")
	assert.Equal(t, "210987654321", id.Account)

	// B trusts only role A: the device role may not skip the chain.
	direct := assumeRole(t, device, credprovider.AssumeRoleOptions{STSOptions: stsOpts(srv), RoleARN: roleB})
	_, err = direct.Retrieve(t.Context())
	assert.Equal(t, "AccessDenied", apiCode(err))
	assert.False(t, credprovider.IsRetryable(err))
}

// TestWrongCredentialsFailAsAtAWS ensures that wrong or stale source credentials fail with AWS's own error codes.
//
// The server recomputes every signature, so
// wrong or stale source credentials fail with AWS's own error codes.
func TestWrongCredentialsFailAsAtAWS(t *testing.T) {
	clk := clocktest.New(time.Now())
	srv := stsServer(t, ststest.WithClock(clk.Now))
	user := srv.NewUser("ops")
	session := aws.Credentials{AccessKeyID: "ASIASESSION1", SecretAccessKey: "s3cr3t", SessionToken: "tok",
		CanExpire: true, Expires: clk.Now().Add(time.Hour)}
	srv.AddCredentials(session, "arn:aws:sts::123456789012:assumed-role/gateway/gw-0001")

	for _, tc := range []struct {
		name    string
		creds   aws.Credentials
		advance time.Duration
		code    string
	}{
		{"valid user", user, 0, ""},
		{"unknown access key", aws.Credentials{AccessKeyID: "AKIAUNKNOWN", SecretAccessKey: "x"}, 0, "InvalidClientTokenId"},
		{"wrong secret key", aws.Credentials{AccessKeyID: user.AccessKeyID, SecretAccessKey: "wrong"}, 0, "SignatureDoesNotMatch"},
		{"wrong session token", aws.Credentials{AccessKeyID: session.AccessKeyID, SecretAccessKey: session.SecretAccessKey, SessionToken: "other"}, 0, "InvalidClientTokenId"},
		{"valid session", session, 0, ""},
		{"stale session", session, time.Hour, "ExpiredToken"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clk.Advance(tc.advance)
			_, err := assumeRole(t, static(tc.creds), credprovider.AssumeRoleOptions{STSOptions: stsOpts(srv), RoleARN: roleA}).Retrieve(t.Context())
			if tc.code == "" {
				require.NoError(t, err)
				return
			}
			require.Error(t, err)
			assert.Equal(t, tc.code, apiCode(err), "%v", err)
			var re *credprovider.RoleError
			require.ErrorAs(t, err, &re)
			assert.Equal(t, roleA, re.RoleARN)
			assert.Contains(t, err.Error(), "role "+roleA)
			assert.NotContains(t, err.Error(), tc.creds.SecretAccessKey)
		})
	}
}

// TestAssumeRoleRetriesAreBounded ensures that the STS client retries throttling a bounded number of times.
func TestAssumeRoleRetriesAreBounded(t *testing.T) {
	srv := stsServer(t)
	user := srv.NewUser("ops")
	o := credprovider.AssumeRoleOptions{STSOptions: stsOpts(srv), RoleARN: roleA}
	o.MaxAttempts = 2

	srv.Fail(2, "InternalFailure")
	_, err := assumeRole(t, static(user), o).Retrieve(t.Context())
	require.Error(t, err)
	assert.Equal(t, "InternalFailure", apiCode(err))
	assert.True(t, credprovider.IsRetryable(err), "a 500 is worth retrying later")
	assert.Len(t, srv.Calls(), 2, "MaxAttempts bounds the SDK's retries")

	srv.Fail(1, "Throttling")
	before := len(srv.Calls())
	_, err = assumeRole(t, static(user), o).Retrieve(t.Context())
	require.NoError(t, err, "the retryer rides out one throttling")
	assert.Len(t, srv.Calls(), before+2)
}

// TestNewAssumeRoleRejectsBadOptions ensures that NewAssumeRole refuses bad options, naming the Go option at fault.
func TestNewAssumeRoleRejectsBadOptions(t *testing.T) {
	ok := credprovider.AssumeRoleOptions{STSOptions: credprovider.STSOptions{Region: "eu-west-1"}, RoleARN: roleA, SessionName: "s1"}
	for _, tc := range []struct {
		name string
		edit func(*credprovider.AssumeRoleOptions)
		want string
	}{
		{"malformed ARN", func(o *credprovider.AssumeRoleOptions) { o.RoleARN = "arn:aws:iam::12:role/x" }, "not an IAM role ARN"},
		{"user ARN", func(o *credprovider.AssumeRoleOptions) { o.RoleARN = "arn:aws:iam::123456789012:user/x" }, "not an IAM role ARN"},
		{"short session", func(o *credprovider.AssumeRoleOptions) { o.SessionName = "x" }, "AssumeRoleOptions.SessionName"},
		{"duration too short", func(o *credprovider.AssumeRoleOptions) { o.Duration = time.Minute }, "AssumeRoleOptions.Duration: 1m0s"},
		{"duration too long", func(o *credprovider.AssumeRoleOptions) { o.Duration = 13 * time.Hour }, "AssumeRoleOptions.Duration: 13h0m0s"},
		{"MFA serial without token", func(o *credprovider.AssumeRoleOptions) { o.MFASerial = "GAHT12345678" }, "AssumeRoleOptions.MFASerial"},
		{"no region", func(o *credprovider.AssumeRoleOptions) { o.Region = "" }, "STSOptions.Region: is empty"},
		{"bad endpoint", func(o *credprovider.AssumeRoleOptions) { o.Endpoint = "sts.example.com" }, "STSOptions.Endpoint"},
		{"transitive key not a tag", func(o *credprovider.AssumeRoleOptions) { o.TransitiveTagKeys = []string{"k"} }, "AssumeRoleOptions.TransitiveTagKeys"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := ok
			tc.edit(&o)
			_, err := credprovider.NewAssumeRole(static(aws.Credentials{}), o)
			require.ErrorIs(t, err, credprovider.ErrInvalidConfig)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
	_, err := credprovider.NewAssumeRole(static(aws.Credentials{}), ok)
	require.NoError(t, err)
}

// TestWebIdentityRereadsTokenFile ensures that AssumeRoleWithWebIdentity reads the token file afresh at every refresh and never quotes the token.
func TestWebIdentityRereadsTokenFile(t *testing.T) {
	srv := stsServer(t)
	srv.AddRole(ststest.Role{ARN: roleA, WebIdentityTokens: []string{"jwt-one"}})
	file := filepath.Join(t.TempDir(), "token")
	require.NoError(t, os.WriteFile(file, []byte("jwt-one\n"), 0o600))
	p, err := credprovider.NewWebIdentity(credprovider.WebIdentityOptions{STSOptions: stsOpts(srv), RoleARN: roleA,
		SessionName: "gw-0001", TokenFile: file})
	require.NoError(t, err)

	c1, err := p.Retrieve(t.Context())
	require.NoError(t, err)
	// The identity agent rotates the token; the old one is no longer valid.
	srv.AddRole(ststest.Role{ARN: roleA, WebIdentityTokens: []string{"jwt-two"}})
	require.NoError(t, os.WriteFile(file, []byte("jwt-two"), 0o600))
	c2, err := p.Retrieve(t.Context())
	require.NoError(t, err)
	assert.NotEqual(t, c1.AccessKeyID, c2.AccessKeyID)
	calls := srv.CallsFor(roleA)
	require.Len(t, calls, 2)
	assert.Equal(t, "AssumeRoleWithWebIdentity", calls[1].Action)
	assert.Empty(t, calls[1].AccessKeyID, "unsigned: the token is the proof")

	// The issued credentials are the role's.
	id, err := credprovider.CallerIdentity(t.Context(), aws.Config{Region: srv.Region(), BaseEndpoint: aws.String(srv.URL), Credentials: static(c2)})
	require.NoError(t, err)
	assert.Equal(t, "arn:aws:sts::123456789012:assumed-role/role-a/gw-0001", id.ARN)

	for _, tc := range []struct {
		name, content, want, code string
	}{
		{"rejected token", "jwt-stale", "", "InvalidIdentityToken"},
		{"empty file", " \n", "is empty", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.NoError(t, os.WriteFile(file, []byte(tc.content), 0o600))
			_, err := p.Retrieve(t.Context())
			require.Error(t, err)
			assert.Equal(t, tc.code, apiCode(err))
			assert.Contains(t, err.Error(), tc.want)
			assert.NotContains(t, err.Error(), "jwt-stale", "the token is never quoted")
		})
	}
	require.NoError(t, os.Remove(file))
	_, err = p.Retrieve(t.Context())
	assert.ErrorContains(t, err, "web_identity_token_file "+file+": no such file or directory")
}

// TestRefreshWindowsHonouredInEveryMode ensures that the advisory and mandatory windows govern an STS role in eager and deferred mode alike.
//
// The advisory and mandatory windows
// govern an STS role whether refresh is eager or deferred (boto3-refresh-
// session ignores them when deferred).
func TestRefreshWindowsHonouredInEveryMode(t *testing.T) {
	for _, mode := range []credprovider.Mode{credprovider.Eager, credprovider.Deferred} {
		t.Run(mode.String(), func(t *testing.T) {
			clk := clocktest.New(time.Now())
			srv := stsServer(t, ststest.WithClock(clk.Now))
			user := srv.NewUser("ops")
			changes := make(chan credprovider.Status, 100)
			r, err := credprovider.NewRefresher(assumeRole(t, static(user), credprovider.AssumeRoleOptions{STSOptions: stsOpts(srv), RoleARN: roleA}),
				credprovider.RefreshOptions{Mode: mode, Clock: clk, AdvisoryWindow: 20 * time.Minute, MandatoryWindow: 2 * time.Minute,
					Jitter: -1, MinBackoff: time.Minute, MaxBackoff: time.Minute, OnChange: func(st credprovider.Status) { changes <- st }})
			require.NoError(t, err)
			// waitAttempts waits until n fetches have succeeded or failed.
			waitAttempts := func(n int) {
				t.Helper()
				for {
					select {
					case st := <-changes:
						if st.Refreshes+st.TotalFailures >= n {
							return
						}
					case <-t.Context().Done():
						t.Fatalf("fewer than %d refresh attempts", n)
					}
				}
			}
			first, err := r.Retrieve(t.Context())
			require.NoError(t, err)
			waitAttempts(1)
			expires := r.Status().Expires

			// Before the advisory window: no STS call.
			clk.Set(expires.Add(-20*time.Minute - time.Second))
			c, err := r.Retrieve(t.Context())
			require.NoError(t, err)
			assert.Equal(t, first.AccessKeyID, c.AccessKeyID)
			assert.Len(t, srv.CallsFor(roleA), 1)

			// Inside the advisory window: a refresh, in either mode.
			clk.Set(expires.Add(-19 * time.Minute))
			_, err = r.Retrieve(t.Context())
			require.NoError(t, err)
			waitAttempts(2)
			assert.Len(t, srv.CallsFor(roleA), 2, "advisory window reached: refreshed")
			second, err := r.Retrieve(t.Context())
			require.NoError(t, err)
			assert.NotEqual(t, first.AccessKeyID, second.AccessKeyID)

			// STS down inside the next advisory window: the current
			// credentials are served until the mandatory window, never in it.
			expires = r.Status().Expires
			srv.Fail(1000, "ServiceUnavailable")
			clk.Set(expires.Add(-10 * time.Minute))
			c, err = r.Retrieve(t.Context())
			require.NoError(t, err, "advisory: a failed refresh keeps the current credentials")
			assert.Equal(t, second.AccessKeyID, c.AccessKeyID)
			waitAttempts(3)
			clk.Set(expires.Add(-2*time.Minute - time.Second))
			c, err = r.Retrieve(t.Context())
			require.NoError(t, err)
			assert.Equal(t, second.AccessKeyID, c.AccessKeyID)
			clk.Set(expires.Add(-2 * time.Minute))
			_, err = r.Retrieve(t.Context())
			require.ErrorIs(t, err, credprovider.ErrNoCredentials, "mandatory window: never served")
		})
	}
}

// TestOneFetchPerRoleAtExpiry ensures that 100 callers of a chained role at expiry cause one fetch of each role in the chain.
func TestOneFetchPerRoleAtExpiry(t *testing.T) {
	for _, mode := range []credprovider.Mode{credprovider.Eager, credprovider.Deferred} {
		t.Run(mode.String(), func(t *testing.T) {
			clk := clocktest.New(time.Now())
			sim, iot := deviceRole(t, iotcredtest.WithClock(clk.Now))
			srv := stsServer(t, ststest.WithClock(clk.Now))
			ro := credprovider.RefreshOptions{Mode: mode, Clock: clk}
			device, err := credprovider.NewRefresher(srv.Track(iot, deviceARN), ro)
			require.NoError(t, err)
			a, err := credprovider.NewRefresher(assumeRole(t, device, credprovider.AssumeRoleOptions{STSOptions: stsOpts(srv), RoleARN: roleA}), ro)
			require.NoError(t, err)
			b, err := credprovider.NewRefresher(assumeRole(t, a, credprovider.AssumeRoleOptions{STSOptions: stsOpts(srv), RoleARN: roleB}), ro)
			require.NoError(t, err)
			_, err = b.Retrieve(t.Context())
			require.NoError(t, err)

			clk.Advance(time.Hour) // everything has expired
			sim.Fail(1, iotcredtest.FaultSlow)
			// All 100 wait for B's fetch, which waits for A's, which waits
			// for the device's, held by the simulator until released.
			keys := retrieveTogether(t, b, 100, func() {
				require.NoError(t, sim.WaitBlocked(t.Context(), 1))
				sim.Release()
			})
			for _, k := range keys {
				assert.Equal(t, keys[0], k)
			}
			assert.Len(t, sim.Grants(), 2, "one device fetch at expiry")
			assert.Len(t, srv.CallsFor(roleA), 2, "one AssumeRole A at expiry")
			assert.Len(t, srv.CallsFor(roleB), 2, "one AssumeRole B at expiry")
		})
	}
}

// deviceRole starts the IoT simulator with a one-hour role alias "gateway"
// and returns it with a provider for device gw-0001: the source at the
// start of every chain.
func deviceRole(t *testing.T, opts ...iotcredtest.Option) (*iotcredtest.Server, *credprovider.IoT) {
	t.Helper()
	sim, err := iotcredtest.NewServer(append([]iotcredtest.Option{iotcredtest.WithRoleAlias("gateway", time.Hour)}, opts...)...)
	require.NoError(t, err)
	t.Cleanup(sim.Close)
	dev, err := sim.PKI.NewDevice("gw-0001", iotcredtest.ECDSAP256)
	require.NoError(t, err)
	iot, err := credprovider.NewIoT(credprovider.IoTOptions{Endpoint: sim.Endpoint, RoleAlias: "gateway", ThingName: "gw-0001",
		Certificate: dev.TLSCertificate(), RootCAs: sim.Pool()})
	require.NoError(t, err)
	return sim, iot
}
