//go:build !notpm

package tpm_test

import (
	"context"
	"crypto"
	"crypto/cipher"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tetherd/tether/hsm/tpm"
	"github.com/tetherd/tether/hsm/tpm/tpmtest"
)

func ref(t *testing.T, s string) *tpm.URI {
	t.Helper()
	u, err := tpm.ParseURI(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func verify(t *testing.T, k *tpm.Key) {
	t.Helper()
	d := sha256.Sum256([]byte("hello"))
	switch p := k.Public().(type) {
	case *ecdsa.PublicKey:
		sig, err := k.Sign(nil, d[:], crypto.SHA256)
		if err != nil {
			t.Fatal(err)
		}
		if !ecdsa.VerifyASN1(p, d[:], sig) {
			t.Fatal("ECDSA signature does not verify")
		}
	case *rsa.PublicKey:
		opts := &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: crypto.SHA256}
		sig, err := k.Sign(nil, d[:], opts)
		if err != nil {
			t.Fatal(err)
		}
		if err := rsa.VerifyPSS(p, crypto.SHA256, d[:], sig, opts); err != nil {
			t.Fatalf("RSA-PSS: %v", err)
		}
		sig, err = k.Sign(nil, d[:], crypto.SHA256)
		if err != nil {
			t.Fatal(err)
		}
		if err := rsa.VerifyPKCS1v15(p, crypto.SHA256, d[:], sig); err != nil {
			t.Fatalf("RSA PKCS#1 v1.5: %v", err)
		}
	default:
		t.Fatalf("public key %T", p)
	}
}

// Ensures that key files made by OpenSSL's tpm2 provider load and sign.
func TestOpenSSLKeyFiles(t *testing.T) {
	sim := tpmtest.Start(t)
	dir := t.TempDir()
	sim.Tools(func(tcti string) {
		tpmtest.Run(t, tcti, "openssl", "genpkey", "-provider", "tpm2", "-provider", "default", "-algorithm", "EC", "-pkeyopt", "group:P-256", "-out", filepath.Join(dir, "ec.tss2"))
		tpmtest.Run(t, tcti, "openssl", "genpkey", "-provider", "tpm2", "-provider", "default", "-algorithm", "RSA", "-pkeyopt", "bits:2048", "-out", filepath.Join(dir, "rsa.tss2"))
	})
	for _, name := range []string{"ec.tss2", "rsa.tss2"} {
		t.Run(name, func(t *testing.T) {
			f := filepath.Join(dir, name)
			os.Chmod(f, 0o600)
			k, err := tpm.Open(context.Background(), ref(t, "tpm:file="+f+"?device="+sim.Socket), nil)
			if err != nil {
				t.Fatal(err)
			}
			defer k.Close()
			verify(t, k)
		})
	}
}

func open(t *testing.T, s string, auth []byte) *tpm.Key {
	t.Helper()
	k, err := tpm.Open(context.Background(), ref(t, s), auth)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { k.Close() })
	return k
}

func lockoutCounter(t *testing.T, sim *tpmtest.Simulator) uint32 {
	t.Helper()
	info, err := tpm.List(context.Background(), sim.Socket)
	if err != nil {
		t.Fatal(err)
	}
	return info.LockoutCounter
}

