package hsm_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tetherd/tether/hsm"
	"github.com/tetherd/tether/hsm/hsmtest"
)

func skipShort(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("SoftHSM integration test; runs without -short")
	}
}

// backend is one way a pkcs11: key reaches its module: in-process (cgo
// builds), or through p11-kit's RPC.
type backend struct {
	name string
	// uri is the URI of object in tk through this backend.
	uri func(t *testing.T, tk *hsmtest.Token, object string) string
	// closeSessions closes k's sessions on the token, as a token reset does.
	closeSessions func(t *testing.T, tk *hsmtest.Token, k *hsm.Key)
}

// rpcBackends reach the module through p11-kit, in every build.
var rpcBackends = []backend{
	{"p11-kit remote", func(t *testing.T, tk *hsmtest.Token, o string) string { return remoteURI(tk, o) }, closeP11KitSessions},
	{"p11-kit server", func(t *testing.T, tk *hsmtest.Token, o string) string { return tk.ServerURI(t, o) }, closeP11KitSessions},
}

func closeP11KitSessions(t *testing.T, _ *hsmtest.Token, k *hsm.Key) {
	t.Helper()
	require.NoError(t, hsm.CloseP11KitSessions(k))
}

// forEachBackend runs f as a subtest for each backend of this build.
func forEachBackend(t *testing.T, f func(t *testing.T, b backend)) {
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) { f(t, b) })
	}
}

// generate makes a key labelled object in tk through b.
func generate(t *testing.T, b backend, tk *hsmtest.Token, object string, kt hsm.KeyType) (string, crypto.PublicKey) {
	t.Helper()
	uri := b.uri(t, tk, object)
	pub, err := hsm.GenerateKey(context.Background(), uri, kt)
	require.NoError(t, err, "keygen %s", uri)
	return uri, pub
}

// tokenIdentity makes a token with one key of type kt and a self-signed
// certificate for it, and opens it as an Identity through b.
func tokenIdentity(t *testing.T, b backend, kt hsm.KeyType) (*hsmtest.Token, string, string, *hsm.Identity) {
	t.Helper()
	tk := hsmtest.NewToken(t, "tether-test")
	uri, pub := generate(t, b, tk, "device", kt)
	key, err := hsm.OpenKey(context.Background(), uri)
	require.NoError(t, err)
	now := time.Now()
	certFile, _ := hsmtest.Certificate(t, "gw-0001", pub, nil, key, now.Add(-time.Hour), now.Add(time.Hour))
	require.NoError(t, key.Close())
	id, err := hsm.Open(context.Background(), certFile, uri)
	require.NoError(t, err)
	t.Cleanup(func() { id.Close() })
	return tk, uri, certFile, id
}

func verify(t *testing.T, pub crypto.PublicKey, digest, sig []byte, opts crypto.SignerOpts) {
	t.Helper()
	switch p := pub.(type) {
	case *ecdsa.PublicKey:
		assert.True(t, ecdsa.VerifyASN1(p, digest, sig), "ECDSA signature does not verify")
	case *rsa.PublicKey:
		if pss, ok := opts.(*rsa.PSSOptions); ok {
			assert.NoError(t, rsa.VerifyPSS(p, crypto.SHA256, digest, sig, pss))
		} else {
			assert.NoError(t, rsa.VerifyPKCS1v15(p, crypto.SHA256, digest, sig))
		}
	default:
		t.Fatalf("unexpected key %T", pub)
	}
}

// mtlsServer is an httptest TLS server that requires a client certificate
// signed by the certificate in caFile (here: the self-signed device cert).
func mtlsServer(t *testing.T, caFile string) *httptest.Server {
	t.Helper()
	pem, err := os.ReadFile(caFile)
	require.NoError(t, err)
	pool := x509.NewCertPool()
	require.True(t, pool.AppendCertsFromPEM(pem))
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.TLS.PeerCertificates[0].Subject.CommonName)
	}))
	srv.TLS = &tls.Config{ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pool}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv
}

func mtlsClient(srv *httptest.Server, id *hsm.Identity, version uint16) *http.Client {
	cert := id.Certificate()
	cfg := srv.Client().Transport.(*http.Transport).TLSClientConfig.Clone()
	cfg.Certificates = []tls.Certificate{cert}
	cfg.MinVersion, cfg.MaxVersion = version, version
	return &http.Client{Transport: &http.Transport{TLSClientConfig: cfg, DisableKeepAlives: true}}
}

