package credprovider

import (
	"encoding/base32"
	"net/url"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestTOTPVectors ensures that codes match RFC 6238 Appendix B for SHA-1,
// SHA-256 and SHA-512, with the keys given as otpauth:// URIs.
func TestTOTPVectors(t *testing.T) {
	seeds := map[string]string{
		"SHA1":   "12345678901234567890",
		"SHA256": "12345678901234567890123456789012",
		"SHA512": "1234567890123456789012345678901234567890123456789012345678901234",
	}
	for _, v := range []struct {
		unix             int64
		sha1, s256, s512 string
	}{
		{59, "94287082", "46119246", "90693936"},
		{1111111109, "07081804", "68084774", "25091201"},
		{1111111111, "14050471", "67062674", "99943326"},
		{1234567890, "89005924", "91819424", "93441116"},
		{2000000000, "69279037", "90698825", "38618901"},
		{20000000000, "65353130", "77737706", "47863826"},
	} {
		for alg, want := range map[string]string{"SHA1": v.sha1, "SHA256": v.s256, "SHA512": v.s512} {
			secret := base32.StdEncoding.EncodeToString([]byte(seeds[alg]))
			k, err := parseTOTPKey("otpauth://totp/RFC6238?digits=8&period=30&algorithm=" + alg + "&secret=" + url.QueryEscape(secret))
			require.NoError(t, err)
			assert.Equal(t, want, k.code(time.Unix(v.unix, 0)), "%s at %d", alg, v.unix)
		}
	}
}

// TestTOTPKey ensures that secrets are read as authenticator apps show them
// and that malformed keys are refused without quoting the secret.
func TestTOTPKey(t *testing.T) {
	const secret = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ" // "12345678901234567890"
	at := time.Unix(59, 0)
	for _, tc := range []struct {
		name, in, code, err string
	}{
		{name: "plain", in: secret, code: "287082"},
		{name: "grouped, lower case, padded", in: "gezd gnbv-gy3t qojq gezd gnbv gy3t qojq===", code: "287082"},
		{name: "URI defaults", in: "otpauth://totp/AWS:gw?issuer=AWS&secret=" + secret, code: "287082"},
		{name: "URI period 60", in: "otpauth://totp/x?period=60&secret=" + secret, code: "755224"}, // step 0: RFC 4226's first HOTP value
		{name: "empty", in: "", err: "is empty"},
		{name: "not base32", in: "0189!", err: "not a base32 secret"},
		{name: "HOTP URI", in: "otpauth://hotp/x?secret=" + secret, err: "otpauth://totp/"},
		{name: "URI without secret", in: "otpauth://totp/x?digits=6", err: "otpauth://totp/"},
		{name: "URI with MD5", in: "otpauth://totp/x?algorithm=MD5&secret=" + secret, err: "otpauth://totp/"},
		{name: "URI with 4 digits", in: "otpauth://totp/x?digits=4&secret=" + secret, err: "otpauth://totp/"},
		{name: "URI with period 0", in: "otpauth://totp/x?period=0&secret=" + secret, err: "otpauth://totp/"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k, err := parseTOTPKey(tc.in)
			if tc.err != "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), tc.err)
				assert.NotContains(t, err.Error(), secret)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.code, k.code(at))
		})
	}
}
