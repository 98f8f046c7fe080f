package credprovider

import "time"

// SetJoinHook lets tests observe callers starting to wait for a shared fetch.
func SetJoinHook(r *Refresher, f func()) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.joinHook = f
}

// TOTPCode is the RFC 6238 code (SHA-1, 6 digits, 30 s) of a base32 secret at t.
func TOTPCode(secret string, t time.Time) string {
	k, err := parseTOTPKey(secret)
	if err != nil {
		panic(err)
	}
	return k.code(t)
}
