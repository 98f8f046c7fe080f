package p11rpc_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/aes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/asn1"
	"encoding/binary"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/tetherd/tether/hsm/hsmtest"
	"github.com/tetherd/tether/hsm/p11rpc"
)

const softhsm = "/usr/lib/softhsm/libsofthsm2.so"

// module returns the SoftHSM2 module (HSMTEST_SOFTHSM2_MODULE overrides it,
// as for hsm/hsmtest) after giving the test its own token directory.
func module(t *testing.T) string {
	t.Helper()
	m := softhsm
	if e := os.Getenv("HSMTEST_SOFTHSM2_MODULE"); e != "" {
		m = e
	}
	if _, err := os.Stat(m); err != nil {
		t.Fatalf("%s missing: install the Debian package softhsm2", m)
	}
	if _, err := exec.LookPath("p11-kit"); err != nil {
		t.Fatal("p11-kit missing: install the Debian package p11-kit")
	}
	dir := t.TempDir()
	require.NoError(t, os.Mkdir(filepath.Join(dir, "tokens"), 0o700))
	conf := filepath.Join(dir, "softhsm2.conf")
	require.NoError(t, os.WriteFile(conf, fmt.Appendf(nil, "directories.tokendir = %s/tokens\nobjectstore.backend = file\nlog.level = ERROR\n", dir), 0o600))
	t.Setenv("SOFTHSM2_CONF", conf)
	return m
}

func remote(t *testing.T, m string) *p11rpc.Client {
	t.Helper()
	c, err := p11rpc.DialRemote(context.Background(), "", m, nil)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	require.NoError(t, c.Initialize())
	return c
}

// initToken initialises a token labelled label over c and returns its slot
// and a session logged in as the user.
func initToken(t *testing.T, c *p11rpc.Client, label, so, pin string) (uint, p11rpc.SessionHandle) {
	t.Helper()
	slots, err := c.GetSlotList(true)
	require.NoError(t, err)
	free := -1
	for _, s := range slots {
		ti, err := c.GetTokenInfo(s)
		require.NoError(t, err)
		if ti.Flags&p11rpc.CKF_TOKEN_INITIALIZED == 0 {
			free = int(s)
			break
		}
	}
	require.GreaterOrEqual(t, free, 0, "no free slot")
	require.NoError(t, c.InitToken(uint(free), so, label))
	slot := findSlot(t, c, label)
	sh, err := c.OpenSession(slot, p11rpc.CKF_RW_SESSION)
	require.NoError(t, err)
	require.NoError(t, c.Login(sh, p11rpc.CKU_SO, so))
	require.NoError(t, c.InitPIN(sh, pin))
	require.NoError(t, c.Logout(sh))
	require.NoError(t, c.Login(sh, p11rpc.CKU_USER, pin))
	return slot, sh
}

func findSlot(t *testing.T, c *p11rpc.Client, label string) uint {
	t.Helper()
	slots, err := c.GetSlotList(true)
	require.NoError(t, err)
	for _, s := range slots {
		if ti, err := c.GetTokenInfo(s); err == nil && ti.Label == label {
			return s
		}
	}
	t.Fatalf("token %q not found", label)
	return 0
}

var oidP256 = []byte{0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07}

