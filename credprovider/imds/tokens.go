package imds

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"sync"
	"time"
)

// Token lifetimes a client may ask for, as EC2 allows them.
const (
	MinTTL = time.Second
	MaxTTL = 6 * time.Hour
)

// Default bounds of a token store. botocore asks for a new 6-hour token at
// every credentials refresh and the AWS CLI at every run, so a program run
// from cron each minute holds a few hundred live tokens: the bound per
// owner is well above that, and the total bounds memory to about 1 MiB.
const (
	DefaultMaxTokens         = 8192
	DefaultMaxTokensPerOwner = 1024
)

// A token is idLen bytes that name it in the store and secretLen bytes
// compared in constant time, so that neither a map lookup nor a comparison
// tells a caller how much of a guess was right.
const (
	idLen     = 16
	secretLen = 32
)

// TokenOptions bounds a Tokens store.
type TokenOptions struct {
	// Max is the most tokens held at once (DefaultMaxTokens when 0).
	Max int
	// MaxPerOwner is the most tokens one owner holds at once
	// (DefaultMaxTokensPerOwner when 0).
	MaxPerOwner int
	// Now is the clock; time.Now when nil.
	Now func() time.Time
}

// Tokens holds the session tokens a Handler issued, in memory only, each
// until its TTL ends. When a bound is reached the oldest token (of the same
// owner first) is forgotten: its holder gets 401 and, as every SDK does,
// asks for a new one. Tokens is safe for concurrent use.
type Tokens struct {
	now         func() time.Time
	max, perOwn int

	mu      sync.Mutex
	byID    map[[idLen]byte]*token
	owned   map[string]int
	counter uint64 // issue order, to find the oldest
}

type token struct {
	secret  [secretLen]byte
	owner   string
	expires time.Time
	seq     uint64
}

// NewTokens returns an empty token store.
func NewTokens(opts TokenOptions) *Tokens {
	t := &Tokens{now: opts.Now, max: opts.Max, perOwn: opts.MaxPerOwner,
		byID: map[[idLen]byte]*token{}, owned: map[string]int{}}
	if t.now == nil {
		t.now = time.Now
	}
	if t.max <= 0 {
		t.max = DefaultMaxTokens
	}
	if t.perOwn <= 0 {
		t.perOwn = DefaultMaxTokensPerOwner
	}
	return t
}

// ErrTTL is returned for a lifetime outside MinTTL to MaxTTL.
var ErrTTL = errors.New("the token TTL must be 1 to 21600 seconds")

// Issue returns a new random token for owner (the caller it is bound to),
// valid for ttl.
func (t *Tokens) Issue(owner string, ttl time.Duration) (string, error) {
	if ttl < MinTTL || ttl > MaxTTL {
		return "", ErrTTL
	}
	var raw [idLen + secretLen]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", fmt.Errorf("imds: random token: %w", err)
	}
	var id [idLen]byte
	copy(id[:], raw[:idLen])
	tok := &token{owner: owner}
	copy(tok.secret[:], raw[idLen:])

	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	tok.expires = now.Add(ttl)
	if t.owned[owner] >= t.perOwn || len(t.byID) >= t.max {
		t.purgeLocked(now)
	}
	if t.owned[owner] >= t.perOwn {
		t.evictOldestLocked(func(e *token) bool { return e.owner == owner })
	}
	if len(t.byID) >= t.max {
		t.evictOldestLocked(func(*token) bool { return true })
	}
	t.counter++
	tok.seq = t.counter
	t.byID[id] = tok
	t.owned[owner]++
	return base64.RawURLEncoding.EncodeToString(raw[:]), nil
}

// Valid reports whether s is a live token issued to owner.
func (t *Tokens) Valid(owner, s string) bool {
	var raw [idLen + secretLen]byte
	if base64.RawURLEncoding.DecodedLen(len(s)) != len(raw) {
		return false
	}
	if n, err := base64.RawURLEncoding.Decode(raw[:], []byte(s)); err != nil || n != len(raw) {
		return false
	}
	var id [idLen]byte
	copy(id[:], raw[:idLen])
	t.mu.Lock()
	defer t.mu.Unlock()
	tok, ok := t.byID[id]
	if !ok {
		return false
	}
	if !t.now().Before(tok.expires) {
		t.deleteLocked(id, tok)
		return false
	}
	same := subtle.ConstantTimeCompare(tok.secret[:], raw[idLen:])
	same &= subtle.ConstantTimeCompare([]byte(tok.owner), []byte(owner))
	return same == 1
}

// Len returns the number of tokens held, expired ones included until they
// are swept.
func (t *Tokens) Len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.byID)
}

func (t *Tokens) purgeLocked(now time.Time) {
	for id, tok := range t.byID {
		if !now.Before(tok.expires) {
			t.deleteLocked(id, tok)
		}
	}
}

func (t *Tokens) evictOldestLocked(match func(*token) bool) {
	var oldID [idLen]byte
	var old *token
	for id, tok := range t.byID {
		if match(tok) && (old == nil || tok.seq < old.seq) {
			oldID, old = id, tok
		}
	}
	if old != nil {
		t.deleteLocked(oldID, old)
	}
}

func (t *Tokens) deleteLocked(id [idLen]byte, tok *token) {
	delete(t.byID, id)
	if t.owned[tok.owner]--; t.owned[tok.owner] <= 0 {
		delete(t.owned, tok.owner)
	}
}
