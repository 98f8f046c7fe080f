// Package ststest runs an AWS STS-compatible endpoint in process, in the
// style of net/http/httptest, for tests of code that assumes roles.
//
// It speaks the STS Query protocol (form-encoded POST, XML answers) for
// AssumeRole, AssumeRoleWithWebIdentity and GetCallerIdentity, and it checks
// the SigV4 signature of every signed request the way AWS does: the access key
// must belong to credentials the server knows (registered with AddCredentials,
// Track or WithLookup, or issued by the server itself), the session token must
// be theirs, they must not have expired, and the signature recomputed with
// their secret key (aws-sdk-go-v2's own signer) must match. A request signed
// with wrong or stale credentials therefore fails with the error AWS returns:
// InvalidClientTokenId, ExpiredToken or SignatureDoesNotMatch.
//
// Every successful AssumeRole issues new credentials for the role, which the
// server then accepts in turn, so a chain device role → role A → role B is
// checked end to end. A session keeps the source identity and tags it was
// given, and every call records the context of the session that signed it,
// as CloudTrail does: a test can ask which program made a call.
package ststest

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
)

// Account is the account ID of the roles the server knows unless their ARN
// says otherwise.
const Account = "123456789012"

// Role is a role the server lets principals assume.
type Role struct {
	// ARN, e.g. arn:aws:iam::123456789012:role/telemetry.
	ARN string
	// MaxSession bounds DurationSeconds; default 12 h (the IAM maximum).
	MaxSession time.Duration
	// ExternalID, when set, must be sent as ExternalId.
	ExternalID string
	// MFASerial, when set, must be sent as SerialNumber together with a
	// TokenCode that CheckMFA accepts.
	MFASerial string
	// CheckMFA validates a TokenCode at the server's time.
	CheckMFA func(code string, now time.Time) bool
	// Trust, when set, decides whether the calling principal (its ARN) may
	// assume the role; nil trusts every principal the server knows.
	Trust func(callerARN string) bool
	// WebIdentityTokens are the tokens AssumeRoleWithWebIdentity accepts for
	// this role.
	WebIdentityTokens []string
	// DenyTagSession and DenySetSourceIdentity stand for a trust policy
	// that does not grant sts:TagSession or sts:SetSourceIdentity: an
	// AssumeRole that passes tags or a source identity is then refused with
	// AccessDenied, as AWS refuses it.
	DenyTagSession        bool
	DenySetSourceIdentity bool
}

// Call records one request.
type Call struct {
	Action string
	// AccessKeyID signed the request ("" for unsigned requests).
	AccessKeyID string
	// Caller is the ARN of the principal that signed it.
	Caller string
	// Params are the request's form parameters, without secrets
	// (WebIdentityToken is replaced by its length).
	Params url.Values
	// Issued is the access key ID of the credentials issued, if any.
	Issued string
	// ErrorCode is the error answered, "" on success.
	ErrorCode string

	// What an AssumeRole asked for the new session, decoded from Params:
	// its session tags, their transitive keys, source identity and inline
	// session policy.
	Tags              map[string]string
	TransitiveTagKeys []string
	SourceIdentity    string
	Policy            string

	// Session is the context of the session that signed the request, as
	// CloudTrail records it in userIdentity.sessionContext (zero for a
	// user's long-term credentials or an unsigned request).
	Session Session
}

// Session is what a role session carries besides its credentials: the
// source identity it was given (or inherited) and its session tags.
type Session struct {
	SourceIdentity string
	Tags           map[string]string
}

// principal is a set of credentials the server accepts.
type principal struct {
	creds   aws.Credentials
	arn     string
	session Session
}

// Option configures a Server.
type Option func(*Server)

// WithClock makes the server issue credentials and judge their expiry by now
// instead of time.Now. The age of a signature is still judged by the real
// clock, the one the SDK signs with.
func WithClock(now func() time.Time) Option { return func(s *Server) { s.now = now } }

// WithRegion sets the region the server signs for (default us-east-1);
// requests whose credential scope names another region are refused like at
// AWS.
func WithRegion(region string) Option { return func(s *Server) { s.region = region } }

// WithLookup supplies credentials the server does not hold itself, e.g. those
// a credentials provider issued to a device: lookup returns them and the
// principal ARN for an access key ID.
func WithLookup(lookup func(accessKeyID string) (aws.Credentials, string, bool)) Option {
	return func(s *Server) { s.lookup = lookup }
}

