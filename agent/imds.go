package agent

import (
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/tetherd/tether/credprovider"
	"github.com/tetherd/tether/credprovider/imds"
)

// The optional IMDSv2-compatible endpoint (serve.imds_endpoint), for tools
// and old SDKs that know only the EC2 instance metadata service. The
// protocol is package imds's; this file wires it to the agent's peers and
// roles, with the container endpoint's checks: the allow lists apply to the
// owner of the TCP peer (sock_diag), forwarded requests and foreign Host
// headers are refused, and the listener's limits are the same.

// imdsEndpoint is the IMDS endpoint's socket and server and the session
// tokens it issued, which live as long as the socket: across reloads, so
// programs holding a token keep using it.
type imdsEndpoint struct {
	endpoint
	tokens *imds.Tokens
}

// openIMDS listens on serve.imds_endpoint, or takes the running
// generation's socket and tokens when the address is the same.
func (a *Agent) openIMDS(prev *Agent) error {
	ep := a.cfg.Serve.IMDSEndpoint
	if ep == "" {
		return nil
	}
	if prev != nil && prev.imds != nil && prev.imds.addr == ep {
		a.imds, a.borrowed.imds = prev.imds, true
		return nil
	}
	ln, err := net.Listen("tcp", ep)
	if err != nil {
		return runtimeFailure("serve.imds_endpoint: cannot listen on %s: %w; choose a free loopback port", ep, unwrapSyscall(err))
	}
	// Every answer, the handshake's included, leaves with an IP TTL of 1,
	// as EC2's IMDSv2 answers.
	hop, err := imds.HopLimitListener(ln, 1)
	if err != nil {
		ln.Close()
		return runtimeFailure("serve.imds_endpoint: %w", err)
	}
	a.imds = &imdsEndpoint{endpoint: endpoint{addr: ep, ln: hop}, tokens: imds.NewTokens(imds.TokenOptions{})}
	if err := sockDiagUsable(); err != nil && !(AllowList{UIDs: a.cfg.Serve.AllowUIDs, GIDs: a.cfg.Serve.AllowGIDs}).Empty() {
		a.log.Warn("the owners of TCP peers cannot be found, so the allow lists refuse every IMDS and container endpoint client; under systemd install the local-endpoints.conf drop-in", "err", err)
	}
	return nil
}

