package agent

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/tetherd/tether/credprovider"
	"github.com/tetherd/tether/mqtt"
	"github.com/tetherd/tether/platform/openmetrics"
)

// DeviceRole is the name of the role the IoT role alias gives: the one
// GET /v1/credentials serves.
const DeviceRole = "device"

// Credentials is the JSON the local endpoints answer: the container
// credentials shape every AWS SDK reads from AWS_CONTAINER_CREDENTIALS_FULL_URI.
type Credentials struct {
	AccessKeyID     string `json:"AccessKeyId"`
	SecretAccessKey string `json:"SecretAccessKey"`
	Token           string `json:"Token"`
	Expiration      string `json:"Expiration"`
}

// apiError is the JSON body of every error answer.
type apiError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// role is one set of credentials the agent serves: everything the agent
// knows about it, in one record.
type role struct {
	name string
	// ref keeps the credentials fresh; the endpoints serve what it holds.
	ref *credprovider.Refresher
	// cacheKey is where ref's credentials are persisted (see cacheKeyOf).
	cacheKey string
	// source is where the credentials signing its requests come from.
	source Source
	// allow narrows the socket's allow list for this role.
	allow AllowList
	// workload is set on a [[workload]]'s session of a role: served only
	// to the programs the workload picks (see roleFor).
	workload string
	// answer is the last credentials encoded, reused while they are the
	// ones the provider returns: a local program may ask for them
	// thousands of times between two refreshes.
	answer atomic.Pointer[answer]
	// imdsAnswer is the same for the IMDS endpoint (imdsEncoded).
	imdsAnswer atomic.Pointer[imdsAnswer]
}

// answer is one set of credentials as the endpoints send it.
type answer struct {
	creds  aws.Credentials
	body   []byte
	length []string // Content-Length, when net/http would not set it itself
}

// Header values the endpoints send, shared so that no request allocates them.
var (
	headerJSON    = []string{"application/json"}
	headerNoStore = []string{"no-store"}
)

// encoded returns c as JSON, from the role's last answer when c is the
// same credentials.
func (rl *role) encoded(c aws.Credentials) *answer {
	if a := rl.answer.Load(); a != nil && a.creds == c {
		return a
	}
	b, err := json.Marshal(toJSON(c))
	if err != nil {
		b = []byte(`{"code":"internal","message":"cannot encode the answer"}`)
	}
	b = append(b, '\n')
	a := &answer{creds: c, body: b}
	if len(b) > 2048 {
		// net/http sets Content-Length itself for a body that fits its
		// 2 KiB buffer, and chunks a longer one.
		a.length = []string{strconv.Itoa(len(b))}
	}
	if c.CanExpire {
		// Credentials without an expiry get a new Expiration each time.
		rl.answer.Store(a)
	}
	return a
}

// retryAfter says when a failed role may have credentials again: at its
// next scheduled refresh, or 0 when none is scheduled.
func (rl *role) retryAfter() time.Duration {
	if n := rl.ref.Status().NextRefresh; !n.IsZero() {
		return time.Until(n)
	}
	return 0
}

// roleSet looks roles up by name; the agent swaps it whole on reload.
type roleSet map[string]*role

// api serves the Unix socket: credentials, status and the MQTT endpoints.
type api struct {
	roles func() roleSet
	// roleFor decides which credentials a peer gets (workload.go).
	roleFor func(*Peer, string) (*role, error)
	allow   func() AllowList
	status  func() Status
	// metrics writes GET /v1/metrics (metrics.go); refused counts the
	// peers this endpoint refuses.
	metrics func(openmetrics.Format) ([]byte, error)
	refused *refusalCounts
	// mqtt returns the MQTT session, nil while it restarts; mqtt itself is
	// nil when [mqtt] is not configured.
	mqtt func() *mqtt.Session
	// streams ends when the generation retires, and subscription streams
	// with it.
	streams context.Context
	// identity serves /v1/identity/ (rotate.go).
	identity http.Handler
	log      *slog.Logger
}

