package agent

import (
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestRoleAnswerCache ensures that a role's encoded answer is reused only
// while the provider returns the very same credentials, that new ones are
// encoded afresh, and that credentials without an expiry are never frozen.
func TestRoleAnswerCache(t *testing.T) {
	exp := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	c := aws.Credentials{AccessKeyID: "AKIA1", SecretAccessKey: "s1", SessionToken: "t1", CanExpire: true, Expires: exp}
	rl := &role{name: DeviceRole}
	a := rl.encoded(c)
	var got Credentials
	require.NoError(t, json.Unmarshal(a.body, &got))
	assert.Equal(t, Credentials{AccessKeyID: "AKIA1", SecretAccessKey: "s1", Token: "t1", Expiration: "2030-01-02T03:04:05Z"}, got)
	assert.Same(t, a, rl.encoded(c), "the same credentials: the same answer")
	assert.Nil(t, a.length, "a short answer leaves Content-Length to net/http")

	for name, next := range map[string]aws.Credentials{
		"new token":  {AccessKeyID: "AKIA1", SecretAccessKey: "s1", SessionToken: "t2", CanExpire: true, Expires: exp},
		"new expiry": {AccessKeyID: "AKIA1", SecretAccessKey: "s1", SessionToken: "t1", CanExpire: true, Expires: exp.Add(time.Hour)},
		"new key":    {AccessKeyID: "AKIA2", SecretAccessKey: "s1", SessionToken: "t1", CanExpire: true, Expires: exp},
	} {
		b := rl.encoded(next)
		assert.NotSame(t, a, b, name)
		require.NoError(t, json.Unmarshal(b.body, &got), name)
		assert.Equal(t, next.SessionToken, got.Token, name)
		assert.Equal(t, next.Expires.Format(time.RFC3339), got.Expiration, name)
		a = b
	}

	forever := aws.Credentials{AccessKeyID: "AKIA3", SecretAccessKey: "s", SessionToken: strings.Repeat("x", 3000)}
	f := rl.encoded(forever)
	assert.NotSame(t, f, rl.encoded(forever), "no expiry: a fresh Expiration each time")
	assert.Equal(t, []string{strconv.Itoa(len(f.body))}, f.length, "a long answer carries its Content-Length")
	require.NoError(t, json.Unmarshal(f.body, &got))
	assert.Equal(t, forever.SessionToken, got.Token)
}
