package agent

import (
	"bufio"
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/tetherd/tether/credprovider"
)

// FuzzParseConfig ensures that no configuration file makes ParseConfig
// panic, and that what it says about one is bounded lines naming the file.
func FuzzParseConfig(f *testing.F) {
	for _, s := range []string{
		"[identity]\nthing_name = \"gw\"\ncertificate = \"/x.crt\"\nprivate_key = \"/x.key\"\n[aws]\nregion = \"eu-west-1\"\ncredential_endpoint = \"c.example.com\"\nrole_alias = \"r\"\n",
		"[aws]\nduration = 3600\n", "[serve]\nallow_uids = \"0\"\n", "[[role]]\nname = 1\n[[role]]\n",
		"[mqtt]\nendpoint = \"a.example.com\"\n[[mqtt.subscribe]]\ntopic = \"a/\\u0001\"\n", "[identity\n", "a = \"\xff\"\n",
		"[log]\nlevel = \"" + strings.Repeat("x", 300) + "\"\n", "x.y.z = [1, [2], {a = 3}]\n",
	} {
		f.Add([]byte(s))
	}
	if b, err := os.ReadFile(filepath.Join("..", "packaging", "tether.toml")); err == nil {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		_, err := ParseConfig("f.toml", b)
		if err == nil {
			return
		}
		for _, line := range strings.Split(err.Error(), "\n") {
			if !strings.HasPrefix(line, "f.toml") {
				t.Fatalf("error line does not name the file: %q", line)
			}
			if len(line) > maxLine+64 {
				t.Fatalf("error line of %d bytes", len(line))
			}
		}
	})
}

// fuzzSecret is what the socket API's fuzzed role serves.
const fuzzSecret = "FUZZSECRETACCESSKEY"

// FuzzSocketAPI ensures that no request makes the socket API panic or hand
// credentials to a refused peer, and that every error answer is the API's
// JSON error shape.
func FuzzSocketAPI(f *testing.F) {
	for _, s := range []string{
		"GET /v1/credentials HTTP/1.1\r\nHost: tether\r\n\r\n",
		"GET /v1/credentials/device HTTP/1.1\r\nHost: tether\r\n\r\n",
		"GET /v1/credentials/%2e%2e HTTP/1.1\r\nHost: tether\r\n\r\n",
		"POST /v1/credentials HTTP/1.1\r\nHost: tether\r\nContent-Length: 3\r\n\r\nabc",
		"GET /v1/status HTTP/1.1\r\nHost: tether\r\n\r\n",
		"POST /v1/mqtt/publish?topic=a&qos=1 HTTP/1.1\r\nHost: tether\r\nContent-Length: 1\r\n\r\nx",
		"GET //v1/credentials HTTP/1.1\r\nHost: tether\r\n\r\n",
		"DELETE /v1/status HTTP/1.0\r\n\r\n",
	} {
		f.Add([]byte(s), true)
		f.Add([]byte(s), false)
	}
	ref, err := credprovider.NewRefresher(aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
		return aws.Credentials{AccessKeyID: "AKIDFUZZ", SecretAccessKey: fuzzSecret, SessionToken: "t", CanExpire: true, Expires: time.Now().Add(time.Hour)}, nil
	}), credprovider.RefreshOptions{Mode: credprovider.Deferred})
	if err != nil {
		f.Fatal(err)
	}
	roles := roleSet{
		DeviceRole: {name: DeviceRole, ref: ref},
		"narrow":   {name: "narrow", ref: ref, allow: AllowList{UIDs: []int{4242}}},
	}
	f.Fuzz(func(t *testing.T, raw []byte, allowed bool) {
		req, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(raw)))
		if err != nil || req.RequestURI == "*" {
			// Unreadable requests never reach the handler; "*" (OPTIONS *)
			// is answered by http.Server itself.
			return
		}
		allow := AllowList{}
		if !allowed {
			allow = AllowList{UIDs: []int{4242}}
		}
		// The peer is root, as SO_PEERCRED would report it.
		req = req.WithContext(context.WithValue(req.Context(), peerKey{}, &Peer{UID: 0, GID: 0}))
		a := &api{roles: func() roleSet { return roles }, roleFor: (&Agent{roles: roles}).roleFor, allow: func() AllowList { return allow },
			status: func() Status { return Status{} }, log: slog.New(slog.DiscardHandler)}
		w := httptest.NewRecorder()
		a.routes().ServeHTTP(w, req)
		body := w.Body.String()
		if w.Code < 200 || w.Code > 599 {
			t.Fatalf("status %d", w.Code)
		}
		if w.Code != http.StatusOK || !allowed {
			if strings.Contains(body, fuzzSecret) && (!allowed || w.Code != http.StatusOK) {
				t.Fatalf("%d answer to %q carries the secret", w.Code, raw)
			}
		}
		if w.Code >= 400 && !strings.Contains(body, `"code":`) {
			t.Fatalf("%d answer is not the API's error shape: %q", w.Code, body)
		}
	})
}