// Server is an in-process STS endpoint.
type Server struct {
	// URL is the endpoint, for sts.Options.BaseEndpoint.
	URL string

	srv    *httptest.Server
	now    func() time.Time
	region string
	lookup func(string) (aws.Credentials, string, bool)
	signer *v4.Signer

	mu         sync.Mutex
	principals map[string]*principal
	roles      map[string]*Role
	calls      []Call
	faults     []string
}

// NewServer starts a server on 127.0.0.1.
func NewServer(opts ...Option) *Server {
	s := &Server{
		now:        time.Now,
		region:     "us-east-1",
		signer:     v4.NewSigner(),
		principals: map[string]*principal{},
		roles:      map[string]*Role{},
	}
	for _, o := range opts {
		o(s)
	}
	s.srv = httptest.NewServer(http.HandlerFunc(s.handle))
	s.URL = s.srv.URL
	return s
}

// Close shuts the server down.
func (s *Server) Close() { s.srv.Close() }

// Region is the region requests must be signed for.
func (s *Server) Region() string { return s.region }

// AddRole registers (or replaces) a role.
func (s *Server) AddRole(r Role) {
	s.mu.Lock()
	defer s.mu.Unlock()
	rc := r
	s.roles[r.ARN] = &rc
}

// AddCredentials makes the server accept c, as the principal arn.
func (s *Server) AddCredentials(c aws.Credentials, arn string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.principals[c.AccessKeyID] = &principal{creds: c, arn: arn}
}

// NewUser returns long-term credentials of a new IAM user the server accepts.
func (s *Server) NewUser(name string) aws.Credentials {
	c := aws.Credentials{AccessKeyID: "AKIA" + randomString(12), SecretAccessKey: randomString(30), Source: "ststest"}
	s.AddCredentials(c, "arn:aws:iam::"+Account+":user/"+name)
	return c
}

// Track wraps p so that every set of credentials it returns is accepted by
// the server as the principal arn: the link between an issuer the server
// does not run (say the IoT credentials provider simulator) and STS.
func (s *Server) Track(p aws.CredentialsProvider, arn string) aws.CredentialsProvider {
	return aws.CredentialsProviderFunc(func(ctx context.Context) (aws.Credentials, error) {
		c, err := p.Retrieve(ctx)
		if err == nil {
			s.AddCredentials(c, arn)
		}
		return c, err
	})
}

// Revoke makes the server refuse the credentials with this access key ID
// from now on.
func (s *Server) Revoke(accessKeyID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.principals, accessKeyID)
}

// Fail makes the next n requests fail with the AWS error code, one of
// Throttling (400), InternalFailure (500), ServiceUnavailable (503).
func (s *Server) Fail(n int, code string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for range n {
		s.faults = append(s.faults, code)
	}
}

// Calls returns the requests received so far, in order.
func (s *Server) Calls() []Call {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Call(nil), s.calls...)
}

// CallsSignedBy returns the requests signed with the credentials whose
// access key ID is akid: what CloudTrail lists for that session.
func (s *Server) CallsSignedBy(akid string) []Call {
	var out []Call
	for _, c := range s.Calls() {
		if c.AccessKeyID == akid {
			out = append(out, c)
		}
	}
	return out
}

// CallsFor returns the successful AssumeRole* calls for roleARN.
func (s *Server) CallsFor(roleARN string) []Call {
	var out []Call
	for _, c := range s.Calls() {
		if c.Params.Get("RoleArn") == roleARN && c.ErrorCode == "" {
			out = append(out, c)
		}
	}
	return out
}

// apiError is an STS error answer.
type apiError struct {
	status  int
	code    string
	message string
}

func (e *apiError) Error() string { return e.code + ": " + e.message }

func sender(status int, code, format string, args ...any) *apiError {
	return &apiError{status: status, code: code, message: fmt.Sprintf(format, args...)}
}

const maxBody = 64 << 10

func (s *Server) handle(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	if err != nil || len(body) > maxBody {
		writeError(w, sender(400, "InvalidRequest", "the request body could not be read"))
		return
	}
	form, err := url.ParseQuery(string(body))
	if err != nil || r.Method != http.MethodPost {
		writeError(w, sender(400, "InvalidAction", "Could not find operation for the request"))
		return
	}
	call := Call{Action: form.Get("Action"), Params: redact(form)}
	resp, aerr := s.serve(r, body, form, &call)
	s.mu.Lock()
	if aerr != nil {
		call.ErrorCode = aerr.code
	}
	s.calls = append(s.calls, call)
	s.mu.Unlock()
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	w.Header().Set("Content-Type", "text/xml")
	b, _ := xml.Marshal(resp)
	w.Write(append([]byte(xml.Header), b...))
}

