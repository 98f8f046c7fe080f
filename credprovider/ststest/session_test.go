package ststest_test

import (
	"context"
	"errors"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	"github.com/aws/smithy-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tetherd/tether/credprovider"
	"github.com/tetherd/tether/credprovider/ststest"
)

// TestSessionContext ensures that the server records the tags, source
// identity and policy an AssumeRole asks for, refuses them when the role's
// trust policy lacks sts:TagSession or sts:SetSourceIdentity, keeps a
// session's source identity along a chain, and records on every call the
// context of the session that signed it, as CloudTrail does.
func TestSessionContext(t *testing.T) {
	ctx := context.Background()
	srv := ststest.NewServer(ststest.WithRegion("eu-west-1"))
	t.Cleanup(srv.Close)
	const (
		roleA    = "arn:aws:iam::123456789012:role/a"
		roleB    = "arn:aws:iam::123456789012:role/b"
		noTags   = "arn:aws:iam::123456789012:role/no-tags"
		noSource = "arn:aws:iam::123456789012:role/no-source"
	)
	srv.AddRole(ststest.Role{ARN: roleA})
	srv.AddRole(ststest.Role{ARN: roleB})
	srv.AddRole(ststest.Role{ARN: noTags, DenyTagSession: true})
	srv.AddRole(ststest.Role{ARN: noSource, DenySetSourceIdentity: true})
	user := srv.NewUser("ops")
	assume := func(source aws.CredentialsProvider, arn string, edit func(*credprovider.AssumeRoleOptions)) (aws.Credentials, error) {
		o := credprovider.AssumeRoleOptions{STSOptions: credprovider.STSOptions{Region: "eu-west-1", Endpoint: srv.URL, MaxAttempts: 1},
			RoleARN: arn, SessionName: "s1"}
		edit(&o)
		p, err := credprovider.NewAssumeRole(source, o)
		require.NoError(t, err)
		return p.Retrieve(ctx)
	}
	tagged := func(o *credprovider.AssumeRoleOptions) {
		o.Tags, o.SourceIdentity, o.Policy = map[string]string{"tether:unit": "up.service"}, "up.service@gw-1", `{ "Version": "2012-10-17" }`
	}
	a, err := assume(credentials(user), roleA, tagged)
	require.NoError(t, err)
	calls := srv.CallsFor(roleA)
	require.Len(t, calls, 1)
	assert.Equal(t, map[string]string{"tether:unit": "up.service"}, calls[0].Tags)
	assert.Equal(t, "up.service@gw-1", calls[0].SourceIdentity)
	assert.Equal(t, `{"Version":"2012-10-17"}`, calls[0].Policy, "sent packed")
	assert.Zero(t, calls[0].Session, "a user's long-term key has no session context")

	// What the session does is recorded with its context.
	_, err = credprovider.CallerIdentity(ctx, aws.Config{Region: "eu-west-1", Credentials: credentials(a)}, func(o *sts.Options) { o.BaseEndpoint = aws.String(srv.URL) })
	require.NoError(t, err)
	signed := srv.CallsSignedBy(a.AccessKeyID)
	require.Len(t, signed, 1)
	assert.Equal(t, "GetCallerIdentity", signed[0].Action)
	assert.Equal(t, ststest.Session{SourceIdentity: "up.service@gw-1", Tags: map[string]string{"tether:unit": "up.service"}}, signed[0].Session)

	// The source identity stays along the chain and cannot change.
	b, err := assume(credentials(a), roleB, func(*credprovider.AssumeRoleOptions) {})
	require.NoError(t, err)
	_, err = credprovider.CallerIdentity(ctx, aws.Config{Region: "eu-west-1", Credentials: credentials(b)}, func(o *sts.Options) { o.BaseEndpoint = aws.String(srv.URL) })
	require.NoError(t, err)
	assert.Equal(t, "up.service@gw-1", srv.CallsSignedBy(b.AccessKeyID)[0].Session.SourceIdentity)
	_, err = assume(credentials(a), roleB, func(o *credprovider.AssumeRoleOptions) { o.SourceIdentity = "other" })
	assert.Equal(t, "InvalidParameterValue", apiCode(err))

	// Trust policies without the permissions refuse tags or a source identity.
	_, err = assume(credentials(user), noTags, tagged)
	assert.Equal(t, "AccessDenied", apiCode(err))
	assert.ErrorContains(t, err, "sts:TagSession")
	_, err = assume(credentials(user), noSource, tagged)
	assert.ErrorContains(t, err, "sts:SetSourceIdentity")
	_, err = assume(credentials(user), noTags, func(o *credprovider.AssumeRoleOptions) { o.SourceIdentity = "x1" })
	assert.NoError(t, err, "no tags asked: sts:TagSession is not needed")
}

func credentials(c aws.Credentials) aws.CredentialsProvider {
	return aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) { return c, nil })
}

func apiCode(err error) string {
	var ae smithy.APIError
	if err == nil || !errors.As(err, &ae) {
		return ""
	}
	return ae.ErrorCode()
}
