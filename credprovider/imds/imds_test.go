package imds_test

import (
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/tetherd/tether/credprovider/clocktest"
	"github.com/tetherd/tether/credprovider/imds"
)

var t0 = time.Date(2026, 12, 2, 4, 0, 0, 0, time.UTC)

// source serves one role; the owner is the request's Test-Owner header.
type source struct {
	role  string
	creds aws.Credentials
	err   error
}

func (s *source) Owner(r *http.Request) string       { return r.Header.Get("Test-Owner") }
func (s *source) Role(*http.Request) (string, error) { return s.role, nil }
func (s *source) Credentials(_ *http.Request, role string) (*imds.Answer, error) {
	if role != s.role {
		return nil, &imds.Error{Status: http.StatusNotFound, Message: "not found"}
	}
	if s.err != nil {
		return nil, s.err
	}
	return imds.NewAnswer(s.creds, t0.Add(-time.Minute))
}

func newHandler(clock *clocktest.Clock) (*imds.Handler, *source) {
	src := &source{role: "device", creds: aws.Credentials{AccessKeyID: "ASIAEXAMPLE", SecretAccessKey: "secret", SessionToken: "session",
		CanExpire: true, Expires: t0.Add(time.Hour)}}
	return &imds.Handler{Tokens: imds.NewTokens(imds.TokenOptions{Now: clock.Now}), Source: src, Region: "eu-west-1"}, src
}