func redact(form url.Values) url.Values {
	out := url.Values{}
	for k, v := range form {
		if k == "WebIdentityToken" {
			out.Set(k, fmt.Sprintf("(%d bytes)", len(form.Get(k))))
			continue
		}
		out[k] = append([]string(nil), v...)
	}
	return out
}

func (s *Server) serve(r *http.Request, body []byte, form url.Values, call *Call) (any, *apiError) {
	s.mu.Lock()
	var fault string
	if len(s.faults) > 0 {
		fault, s.faults = s.faults[0], s.faults[1:]
	}
	s.mu.Unlock()
	switch fault {
	case "":
	case "Throttling":
		return nil, sender(400, fault, "Rate exceeded")
	case "ServiceUnavailable":
		return nil, sender(503, fault, "Service is unavailable")
	default:
		return nil, sender(500, fault, "An internal error occurred")
	}
	if form.Get("Version") != "2011-06-15" {
		return nil, sender(400, "InvalidParameterValue", "Version must be 2011-06-15")
	}
	now := s.now()
	switch call.Action {
	case "AssumeRoleWithWebIdentity":
		// Unsigned by design: the token is the proof.
		return s.assumeWithWebIdentity(form, now, call)
	case "AssumeRole", "GetCallerIdentity":
	default:
		return nil, sender(400, "InvalidAction", "Could not find operation %s for version 2011-06-15", call.Action)
	}
	p, aerr := s.verify(r, body, now)
	if aerr != nil {
		return nil, aerr
	}
	call.AccessKeyID, call.Caller, call.Session = p.creds.AccessKeyID, p.arn, p.session
	if call.Action == "GetCallerIdentity" {
		return callerIdentity(p), nil
	}
	return s.assumeRole(p, form, now, call)
}

// verify checks the SigV4 signature of r against the credentials its access
// key belongs to.
func (s *Server) verify(r *http.Request, body []byte, now time.Time) (*principal, *apiError) {
	auth := r.Header.Get("Authorization")
	const algo = "AWS4-HMAC-SHA256 "
	if !strings.HasPrefix(auth, algo) {
		return nil, sender(400, "MissingAuthenticationToken", "Request is missing Authentication Token")
	}
	fields := map[string]string{}
	for _, f := range strings.Split(strings.TrimPrefix(auth, algo), ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(f), "=")
		fields[k] = v
	}
	scope := strings.Split(fields["Credential"], "/")
	if len(scope) != 5 || scope[4] != "aws4_request" || fields["SignedHeaders"] == "" || fields["Signature"] == "" {
		return nil, sender(400, "IncompleteSignature", "Authorization header requires Credential, SignedHeaders and Signature")
	}
	akid, region, service := scope[0], scope[2], scope[3]
	p, ok := s.principal(akid)
	if !ok || p.creds.SessionToken != r.Header.Get("X-Amz-Security-Token") {
		return nil, sender(403, "InvalidClientTokenId", "The security token included in the request is invalid.")
	}
	if p.creds.CanExpire && !now.Before(p.creds.Expires) {
		return nil, sender(400, "ExpiredToken", "The security token included in the request is expired")
	}
	if service != "sts" || region != s.region {
		return nil, sender(403, "SignatureDoesNotMatch", "Credential should be scoped to a valid region and service: sts in %s, not %s in %s.", s.region, service, region)
	}
	signed, err := time.Parse("20060102T150405Z", r.Header.Get("X-Amz-Date"))
	if err != nil {
		return nil, sender(400, "IncompleteSignature", "X-Amz-Date is missing or malformed")
	}
	// The SDK signs with the real clock, so the request's age is judged by
	// it too, whatever WithClock says.
	if real := time.Now(); real.Sub(signed) > 15*time.Minute || signed.Sub(real) > 15*time.Minute {
		return nil, sender(403, "SignatureDoesNotMatch", "Signature expired: %s is now earlier than %s (%s - 15 min.)",
			signed.Format("20060102T150405Z"), real.Add(-15*time.Minute).UTC().Format("20060102T150405Z"), real.UTC().Format("20060102T150405Z"))
	}

	// Recompute the signature over exactly the headers the client signed.
	u := *r.URL
	u.Scheme, u.Host = "http", r.Host
	req, _ := http.NewRequest(r.Method, u.String(), bytes.NewReader(body))
	signedHeaders := strings.Split(fields["SignedHeaders"], ";")
	// The SDK's signer signs Content-Length whenever it is set; botocore,
	// for one, does not sign it.
	req.ContentLength = 0
	if slices.Contains(signedHeaders, "content-length") {
		req.ContentLength = r.ContentLength
	}
	for _, h := range signedHeaders {
		switch h {
		case "host", "content-length", "x-amz-date", "x-amz-security-token":
			// The signer derives these from the request, time and credentials.
		default:
			req.Header[http.CanonicalHeaderKey(h)] = r.Header.Values(h)
		}
	}
	sum := sha256.Sum256(body)
	if err := s.signer.SignHTTP(context.Background(), p.creds, req, hex.EncodeToString(sum[:]), service, region, signed); err != nil {
		return nil, sender(400, "IncompleteSignature", "%v", err)
	}
	want := req.Header.Get("Authorization")
	i := strings.LastIndex(want, "Signature=")
	if i < 0 || !hmac.Equal([]byte(want[i+len("Signature="):]), []byte(fields["Signature"])) ||
		!strings.Contains(want, "SignedHeaders="+fields["SignedHeaders"]+",") {
		return nil, sender(403, "SignatureDoesNotMatch", "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details.")
	}
	return p, nil
}

