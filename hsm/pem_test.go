package hsm_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tetherd/tether/hsm"
)

func writeFile(t *testing.T, name string, data []byte, mode os.FileMode) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	require.NoError(t, os.WriteFile(p, data, mode))
	require.NoError(t, os.Chmod(p, mode))
	return p
}

func selfSigned(t *testing.T, key crypto.Signer, nb, na time.Time) []byte {
	t.Helper()
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "gw-0001"}, NotBefore: nb, NotAfter: na}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	require.NoError(t, err)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// TestPEMIdentity ensures that PEM identities are opened when valid and refused, with one line naming the file, for every way they go wrong.
func TestPEMIdentity(t *testing.T) {
	ec256, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	ec384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	require.NoError(t, err)
	ec224, err := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	require.NoError(t, err)
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	require.NoError(t, err)
	now := time.Now()
	valid := func(k crypto.Signer) []byte { return selfSigned(t, k, now.Add(-time.Hour), now.Add(time.Hour)) }
	pkcs8 := func(k any) []byte {
		der, err := x509.MarshalPKCS8PrivateKey(k)
		require.NoError(t, err)
		return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	}
	sec1 := func(k *ecdsa.PrivateKey) []byte {
		der, err := x509.MarshalECPrivateKey(k)
		require.NoError(t, err)
		return pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der})
	}
	pkcs1 := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rsaKey)})
	ecParams := pem.EncodeToMemory(&pem.Block{Type: "EC PARAMETERS", Bytes: []byte{0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07}})
	legacyEncrypted := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Headers: map[string]string{"Proc-Type": "4,ENCRYPTED", "DEK-Info": "AES-128-CBC,00"}, Bytes: []byte{1}})
	pkcs8Encrypted := pem.EncodeToMemory(&pem.Block{Type: "ENCRYPTED PRIVATE KEY", Bytes: []byte{1}})

	tests := []struct {
		name     string
		cert     []byte
		key      []byte
		keyMode  os.FileMode
		wantErr  []string // substrings; "{cert}"/"{key}" stand for the file names
		wantType string
	}{
		{name: "EC P-256 PKCS#8", cert: valid(ec256), key: pkcs8(ec256), wantType: "ecdsa"},
		{name: "EC P-256 SEC1 with EC PARAMETERS", cert: valid(ec256), key: append(ecParams, sec1(ec256)...), wantType: "ecdsa"},
		{name: "EC P-384 SEC1", cert: valid(ec384), key: sec1(ec384), wantType: "ecdsa"},
		{name: "RSA PKCS#1", cert: valid(rsaKey), key: pkcs1, wantType: "rsa"},
		{name: "RSA PKCS#8", cert: valid(rsaKey), key: pkcs8(rsaKey), wantType: "rsa"},
		{name: "key does not match", cert: valid(ec256), key: pkcs8(ec384), wantErr: []string{"{key}", "does not match certificate {cert}"}},
		{name: "legacy encrypted key", cert: valid(rsaKey), key: legacyEncrypted, wantErr: []string{"{key}", "encrypted"}},
		{name: "PKCS#8 encrypted key", cert: valid(rsaKey), key: pkcs8Encrypted, wantErr: []string{"{key}", "encrypted"}},
		{name: "key readable by group", cert: valid(ec256), key: pkcs8(ec256), keyMode: 0o640, wantErr: []string{"{key}", "chmod 600 {key}"}},
		{name: "key readable by others", cert: valid(ec256), key: pkcs8(ec256), keyMode: 0o604, wantErr: []string{"chmod 600 {key}"}},
		{name: "expired certificate", cert: selfSigned(t, ec256, now.Add(-48*time.Hour), now.Add(-24*time.Hour)), key: pkcs8(ec256),
			wantErr: []string{"{cert}", "expired", "NotBefore " + now.Add(-48*time.Hour).UTC().Format("2006-01-02"), "NotAfter " + now.Add(-24*time.Hour).UTC().Format("2006-01-02")}},
		{name: "certificate not yet valid", cert: selfSigned(t, ec256, now.Add(24*time.Hour), now.Add(48*time.Hour)), key: pkcs8(ec256),
			wantErr: []string{"{cert}", "not valid yet", "NotBefore", "system clock"}},
		{name: "garbage key", cert: valid(ec256), key: []byte("hello"), wantErr: []string{"{key}", "no PEM block"}},
		{name: "certificate given as key", cert: valid(ec256), key: valid(ec256), wantErr: []string{"{key}", "certificate file?"}},
		{name: "garbage certificate", cert: []byte("nope"), key: pkcs8(ec256), wantErr: []string{"{cert}", "no PEM \"CERTIFICATE\" block"}},
		{name: "key given as certificate", cert: pkcs8(ec256), key: pkcs8(ec256), wantErr: []string{"{cert}", "key file?"}},
		{name: "corrupt key block", cert: valid(ec256), key: pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: []byte{1, 2}}), wantErr: []string{"{key}", "EC PRIVATE KEY block"}},
		{name: "unsupported curve", cert: valid(ec224), key: sec1(ec224), wantErr: []string{"{key}", "P-224", "P-256 or P-384"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			mode := tc.keyMode
			if mode == 0 {
				mode = 0o600
			}
			certFile := writeFile(t, "device.crt", tc.cert, 0o644)
			keyFile := writeFile(t, "device.key", tc.key, mode)
			id, err := hsm.Open(context.Background(), certFile, keyFile)
			if tc.wantErr != nil {
				require.Error(t, err)
				assert.ErrorIs(t, err, hsm.ErrBadKey)
				for _, w := range tc.wantErr {
					w = strings.NewReplacer("{cert}", certFile, "{key}", keyFile).Replace(w)
					assert.Contains(t, err.Error(), w)
				}
				return
			}
			require.NoError(t, err)
			defer id.Close()
			cert := id.Certificate()
			require.NotNil(t, cert.Leaf)
			assert.Equal(t, "gw-0001", id.Leaf().Subject.CommonName)
			assert.Equal(t, keyFile, id.KeyLocation())
			signer, ok := cert.PrivateKey.(crypto.Signer)
			require.True(t, ok)
			digest := sha256.Sum256([]byte("tether"))
			sig, err := signer.Sign(rand.Reader, digest[:], crypto.SHA256)
			require.NoError(t, err)
			switch tc.wantType {
			case "ecdsa":
				assert.True(t, ecdsa.VerifyASN1(cert.Leaf.PublicKey.(*ecdsa.PublicKey), digest[:], sig))
			case "rsa":
				assert.NoError(t, rsa.VerifyPKCS1v15(cert.Leaf.PublicKey.(*rsa.PublicKey), crypto.SHA256, digest[:], sig))
			}
		})
	}
}