func ecPair(t *testing.T, c *p11rpc.Client, sh p11rpc.SessionHandle, label string) (p11rpc.ObjectHandle, *ecdsa.PublicKey) {
	t.Helper()
	pub, priv, err := c.GenerateKeyPair(sh, p11rpc.Mechanism{Type: p11rpc.CKM_EC_KEY_PAIR_GEN},
		[]p11rpc.Attribute{
			p11rpc.Bool(p11rpc.CKA_TOKEN, true), p11rpc.Bool(p11rpc.CKA_VERIFY, true),
			p11rpc.Bytes(p11rpc.CKA_EC_PARAMS, oidP256), p11rpc.String(p11rpc.CKA_LABEL, label),
		},
		[]p11rpc.Attribute{
			p11rpc.Bool(p11rpc.CKA_TOKEN, true), p11rpc.Bool(p11rpc.CKA_SIGN, true),
			p11rpc.Bool(p11rpc.CKA_SENSITIVE, true), p11rpc.Bool(p11rpc.CKA_EXTRACTABLE, false),
			p11rpc.Bool(p11rpc.CKA_PRIVATE, true), p11rpc.String(p11rpc.CKA_LABEL, label),
			p11rpc.Bytes(p11rpc.CKA_ID, []byte{1, 2, 3}),
		})
	require.NoError(t, err)
	attrs, err := c.GetAttributeValue(sh, pub, []uint{p11rpc.CKA_EC_POINT})
	require.NoError(t, err)
	var point []byte
	_, err = asn1.Unmarshal(attrs[0].Value, &point)
	require.NoError(t, err)
	x, y := elliptic.Unmarshal(elliptic.P256(), point) //nolint:staticcheck // the token's uncompressed point
	require.NotNil(t, x)
	return priv, &ecdsa.PublicKey{Curve: elliptic.P256(), X: x, Y: y}
}

func verifyECDSA(t *testing.T, pub *ecdsa.PublicKey, digest, raw []byte) {
	t.Helper()
	require.Len(t, raw, 64)
	r, s := new(big.Int).SetBytes(raw[:32]), new(big.Int).SetBytes(raw[32:])
	assert.True(t, ecdsa.Verify(pub, digest, r, s), "ECDSA signature does not verify")
}

