package agent

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tetherd/tether/credprovider"
	"github.com/tetherd/tether/credprovider/imds"
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

// TestRoleIMDSAnswerCache ensures that a role's IMDS answer is encoded once
// per set of credentials, with the refresher's last refresh as
// LastUpdated, is encoded afresh for new credentials, and is never frozen
// for credentials without an expiry.
func TestRoleIMDSAnswerCache(t *testing.T) {
	exp := time.Now().Add(time.Hour).UTC().Truncate(time.Second)
	ref, err := credprovider.NewRefresher(aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
		return aws.Credentials{}, nil
	}), credprovider.RefreshOptions{Mode: credprovider.Deferred})
	require.NoError(t, err)
	rl := &role{name: DeviceRole, ref: ref}
	c := aws.Credentials{AccessKeyID: "AKIA1", SecretAccessKey: "s1", SessionToken: "t1", CanExpire: true, Expires: exp}
	a, err := rl.imdsEncoded(c)
	require.NoError(t, err)
	b, err := rl.imdsEncoded(c)
	require.NoError(t, err)
	assert.Same(t, a, b, "the same credentials: the same answer")
	decode := func(a *imds.Answer) imds.Credentials {
		rec := httptest.NewRecorder()
		h := &imds.Handler{Source: answerSource{a}, Tokens: imds.NewTokens(imds.TokenOptions{})}
		tok, err := h.Tokens.Issue("0", time.Minute)
		require.NoError(t, err)
		req := httptest.NewRequest(http.MethodGet, imds.CredentialsPath+DeviceRole, nil)
		req.Header.Set(imds.TokenHeader, tok)
		h.ServeHTTP(rec, req)
		require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
		var got imds.Credentials
		require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &got))
		return got
	}
	got := decode(a)
	assert.Equal(t, "t1", got.Token)
	assert.Equal(t, exp.Format(time.RFC3339), got.Expiration)

	next := c
	next.SessionToken = "t2"
	n, err := rl.imdsEncoded(next)
	require.NoError(t, err)
	assert.NotSame(t, a, n)
	assert.Equal(t, "t2", decode(n).Token)

	forever := aws.Credentials{AccessKeyID: "AKIA3", SecretAccessKey: "s", SessionToken: "t3"}
	f, err := rl.imdsEncoded(forever)
	require.NoError(t, err)
	g, err := rl.imdsEncoded(forever)
	require.NoError(t, err)
	assert.NotSame(t, f, g, "no expiry: a fresh Expiration each time")
	assert.NotEmpty(t, decode(f).Expiration)
}

// answerSource serves one ready answer to every caller, for decoding it
// through the real handler.
type answerSource struct{ a *imds.Answer }

func (answerSource) Owner(*http.Request) string                                { return "0" }
func (answerSource) Role(*http.Request) (string, error)                        { return DeviceRole, nil }
func (s answerSource) Credentials(*http.Request, string) (*imds.Answer, error) { return s.a, nil }