func (a *api) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/credentials", func(w http.ResponseWriter, r *http.Request) {
		a.credentials(w, r, "")
	})
	mux.HandleFunc("GET /v1/credentials/{role}", func(w http.ResponseWriter, r *http.Request) {
		a.credentials(w, r, r.PathValue("role"))
	})
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) {
		st := a.status()
		// A role's errors can quote its helper commands' stderr: show them
		// only to peers the role itself would serve.
		p, roles := peerFrom(r.Context()), a.roles()
		for i := range st.Roles {
			if rl, ok := roles[st.Roles[i].Name]; ok && !rl.allow.Empty() && !rl.allow.Allows(p) {
				st.Roles[i].LastError = ""
			}
		}
		writeJSON(w, http.StatusOK, st)
	})
	mux.HandleFunc("GET /v1/metrics", func(w http.ResponseWriter, r *http.Request) {
		serveMetrics(w, r, a.metrics)
	})
	withMQTT := func(h func(*mqtt.Session, http.ResponseWriter, *http.Request)) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			if a.mqtt == nil {
				writeError(w, http.StatusNotFound, "mqtt_not_configured", "this agent has no [mqtt] section; set mqtt.endpoint to share an MQTT session")
				return
			}
			s := a.mqtt()
			if s == nil {
				writeError(w, http.StatusServiceUnavailable, "mqtt_unavailable", "the MQTT session is restarting; retry in a moment")
				return
			}
			ctx, cancel := context.WithCancel(r.Context())
			defer cancel()
			if a.streams != nil {
				defer context.AfterFunc(a.streams, cancel)()
			}
			h(s, w, r.WithContext(ctx))
		}
	}
	if a.identity != nil {
		mux.Handle("/v1/identity/", a.identity)
	}
	// Methods are checked by the handlers, so a wrong one gets the API's
	// error shape rather than the mux's plain text.
	mux.HandleFunc("/v1/mqtt/publish", withMQTT(mqttPublish))
	mux.HandleFunc("/v1/mqtt/subscribe", withMQTT(mqttSubscribe))
	mux.HandleFunc("/v1/mqtt/", withMQTT(func(_ *mqtt.Session, w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "not_found", "no such endpoint: "+r.URL.Path+"; see POST /v1/mqtt/publish, GET /v1/mqtt/subscribe")
	}))
	getOnly(mux, "/v1/credentials", "/v1/credentials/{role}", "/v1/status", "/v1/metrics")
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "not_found", "no such endpoint: "+r.URL.Path+"; see GET /v1/credentials, /v1/credentials/{role}, /v1/status, /v1/metrics")
	})
	return a.checkPeer(mux)
}

// checkPeer refuses peers outside the socket's allow list before any handler
// runs; per-role lists are checked in credentials.
func (a *api) checkPeer(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := peerFrom(r.Context())
		if !a.allow().Allows(p) {
			a.refused.count(refusedNotAllowed, p)
			a.refuse(w, r, p)
			return
		}
		next.ServeHTTP(w, r)
	})
}

func (a *api) refuse(w http.ResponseWriter, r *http.Request, p *Peer) {
	uid, gid := "unknown", "unknown"
	if p != nil {
		uid, gid = strconv.FormatUint(uint64(p.UID), 10), strconv.FormatUint(uint64(p.GID), 10)
	}
	a.log.Warn("refused a local peer", "uid", uid, "gid", gid, "path", r.URL.Path)
	// A refused peer keeps no connection.
	w.Header().Set("Connection", "close")
	writeError(w, http.StatusForbidden, "peer_not_allowed",
		"uid "+uid+" (gid "+gid+") is not in the allow list; add it to serve.allow_uids or allow_gids (or the role's own lists)")
}

// credentials serves the role name ("" for the peer's default) to the peer,
// as roleFor decides.
func (a *api) credentials(w http.ResponseWriter, r *http.Request, name string) {
	p := peerFrom(r.Context())
	rl, err := a.roleFor(p, name)
	if err != nil {
		a.refused.countRole(err, p)
		refuseRole(w, r, a.log, p, err, a.refuse)
		return
	}
	serveCredentials(w, r, rl)
}

// refuseRole answers a roleFor refusal: peer_not_allowed as the endpoint
// words it (refuse), others in the API's error shape; a refused workload is
// logged and keeps no connection.
func refuseRole(w http.ResponseWriter, r *http.Request, log *slog.Logger, p *Peer, err error, refuse func(http.ResponseWriter, *http.Request, *Peer)) {
	rf, ok := err.(*refusal)
	switch {
	case !ok:
		writeError(w, http.StatusInternalServerError, "internal", err.Error())
	case rf.Code == "peer_not_allowed":
		refuse(w, r, p)
	default:
		if rf.Status == http.StatusForbidden && p != nil {
			log.Warn("refused a workload a role it is not mapped to", "uid", p.UID, "unit", p.Unit, "path", r.URL.Path)
			w.Header().Set("Connection", "close")
		}
		writeError(w, rf.Status, rf.Code, rf.Message)
	}
}

