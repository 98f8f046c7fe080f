// Package imds serves credentials in the protocol of the EC2 instance
// metadata service, version 2 (IMDSv2), for tools and old SDKs that know no
// other way to find them: a session token from PUT /latest/api/token, then
// the role name and its credentials under
// /latest/meta-data/iam/security-credentials/, each GET carrying the token.
// IMDSv1 (a GET without a token) is refused.
//
// Handler is the protocol alone: the token store, the paths and the JSON
// shape. Who the caller is, which role it gets and whether it may have it
// are its Source's to decide; where it listens is the caller's (see
// HopLimitListener).
package imds

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
)

// Paths and headers of the protocol.
const (
	TokenPath       = "/latest/api/token"
	CredentialsPath = "/latest/meta-data/iam/security-credentials/"
	RegionPath      = "/latest/meta-data/placement/region"
	// IdentityDocumentPath is where aws-sdk-go-v2's GetRegion reads the
	// region ("region" in the instance identity document).
	IdentityDocumentPath = "/latest/dynamic/instance-identity/document"
	// TTLHeader carries the lifetime a PUT asks for, in seconds; the answer
	// repeats it.
	TTLHeader = "X-Aws-Ec2-Metadata-Token-Ttl-Seconds"
	// TokenHeader carries the session token on every GET.
	TokenHeader = "X-Aws-Ec2-Metadata-Token"
)

// Credentials is the JSON the service answers at CredentialsPath + ROLE.
type Credentials struct {
	Code            string
	LastUpdated     string
	Type            string
	AccessKeyID     string `json:"AccessKeyId"`
	SecretAccessKey string
	Token           string
	Expiration      string
}

// NewCredentials returns c in the service's shape; lastUpdated is when they
// were fetched.
func NewCredentials(c aws.Credentials, lastUpdated time.Time) Credentials {
	return Credentials{
		Code:            "Success",
		LastUpdated:     lastUpdated.UTC().Format(time.RFC3339),
		Type:            "AWS-HMAC",
		AccessKeyID:     c.AccessKeyID,
		SecretAccessKey: c.SecretAccessKey,
		Token:           c.SessionToken,
		Expiration:      c.Expires.UTC().Format(time.RFC3339),
	}
}

// Error is a Source's refusal: the status and a one-line message for the
// caller; RetryAfter, when set, is sent as Retry-After.
type Error struct {
	Status     int
	Message    string
	RetryAfter time.Duration
}

func (e *Error) Error() string { return e.Message }

// Source tells a Handler what to serve each request.
type Source interface {
	// Owner names the caller of r, to whom the tokens it asks for are
	// bound: a token is valid only for the owner it was issued to.
	Owner(r *http.Request) string
	// Role returns the name of the one role the caller of r is served.
	Role(r *http.Request) (string, error)
	// Credentials returns the answer for role, encoded once per set of
	// credentials (NewAnswer) and handed back ready while they are the ones
	// served. When role is not the one Role names for the caller of r, it
	// returns an *Error with status 404: the service serves the instance's
	// one role, by its name only.
	Credentials(r *http.Request, role string) (*Answer, error)
}

// Answer is one set of credentials as a Handler sends them: the JSON and
// its Content-Length, made once so that no request encodes them (encoding
// was a sixth of what a request cost) or allocates their header values.
type Answer struct {
	body   []byte
	length []string // Content-Length
}

// NewAnswer encodes c in the service's shape; lastUpdated is when they
// were fetched.
func NewAnswer(c aws.Credentials, lastUpdated time.Time) (*Answer, error) {
	b, err := json.MarshalIndent(NewCredentials(c, lastUpdated), "", "  ")
	if err != nil {
		return nil, fmt.Errorf("imds: encode the credentials: %w", err)
	}
	return &Answer{body: b, length: []string{strconv.Itoa(len(b))}}, nil
}

// Handler answers the IMDSv2 paths from a Source.
type Handler struct {
	Tokens *Tokens
	Source Source
	// Region is answered at RegionPath and, as the one member of the
	// instance identity document, at IdentityDocumentPath; "" leaves both
	// not found. Nothing else of the document is known off EC2.
	Region string
	// Refused, when set, is told of each request refused for its session
	// token (none, expired, unknown or another owner's), so the caller can
	// count them; the others are the Source's refusals, which it sees.
	Refused func(r *http.Request)
}

// refused tells Refused of r, if it is set.
func (h *Handler) refused(r *http.Request) {
	if h.Refused != nil {
		h.Refused(r)
	}
}