func do(h http.Handler, method, path string, hdr map[string]string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(method, path, nil)
	for k, v := range hdr {
		r.Header.Set(k, v)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

func token(t *testing.T, h http.Handler, owner string, ttl int) string {
	t.Helper()
	w := do(h, http.MethodPut, imds.TokenPath, map[string]string{imds.TTLHeader: strconv.Itoa(ttl), "Test-Owner": owner})
	require.Equal(t, http.StatusOK, w.Code, w.Body.String())
	assert.Equal(t, strconv.Itoa(ttl), w.Header().Get(imds.TTLHeader))
	return w.Body.String()
}

// TestTokenTTL ensures that a token is issued only for a TTL of 1 to 21600
// whole seconds, given once.
func TestTokenTTL(t *testing.T) {
	h, _ := newHandler(clocktest.New(t0))
	for _, tc := range []struct {
		ttl  []string
		want int
	}{
		{[]string{"1"}, http.StatusOK},
		{[]string{"21600"}, http.StatusOK},
		{[]string{"0"}, http.StatusBadRequest},
		{[]string{"21601"}, http.StatusBadRequest},
		{[]string{"-5"}, http.StatusBadRequest},
		{[]string{"1.5"}, http.StatusBadRequest},
		{[]string{"abc"}, http.StatusBadRequest},
		{[]string{"60", "60"}, http.StatusBadRequest},
		{nil, http.StatusBadRequest},
	} {
		r := httptest.NewRequest(http.MethodPut, imds.TokenPath, nil)
		for _, v := range tc.ttl {
			r.Header.Add(imds.TTLHeader, v)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		assert.Equal(t, tc.want, w.Code, "%q: %s", tc.ttl, w.Body)
	}
}

// TestTokenRefusals ensures that a forwarded PUT, a GET for a token, and a
// GET without a token (IMDSv1) or with a wrong one are refused.
func TestTokenRefusals(t *testing.T) {
	h, _ := newHandler(clocktest.New(t0))
	w := do(h, http.MethodPut, imds.TokenPath, map[string]string{imds.TTLHeader: "60", "X-Forwarded-For": "10.0.0.1"})
	assert.Equal(t, http.StatusForbidden, w.Code)
	assert.Equal(t, 0, h.Tokens.Len())
	assert.Equal(t, http.StatusMethodNotAllowed, do(h, http.MethodGet, imds.TokenPath, nil).Code)
	assert.Equal(t, http.StatusUnauthorized, do(h, http.MethodGet, imds.CredentialsPath, nil).Code)
	tok := token(t, h, "1000", 60)
	bad := []byte(tok)
	bad[len(bad)-1] ^= 1
	for _, guess := range []string{string(bad), tok[:len(tok)-1], "x", tok + "A"} {
		assert.Equal(t, http.StatusUnauthorized, do(h, http.MethodGet, imds.CredentialsPath, map[string]string{imds.TokenHeader: guess, "Test-Owner": "1000"}).Code, guess)
	}
	assert.Equal(t, http.StatusMethodNotAllowed, do(h, http.MethodPost, imds.CredentialsPath, map[string]string{imds.TokenHeader: tok, "Test-Owner": "1000"}).Code)
}

// TestTokenExpires ensures that a token is valid until its TTL ends and not
// a moment longer.
func TestTokenExpires(t *testing.T) {
	clock := clocktest.New(t0)
	h, _ := newHandler(clock)
	tok := token(t, h, "1000", 60)
	get := func() int {
		return do(h, http.MethodGet, imds.CredentialsPath, map[string]string{imds.TokenHeader: tok, "Test-Owner": "1000"}).Code
	}
	clock.Advance(59 * time.Second)
	assert.Equal(t, http.StatusOK, get())
	clock.Advance(time.Second)
	assert.Equal(t, http.StatusUnauthorized, get())
	assert.Equal(t, 0, h.Tokens.Len(), "an expired token is forgotten")
}

// TestTokenBoundToOwner ensures that a token serves only the owner it was
// issued to.
func TestTokenBoundToOwner(t *testing.T) {
	h, _ := newHandler(clocktest.New(t0))
	tok := token(t, h, "1000", 60)
	assert.Equal(t, http.StatusOK, do(h, http.MethodGet, imds.CredentialsPath, map[string]string{imds.TokenHeader: tok, "Test-Owner": "1000"}).Code)
	assert.Equal(t, http.StatusUnauthorized, do(h, http.MethodGet, imds.CredentialsPath, map[string]string{imds.TokenHeader: tok, "Test-Owner": "1001"}).Code)
}

// TestTokensBounded ensures that the store holds at most its bounds, an
// owner over its own bound losing its oldest token and not another's.
func TestTokensBounded(t *testing.T) {
	clock := clocktest.New(t0)
	tokens := imds.NewTokens(imds.TokenOptions{Max: 6, MaxPerOwner: 3, Now: clock.Now})
	issue := func(owner string) string {
		s, err := tokens.Issue(owner, time.Minute)
		require.NoError(t, err)
		return s
	}
	a1, a2 := issue("a"), issue("a")
	b1 := issue("b")
	issue("a")
	a4 := issue("a")
	assert.False(t, tokens.Valid("a", a1), "a's oldest went")
	assert.True(t, tokens.Valid("a", a2))
	assert.True(t, tokens.Valid("a", a4))
	assert.True(t, tokens.Valid("b", b1), "b's token is not a's to lose")
	assert.Equal(t, 4, tokens.Len())
	issue("c")
	issue("c")
	issue("d")
	assert.Equal(t, 6, tokens.Len())
	assert.False(t, tokens.Valid("a", a2), "at the total bound the oldest token goes")
	// Expired tokens are swept before anything live is evicted.
	clock.Advance(time.Minute)
	d := issue("d")
	assert.Equal(t, 1, tokens.Len())
	assert.True(t, tokens.Valid("d", d))
	_, err := tokens.Issue("d", 0)
	assert.ErrorIs(t, err, imds.ErrTTL)
}

// TestTokensRandom ensures that tokens are distinct and of the same length.
func TestTokensRandom(t *testing.T) {
	tokens := imds.NewTokens(imds.TokenOptions{})
	seen := map[string]bool{}
	for range 100 {
		s, err := tokens.Issue("a", time.Minute)
		require.NoError(t, err)
		assert.Len(t, s, 64)
		assert.False(t, seen[s])
		seen[s] = true
	}
}

// TestCredentials ensures that the role name is listed and its credentials
// answered in the service's JSON shape, and that no other role is.
func TestCredentials(t *testing.T) {
	h, src := newHandler(clocktest.New(t0))
	tok := token(t, h, "0", 21600)
	hdr := map[string]string{imds.TokenHeader: tok, "Test-Owner": "0"}
	for _, p := range []string{imds.CredentialsPath, "/latest/meta-data/iam/security-credentials"} {
		w := do(h, http.MethodGet, p, hdr)
		assert.Equal(t, http.StatusOK, w.Code)
		assert.Equal(t, "device", w.Body.String())
	}
	w := do(h, http.MethodGet, imds.CredentialsPath+"device", hdr)
	require.Equal(t, http.StatusOK, w.Code)
	assert.Equal(t, "application/json", w.Header().Get("Content-Type"))
	assert.Equal(t, "no-store", w.Header().Get("Cache-Control"))
	assert.Equal(t, []string(nil), w.Header()["Date"], "Date is suppressed")
	assert.Contains(t, w.Header(), "Date", "Date is suppressed")
	var got map[string]string
	require.NoError(t, json.Unmarshal(w.Body.Bytes(), &got))
	assert.Equal(t, map[string]string{
		"Code": "Success", "LastUpdated": "2026-12-02T03:59:00Z", "Type": "AWS-HMAC",
		"AccessKeyId": "ASIAEXAMPLE", "SecretAccessKey": "secret", "Token": "session", "Expiration": "2026-12-02T05:00:00Z",
	}, got)
	assert.Equal(t, http.StatusNotFound, do(h, http.MethodGet, imds.CredentialsPath+"admin", hdr).Code)
	assert.Equal(t, http.StatusNotFound, do(h, http.MethodGet, imds.CredentialsPath+"device/x", hdr).Code)
	assert.Equal(t, "eu-west-1", do(h, http.MethodGet, imds.RegionPath, hdr).Body.String())
	assert.JSONEq(t, `{"region":"eu-west-1"}`, do(h, http.MethodGet, imds.IdentityDocumentPath, hdr).Body.String())
	assert.Equal(t, "iam/\nplacement/", do(h, http.MethodGet, "/latest/meta-data/", hdr).Body.String())
	assert.Equal(t, http.StatusNotFound, do(h, http.MethodGet, "/latest/user-data", hdr).Code)

	src.err = &imds.Error{Status: http.StatusServiceUnavailable, Message: "no credentials yet", RetryAfter: 1500 * time.Millisecond}
	w = do(h, http.MethodGet, imds.CredentialsPath+"device", hdr)
	assert.Equal(t, http.StatusServiceUnavailable, w.Code)
	assert.Equal(t, "2", w.Header().Get("Retry-After"))
	assert.Equal(t, "no credentials yet", w.Body.String())
}

// TestCredentialsFollowRefresh ensures that the answer changes as soon as
// the source's credentials do, with its Content-Length.
func TestCredentialsFollowRefresh(t *testing.T) {
	h, src := newHandler(clocktest.New(t0))
	hdr := map[string]string{imds.TokenHeader: token(t, h, "0", 60), "Test-Owner": "0"}
	key := func() string {
		w := do(h, http.MethodGet, imds.CredentialsPath+"device", hdr)
		require.Equal(t, http.StatusOK, w.Code)
		require.Equal(t, strconv.Itoa(w.Body.Len()), w.Header().Get("Content-Length"))
		var got map[string]string
		require.NoError(t, json.Unmarshal(w.Body.Bytes(), &got))
		return got["AccessKeyId"] + " " + got["Expiration"]
	}
	assert.Equal(t, "ASIAEXAMPLE 2026-12-02T05:00:00Z", key())
	assert.Equal(t, "ASIAEXAMPLE 2026-12-02T05:00:00Z", key())
	src.creds.AccessKeyID, src.creds.Expires = "ASIANEXT", t0.Add(2*time.Hour)
	assert.Equal(t, "ASIANEXT 2026-12-02T06:00:00Z", key())
}

// TestHopLimitListener ensures that accepted connections send with an IP
// TTL of 1.
func TestHopLimitListener(t *testing.T) {
	for _, network := range []string{"tcp4", "tcp6"} {
		t.Run(network, func(t *testing.T) {
			addr := "127.0.0.1:0"
			if network == "tcp6" {
				addr = "[::1]:0"
			}
			raw, err := net.Listen(network, addr)
			if network == "tcp6" && err != nil {
				t.Skipf("no IPv6 loopback on this machine: %v", err)
			}
			require.NoError(t, err)
			ln, err := imds.HopLimitListener(raw, 1)
			require.NoError(t, err)
			defer ln.Close()
			go func() {
				if c, err := net.Dial(network, ln.Addr().String()); err == nil {
					defer c.Close()
					c.Read(make([]byte, 1))
				}
			}()
			c, err := ln.Accept()
			require.NoError(t, err)
			defer c.Close()
			sc, err := c.(*net.TCPConn).SyscallConn()
			require.NoError(t, err)
			var ttl int
			var gerr error
			require.NoError(t, sc.Control(func(fd uintptr) {
				if network == "tcp4" {
					ttl, gerr = unix.GetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_TTL)
				} else {
					ttl, gerr = unix.GetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_UNICAST_HOPS)
				}
			}))
			require.NoError(t, gerr)
			assert.Equal(t, 1, ttl)
		})
	}
}