func get(t *testing.T, c *http.Client, url string) (string, error) {
	resp, err := c.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// TestTokenKeySignsAndHandshakes ensures that token keys of every type sign
// (ECDSA, RSA PKCS#1 v1.5 and PSS) and complete mutual TLS 1.2 and 1.3
// handshakes, also concurrently, through every backend.
func TestTokenKeySignsAndHandshakes(t *testing.T) {
	skipShort(t)
	forEachBackend(t, func(t *testing.T, b backend) {
		for _, kt := range []hsm.KeyType{hsm.KeyECP256, hsm.KeyECP384, hsm.KeyRSA2048} {
			t.Run(string(kt), func(t *testing.T) {
				_, uri, certFile, id := tokenIdentity(t, b, kt)
				cert := id.Certificate()
				require.NotNil(t, cert.Leaf)
				signer, ok := cert.PrivateKey.(crypto.Signer)
				require.True(t, ok)
				assert.NotContains(t, id.KeyLocation(), "pin-value")
				assert.Contains(t, id.KeyLocation(), "object=device")

				digest := sha256.Sum256([]byte("tether"))
				opts := []crypto.SignerOpts{crypto.SHA256}
				if kt == hsm.KeyRSA2048 {
					opts = append(opts,
						&rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: crypto.SHA256},
						&rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthAuto, Hash: crypto.SHA256})
				}
				for _, o := range opts {
					sig, err := signer.Sign(rand.Reader, digest[:], o)
					require.NoError(t, err)
					verify(t, cert.Leaf.PublicKey, digest[:], sig, o)
				}

				srv := mtlsServer(t, certFile)
				for _, v := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
					body, err := get(t, mtlsClient(srv, id, v), srv.URL)
					require.NoError(t, err, "TLS version %x", v)
					assert.Equal(t, "gw-0001", body)
				}

				// Concurrent handshakes share the session pool.
				c := mtlsClient(srv, id, tls.VersionTLS13)
				var wg sync.WaitGroup
				errs := make(chan error, 16)
				for range 16 {
					wg.Go(func() {
						_, err := get(t, c, srv.URL)
						errs <- err
					})
				}
				wg.Wait()
				close(errs)
				for err := range errs {
					assert.NoError(t, err)
				}
				_ = uri
			})
		}
	})
}

// TestTokenKeyAttributes ensures that keygen makes the private key sensitive and never extractable, as OpenSC's pkcs11-tool reads it.
//
// TestTokenKeyAttributes cross-checks with OpenSC's pkcs11-tool that keygen
// made the private key sensitive and never extractable.
func TestTokenKeyAttributes(t *testing.T) {
	skipShort(t)
	tool, err := exec.LookPath("pkcs11-tool")
	require.NoError(t, err, "pkcs11-tool missing: install the Debian package opensc")
	forEachBackend(t, func(t *testing.T, b backend) {
		tk := hsmtest.NewToken(t, "attrs")
		generate(t, b, tk, "device", hsm.KeyECP256)
		pin, err := os.ReadFile(tk.PINFile)
		require.NoError(t, err)
		cmd := exec.Command(tool, "--module", tk.Module, "--token-label", tk.Label, "--login", "--pin", "env:TETHER_TEST_PIN", "--list-objects")
		cmd.Env = append(os.Environ(), "TETHER_TEST_PIN="+strings.TrimSpace(string(pin)))
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, "%s", out)
		// pkcs11-tool lists objects in the token's order: take the private
		// key's block wherever it stands.
		_, priv, ok := strings.Cut(string(out), "Private Key Object")
		require.True(t, ok, "%s", out)
		if i := strings.Index(priv, "Key Object"); i >= 0 {
			priv = priv[:i]
		}
		priv = "Private Key Object" + priv
		assert.Contains(t, priv, "Private Key Object; EC")
		assert.Contains(t, priv, "label:      device")
		assert.Contains(t, priv, "never extractable")
		assert.Regexp(t, `Access:\s+sensitive`, priv)
	})
}