// Ensures that keygen makes EC and RSA keys in key files and at persistent
// handles, that they sign, that their key files load in OpenSSL's tpm2
// provider, and that list shows the persistent ones.
func TestGenerate(t *testing.T) {
	sim := tpmtest.Start(t)
	dir := t.TempDir()
	ctx := context.Background()
	for i, typ := range []string{tpm.ECP256, tpm.ECP384, tpm.RSA2048} {
		file := filepath.Join(dir, typ+".tss2")
		for _, s := range []string{
			"tpm:file=" + file + "?device=" + sim.Socket,
			fmt.Sprintf("tpm:handle=%#x?device=%s", 0x81000010+i, sim.Socket),
		} {
			pub, err := tpm.Generate(ctx, ref(t, s), typ, []byte("secret"))
			if err != nil {
				t.Fatalf("%s %s: %v", typ, s, err)
			}
			k := open(t, s, []byte("secret"))
			if !k.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(pub) {
				t.Fatalf("%s: opened key differs from the generated one", s)
			}
			verify(t, k)
			k.Close()
		}
		fi, err := os.Stat(file)
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("key file %s: %v, mode %v; want 0600", file, err, fi.Mode())
		}
		if _, err := tpm.Generate(ctx, ref(t, "tpm:file="+file+"?device="+sim.Socket), typ, nil); err == nil || !strings.Contains(err.Error(), "never overwrites") {
			t.Fatalf("second keygen over %s: %v, want a refusal", file, err)
		}
	}
	if _, err := tpm.Generate(ctx, ref(t, "tpm:handle=0x81000010?device="+sim.Socket), tpm.ECP256, nil); err == nil || !strings.Contains(err.Error(), "already holds") {
		t.Fatalf("keygen at a used handle: %v, want a refusal", err)
	}
	info, err := tpm.List(ctx, sim.Socket)
	if err != nil {
		t.Fatal(err)
	}
	if len(info.Persistent) != 3 || info.Persistent[0].Type != "EC P-256 signing" || info.Persistent[2].Type != "RSA 2048 signing" {
		t.Fatalf("List: %+v", info.Persistent)
	}
	if info.Manufacturer != "IBM" {
		t.Fatalf("List: manufacturer %q, want swtpm's IBM", info.Manufacturer)
	}

	// tether's key files are ordinary TSS2 keys: OpenSSL signs with one.
	data := filepath.Join(dir, "data")
	os.WriteFile(data, []byte("signed by openssl"), 0o600)
	var sig []byte
	sim.Tools(func(tcti string) {
		tpmtest.Run(t, tcti, "openssl", "dgst", "-provider", "tpm2", "-provider", "default", "-propquery", "?provider=tpm2", "-sha256",
			"-passin", "pass:secret", "-sign", filepath.Join(dir, tpm.ECP256+".tss2"), "-out", data+".sig", data)
	})
	sig, _ = os.ReadFile(data + ".sig")
	k := open(t, "tpm:file="+filepath.Join(dir, tpm.ECP256+".tss2")+"?device="+sim.Socket, []byte("secret"))
	d := sha256.Sum256([]byte("signed by openssl"))
	if !ecdsa.VerifyASN1(k.Public().(*ecdsa.PublicKey), d[:], sig) {
		t.Fatal("OpenSSL's signature with tether's key file does not verify")
	}
}

// Ensures that keys made with tpm2-tools, as operators make them, load:
// key files written by tpm2_encodeobject under the owner hierarchy's SRK
// (tpm2_createprimary -G ecc with the SRK's attributes) and under an SRK persisted at 0x81000001, and
// a key persisted with tpm2_evictcontrol, all with an authorisation value. (Without a resource manager tpm2-tools leave
// objects loaded, hence the flushes.)
func TestTPM2ToolsKeys(t *testing.T) {
	const srkAttrs = "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|restricted|decrypt|noda"
	sim := tpmtest.Start(t)
	dir := t.TempDir()
	p := func(n string) string { return filepath.Join(dir, n) }
	sim.Tools(func(tcti string) {
		run := func(args ...string) {
			tpmtest.Run(t, tcti, args[0], args[1:]...)
			tpmtest.Run(t, tcti, "tpm2_flushcontext", "-t")
		}
		run("tpm2_createprimary", "-C", "o", "-G", "ecc", "-c", p("srk.ctx"))
		run("tpm2_evictcontrol", "-C", "o", "-c", p("srk.ctx"), "0x81000001")
		run("tpm2_create", "-C", "0x81000001", "-G", "ecc256", "-p", "pw", "-u", p("k.pub"), "-r", p("k.priv"))
		run("tpm2_encodeobject", "-C", "0x81000001", "-u", p("k.pub"), "-r", p("k.priv"), "-p", "-o", p("k.tss2"))
		run("tpm2_create", "-C", "0x81000001", "-G", "rsa2048", "-p", "pw", "-u", p("r.pub"), "-r", p("r.priv"))
		run("tpm2_load", "-C", "0x81000001", "-u", p("r.pub"), "-r", p("r.priv"), "-c", p("r.ctx"))
		run("tpm2_evictcontrol", "-C", "o", "-c", p("r.ctx"), "0x81000020")
		// Parent 0x40000001: tether recreates the same SRK from its template,
		// which is tpm2-tools' ECC default plus noda (docs/tpm.md).
		run("tpm2_createprimary", "-C", "o", "-G", "ecc", "-a", srkAttrs, "-c", p("o.ctx"))
		run("tpm2_create", "-C", p("o.ctx"), "-G", "ecc256", "-p", "pw", "-u", p("o.pub"), "-r", p("o.priv"))
		run("tpm2_encodeobject", "-C", p("o.ctx"), "-u", p("o.pub"), "-r", p("o.priv"), "-p", "-o", p("o.tss2"))
	})
	os.Chmod(p("o.tss2"), 0o600)
	k := open(t, "tpm:file="+p("o.tss2")+"?device="+sim.Socket, []byte("pw"))
	verify(t, k)
	k.Close()
	os.Chmod(p("k.tss2"), 0o600)
	k = open(t, "tpm:file="+p("k.tss2")+"?device="+sim.Socket, []byte("pw"))
	verify(t, k)
	k.Close()
	verify(t, open(t, "tpm:handle=0x81000020?device="+sim.Socket, []byte("pw")))
}