// serveCredentials answers one role's credentials, or 503 with Retry-After
// when there are no valid ones yet: never an expired credential.
func serveCredentials(w http.ResponseWriter, r *http.Request, rl *role) {
	c, err := rl.ref.Retrieve(r.Context())
	if err != nil {
		retry := 5 * time.Second
		if d := rl.retryAfter(); d > 0 {
			retry = d
		}
		w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(retry.Seconds()))))
		writeError(w, http.StatusServiceUnavailable, "no_credentials",
			"no valid credentials for role "+strconv.Quote(rl.name)+" yet: "+err.Error())
		return
	}
	a := rl.encoded(c)
	h := w.Header()
	h["Cache-Control"] = headerNoStore
	h["Content-Type"] = headerJSON
	if a.length != nil {
		h["Content-Length"] = a.length
	}
	w.Write(a.body)
}

func toJSON(c aws.Credentials) Credentials {
	exp := c.Expires
	if !c.CanExpire {
		// Credentials that do not expire (a custom source may hand such
		// out) still need an Expiration: SDKs read a zero time as expired.
		// Ask them back within the advisory window's default.
		exp = time.Now().Add(credprovider.DefaultAdvisoryWindow)
	}
	return Credentials{
		AccessKeyID:     c.AccessKeyID,
		SecretAccessKey: c.SecretAccessKey,
		Token:           c.SessionToken,
		Expiration:      exp.UTC().Format(time.RFC3339),
	}
}

// getOnly answers 405, in the API's error shape, to any method but GET (and
// HEAD) on paths that GET patterns serve: the catch-all "/" would otherwise
// answer 404.
func getOnly(mux *http.ServeMux, paths ...string) {
	for _, p := range paths {
		mux.HandleFunc(p, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Allow", "GET, HEAD")
			writeError(w, http.StatusMethodNotAllowed, "method_not_allowed", r.Method+" is not allowed on "+r.URL.Path+"; use GET")
		})
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"code":"internal","message":"cannot encode the answer"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)+1))
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}

// writeError answers with the API's one error shape. Answers that may
// succeed later carry a Retry-After, 5 s unless the caller set one.
func writeError(w http.ResponseWriter, status int, code, msg string) {
	if (status == http.StatusServiceUnavailable || status == http.StatusInsufficientStorage) && w.Header().Get("Retry-After") == "" {
		w.Header().Set("Retry-After", "5")
	}
	writeJSON(w, status, apiError{Code: code, Message: msg})
}

// containerAPI is the optional loopback endpoint that AWS SDKs reach through
// AWS_CONTAINER_CREDENTIALS_FULL_URI and AWS_CONTAINER_AUTHORIZATION_TOKEN.
type containerAPI struct {
	// roleFor decides which credentials a peer gets (workload.go).
	roleFor func(*Peer, string) (*role, error)
	// allow is the global allow list, applied to the owner of the TCP peer
	// (see tcpPeer) as the socket applies it to its peers.
	allow func() AllowList
	token []byte
	log   *slog.Logger
	// refused counts the peers this endpoint refuses.
	refused *refusalCounts
}

func (c *containerAPI) routes() http.Handler {
	mux := http.NewServeMux()
	device := func(w http.ResponseWriter, r *http.Request) {
		c.serve(w, r, "")
	}
	// The Greengrass Token Exchange Service path, so components written for
	// Greengrass find their credentials here too.
	// Exactly that path: anything under it is not found, as with Greengrass.
	mux.HandleFunc("GET /2016-11-01/credentialprovider/{$}", device)
	mux.HandleFunc("GET /2016-11-01/credentialprovider", device)
	mux.HandleFunc("GET /v1/credentials", device)
	mux.HandleFunc("GET /v1/credentials/{role}", func(w http.ResponseWriter, r *http.Request) {
		c.serve(w, r, r.PathValue("role"))
	})
	getOnly(mux, "/2016-11-01/credentialprovider/{$}", "/2016-11-01/credentialprovider", "/v1/credentials", "/v1/credentials/{role}")
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "not_found", "no such endpoint: "+r.URL.Path)
	})
	return c.guard(mux)
}