// TestRemoteSoftHSM ensures that the calls tether makes work against
// SoftHSM hosted by `p11-kit remote`: info, tokens, login, key generation,
// attributes, ECDSA, RSA PKCS#1 v1.5 and PSS signatures, AES-ECB.
func TestRemoteSoftHSM(t *testing.T) {
	c := remote(t, module(t))
	info, err := c.GetInfo()
	require.NoError(t, err)
	assert.Equal(t, "SoftHSM", info.ManufacturerID)
	assert.Equal(t, byte(2), info.CryptokiVersion.Major)

	slot, sh := initToken(t, c, "rpc-test", "so-secret", "user-1234")
	ti, err := c.GetTokenInfo(slot)
	require.NoError(t, err)
	assert.Equal(t, "rpc-test", ti.Label)
	assert.NotZero(t, ti.Flags&p11rpc.CKF_LOGIN_REQUIRED)
	si, err := c.GetSlotInfo(slot)
	require.NoError(t, err)
	assert.NotZero(t, si.Flags&p11rpc.CKF_TOKEN_PRESENT)
	mechs, err := c.GetMechanismList(slot)
	require.NoError(t, err)
	assert.Contains(t, mechs, uint(p11rpc.CKM_ECDSA))

	t.Run("ECDSA", func(t *testing.T) {
		priv, pub := ecPair(t, c, sh, "ec")
		digest := sha256.Sum256([]byte("tether"))
		require.NoError(t, c.SignInit(sh, p11rpc.Mechanism{Type: p11rpc.CKM_ECDSA}, priv))
		sig, err := c.Sign(sh, digest[:], 64)
		require.NoError(t, err)
		verifyECDSA(t, pub, digest[:], sig)

		hs, err := c.FindAll(sh, []p11rpc.Attribute{
			p11rpc.Ulong(p11rpc.CKA_CLASS, p11rpc.CKO_PRIVATE_KEY), p11rpc.String(p11rpc.CKA_LABEL, "ec"),
		}, 10)
		require.NoError(t, err)
		require.Equal(t, []p11rpc.ObjectHandle{priv}, hs)
		attrs, err := c.GetAttributeValue(sh, priv, []uint{p11rpc.CKA_CLASS, p11rpc.CKA_KEY_TYPE, p11rpc.CKA_ID,
			p11rpc.CKA_SENSITIVE, p11rpc.CKA_EXTRACTABLE, p11rpc.CKA_VALUE})
		require.ErrorIs(t, err, p11rpc.CKR_ATTRIBUTE_SENSITIVE, "CKA_VALUE of a sensitive key")
		assert.Equal(t, uint64(p11rpc.CKO_PRIVATE_KEY), attrs[0].Uint())
		assert.Equal(t, uint64(p11rpc.CKK_EC), attrs[1].Uint())
		assert.Equal(t, []byte{1, 2, 3}, attrs[2].Value)
		assert.True(t, attrs[3].Bool())
		assert.False(t, attrs[4].Bool())
		assert.Nil(t, attrs[5].Value)
	})

	t.Run("RSA", func(t *testing.T) {
		pubH, priv, err := c.GenerateKeyPair(sh, p11rpc.Mechanism{Type: p11rpc.CKM_RSA_PKCS_KEY_PAIR_GEN},
			[]p11rpc.Attribute{p11rpc.Ulong(p11rpc.CKA_MODULUS_BITS, 2048), p11rpc.Bytes(p11rpc.CKA_PUBLIC_EXPONENT, []byte{1, 0, 1}),
				p11rpc.Bool(p11rpc.CKA_VERIFY, true)},
			[]p11rpc.Attribute{p11rpc.Bool(p11rpc.CKA_SIGN, true), p11rpc.Bool(p11rpc.CKA_SENSITIVE, true)})
		require.NoError(t, err)
		attrs, err := c.GetAttributeValue(sh, pubH, []uint{p11rpc.CKA_MODULUS, p11rpc.CKA_PUBLIC_EXPONENT})
		require.NoError(t, err)
		pub := &rsa.PublicKey{N: new(big.Int).SetBytes(attrs[0].Value), E: int(new(big.Int).SetBytes(attrs[1].Value).Int64())}
		require.Equal(t, 2048, pub.N.BitLen())
		digest := sha256.Sum256([]byte("tether"))

		prefix := []byte{0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04, 0x20}
		require.NoError(t, c.SignInit(sh, p11rpc.Mechanism{Type: p11rpc.CKM_RSA_PKCS}, priv))
		sig, err := c.Sign(sh, append(prefix, digest[:]...), 256)
		require.NoError(t, err)
		assert.NoError(t, rsa.VerifyPKCS1v15(pub, crypto.SHA256, digest[:], sig))

		require.NoError(t, c.SignInit(sh, p11rpc.Mechanism{Type: p11rpc.CKM_RSA_PKCS_PSS,
			PSS: &p11rpc.PSSParams{Hash: p11rpc.CKM_SHA256, MGF: p11rpc.CKG_MGF1_SHA256, SaltLength: 32}}, priv))
		sig, err = c.Sign(sh, digest[:], 256)
		require.NoError(t, err)
		assert.NoError(t, rsa.VerifyPSS(pub, crypto.SHA256, digest[:], sig, &rsa.PSSOptions{SaltLength: 32}))

		// A buffer too small is reported, not truncated.
		require.NoError(t, c.SignInit(sh, p11rpc.Mechanism{Type: p11rpc.CKM_RSA_PKCS}, priv))
		_, err = c.Sign(sh, append(prefix, digest[:]...), 16)
		assert.ErrorIs(t, err, p11rpc.CKR_BUFFER_TOO_SMALL)
		_, err = c.Sign(sh, append(prefix, digest[:]...), 256)
		require.NoError(t, err, "the operation stays active after CKR_BUFFER_TOO_SMALL")
	})

	// Ensures that C_DestroyObject removes a token key for good (rotation
	// removes the previous key this way) and that a destroyed handle is
	// refused, not reused.
	t.Run("destroy key pair", func(t *testing.T) {
		priv, _ := ecPair(t, c, sh, "doomed")
		tmpl := []p11rpc.Attribute{p11rpc.String(p11rpc.CKA_LABEL, "doomed")}
		hs, err := c.FindAll(sh, tmpl, 10)
		require.NoError(t, err)
		require.Len(t, hs, 2, "the private and the public half")
		for _, h := range hs {
			require.NoError(t, c.DestroyObject(sh, h))
		}
		hs, err = c.FindAll(sh, tmpl, 10)
		require.NoError(t, err)
		assert.Empty(t, hs)
		err = c.DestroyObject(sh, priv)
		require.ErrorIs(t, err, p11rpc.CKR_OBJECT_HANDLE_INVALID)
		assert.False(t, p11rpc.IsTransport(err), "a refused call leaves the connection usable")
		_, err = c.GetSlotList(false)
		require.NoError(t, err)
	})

	t.Run("AES-ECB", func(t *testing.T) {
		// An extractable key, only here, to check the ciphertext against Go.
		key, err := c.GenerateKey(sh, p11rpc.Mechanism{Type: p11rpc.CKM_AES_KEY_GEN}, []p11rpc.Attribute{
			p11rpc.Ulong(p11rpc.CKA_VALUE_LEN, 32), p11rpc.Bool(p11rpc.CKA_ENCRYPT, true),
			p11rpc.Bool(p11rpc.CKA_SENSITIVE, false), p11rpc.Bool(p11rpc.CKA_EXTRACTABLE, true),
			p11rpc.String(p11rpc.CKA_LABEL, ""),
		})
		require.NoError(t, err)
		attrs, err := c.GetAttributeValue(sh, key, []uint{p11rpc.CKA_VALUE, p11rpc.CKA_VALUE_LEN, p11rpc.CKA_LABEL})
		require.NoError(t, err)
		require.Len(t, attrs[0].Value, 32)
		assert.Equal(t, uint64(32), attrs[1].Uint())
		assert.Equal(t, []byte{}, attrs[2].Value, "an empty label is empty, not absent")
		block, err := aes.NewCipher(attrs[0].Value)
		require.NoError(t, err)
		in := bytes.Repeat([]byte("0123456789abcdef"), 3)
		want := make([]byte, len(in))
		for i := 0; i < len(in); i += 16 {
			block.Encrypt(want[i:], in[i:])
		}
		require.NoError(t, c.EncryptInit(sh, p11rpc.Mechanism{Type: p11rpc.CKM_AES_ECB}, key))
		got, err := c.Encrypt(sh, in, len(in))
		require.NoError(t, err)
		assert.Equal(t, want, got)
		require.NoError(t, c.DestroyObject(sh, key))
	})

	t.Run("wrong PIN", func(t *testing.T) {
		sh2, err := c.OpenSession(slot, 0)
		require.NoError(t, err)
		require.NoError(t, c.Logout(sh2))
		err = c.Login(sh2, p11rpc.CKU_USER, "wrong")
		require.ErrorIs(t, err, p11rpc.CKR_PIN_INCORRECT)
		assert.Equal(t, "CKR_PIN_INCORRECT (0xa0)", err.Error())
		assert.False(t, p11rpc.IsTransport(err))
		require.NoError(t, c.Login(sh2, p11rpc.CKU_USER, "user-1234"), "a refused PIN leaves the connection usable")
		require.NoError(t, c.CloseSession(sh2))
	})

	t.Run("sessions closed", func(t *testing.T) {
		require.NoError(t, c.CloseAllSessions(slot))
		_, err := c.FindAll(sh, nil, 10)
		assert.ErrorIs(t, err, p11rpc.CKR_SESSION_HANDLE_INVALID)
	})

	require.NoError(t, c.Finalize())
}