// Ensures that each fault gets its own error, with what to do, and that a
// wrong authorisation is sent to the TPM exactly once.
func TestFaults(t *testing.T) {
	sim := tpmtest.Start(t)
	other := tpmtest.Start(t)
	dir := t.TempDir()
	ctx := context.Background()
	file := filepath.Join(dir, "k.tss2")
	if _, err := tpm.Generate(ctx, ref(t, "tpm:file="+file+"?device="+sim.Socket), tpm.ECP256, []byte("right")); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "open.tss2"), []byte("x"), 0o644)
	os.WriteFile(filepath.Join(dir, "cert.pem"), []byte("-----BEGIN CERTIFICATE-----\nMA==\n-----END CERTIFICATE-----\n"), 0o600)
	tests := []struct {
		name, ref string
		auth      string
		is        error
		want      string
	}{
		{"no device", "tpm:file=" + file + "?device=" + filepath.Join(dir, "nodev"), "right", tpm.ErrNoDevice, "does not exist"},
		{"not a device", "tpm:file=" + file + "?device=" + dir, "right", tpm.ErrNoDevice, "neither a TPM character device nor a simulator socket"},
		{"key file missing", "tpm:file=" + filepath.Join(dir, "none.tss2") + "?device=" + sim.Socket, "", tpm.ErrKeyFile, "no such file"},
		{"key file open to others", "tpm:file=" + filepath.Join(dir, "open.tss2") + "?device=" + sim.Socket, "", tpm.ErrKeyFile, "chmod 600"},
		{"not a key file", "tpm:file=" + filepath.Join(dir, "cert.pem") + "?device=" + sim.Socket, "", tpm.ErrKeyFile, `no "TSS2 PRIVATE KEY" PEM block`},
		{"handle missing", "tpm:handle=0x81000099?device=" + sim.Socket, "", tpm.ErrKeyNotFound, "nothing is persisted at handle 0x81000099"},
		{"another TPM", "tpm:file=" + file + "?device=" + other.Socket, "right", tpm.ErrWrongTPM, "made by another TPM"},
		{"auth missing", "tpm:file=" + file + "?device=" + sim.Socket, "", tpm.ErrAuth, "needs an authorisation value; add pin-source"},
		{"wrong auth", "tpm:file=" + file + "?device=" + sim.Socket + "&pin-source=file:/etc/tpm-pin", "wrong", tpm.ErrAuth, "refused the value from pin-source=file:/etc/tpm-pin"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := lockoutCounter(t, sim)
			_, err := tpm.Open(ctx, ref(t, tt.ref), []byte(tt.auth))
			if !errors.Is(err, tt.is) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Open: %v; want %v containing %q", err, tt.is, tt.want)
			}
			if strings.Contains(err.Error(), "right") || strings.Contains(err.Error(), "wrong") && tt.auth == "wrong" && strings.Contains(err.Error(), ": wrong") {
				t.Fatalf("error holds the authorisation value: %v", err)
			}
			failures := lockoutCounter(t, sim) - before
			if want := map[bool]uint32{true: 1, false: 0}[tt.name == "wrong auth"]; failures != want {
				t.Fatalf("%d authorisation failures counted by the TPM, want %d", failures, want)
			}
			if tt.name == "wrong auth" && !strings.Contains(err.Error(), "dictionary-attack lockout") {
				t.Fatalf("wrong authorisation error does not say why it is not retried: %v", err)
			}
		})
	}
}