func (s *Server) principal(akid string) (*principal, bool) {
	s.mu.Lock()
	p, ok := s.principals[akid]
	s.mu.Unlock()
	if ok || s.lookup == nil {
		return p, ok
	}
	c, arn, ok := s.lookup(akid)
	if !ok || c.AccessKeyID != akid {
		return nil, false
	}
	return &principal{creds: c, arn: arn}, true
}

func (s *Server) role(arn string) (*Role, *apiError) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.roles[arn]
	if !ok {
		return nil, sender(403, "AccessDenied", "Not authorized to perform sts:AssumeRole on %s", arn)
	}
	return r, nil
}

func duration(form url.Values, r *Role) (time.Duration, *apiError) {
	d := time.Hour
	if v := form.Get("DurationSeconds"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 900 || n > 43200 {
			return 0, sender(400, "ValidationError", "1 validation error detected: Value '%s' at 'durationSeconds' failed to satisfy constraint: Member must have value between 900 and 43200", v)
		}
		d = time.Duration(n) * time.Second
	}
	max := r.MaxSession
	if max == 0 {
		max = 12 * time.Hour
	}
	if d > max {
		return 0, sender(400, "ValidationError", "The requested DurationSeconds exceeds the MaxSessionDuration set for this role.")
	}
	return d, nil
}

func (s *Server) assumeRole(p *principal, form url.Values, now time.Time, call *Call) (any, *apiError) {
	arn, session := form.Get("RoleArn"), form.Get("RoleSessionName")
	if arn == "" || len(session) < 2 {
		return nil, sender(400, "ValidationError", "RoleArn and RoleSessionName (2-64 characters) are required")
	}
	r, aerr := s.role(arn)
	if aerr != nil {
		return nil, aerr
	}
	denied := sender(403, "AccessDenied", "User: %s is not authorized to perform: sts:AssumeRole on resource: %s", p.arn, arn)
	if r.Trust != nil && !r.Trust(p.arn) {
		return nil, denied
	}
	if r.ExternalID != "" && !hmac.Equal([]byte(form.Get("ExternalId")), []byte(r.ExternalID)) {
		return nil, denied
	}
	if r.MFASerial != "" {
		code := form.Get("TokenCode")
		if form.Get("SerialNumber") != r.MFASerial || code == "" {
			return nil, denied
		}
		if r.CheckMFA == nil || !r.CheckMFA(code, now) {
			return nil, sender(403, "AccessDenied", "MultiFactorAuthentication failed with invalid MFA one time pass code.")
		}
	}
	d, aerr := duration(form, r)
	if aerr != nil {
		return nil, aerr
	}
	// Role chaining: AWS caps sessions assumed with a role's credentials at 1 h.
	if strings.Contains(p.arn, ":assumed-role/") && d > time.Hour {
		return nil, sender(400, "ValidationError", "The requested DurationSeconds exceeds the 1 hour session limit for roles assumed by role chaining.")
	}
	next, aerr := sessionOf(form, p, r, call)
	if aerr != nil {
		return nil, aerr
	}
	c, user := s.issue(arn, session, now.Add(d), next)
	call.Issued = c.AccessKeyId
	return &assumeRoleResponse{Xmlns: ns, Result: assumeRoleResult{
		SourceIdentity: next.SourceIdentity, AssumedRoleUser: user, Credentials: c,
	}, Meta: meta()}, nil
}