// guard refuses anything that did not come straight from a local program:
// a forwarded request, a Host that is not loopback (DNS rebinding) or a
// missing or wrong token.
func (c *containerAPI) guard(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if refuseIndirect(w, r, c.log, c.refused, "container endpoint") {
			return
		}
		got := r.Header.Get("Authorization")
		got = strings.TrimPrefix(got, "Bearer ")
		if subtle.ConstantTimeCompare([]byte(got), c.token) != 1 {
			c.refused.count(refusedBadToken, nil)
			c.log.Warn("container endpoint refused a request without the right token", "remote", r.RemoteAddr)
			w.Header().Set("Connection", "close")
			writeError(w, http.StatusUnauthorized, "bad_token",
				"missing or wrong Authorization token; set AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE to serve.token_file")
			return
		}
		if p := peerFrom(r.Context()); c.allow != nil && !c.allow().Allows(p) {
			c.refused.count(refusedNotAllowed, p)
			c.refusePeer(w, r, p)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// serve serves the role name ("" for the peer's default) to the peer, as
// roleFor decides.
func (c *containerAPI) serve(w http.ResponseWriter, r *http.Request, name string) {
	p := peerFrom(r.Context())
	rl, err := c.roleFor(p, name)
	if err != nil {
		c.refused.countRole(err, p)
		refuseRole(w, r, c.log, p, err, c.refusePeer)
		return
	}
	serveCredentials(w, r, rl)
}

// refusePeer answers 403 to a TCP peer whose owner is outside an allow list,
// or unknown while one applies.
func (c *containerAPI) refusePeer(w http.ResponseWriter, r *http.Request, p *Peer) {
	c.log.Warn("container endpoint refused a local peer", "uid", peerUID(p), "remote", r.RemoteAddr, "path", r.URL.Path)
	w.Header().Set("Connection", "close")
	writeError(w, http.StatusForbidden, "peer_not_allowed", refusedMessage(p))
}

// refuseIndirect answers 403, and returns true, to a request that did not
// come straight from a local program: a forwarded one, or one whose Host is
// neither loopback nor the address the endpoint listens on (DNS
// rebinding). what names the endpoint in the log.
func refuseIndirect(w http.ResponseWriter, r *http.Request, log *slog.Logger, refused *refusalCounts, what string) bool {
	// The keys are canonical: indexing the map spares canonicalising them
	// on every request.
	if len(r.Header["X-Forwarded-For"]) > 0 || len(r.Header["Forwarded"]) > 0 {
		refused.count(refusedForwarded, nil)
		log.Warn(what+" refused a forwarded request", "remote", r.RemoteAddr)
		w.Header().Set("Connection", "close")
		writeError(w, http.StatusForbidden, "forwarded", "forwarded requests are refused; call the endpoint directly from this device")
		return true
	}
	if !loopbackHost(r.Host) && !listenHost(r) {
		refused.count(refusedBadHost, nil)
		log.Warn(what+" refused a non-loopback Host", "remote", r.RemoteAddr)
		w.Header().Set("Connection", "close")
		writeError(w, http.StatusForbidden, "bad_host", "the Host header must be a loopback address (127.0.0.1, ::1 or localhost)")
		return true
	}
	return false
}

// listenHost reports whether r's Host is the address r reached the
// endpoint at (an address on the loopback interface, like 169.254.169.254).
func listenHost(r *http.Request) bool {
	local, ok := r.Context().Value(http.LocalAddrContextKey).(*net.TCPAddr)
	if !ok {
		return false
	}
	ip, ok := hostAddr(r.Host)
	return ok && ip == local.AddrPort().Addr().Unmap()
}

func loopbackHost(hostport string) bool {
	host := hostOf(hostport)
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip, ok := hostAddr(hostport)
	return ok && ip.IsLoopback()
}

// hostAddr is the IP address hostport names, if it is one (without a zone).
func hostAddr(hostport string) (netip.Addr, bool) {
	ip, err := netip.ParseAddr(hostOf(hostport))
	if err != nil || ip.Zone() != "" {
		return netip.Addr{}, false
	}
	return ip.Unmap(), true
}

// hostOf is the host of a Host header: without its port and brackets.
// netip, unlike net.ParseIP, parses it without allocating.
func hostOf(hostport string) string {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	return strings.Trim(host, "[]")
}

// newHTTPServer returns a server with the limits a daemon needs against slow
// or malformed clients.
func newHTTPServer(h http.Handler, log *slog.Logger) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    16 << 10,
		ConnContext:       connContext,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
}