// TestSealerInToken ensures that the sealer's AES key lives in the token
// (sensitive, not extractable), is found again by its label, and that
// sealed data opens only with the same additional data, through every
// backend.
func TestSealerInToken(t *testing.T) {
	skipShort(t)
	forEachBackend(t, func(t *testing.T, b backend) {
		tk, _, _, id := tokenIdentity(t, b, hsm.KeyECP256)
		ctx := context.Background()
		a, err := id.Sealer(ctx, "tether-store")
		require.NoError(t, err)
		nonce := make([]byte, a.NonceSize())
		_, err = rand.Read(nonce)
		require.NoError(t, err)
		ct, err := a.Seal(nil, nonce, []byte("secret credentials"), []byte("role/device"))
		require.NoError(t, err)
		pt, err := a.Open(nil, nonce, ct, []byte("role/device"))
		require.NoError(t, err)
		assert.Equal(t, "secret credentials", string(pt))
		_, err = a.Open(nil, nonce, ct, []byte("role/other"))
		assert.Error(t, err, "wrong additional data must not open")

		// The same label finds the same key again (no second key generated).
		again, err := id.Sealer(ctx, "tether-store")
		require.NoError(t, err)
		pt, err = again.Open(nil, nonce, ct, []byte("role/device"))
		require.NoError(t, err)
		assert.Equal(t, "secret credentials", string(pt))

		slots, err := hsm.List(ctx, "", mustURI(t, b.uri(t, tk, "device")))
		require.NoError(t, err)
		var secrets []hsm.Object
		for _, s := range slots {
			if s.Token != nil && s.Token.Label == tk.Label {
				for _, o := range s.Token.Objects {
					if o.Class == "secret-key" {
						secrets = append(secrets, o)
					}
				}
			}
		}
		require.Len(t, secrets, 1)
		assert.Equal(t, "tether-store", secrets[0].Label)
		assert.Equal(t, "AES 256", secrets[0].KeyType)
		assert.True(t, secrets[0].Sensitive)
		assert.False(t, secrets[0].Extractable)
	})
}

func mustURI(t *testing.T, s string) *hsm.URI {
	u, err := hsm.ParseURI(s)
	require.NoError(t, err)
	return u
}

// TestTokenRecoversAfterSessionsClosed ensures that signer and sealer reopen
// the token after a reset closed their sessions, through every backend.
func TestTokenRecoversAfterSessionsClosed(t *testing.T) {
	skipShort(t)
	forEachBackend(t, func(t *testing.T, b backend) {
		tk, _, _, id := tokenIdentity(t, b, hsm.KeyECP256)
		signer := id.Certificate().PrivateKey.(crypto.Signer)
		a, err := id.Sealer(context.Background(), "store")
		require.NoError(t, err)
		digest := sha256.Sum256([]byte("x"))
		_, err = signer.Sign(rand.Reader, digest[:], crypto.SHA256)
		require.NoError(t, err)

		b.closeSessions(t, tk, id.Key())
		sig, err := signer.Sign(rand.Reader, digest[:], crypto.SHA256)
		require.NoError(t, err, "the signer reopens after CKR_SESSION_HANDLE_INVALID")
		verify(t, signer.Public(), digest[:], sig, crypto.SHA256)

		b.closeSessions(t, tk, id.Key())
		nonce := make([]byte, 12)
		ct, err := a.Seal(nil, nonce, []byte("p"), nil)
		require.NoError(t, err, "the sealer reopens too")
		pt, err := a.Open(nil, nonce, ct, nil)
		require.NoError(t, err)
		assert.Equal(t, "p", string(pt))
	})
}

// TestTokenRemovedAndBack ensures that a removed token fails each use fast
// with ErrTokenUnavailable and that the first use after it is back
// succeeds, through every backend.
func TestTokenRemovedAndBack(t *testing.T) {
	skipShort(t)
	forEachBackend(t, func(t *testing.T, b backend) {
		tk, _, _, id := tokenIdentity(t, b, hsm.KeyECP256)
		signer := id.Certificate().PrivateKey.(crypto.Signer)
		digest := sha256.Sum256([]byte("x"))

		tk.Remove(t)
		_, err := signer.Sign(rand.Reader, digest[:], crypto.SHA256)
		require.Error(t, err)
		assert.ErrorIs(t, err, hsm.ErrTokenUnavailable)
		t.Log(err)
		_, err = signer.Sign(rand.Reader, digest[:], crypto.SHA256)
		assert.ErrorIs(t, err, hsm.ErrTokenUnavailable, "still away")

		tk.Restore(t)
		sig, err := signer.Sign(rand.Reader, digest[:], crypto.SHA256)
		require.NoError(t, err, "the next use after the token is back reopens it")
		verify(t, signer.Public(), digest[:], sig, crypto.SHA256)
	})
}