// ServeHTTP implements http.Handler. Answers are text/plain, as the
// service's are, except the credentials' JSON.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hd := w.Header()
	hd["Cache-Control"] = headerNoStore
	// No Date: no SDK reads it from the metadata service (botocore,
	// aws-sdk-go-v2's ec2imds and the aws CLI take the time from their own
	// clock and the credentials' Expiration), and formatting it was 1 % of
	// a request's CPU.
	hd["Date"] = nil
	if r.URL.Path == TokenPath {
		h.token(w, r)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		text(w, http.StatusMethodNotAllowed, "only GET is allowed here; ask for a token with PUT "+TokenPath)
		return
	}
	var tok string
	// The key is canonical: indexing the map spares canonicalising it.
	if v := r.Header[TokenHeader]; len(v) > 0 {
		tok = v[0]
	}
	if tok == "" {
		// IMDSv1.
		h.refused(r)
		text(w, http.StatusUnauthorized, "a session token is required (IMDSv2): PUT "+TokenPath+" first, then send it in "+TokenHeader)
		return
	}
	if !h.Tokens.Valid(h.Source.Owner(r), tok) {
		h.refused(r)
		text(w, http.StatusUnauthorized, "the session token is expired, unknown or issued to another user; PUT "+TokenPath+" for a new one")
		return
	}
	p := r.URL.Path
	switch {
	case p == "/latest/meta-data" || p == "/latest/meta-data/":
		lines := "iam/"
		if h.Region != "" {
			lines += "\nplacement/"
		}
		text(w, http.StatusOK, lines)
	case p == "/latest/meta-data/iam" || p == "/latest/meta-data/iam/":
		text(w, http.StatusOK, "security-credentials/")
	case p == "/latest/meta-data/placement" || p == "/latest/meta-data/placement/":
		if h.Region == "" {
			notFound(w)
			return
		}
		text(w, http.StatusOK, "region")
	case p == RegionPath && h.Region != "":
		text(w, http.StatusOK, h.Region)
	case p == IdentityDocumentPath && h.Region != "":
		b, _ := json.Marshal(struct {
			Region string `json:"region"`
		}{h.Region})
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", strconv.Itoa(len(b)))
		w.Write(b)
	case p == CredentialsPath || p == CredentialsPath[:len(CredentialsPath)-1]:
		name, err := h.Source.Role(r)
		if err != nil {
			fail(w, err)
			return
		}
		text(w, http.StatusOK, name)
	case strings.HasPrefix(p, CredentialsPath):
		h.credentials(w, r, strings.TrimPrefix(p, CredentialsPath))
	default:
		notFound(w)
	}
}

func (h *Handler) token(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPut {
		w.Header().Set("Allow", "PUT")
		text(w, http.StatusMethodNotAllowed, "a session token is asked for with PUT")
		return
	}
	// As EC2 does: a PUT that went through a proxy is not from this host.
	if len(r.Header.Values("X-Forwarded-For")) > 0 {
		w.Header().Set("Connection", "close")
		text(w, http.StatusForbidden, "forwarded token requests are refused")
		return
	}
	vals := r.Header.Values(TTLHeader)
	secs, err := strconv.Atoi(strings.TrimSpace(strings.Join(vals, ",")))
	if len(vals) != 1 || err != nil || secs < int(MinTTL/time.Second) || secs > int(MaxTTL/time.Second) {
		text(w, http.StatusBadRequest, TTLHeader+" must be a whole number of seconds from 1 to 21600")
		return
	}
	tok, err := h.Tokens.Issue(h.Source.Owner(r), time.Duration(secs)*time.Second)
	if err != nil {
		text(w, http.StatusInternalServerError, "cannot issue a token")
		return
	}
	w.Header().Set(TTLHeader, strconv.Itoa(secs))
	text(w, http.StatusOK, tok)
}

func (h *Handler) credentials(w http.ResponseWriter, r *http.Request, name string) {
	a, err := h.Source.Credentials(r, name)
	if err != nil {
		fail(w, err)
		return
	}
	hd := w.Header()
	hd["Content-Type"] = headerJSON
	hd["Content-Length"] = a.length
	w.WriteHeader(http.StatusOK)
	w.Write(a.body)
}

// Header values shared so that no answer allocates them.
var (
	headerJSON    = []string{"application/json"}
	headerNoStore = []string{"no-store"}
)

func fail(w http.ResponseWriter, err error) {
	var e *Error
	if !errors.As(err, &e) {
		e = &Error{Status: http.StatusInternalServerError, Message: "internal error"}
	}
	if e.RetryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(e.RetryAfter.Seconds()))))
	}
	if e.Status == http.StatusForbidden {
		w.Header().Set("Connection", "close")
	}
	text(w, e.Status, e.Message)
}

func notFound(w http.ResponseWriter) {
	text(w, http.StatusNotFound, "not found")
}

func text(w http.ResponseWriter, status int, body string) {
	w.Header().Set("Content-Type", "text/plain")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	w.Write([]byte(body))
}