// Ensures that a TPM in dictionary-attack lockout is reported as busy, with
// how it recovers, even for the right authorisation.
func TestLockout(t *testing.T) {
	sim := tpmtest.Start(t)
	file := filepath.Join(t.TempDir(), "k.tss2")
	s := "tpm:file=" + file + "?device=" + sim.Socket
	if _, err := tpm.Generate(context.Background(), ref(t, s), tpm.ECP256, []byte("right")); err != nil {
		t.Fatal(err)
	}
	sim.Tools(func(tcti string) {
		tpmtest.Run(t, tcti, "tpm2_dictionarylockout", "-s", "-n", "1", "-t", "600", "-l", "600")
	})
	if _, err := tpm.Open(context.Background(), ref(t, s), []byte("wrong")); !errors.Is(err, tpm.ErrAuth) {
		t.Fatalf("wrong authorisation: %v", err)
	}
	_, err := tpm.Open(context.Background(), ref(t, s), []byte("right"))
	if !errors.Is(err, tpm.ErrBusy) || !strings.Contains(err.Error(), "dictionary-attack lockout") || !strings.Contains(err.Error(), "--clear-lockout") {
		t.Fatalf("Open in lockout: %v; want ErrBusy naming the lockout and its cure", err)
	}
	info, err := tpm.List(context.Background(), sim.Socket)
	if err != nil || !info.InLockout {
		t.Fatalf("List in lockout: %+v, %v", info, err)
	}
}

// Ensures that a key keeps signing across a TPM restart (transient objects
// gone, the connection broken), and fails with ErrNoDevice while the TPM is
// away.
func TestReopen(t *testing.T) {
	sim := tpmtest.Start(t)
	file := filepath.Join(t.TempDir(), "k.tss2")
	s := "tpm:file=" + file + "?device=" + sim.Socket
	if _, err := tpm.Generate(context.Background(), ref(t, s), tpm.ECP256, nil); err != nil {
		t.Fatal(err)
	}
	k := open(t, s, nil)
	sim.Restart()
	verify(t, k)
	sim.Stop()
	d := sha256.Sum256(nil)
	if _, err := k.Sign(nil, d[:], crypto.SHA256); !errors.Is(err, tpm.ErrNoDevice) {
		t.Fatalf("Sign with the TPM gone: %v, want ErrNoDevice", err)
	}
	sim.Restart()
	verify(t, k)
}

// Ensures that the sealer is the same for the same key and label across
// opens, and differs for another label or another key.
func TestSealer(t *testing.T) {
	sim := tpmtest.Start(t)
	dir := t.TempDir()
	ctx := context.Background()
	a, b := "tpm:file="+filepath.Join(dir, "a.tss2")+"?device="+sim.Socket, "tpm:file="+filepath.Join(dir, "b.tss2")+"?device="+sim.Socket
	for _, s := range []string{a, b} {
		if _, err := tpm.Generate(ctx, ref(t, s), tpm.ECP256, nil); err != nil {
			t.Fatal(err)
		}
	}
	seal := func(s, label string) cipher.AEAD {
		k := open(t, s, nil)
		defer k.Close() // swtpm serves one connection at a time
		aead, err := k.Sealer(ctx, label)
		if err != nil {
			t.Fatal(err)
		}
		return aead
	}
	nonce := make([]byte, 12)
	box := seal(a, "state").Seal(nil, nonce, []byte("credentials"), nil)
	if got, err := seal(a, "state").Open(nil, nonce, box, nil); err != nil || string(got) != "credentials" {
		t.Fatalf("reopened sealer: %q, %v", got, err)
	}
	if _, err := seal(a, "other").Open(nil, nonce, box, nil); err == nil {
		t.Fatal("another label opens the box")
	}
	if _, err := seal(b, "state").Open(nil, nonce, box, nil); err == nil {
		t.Fatal("another key opens the box")
	}
}
