package imds_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/tetherd/tether/credprovider/clocktest"
	"github.com/tetherd/tether/credprovider/imds"
)

// FuzzHandler ensures that no request, however malformed, makes the handler
// panic or answer the credentials without a live token of its own owner,
// and that every answer has one of the protocol's statuses.
func FuzzHandler(f *testing.F) {
	f.Add("GET", imds.CredentialsPath+"device", "", true, "0", false)
	f.Add("PUT", imds.TokenPath, "21600", false, "0", false)
	f.Add("GET", "/latest/meta-data/iam/security-credentials//device", "", true, "1", true)
	f.Add("HEAD", imds.CredentialsPath+"device/../device", "x", false, "0", false)
	f.Fuzz(func(t *testing.T, method, path, ttl string, useToken bool, owner string, forwarded bool) {
		if !strings.HasPrefix(path, "/") || strings.ContainsAny(method+path, " \t\r\n") || method == "" {
			return // not a request line net/http would hand to a handler
		}
		h, _ := newHandler(clocktest.New(t0))
		tok, err := h.Tokens.Issue("0", imds.MaxTTL)
		if err != nil {
			t.Fatal(err)
		}
		r := httptest.NewRequest("GET", "/", nil)
		r.Method, r.URL.Path = method, path
		r.Header.Set("Test-Owner", owner)
		if ttl != "" {
			r.Header.Set(imds.TTLHeader, ttl)
		}
		if useToken {
			r.Header.Set(imds.TokenHeader, tok)
		}
		if forwarded {
			r.Header.Set("X-Forwarded-For", "10.0.0.1")
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		switch w.Code {
		case http.StatusOK, http.StatusBadRequest, http.StatusUnauthorized, http.StatusForbidden,
			http.StatusNotFound, http.StatusMethodNotAllowed:
		default:
			t.Fatalf("%s %q: status %d", method, path, w.Code)
		}
		if strings.Contains(w.Body.String(), "SecretAccessKey") {
			if !useToken || owner != "0" || (method != http.MethodGet && method != http.MethodHead) {
				t.Fatalf("%s %q (token %v, owner %q) got the credentials", method, path, useToken, owner)
			}
		}
		if method == http.MethodPut && path == imds.TokenPath && forwarded && w.Code == http.StatusOK {
			t.Fatal("a forwarded PUT got a token")
		}
	})
}