// TestServerSoftHSM ensures that the client works over a `p11-kit server`
// socket, each connection with its own view of the token, and that a token
// made over one connection is seen by the next.
func TestServerSoftHSM(t *testing.T) {
	m := module(t)
	sock := hsmtest.StartP11KitServer(t, m)
	ctx := context.Background()
	c, err := p11rpc.DialServer(ctx, sock)
	require.NoError(t, err)
	defer c.Close()
	require.NoError(t, c.Initialize())
	_, sh := initToken(t, c, "served", "so-secret", "user-1234")
	priv, pub := ecPair(t, c, sh, "device")
	digest := sha256.Sum256([]byte("over a socket"))
	require.NoError(t, c.SignInit(sh, p11rpc.Mechanism{Type: p11rpc.CKM_ECDSA}, priv))
	sig, err := c.Sign(sh, digest[:], 64)
	require.NoError(t, err)
	verifyECDSA(t, pub, digest[:], sig)
	require.NoError(t, c.Finalize())

	c2, err := p11rpc.DialServer(ctx, sock)
	require.NoError(t, err)
	defer c2.Close()
	require.NoError(t, c2.Initialize())
	findSlot(t, c2, "served")

	_, err = p11rpc.DialServer(ctx, sock+".none")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "is `p11-kit server` running")
}