// TestPEMSealer ensures that the PEM-derived sealer is stable for one key and label and opens nothing sealed under another.
func TestPEMSealer(t *testing.T) {
	k1, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	k2, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	open := func(k *ecdsa.PrivateKey) *hsm.Identity {
		der, err := x509.MarshalPKCS8PrivateKey(k)
		require.NoError(t, err)
		now := time.Now()
		id, err := hsm.Open(context.Background(),
			writeFile(t, "c.pem", selfSigned(t, k, now.Add(-time.Hour), now.Add(time.Hour)), 0o644),
			writeFile(t, "k.pem", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600))
		require.NoError(t, err)
		return id
	}
	ctx := context.Background()
	a, err := open(k1).Sealer(ctx, "store")
	require.NoError(t, err)
	nonce := make([]byte, a.NonceSize())
	ct, err := a.Seal(nil, nonce, []byte("creds"), nil)
	require.NoError(t, err)

	again, err := open(k1).Sealer(ctx, "store")
	require.NoError(t, err)
	pt, err := again.Open(nil, nonce, ct, nil)
	require.NoError(t, err, "same key and label derive the same AES key")
	assert.Equal(t, "creds", string(pt))

	otherLabel, err := open(k1).Sealer(ctx, "other")
	require.NoError(t, err)
	_, err = otherLabel.Open(nil, nonce, ct, nil)
	assert.Error(t, err, "the label separates keys")

	otherKey, err := open(k2).Sealer(ctx, "store")
	require.NoError(t, err)
	_, err = otherKey.Open(nil, nonce, ct, nil)
	assert.Error(t, err, "a replaced device key cannot open old data")
}

