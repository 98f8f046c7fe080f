package main

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/tetherd/tether/hsm"
	"github.com/tetherd/tether/hsm/hsmtest"
)

func hsmRun(args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	code := runHSM(context.Background(), args, &out, &errb)
	return code, out.String(), errb.String()
}

// TestHSMCommands ensures that keygen, list, csr and selftest work on a
// SoftHSM token with the URI as written (in-process in cgo builds, `p11-kit
// remote` in static ones) and through p11-kit explicitly.
func TestHSMCommands(t *testing.T) {
	if testing.Short() {
		t.Skip("SoftHSM integration test")
	}
	for _, via := range []string{"default", "p11-kit remote", "p11-kit server"} {
		t.Run(via, func(t *testing.T) { testHSMCommands(t, via) })
	}
}

func testHSMCommands(t *testing.T, via string) {
	tk := hsmtest.NewToken(t, "cli")
	pinBytes, err := os.ReadFile(tk.PINFile)
	require.NoError(t, err)
	pin := strings.TrimSpace(string(pinBytes))
	uri := tk.URI("device")
	switch via {
	case "p11-kit remote":
		uri = tk.RemoteURI("device")
	case "p11-kit server":
		uri = tk.ServerURI(t, "device")
	}

	code, out, errs := hsmRun("keygen", "--key", uri, "--type", "ec-p384")
	require.Equal(t, 0, code, errs)
	blk, _ := pem.Decode([]byte(out))
	require.NotNil(t, blk)
	assert.Equal(t, "PUBLIC KEY", blk.Type)

	code, _, errs = hsmRun("keygen", "--key", uri, "--type", "ec-p256")
	assert.Equal(t, 2, code)
	assert.Contains(t, errs, "already exists")

	code, out, errs = hsmRun("list", "--module", tk.Module)
	require.Equal(t, 0, code, errs)
	assert.Contains(t, out, `token "cli"`)
	assert.Contains(t, out, `public     label="device"`)
	assert.Contains(t, out, "public objects only")

	code, out, errs = hsmRun("list", "--key", uri)
	require.Equal(t, 0, code, errs)
	assert.Regexp(t, `private +label="device" id=%[0-9a-f%]+ type=EC-P-384 sensitive=true extractable=false`, out)
	assert.NotContains(t, out+errs, pin)

	code, out, errs = hsmRun("csr", "--key", uri, "--subject", "CN=gw-0001,O=Example,C=DE")
	require.Equal(t, 0, code, errs)
	blk, _ = pem.Decode([]byte(out))
	require.NotNil(t, blk)
	csr, err := x509.ParseCertificateRequest(blk.Bytes)
	require.NoError(t, err)
	require.NoError(t, csr.CheckSignature())
	assert.Equal(t, "CN=gw-0001,O=Example,C=DE", csr.Subject.String())

	k, err := hsm.OpenKey(context.Background(), uri)
	require.NoError(t, err)
	now := time.Now()
	certFile, _ := hsmtest.Certificate(t, "gw-0001", csr.PublicKey, nil, k, now.Add(-time.Hour), now.Add(time.Hour))
	require.NoError(t, k.Close())

	code, out, errs = hsmRun("selftest", "--key", uri, "--certificate", certFile, "--count", "5")
	require.Equal(t, 0, code, errs)
	assert.Contains(t, out, "matches the key")
	assert.Contains(t, out, "5 ECDSA-SHA256 signatures verified")

	code, _, errs = hsmRun("selftest", "--key", strings.Replace(uri, "token=cli", "token=gone", 1))
	assert.Equal(t, 1, code, "an absent token is a runtime failure")
	assert.Contains(t, errs, `tokens present: "cli"`)
}

func TestHSMUsage(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{nil, "Usage:"},
		{[]string{"frobnicate"}, `unknown command "frobnicate"`},
		{[]string{"keygen"}, "--key pkcs11:... or tpm:... is required"},
		{[]string{"keygen", "--key", "/etc/key.pem"}, "--key pkcs11:... or tpm:... is required"},
		{[]string{"keygen", "--key", "tpm:handle=0x1"}, "not a persistent handle"},
		{[]string{"keygen", "--key", "tpm:file=/tmp/k.tss2", "--type", "dsa"}, `key type "dsa": the TPM makes`},
		{[]string{"csr", "--key", "pkcs11:token=t;object=o", "--subject", "O=x"}, "CN= is required"},
		{[]string{"csr", "--key", "pkcs11:token=t;object=o", "--subject", "CN"}, "not KEY=VALUE"},
		{[]string{"list", "--bogus"}, "flag provided but not defined"},
		{[]string{"list", "extra"}, `unexpected argument "extra"`},
		{[]string{"selftest", "--key", "pkcs11:lable=x"}, `unknown path attribute "lable"`},
		{[]string{"keygen", "--key", "pkcs11:token=t;object=o?module-path=/nonexistent.so", "--type", "ec-p256"}, "/nonexistent.so"},
		{[]string{"keygen", "--key", "pkcs11:token=t;object=o", "--type", "dsa"}, `key type "dsa"`},
	}
	for _, tc := range tests {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			code, _, errs := hsmRun(tc.args...)
			assert.Equal(t, 2, code)
			assert.Contains(t, errs, tc.want)
		})
	}
}