// TestRemoteModuleUnusable ensures that a module p11-kit cannot load ends
// in one error naming it, not a hang.
func TestRemoteModuleUnusable(t *testing.T) {
	module(t)
	notLib := filepath.Join(t.TempDir(), "not.so")
	require.NoError(t, os.WriteFile(notLib, []byte("not an ELF"), 0o644))
	c, err := p11rpc.DialRemote(context.Background(), "", notLib, nil)
	if err == nil {
		err = c.Initialize()
		c.Close()
	}
	require.Error(t, err)
	assert.True(t, p11rpc.IsTransport(err), "%v", err)
	assert.Contains(t, err.Error(), "p11-kit remote "+notLib)
	assert.Contains(t, err.Error(), "p11-kit exited")

	_, err = p11rpc.DialRemote(context.Background(), "/nonexistent/p11-kit", notLib, nil)
	assert.ErrorContains(t, err, "/nonexistent/p11-kit")
}

// fakePeer answers the version byte, then writes what reply returns for
// each request it reads (nil closes the connection).
func fakePeer(t *testing.T, version byte, reply func(req []byte) []byte) *p11rpc.Client {
	t.Helper()
	conn := pipePeer(t, version, func(b net.Conn) {
		for {
			hdr := make([]byte, 12)
			if _, err := readFull(b, hdr); err != nil {
				return
			}
			body := make([]byte, binary.BigEndian.Uint32(hdr[4:])+binary.BigEndian.Uint32(hdr[8:]))
			if _, err := readFull(b, body); err != nil {
				return
			}
			out := reply(body)
			if out == nil {
				b.Close()
				return
			}
			resp := binary.BigEndian.AppendUint32(nil, binary.BigEndian.Uint32(hdr))
			resp = binary.BigEndian.AppendUint32(resp, 0)
			resp = binary.BigEndian.AppendUint32(resp, uint32(len(out)))
			b.Write(append(resp, out...))
		}
	})
	c, err := p11rpc.NewClient(context.Background(), "fake", conn)
	require.NoError(t, err)
	c.CallTimeout = 2 * time.Second
	return c
}

