package credprovider

import (
	"crypto/tls"
	"sync/atomic"
)

// SessionCache is a TLS client session cache that can be emptied, so that a
// refresh resumes the last TLS session (TLS 1.3 PSK or a 1.2 ticket) instead
// of a full handshake — no certificate chain, no signature by the device
// key: about half the bytes of a refresh on a metered link — while a new
// device identity is never answered with a session of the old one.
type SessionCache struct {
	c atomic.Pointer[tls.ClientSessionCache]
}

// NewSessionCache returns an empty cache holding a session for each of up to
// a few servers.
func NewSessionCache() *SessionCache {
	s := &SessionCache{}
	s.Reset()
	return s
}

// Reset forgets every session, e.g. when the client certificate changes.
func (s *SessionCache) Reset() {
	c := tls.NewLRUClientSessionCache(4)
	s.c.Store(&c)
}

// Get implements tls.ClientSessionCache.
func (s *SessionCache) Get(key string) (*tls.ClientSessionState, bool) { return (*s.c.Load()).Get(key) }

// Put implements tls.ClientSessionCache.
func (s *SessionCache) Put(key string, cs *tls.ClientSessionState) { (*s.c.Load()).Put(key, cs) }