// logRecorder collects log records for assertions.
type logRecorder struct {
	mu   sync.Mutex
	msgs []string
}

func (r *logRecorder) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(writerFunc(func(p []byte) (int, error) {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.msgs = append(r.msgs, string(p))
		return len(p), nil
	}), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func (r *logRecorder) count(substr string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, m := range r.msgs {
		if strings.Contains(m, substr) {
			n++
		}
	}
	return n
}

func (r *logRecorder) all() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return strings.Join(r.msgs, "")
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

func readPIN(t *testing.T, tk *hsmtest.Token) string {
	b, err := os.ReadFile(tk.PINFile)
	require.NoError(t, err)
	return strings.TrimSpace(string(b))
}

// TestTokenFaults ensures that each configuration fault at open gets one
// error naming what is wrong and what to do, classified as configuration or
// transient, and never containing the PIN, through every backend.
func TestTokenFaults(t *testing.T) {
	skipShort(t)
	forEachBackend(t, func(t *testing.T, b backend) {
		tk := hsmtest.NewToken(t, "faults")
		good, _ := generate(t, b, tk, "device", hsm.KeyECP256)
		generate(t, b, tk, "other", hsm.KeyRSA2048)
		pin := readPIN(t, tk)
		dir := t.TempDir()
		wrongPIN := dir + "/wrong"
		require.NoError(t, os.WriteFile(wrongPIN, []byte("00000000\n"), 0o600))
		openPIN := dir + "/open"
		require.NoError(t, os.WriteFile(openPIN, []byte(pin), 0o644))
		notLib := dir + "/notlib.so"
		require.NoError(t, os.WriteFile(notLib, []byte("not an ELF"), 0o644))
		swap := func(old, new string) string { return strings.Replace(good, old, new, 1) }

		tests := []struct {
			name    string
			uri     string
			is      error
			msg     []string
			notConf bool // transient rather than configuration
		}{
			{"token absent", swap("token=faults", "token=nosuch"), hsm.ErrTokenUnavailable,
				[]string{`token="nosuch"`, `tokens present: "faults"`}, true},
			{"wrong PIN", swap("pin-source=file:"+tk.PINFile, "pin-source=file:"+wrongPIN), hsm.ErrPINIncorrect,
				[]string{`"faults"`, "pin-source=file:" + wrongPIN, "not retried"}, false},
			{"PIN file too open", swap("pin-source=file:"+tk.PINFile, "pin-source=file:"+openPIN), hsm.ErrPINSource,
				[]string{"chmod 600 " + openPIN}, false},
			{"PIN file missing", swap("pin-source=file:"+tk.PINFile, "pin-source=file:"+dir+"/none"), hsm.ErrPINSource,
				[]string{dir + "/none"}, false},
			{"no PIN", swap("&pin-source=file:"+tk.PINFile, ""), hsm.ErrPINSource,
				[]string{"needs a PIN", "pin-source=file:PATH"}, false},
			{"object not found", swap("object=device", "object=missing"), hsm.ErrKeyNotFound,
				[]string{`object=missing`, `private "device"`, `private "other"`, "RSA 2048", "EC P-256"}, false},
			{"credential not set", swap("pin-source=file:"+tk.PINFile, "pin-source=credential:tether-pin"), hsm.ErrPINSource,
				[]string{"CREDENTIALS_DIRECTORY", "LoadCredential=tether-pin"}, false},
		}
		if srv := tk.P11KitServer(); srv != "" {
			tests = append(tests, struct {
				name    string
				uri     string
				is      error
				msg     []string
				notConf bool
			}{"server socket missing", swap("x-p11-kit="+srv, "x-p11-kit="+dir+"/none.sock"), hsm.ErrTokenUnavailable,
				[]string{dir + "/none.sock", "p11-kit server"}, true})
		} else {
			tests = append(tests, []struct {
				name    string
				uri     string
				is      error
				msg     []string
				notConf bool
			}{
				{"module missing", swap("module-path="+tk.Module, "module-path=/nonexistent/libnone.so"), hsm.ErrModule,
					[]string{"/nonexistent/libnone.so", "module-path"}, false},
				{"module not a library", swap("module-path="+tk.Module, "module-path="+notLib), hsm.ErrModule,
					[]string{notLib, "not a PKCS#11 library"}, false},
			}...)
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				k, err := hsm.OpenKey(context.Background(), tc.uri, hsm.WithGetenv(func(string) string { return "" }))
				if err == nil {
					k.Close()
				}
				require.Error(t, err)
				assert.ErrorIs(t, err, tc.is)
				assert.Equal(t, tc.notConf, errors.Is(err, hsm.ErrTokenUnavailable), "transient classification")
				for _, m := range tc.msg {
					assert.Contains(t, err.Error(), m)
				}
				assert.NotContains(t, err.Error(), pin, "the PIN must never appear in an error")
			})
		}

		t.Run("credential PIN source", func(t *testing.T) {
			creds := t.TempDir()
			require.NoError(t, os.WriteFile(creds+"/tether-pin", []byte(pin+"\n"), 0o400))
			k, err := hsm.OpenKey(context.Background(), swap("pin-source=file:"+tk.PINFile, "pin-source=credential:tether-pin"),
				hsm.WithGetenv(func(k string) string {
					if k == "CREDENTIALS_DIRECTORY" {
						return creds
					}
					return ""
				}))
			require.NoError(t, err)
			require.NoError(t, k.Close())
		})

		t.Run("pin-value warns without printing it", func(t *testing.T) {
			var rec logRecorder
			k, err := hsm.OpenKey(context.Background(), swap("pin-source=file:"+tk.PINFile, "pin-value="+pin), hsm.WithLogger(rec.logger()))
			require.NoError(t, err)
			assert.NotContains(t, k.Location(), pin)
			require.NoError(t, k.Close())
			assert.Equal(t, 1, rec.count("carries pin-value"))
			assert.NotContains(t, rec.all(), pin)
		})
	})
}