// sessionOf reads the tags, source identity and policy an AssumeRole asks
// for into call, and returns the new session's context, refusing what AWS
// refuses: tags or a source identity the role's trust policy does not
// allow, a source identity other than the caller's (it is fixed for a
// chain's life), more than 50 tags, a policy that is not JSON.
func sessionOf(form url.Values, p *principal, r *Role, call *Call) (Session, *apiError) {
	for i := 1; ; i++ {
		k := form.Get(fmt.Sprintf("Tags.member.%d.Key", i))
		if k == "" {
			break
		}
		if call.Tags == nil {
			call.Tags = map[string]string{}
		}
		call.Tags[k] = form.Get(fmt.Sprintf("Tags.member.%d.Value", i))
	}
	for i := 1; form.Get(fmt.Sprintf("TransitiveTagKeys.member.%d", i)) != ""; i++ {
		call.TransitiveTagKeys = append(call.TransitiveTagKeys, form.Get(fmt.Sprintf("TransitiveTagKeys.member.%d", i)))
	}
	call.SourceIdentity, call.Policy = form.Get("SourceIdentity"), form.Get("Policy")
	denied := func(action string) *apiError {
		return sender(403, "AccessDenied", "User: %s is not authorized to perform: %s on resource: %s", p.arn, action, r.ARN)
	}
	switch {
	case len(call.Tags) > 0 && r.DenyTagSession:
		return Session{}, denied("sts:TagSession")
	case call.SourceIdentity != "" && r.DenySetSourceIdentity:
		return Session{}, denied("sts:SetSourceIdentity")
	case len(call.Tags) > 50:
		return Session{}, sender(400, "ValidationError", "Member must have length less than or equal to 50")
	case call.Policy != "" && !json.Valid([]byte(call.Policy)):
		return Session{}, sender(400, "MalformedPolicyDocument", "The policy is not in the valid JSON format.")
	case p.session.SourceIdentity != "" && call.SourceIdentity != "" && call.SourceIdentity != p.session.SourceIdentity:
		return Session{}, sender(400, "InvalidParameterValue", "SourceIdentity cannot be changed: the session was given %s", p.session.SourceIdentity)
	}
	next := Session{SourceIdentity: call.SourceIdentity, Tags: call.Tags}
	if next.SourceIdentity == "" {
		next.SourceIdentity = p.session.SourceIdentity
	}
	return next, nil
}

func (s *Server) assumeWithWebIdentity(form url.Values, now time.Time, call *Call) (any, *apiError) {
	arn, session, token := form.Get("RoleArn"), form.Get("RoleSessionName"), form.Get("WebIdentityToken")
	if arn == "" || len(session) < 2 || token == "" {
		return nil, sender(400, "ValidationError", "RoleArn, RoleSessionName and WebIdentityToken are required")
	}
	r, aerr := s.role(arn)
	if aerr != nil {
		return nil, aerr
	}
	ok := false
	for _, t := range r.WebIdentityTokens {
		ok = ok || hmac.Equal([]byte(t), []byte(token))
	}
	if !ok {
		return nil, sender(400, "InvalidIdentityToken", "The web identity token that was passed could not be validated by AWS.")
	}
	d, aerr := duration(form, r)
	if aerr != nil {
		return nil, aerr
	}
	c, user := s.issue(arn, session, now.Add(d), Session{})
	call.Issued = c.AccessKeyId
	return &webIdentityResponse{Xmlns: ns, Result: webIdentityResult{
		AssumedRoleUser: user, Credentials: c, SubjectFromWebIdentityToken: "ststest-subject", Audience: "sts.amazonaws.com", Provider: "ststest",
	}, Meta: meta()}, nil
}

