package credprovider

import (
	"crypto/hmac"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base32"
	"encoding/binary"
	"errors"
	"hash"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// totpKey is an RFC 6238 secret with its parameters (RFC 6238 §4, the
// otpauth:// key URI format that authenticator apps and AWS use).
type totpKey struct {
	secret []byte
	hash   func() hash.Hash
	digits int
	period int64
}

// code returns the key's code for the time step holding t (RFC 6238 §4.2:
// HOTP of the step count; RFC 4226 §5.3: dynamic truncation).
func (k totpKey) code(t time.Time) string {
	mac := hmac.New(k.hash, k.secret)
	var msg [8]byte
	binary.BigEndian.PutUint64(msg[:], uint64(t.Unix()/k.period))
	mac.Write(msg[:])
	sum := mac.Sum(nil)
	off := sum[len(sum)-1] & 0x0f
	v := binary.BigEndian.Uint32(sum[off:]) & 0x7fffffff
	s := strconv.FormatUint(uint64(v)%pow10[k.digits], 10)
	return strings.Repeat("0", k.digits-len(s)) + s
}

var pow10 = [...]uint64{6: 1e6, 7: 1e7, 8: 1e8}

var errTOTPKey = errors.New("not a valid otpauth://totp/ URI")

// parseTOTPKey reads a base32 secret (case-insensitive, grouped by spaces or
// dashes, padding optional) or an otpauth://totp/ URI. Errors never quote
// the secret.
func parseTOTPKey(s string) (totpKey, error) {
	k := totpKey{hash: sha1.New, digits: 6, period: 30}
	if strings.HasPrefix(s, "otpauth://") {
		u, err := url.Parse(s)
		if err != nil || u.Host != "totp" {
			return k, errTOTPKey
		}
		q := u.Query()
		s = q.Get("secret")
		if s == "" {
			return k, errTOTPKey
		}
		switch strings.ToUpper(q.Get("algorithm")) {
		case "", "SHA1":
		case "SHA256":
			k.hash = sha256.New
		case "SHA512":
			k.hash = sha512.New
		default:
			return k, errTOTPKey
		}
		if d := q.Get("digits"); d != "" {
			if k.digits, err = strconv.Atoi(d); err != nil || k.digits < 6 || k.digits > 8 {
				return k, errTOTPKey
			}
		}
		if p := q.Get("period"); p != "" {
			if k.period, err = strconv.ParseInt(p, 10, 32); err != nil || k.period < 1 {
				return k, errTOTPKey
			}
		}
	}
	s = strings.TrimRight(strings.ToUpper(strings.Map(func(r rune) rune {
		if r == ' ' || r == '\t' || r == '\n' || r == '\r' || r == '-' {
			return -1 // secrets are often shown in groups
		}
		return r
	}, s)), "=")
	if s == "" {
		return k, errEmptySecret
	}
	var err error
	if k.secret, err = base32.StdEncoding.WithPadding(base32.NoPadding).DecodeString(s); err != nil {
		return k, errors.New("is not a base32 secret")
	}
	return k, nil
}

var errEmptySecret = errors.New("is empty: write the virtual MFA device's base32 secret into it")