// imdsRoutes builds the IMDS endpoint's handler for this generation.
func (a *Agent) imdsRoutes(allow func() AllowList) http.Handler {
	src := &imdsSource{roleFor: a.roleFor, log: a.d.refusals, refused: &a.d.refused.imds}
	h := &imds.Handler{Tokens: a.imds.tokens, Source: src, Region: a.cfg.AWS.Region,
		Refused: func(r *http.Request) { src.refused.count(refusedBadToken, peerFrom(r.Context())) }}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !fromThisHost(r) {
			// Only an address on lo that the network can reach, under the
			// weak host model, lets such a peer connect at all.
			src.refused.count(refusedNotLocal, nil)
			src.log.Warn("IMDS endpoint refused a peer from another host", "remote", r.RemoteAddr)
			w.Header().Set("Connection", "close")
			writeError(w, http.StatusForbidden, "not_local", "the IMDS endpoint serves programs on this device only")
			return
		}
		if refuseIndirect(w, r, src.log, src.refused, "IMDS endpoint") {
			return
		}
		if p := peerFrom(r.Context()); !allow().Allows(p) {
			src.refused.count(refusedNotAllowed, p)
			src.refuse(w, r, p)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// serveIMDS starts the IMDS endpoint's server, unless a previous generation
// started it on the same socket; a must be current.
func (a *Agent) serveIMDS() {
	if a.imds == nil || a.imds.srv != nil {
		return
	}
	a.serveTCP(&a.imds.endpoint, a.imds.ln, &a.d.refused.imds, func(a *Agent) http.Handler { return a.imdsAPI })
}

// closeIMDS stops the IMDS endpoint unless the next generation took it.
func (a *Agent) closeIMDS() {
	if a.imds != nil && !a.borrowed.imds {
		a.imds.close()
	}
}

// fromThisHost reports whether r came from a socket on this host, as
// tcpConnContext found when its connection was accepted.
func fromThisHost(r *http.Request) bool {
	on, _ := r.Context().Value(onHostKey{}).(bool)
	return on
}

// imdsSource answers package imds's questions with the agent's one rule
// for which credentials a peer gets (roleFor).
type imdsSource struct {
	roleFor func(*Peer, string) (*role, error)
	log     *slog.Logger
	refused *refusalCounts
}

// Owner binds tokens to the uid of the program that asked for them.
func (s *imdsSource) Owner(r *http.Request) string {
	if p := peerFrom(r.Context()); p != nil {
		return strconv.FormatUint(uint64(p.UID), 10)
	}
	return "unknown"
}

// Role is the name of the role the peer of r gets by default: its
// [[workload]]'s role, else the device role. A workload's session is
// listed under its role's name, as EC2 lists an instance profile's role.
func (s *imdsSource) Role(r *http.Request) (string, error) {
	rl, err := s.resolve(r, "")
	if err != nil {
		return "", err
	}
	return rl.servedAs(), nil
}

// resolve is roleFor for the peer of r, its refusals in package imds's
// terms.
func (s *imdsSource) resolve(r *http.Request, name string) (*role, error) {
	p := peerFrom(r.Context())
	rl, err := s.roleFor(p, name)
	if err == nil {
		return rl, nil
	}
	s.refused.countRole(err, p)
	rf, ok := err.(*refusal)
	if !ok {
		return nil, &imds.Error{Status: http.StatusInternalServerError, Message: "internal error"}
	}
	if rf.Status == http.StatusForbidden {
		s.logRefusal(r, p)
	}
	msg := rf.Message
	if rf.Code == "peer_not_allowed" {
		msg = refusedMessage(p)
	}
	return nil, &imds.Error{Status: rf.Status, Message: msg}
}

// Credentials are the current ones of the role the peer gets, served under
// its name (Role) only, never expired ones: 503 with Retry-After while
// there are none. The answer is the role's encoded one (imdsEncoded).
func (s *imdsSource) Credentials(r *http.Request, name string) (*imds.Answer, error) {
	rl, err := s.resolve(r, "")
	if err != nil {
		return nil, err
	}
	if rl.servedAs() != name {
		return nil, &imds.Error{Status: http.StatusNotFound, Message: "not found"}
	}
	c, err := rl.ref.Retrieve(r.Context())
	if err != nil {
		retry := 5 * time.Second
		if d := rl.retryAfter(); d > 0 {
			retry = d
		}
		// The reason may quote a helper's output: it is in `tether status`.
		return nil, &imds.Error{Status: http.StatusServiceUnavailable, RetryAfter: retry,
			Message: "no valid credentials for role " + strconv.Quote(name) + " yet; `tether status` says why"}
	}
	a, err := rl.imdsEncoded(c)
	if err != nil {
		return nil, &imds.Error{Status: http.StatusInternalServerError, Message: "cannot encode the credentials"}
	}
	return a, nil
}

// imdsAnswer is a role's credentials as the IMDS endpoint sends them.
type imdsAnswer struct {
	creds aws.Credentials
	a     *imds.Answer
}

// imdsEncoded returns c in the IMDS shape, from the role's last answer
// when c is the same credentials, as encoded does for the socket; the
// refresher's Status (LastUpdated) is read only when they are new.
func (rl *role) imdsEncoded(c aws.Credentials) (*imds.Answer, error) {
	if e := rl.imdsAnswer.Load(); e != nil && e.creds == c {
		return e.a, nil
	}
	cached := c.CanExpire
	if !cached {
		// As toJSON: SDKs read a zero Expiration as expired; such
		// credentials get a new Expiration each time.
		c.Expires = time.Now().Add(credprovider.DefaultAdvisoryWindow)
	}
	a, err := imds.NewAnswer(c, rl.ref.Status().LastRefresh)
	if err != nil {
		return nil, err
	}
	if cached {
		rl.imdsAnswer.Store(&imdsAnswer{creds: c, a: a})
	}
	return a, nil
}

func (s *imdsSource) refuse(w http.ResponseWriter, r *http.Request, p *Peer) {
	s.logRefusal(r, p)
	w.Header().Set("Connection", "close")
	writeError(w, http.StatusForbidden, "peer_not_allowed", refusedMessage(p))
}

func (s *imdsSource) logRefusal(r *http.Request, p *Peer) {
	s.log.Warn("IMDS endpoint refused a local peer", "uid", peerUID(p), "remote", r.RemoteAddr, "path", r.URL.Path)
}

func peerUID(p *Peer) string {
	if p == nil {
		return "unknown"
	}
	return strconv.FormatUint(uint64(p.UID), 10)
}

func refusedMessage(p *Peer) string {
	return "the program calling (uid " + peerUID(p) + ") is not in the allow list; add its uid or group to serve.allow_uids or allow_gids (or the role's own lists)"
}