// issue makes credentials for a session of roleARN and accepts them from now on.
func (s *Server) issue(roleARN, session string, expires time.Time, ctx Session) (xmlCredentials, assumedRoleUser) {
	account, name := Account, roleARN
	if parts := strings.SplitN(roleARN, ":", 6); len(parts) == 6 {
		account, name = parts[4], strings.TrimPrefix(parts[5], "role/")
		if i := strings.LastIndex(name, "/"); i >= 0 {
			name = name[i+1:]
		}
	}
	c := aws.Credentials{
		AccessKeyID: "ASIA" + randomString(12), SecretAccessKey: randomString(30), SessionToken: randomString(180),
		CanExpire: true, Expires: expires.UTC().Truncate(time.Second), Source: "ststest",
	}
	user := assumedRoleUser{
		Arn:           fmt.Sprintf("arn:aws:sts::%s:assumed-role/%s/%s", account, name, session),
		AssumedRoleID: "AROA" + strings.ToUpper(hex.EncodeToString([]byte(name)))[:min(16, 2*len(name))] + ":" + session,
	}
	s.mu.Lock()
	s.principals[c.AccessKeyID] = &principal{creds: c, arn: user.Arn, session: ctx}
	s.mu.Unlock()
	return xmlCredentials{AccessKeyId: c.AccessKeyID, SecretAccessKey: c.SecretAccessKey, SessionToken: c.SessionToken,
		Expiration: c.Expires.Format(time.RFC3339)}, user
}

func callerIdentity(p *principal) *callerIdentityResponse {
	arn := p.arn
	account := Account
	if parts := strings.SplitN(arn, ":", 6); len(parts) == 6 && parts[4] != "" {
		account = parts[4]
	}
	return &callerIdentityResponse{Xmlns: ns, Result: callerIdentityResult{Arn: arn, UserId: p.creds.AccessKeyID, Account: account}, Meta: meta()}
}

const ns = "https://sts.amazonaws.com/doc/2011-06-15/"

type responseMetadata struct {
	RequestId string
}

func meta() responseMetadata { return responseMetadata{RequestId: randomString(12)} }

type xmlCredentials struct {
	AccessKeyId, SecretAccessKey, SessionToken, Expiration string
}

type assumedRoleUser struct {
	Arn           string
	AssumedRoleID string `xml:"AssumedRoleId"`
}

type assumeRoleResult struct {
	SourceIdentity  string `xml:",omitempty"`
	AssumedRoleUser assumedRoleUser
	Credentials     xmlCredentials
}

type assumeRoleResponse struct {
	XMLName xml.Name         `xml:"AssumeRoleResponse"`
	Xmlns   string           `xml:"xmlns,attr"`
	Result  assumeRoleResult `xml:"AssumeRoleResult"`
	Meta    responseMetadata `xml:"ResponseMetadata"`
}

type webIdentityResult struct {
	SubjectFromWebIdentityToken string
	AssumedRoleUser             assumedRoleUser
	Credentials                 xmlCredentials
	Audience, Provider          string
}

type webIdentityResponse struct {
	XMLName xml.Name          `xml:"AssumeRoleWithWebIdentityResponse"`
	Xmlns   string            `xml:"xmlns,attr"`
	Result  webIdentityResult `xml:"AssumeRoleWithWebIdentityResult"`
	Meta    responseMetadata  `xml:"ResponseMetadata"`
}

type callerIdentityResult struct {
	Arn, UserId, Account string
}

type callerIdentityResponse struct {
	XMLName xml.Name             `xml:"GetCallerIdentityResponse"`
	Xmlns   string               `xml:"xmlns,attr"`
	Result  callerIdentityResult `xml:"GetCallerIdentityResult"`
	Meta    responseMetadata     `xml:"ResponseMetadata"`
}

type errorResponse struct {
	XMLName xml.Name `xml:"ErrorResponse"`
	Xmlns   string   `xml:"xmlns,attr"`
	Error   struct {
		Type, Code, Message string
	}
	RequestId string
}

func writeError(w http.ResponseWriter, e *apiError) {
	var er errorResponse
	er.Xmlns = ns
	er.Error.Type = "Sender"
	if e.status >= 500 {
		er.Error.Type = "Receiver"
	}
	er.Error.Code, er.Error.Message, er.RequestId = e.code, e.message, randomString(12)
	b, _ := xml.Marshal(er)
	w.Header().Set("Content-Type", "text/xml")
	w.WriteHeader(e.status)
	w.Write(append([]byte(xml.Header), b...))
}

func randomString(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return strings.ToUpper(strings.NewReplacer("+", "A", "/", "B", "-", "C", "_", "D").Replace(base64.RawURLEncoding.EncodeToString(b)))
}