func readFull(c net.Conn, b []byte) (int, error) {
	n := 0
	for n < len(b) {
		m, err := c.Read(b[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

func msg(id uint32, sig string, payload ...byte) []byte {
	b := binary.BigEndian.AppendUint32(nil, id)
	b = binary.BigEndian.AppendUint32(b, uint32(len(sig)))
	return append(append(b, sig...), payload...)
}

// TestBadPeer ensures that malformed, oversized, mismatched or missing
// answers end the call with ErrTransport and leave the client broken,
// while a CKR_ error answer is an Error and keeps it usable.
func TestBadPeer(t *testing.T) {
	tests := []struct {
		name   string
		reply  []byte
		want   string
		broken bool
	}{
		{"error answer", msg(0, "u", binary.BigEndian.AppendUint64(nil, 0xe0)...), "CKR_TOKEN_NOT_PRESENT (0xe0)", false},
		{"unknown CKR", msg(0, "u", binary.BigEndian.AppendUint64(nil, 0x80001234)...), "CKR_0x80001234", false},
		{"wrong call id", msg(6, "ssssuuuuuuuuuuuvvs"), "answered with call id 6", true},
		{"wrong signature", msg(3, "uu"), `signature "uu"`, true},
		{"truncated", msg(3, "vsusv", 2, 40), "message truncated", true},
		{"garbage", []byte("garbage on the socket"), "protocol error", true},
		{"closed", nil, "EOF", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := fakePeer(t, 0, func([]byte) []byte { return tc.reply })
			_, err := c.GetInfo()
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
			assert.Equal(t, tc.broken, p11rpc.IsTransport(err), "%v", err)
			if tc.broken {
				_, err2 := c.GetInfo()
				assert.True(t, p11rpc.IsTransport(err2), "a broken client stays broken")
			}
		})
	}

	t.Run("oversized", func(t *testing.T) {
		b := pipePeer(t, 0, func(b net.Conn) {
			hdr := make([]byte, 12)
			readFull(b, hdr)
			readFull(b, make([]byte, binary.BigEndian.Uint32(hdr[8:])))
			out := binary.BigEndian.AppendUint32(nil, 1)
			out = binary.BigEndian.AppendUint32(out, 0)
			b.Write(binary.BigEndian.AppendUint32(out, p11rpc.MaxMessage+1))
		})
		c, err := p11rpc.NewClient(context.Background(), "fake", b)
		require.NoError(t, err)
		_, err = c.GetInfo()
		assert.ErrorContains(t, err, "exceeds")
		assert.True(t, p11rpc.IsTransport(err))
	})

	t.Run("silent peer times out", func(t *testing.T) {
		done := make(chan struct{})
		t.Cleanup(func() { close(done) })
		c := fakePeer(t, 0, func([]byte) []byte { <-done; return nil })
		c.CallTimeout = 50 * time.Millisecond
		_, err := c.GetInfo()
		require.Error(t, err)
		assert.True(t, p11rpc.IsTransport(err))
		assert.True(t, errors.Is(err, os.ErrDeadlineExceeded) || strings.Contains(err.Error(), "deadline"), "%v", err)
	})

	t.Run("version too new", func(t *testing.T) {
		_, err := p11rpc.NewClient(context.Background(), "fake", pipePeer(t, 9, func(net.Conn) {}))
		assert.ErrorContains(t, err, "protocol version 9")
	})
}

// pipePeer answers the version byte with version, then runs f; it returns
// the client's end of the pipe.
func pipePeer(t *testing.T, version byte, f func(peer net.Conn)) net.Conn {
	a, b := net.Pipe()
	t.Cleanup(func() { a.Close(); b.Close() })
	go func() {
		var v [1]byte
		if _, err := b.Read(v[:]); err != nil {
			return
		}
		b.Write([]byte{version})
		f(b)
	}()
	return a
}

// TestMechanismEncoding ensures that mechanisms are written the way each
// protocol version reads them: p11-kit 0.24 (version 0) expects a NULL
// parameter array after a parameterless mechanism, 0.25.6+ (version 2)
// nothing, and a presence byte before a parameter.
func TestMechanismEncoding(t *testing.T) {
	for _, v := range []byte{0, 2} {
		var got [][]byte
		c := fakePeer(t, v, func(req []byte) []byte {
			got = append(got, req)
			return msg(42, "")
		})
		require.Equal(t, v, c.Version())
		require.NoError(t, c.SignInit(1, p11rpc.Mechanism{Type: p11rpc.CKM_ECDSA}, 7))
		require.NoError(t, c.SignInit(1, p11rpc.Mechanism{Type: p11rpc.CKM_RSA_PKCS_PSS, PSS: &p11rpc.PSSParams{Hash: p11rpc.CKM_SHA256, MGF: 2, SaltLength: 32}}, 7))
		head := msg(42, "uMu", binary.BigEndian.AppendUint64(nil, 1)...)
		ecdsaWant := append(append([]byte{}, head...), 0, 0, 0x10, 0x41)
		pssWant := append(append([]byte{}, head...), 0, 0, 0, 0x0d)
		if v == 0 {
			ecdsaWant = append(ecdsaWant, 0xff, 0xff, 0xff, 0xff)
		} else {
			pssWant = append(pssWant, 1)
		}
		ecdsaWant = binary.BigEndian.AppendUint64(ecdsaWant, 7)
		for _, x := range []uint64{0x250, 2, 32, 7} {
			pssWant = binary.BigEndian.AppendUint64(pssWant, x)
		}
		require.Len(t, got, 2)
		assert.Equal(t, ecdsaWant, got[0], "version %d: CKM_ECDSA", v)
		assert.Equal(t, pssWant, got[1], "version %d: CKM_RSA_PKCS_PSS", v)
	}
}
