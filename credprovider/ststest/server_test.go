package ststest_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tetherd/tether/credprovider/ststest"
)

// TestSignatureChecks ensures that the STS server refuses requests whose SigV4 signature does not hold.
//
// TestSignatureChecks signs raw requests with the SDK's signer and alters
// them, as a broken proxy or a forger would.
func TestSignatureChecks(t *testing.T) {
	srv := ststest.NewServer(ststest.WithRegion("eu-west-1"))
	t.Cleanup(srv.Close)
	user := srv.NewUser("ops")
	const body = "Action=GetCallerIdentity&Version=2011-06-15"
	for _, tc := range []struct {
		name     string
		region   string
		sent     string // body sent after signing body
		signedAt time.Time
		status   int
		want     string
	}{
		{name: "valid", region: "eu-west-1", sent: body, status: 200, want: "<Arn>arn:aws:iam::123456789012:user/ops</Arn>"},
		{name: "body altered after signing", region: "eu-west-1", sent: body + "&X=1", status: 403, want: "<Code>SignatureDoesNotMatch</Code>"},
		{name: "other region", region: "us-west-2", sent: body, status: 403, want: "Credential should be scoped to a valid region"},
		{name: "old signature", region: "eu-west-1", sent: body, signedAt: time.Now().Add(-time.Hour), status: 403, want: "Signature expired"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, err := http.NewRequest(http.MethodPost, srv.URL, strings.NewReader(body))
			require.NoError(t, err)
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			sum := sha256.Sum256([]byte(body))
			at := tc.signedAt
			if at.IsZero() {
				at = time.Now()
			}
			require.NoError(t, v4.NewSigner().SignHTTP(context.Background(), user, req, hex.EncodeToString(sum[:]), "sts", tc.region, at))
			req.Body = io.NopCloser(strings.NewReader(tc.sent))
			req.ContentLength = int64(len(tc.sent))
			resp, err := http.DefaultClient.Do(req)
			require.NoError(t, err)
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			assert.Equal(t, tc.status, resp.StatusCode, string(b))
			assert.Contains(t, string(b), tc.want)
		})
	}
}

// TestRevoke ensures that credentials the server accepted are refused once
// revoked, as STS refuses a deleted access key.
func TestRevoke(t *testing.T) {
	srv := ststest.NewServer(ststest.WithRegion("eu-west-1"))
	t.Cleanup(srv.Close)
	user := srv.NewUser("ops")
	call := func() (int, string) {
		const body = "Action=GetCallerIdentity&Version=2011-06-15"
		req, err := http.NewRequest(http.MethodPost, srv.URL, strings.NewReader(body))
		require.NoError(t, err)
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		sum := sha256.Sum256([]byte(body))
		require.NoError(t, v4.NewSigner().SignHTTP(context.Background(), user, req, hex.EncodeToString(sum[:]), "sts", "eu-west-1", time.Now()))
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	code, body := call()
	require.Equal(t, http.StatusOK, code, body)
	srv.Revoke(user.AccessKeyID)
	code, body = call()
	assert.Equal(t, http.StatusForbidden, code, body)
}