// TestParseURI ensures that the RFC 7512 parser accepts what tether uses and refuses unknown attributes, never quoting a PIN.
func TestParseURI(t *testing.T) {
	tests := []struct {
		in      string
		want    hsm.URI
		wantErr string
	}{
		{in: "pkcs11:token=tether;object=device?module-path=/usr/lib/x.so&pin-source=file:/etc/tether/pin",
			want: hsm.URI{Token: "tether", Object: "device", ModulePath: "/usr/lib/x.so", PINSource: "file:/etc/tether/pin"}},
		{in: "pkcs11:serial=1a2b;id=%01%ff;type=private",
			want: hsm.URI{Serial: "1a2b", ID: []byte{1, 0xff}, Type: "private", ModulePath: hsm.DefaultModule}},
		{in: "pkcs11:slot-id=7;object=my%20key?pin-source=credential:tether-pin",
			want: hsm.URI{SlotID: 7, HasSlotID: true, Object: "my key", ModulePath: hsm.DefaultModule, PINSource: "credential:tether-pin"}},
		{in: "pkcs11:model=SoftHSM%20v2;manufacturer=SoftHSM%20project;token=t;object=o",
			want: hsm.URI{Token: "t", Object: "o", ModulePath: hsm.DefaultModule}},
		{in: "pkcs11:token=t;object=o?module-path=/usr/lib/x.so&x-p11-kit=remote",
			want: hsm.URI{Token: "t", Object: "o", ModulePath: "/usr/lib/x.so", P11KitRemote: true}},
		{in: "pkcs11:token=t;object=o?x-p11-kit=unix:path=/run/p11-kit/pkcs11",
			want: hsm.URI{Token: "t", Object: "o", P11KitServer: "/run/p11-kit/pkcs11"}},
		{in: "pkcs11:token=t;object=o?x-p11-kit=/run/p11-kit//pkcs11",
			want: hsm.URI{Token: "t", Object: "o", P11KitServer: "/run/p11-kit/pkcs11"}},
		{in: "pkcs11:token=t?x-p11-kit=server", wantErr: `x-p11-kit="server": want remote`},
		{in: "pkcs11:token=t?x-p11-kit=run/p11", wantErr: "absolute path"},
		{in: "pkcs11:token=t?module-path=/m.so&x-p11-kit=/run/s", wantErr: "drop module-path"},
		{in: "/etc/tether/device.key", wantErr: `must start with "pkcs11:"`},
		{in: "pkcs11:lable=x", wantErr: `unknown path attribute "lable"`},
		{in: "pkcs11:token=x?pin-file=/p", wantErr: `unknown query attribute "pin-file"`},
		{in: "pkcs11:slot-id=abc", wantErr: "slot-id \"abc\" is not a decimal number"},
		{in: "pkcs11:id=%zz", wantErr: "bad percent-encoding"},
		{in: "pkcs11:type=secret", wantErr: "type \"secret\""},
		{in: "pkcs11:token;object=x", wantErr: "has no '='"},
		{in: "pkcs11:lable=x?pin-value=hunter22", wantErr: "pin-value=REDACTED"},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			u, err := hsm.ParseURI(tc.in)
			if tc.wantErr != "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), tc.wantErr)
				assert.NotContains(t, err.Error(), "hunter22")
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, *u)
			// String round-trips.
			back, err := hsm.ParseURI(u.String())
			require.NoError(t, err)
			assert.Equal(t, *u, *back)
		})
	}
	u, err := hsm.ParseURI("pkcs11:token=t;object=o?pin-value=hunter22")
	require.NoError(t, err)
	assert.NotContains(t, u.String(), "hunter22")
}

// TestServerSocketOwner ensures that a p11-kit server socket in a directory
// others can write to is refused unless it belongs to root or to us: the
// PIN goes to whoever listens there.
func TestServerSocketOwner(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root to give the socket to another user")
	}
	dir := t.TempDir()
	require.NoError(t, os.Chmod(dir, 0o1777))
	sock := filepath.Join(dir, "pkcs11")
	ln, err := net.Listen("unix", sock)
	require.NoError(t, err)
	defer ln.Close()
	u, err := hsm.ParseURI("pkcs11:token=t;object=o?x-p11-kit=" + sock)
	require.NoError(t, err)
	require.NoError(t, u.CheckFiles(os.Getenv), "our own socket")

	require.NoError(t, os.Lchown(sock, 65534, 65534))
	err = u.CheckFiles(os.Getenv)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "belongs to uid 65534")
	_, err = hsm.OpenKey(context.Background(), "pkcs11:token=t;object=o?x-p11-kit="+sock)
	assert.ErrorContains(t, err, "the PIN could go to another user's process")

	require.NoError(t, os.Chmod(dir, 0o755))
	assert.NoError(t, u.CheckFiles(os.Getenv), "a directory only its owner writes")
}