// TestWrongPINNeverRetried ensures that a PIN the token refuses is tried once and never again.
//
// The PIN is changed on the token while the agent
// runs; after the sessions are lost, the reopen meets CKR_PIN_INCORRECT once
// and from then on fails without another login attempt.
func TestWrongPINNeverRetried(t *testing.T) {
	skipShort(t)
	forEachBackend(t, func(t *testing.T, b backend) {
		tk := hsmtest.NewToken(t, "pin")
		uri, _ := generate(t, b, tk, "device", hsm.KeyECP256)
		var rec logRecorder
		k, err := hsm.OpenKey(context.Background(), uri, hsm.WithLogger(rec.logger()))
		require.NoError(t, err)
		t.Cleanup(func() { k.Close() })
		oldPIN := readPIN(t, tk)
		tk.ChangePIN(t)
		b.closeSessions(t, tk, k)

		digest := sha256.Sum256([]byte("x"))
		for range 3 {
			_, err = k.Sign(rand.Reader, digest[:], crypto.SHA256)
			require.ErrorIs(t, err, hsm.ErrPINIncorrect)
			assert.NotContains(t, err.Error(), oldPIN)
		}
		assert.Equal(t, 2, rec.count("pkcs11 opening token"), "one login at open, one failed reopen, no more")
		assert.NotContains(t, rec.all(), oldPIN)
	})
}

// TestP11KitConnectionLost ensures that a key reached through p11-kit
// survives its p11-kit process going away (a crash of `p11-kit remote`, a
// p11-kit server restart): the next use reconnects, logs in again and
// signs, and the sealer keeps opening what it sealed.
func TestP11KitConnectionLost(t *testing.T) {
	skipShort(t)
	for _, b := range rpcBackends {
		t.Run(b.name, func(t *testing.T) {
			_, _, _, id := tokenIdentity(t, b, hsm.KeyECP256)
			a, err := id.Sealer(context.Background(), "store")
			require.NoError(t, err)
			nonce := make([]byte, 12)
			ct, err := a.Seal(nil, nonce, []byte("kept"), nil)
			require.NoError(t, err)

			require.NoError(t, hsm.DropP11KitConnection(id.Key()))
			digest := sha256.Sum256([]byte("x"))
			sig, err := id.Key().Sign(rand.Reader, digest[:], crypto.SHA256)
			require.NoError(t, err, "the key reconnects after its p11-kit connection was lost")
			verify(t, id.Key().Public(), digest[:], sig, crypto.SHA256)

			require.NoError(t, hsm.DropP11KitConnection(id.Key()))
			pt, err := a.Open(nil, nonce, ct, nil)
			require.NoError(t, err, "the sealer reconnects too")
			assert.Equal(t, "kept", string(pt))
		})
	}
}