// TestKeyTypePolicy ensures that a PEM key is refused unless it is of a
// type and size AWS IoT accepts for device certificates (the same policy
// token keys are held to).
func TestKeyTypePolicy(t *testing.T) {
	p224, err := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	require.NoError(t, err)
	rsa1024, err := rsa.GenerateKey(rand.Reader, 1024)
	require.NoError(t, err)
	_, ed, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	require.NoError(t, err)
	for _, tc := range []struct {
		name string
		key  any
		want string // empty: accepted
	}{
		{"P-384", p384, ""},
		{"P-224", p224, "EC curve P-224 not supported"},
		{"RSA 1024", rsa1024, "RSA 1024 bits is too short"},
		{"Ed25519", ed, "not supported; use EC P-256/P-384 or RSA"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			der, err := x509.MarshalPKCS8PrivateKey(tc.key)
			require.NoError(t, err)
			file := writeFile(t, "k.pem", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600)
			k, err := hsm.OpenKey(context.Background(), file)
			if tc.want == "" {
				require.NoError(t, err)
				k.Close()
				return
			}
			require.ErrorIs(t, err, hsm.ErrBadKey)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

// TestRedactURI ensures that every pin-value of a key reference is masked
// and that anything else is shown as written.
func TestRedactURI(t *testing.T) {
	for in, want := range map[string]string{
		"pkcs11:token=t;object=k?module-path=/m.so&pin-value=1234": "pkcs11:token=t;object=k?module-path=/m.so&pin-value=REDACTED",
		"pkcs11:object=k?pin-value=1&pin-value=2":                  "pkcs11:object=k?pin-value=REDACTED&pin-value=REDACTED",
		"pkcs11:object=k?pin-source=file:/etc/tether/pin":          "pkcs11:object=k?pin-source=file:/etc/tether/pin",
		"/etc/tether/device.key":                                   "/etc/tether/device.key",
	} {
		assert.Equal(t, want, hsm.RedactURI(in))
	}
}

// TestParseKeyURI ensures that a key reference must name a private key and
// that the files it names are checked before the token is opened.
func TestParseKeyURI(t *testing.T) {
	dir := t.TempDir()
	module := writeFile(t, "module.so", []byte("x"), 0o644)
	pin := writeFile(t, "pin", []byte("1234"), 0o600)
	openPIN := writeFile(t, "open-pin", []byte("1234"), 0o644)
	getenv := func(string) string { return "" }
	for _, tc := range []struct {
		uri, wantErr string
	}{
		{"pkcs11:token=t;object=k?module-path=" + module, ""},
		{"pkcs11:id=%01?module-path=" + module + "&pin-source=file:" + pin, ""},
		{"pkcs11:object=k?module-path=" + module + "&pin-source=" + pin, ""},
		{"pkcs11:object=k?module-path=" + module + "&pin-source=file://" + pin, ""},
		{"pkcs11:object=k?module-path=" + module + "&pin-source=credential:pin", ""},
		{"pkcs11:token=t?module-path=" + module, "names no key"},
		{"pkcs11:object=k;type=cert?module-path=" + module, "type=private"},
		{"pkcs11:lable=k?module-path=" + module, `unknown path attribute "lable"`},
		{"pkcs11:object=k?module-path=" + module + "&pin-vaule=1", `unknown query attribute "pin-vaule"`},
		{"pkcs11:object=k?module-path=" + filepath.Join(dir, "nope.so"), "nope.so"},
		{"pkcs11:object=k?module-path=" + module + "&pin-source=file:" + openPIN, "chmod 600 " + openPIN},
		{"pkcs11:object=k?module-path=" + module + "&pin-source=file:" + filepath.Join(dir, "nope"), "no such file"},
		{"pkcs11:object=k?module-path=" + module + "&pin-source=1234", "want file:PATH or credential:NAME"},
		{"pkcs11:object=k?module-path=" + module + "&pin-source=credential:a/b", "plain file name"},
	} {
		u, err := hsm.ParseKeyURI(tc.uri)
		if err == nil {
			err = u.CheckFiles(getenv)
		}
		if tc.wantErr == "" {
			assert.NoError(t, err, tc.uri)
			continue
		}
		if assert.Error(t, err, tc.uri) {
			assert.Contains(t, err.Error(), tc.wantErr, tc.uri)
		}
	}
}

// TestWithNow ensures that the certificate's validity period is checked
// against the clock Open is given, not the machine's.
func TestWithNow(t *testing.T) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	der, err := x509.MarshalPKCS8PrivateKey(k)
	require.NoError(t, err)
	now := time.Now()
	cert := writeFile(t, "c.pem", selfSigned(t, k, now.Add(-time.Hour), now.Add(time.Hour)), 0o644)
	key := writeFile(t, "k.pem", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600)
	id, err := hsm.Open(context.Background(), cert, key)
	require.NoError(t, err)
	id.Close()
	_, err = hsm.Open(context.Background(), cert, key, hsm.WithNow(func() time.Time { return now.Add(2 * time.Hour) }))
	assert.ErrorContains(t, err, "expired")
	_, err = hsm.Open(context.Background(), cert, key, hsm.WithNow(func() time.Time { return now.Add(-2 * time.Hour) }))
	assert.ErrorContains(t, err, "not valid yet")
}
