package agent

import (
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/tetherd/tether/credprovider"
	"github.com/tetherd/tether/mqtt"
	"github.com/tetherd/tether/platform/openmetrics"
	"github.com/tetherd/tether/store"
)

// GET /v1/metrics: the agent's state in the Prometheus text format, or
// OpenMetrics when the scraper asks for it. docs/metrics.md lists every
// metric. The packages that own a thing count it (credprovider's
// Refresher, mqtt's Session, store's Outbox) and expose a snapshot; this
// file only reads the snapshots at scrape time, so nothing here runs on the
// credentials path.

// refusalReason is why a local endpoint refused a peer: a bounded set, the
// label of tether_peers_refused_total.
type refusalReason int

const (
	// refusedNotAllowed: the peer is outside serve.allow_uids/allow_gids.
	refusedNotAllowed refusalReason = iota
	// refusedRoleNotAllowed: outside the allow lists of the role it asked for.
	refusedRoleNotAllowed
	// refusedWorkloadRole: a [[workload]]'s program asked for another role
	// than its own.
	refusedWorkloadRole
	// refusedUnknownPeer: the peer's owner could not be read (SO_PEERCRED,
	// sock_diag) while an allow list applies.
	refusedUnknownPeer
	// refusedOverLimit: a connection over the per-uid or total limit.
	refusedOverLimit
	// refusedForwarded, refusedBadHost, refusedBadToken: the container
	// endpoint's guard (a forwarded request, a Host that is not loopback,
	// a missing or wrong token).
	refusedForwarded
	refusedBadHost
	refusedBadToken
	// refusedNotLocal: the IMDS endpoint's peer is on another host.
	refusedNotLocal
	numRefusals
)

var refusalNames = [numRefusals]string{"not_allowed", "role_not_allowed", "workload_role", "unknown_peer", "over_limit", "forwarded", "bad_host", "bad_token", "not_local"}

// refusalCounts counts one endpoint's refusals; it lives in the daemon, so
// reloads do not reset it.
type refusalCounts [numRefusals]atomic.Uint64

// count records a refusal of p (nil when its owner is unknown) for r; a
// nil c counts nothing.
func (c *refusalCounts) count(r refusalReason, p *Peer) {
	if c == nil {
		return
	}
	if p == nil && (r == refusedNotAllowed || r == refusedRoleNotAllowed) {
		r = refusedUnknownPeer
	}
	c[r].Add(1)
}

// countRole records a refusal of roleFor (workload.go), if err is one of a
// peer; an unknown role is the request's mistake, not a refused peer.
func (c *refusalCounts) countRole(err error, p *Peer) {
	rf, ok := err.(*refusal)
	switch {
	case !ok:
	case rf.Code == "peer_not_allowed":
		c.count(refusedRoleNotAllowed, p)
	case rf.Code == "workload_role":
		c.count(refusedWorkloadRole, p)
	}
}

// refusals are the refusal counts of the local endpoints.
type refusals struct {
	socket, container, imds refusalCounts
}

// The families of each role (from its Refresher's Status), of the device
// certificate and of the local endpoints' refusals.
var (
	famRoleValid = openmetrics.Family{Name: "tether_credentials_valid", Type: openmetrics.TypeGauge,
		Help: "1 while the role has credentials it may serve, 0 otherwise"}
	famRoleExpiry = openmetrics.Family{Name: "tether_credentials_expiry_seconds", Type: openmetrics.TypeGauge, Unit: "seconds",
		Help: "seconds until the role's current credentials expire (as issued); absent while it has none"}
	famRoleLastSuccess = openmetrics.Family{Name: "tether_credentials_last_success_timestamp_seconds", Type: openmetrics.TypeGauge, Unit: "seconds",
		Help: "Unix time of the role's last successful refresh; absent before the first"}
	famRoleRefreshes = openmetrics.Family{Name: "tether_credentials_refreshes", Type: openmetrics.TypeCounter,
		Help: "successful credential refreshes of the role"}
	famRoleFailures = openmetrics.Family{Name: "tether_credentials_refresh_failures", Type: openmetrics.TypeCounter,
		Help: "failed credential refresh attempts of the role, by reason"}
	famRoleConsecutive = openmetrics.Family{Name: "tether_credentials_consecutive_failures", Type: openmetrics.TypeGauge,
		Help: "failed attempts of the role since its last success"}
	famCertExpiry = openmetrics.Family{Name: "tether_certificate_expiry_seconds", Type: openmetrics.TypeGauge, Unit: "seconds",
		Help: "seconds until the device certificate's notAfter (negative once expired)"}
	famRefused = openmetrics.Family{Name: "tether_peers_refused", Type: openmetrics.TypeCounter,
		Help: "requests and connections the local endpoints refused, by endpoint and reason"}
)

// The MQTT session's and its outbox's families.
var (
	famMQTTConnected = openmetrics.Family{Name: "tether_mqtt_connected", Type: openmetrics.TypeGauge,
		Help: "1 while the MQTT session is connected"}
	famMQTTConnects = openmetrics.Family{Name: "tether_mqtt_connects", Type: openmetrics.TypeCounter,
		Help: "MQTT connections accepted by the broker"}
	famMQTTReconnects = openmetrics.Family{Name: "tether_mqtt_reconnects", Type: openmetrics.TypeCounter,
		Help: "MQTT connections after the session's first"}
	famMQTTAttempts = openmetrics.Family{Name: "tether_mqtt_connect_failures", Type: openmetrics.TypeCounter,
		Help: "failed MQTT connection attempts"}
	famMQTTInflight = openmetrics.Family{Name: "tether_mqtt_inflight_messages", Type: openmetrics.TypeGauge,
		Help: "QoS 1 messages sent and not yet acknowledged"}
	famMQTTDropped = openmetrics.Family{Name: "tether_mqtt_subscriber_dropped_messages", Type: openmetrics.TypeCounter,
		Help: "messages dropped for local subscribers that read too slowly"}
	famMQTTLatency = openmetrics.Family{Name: "tether_mqtt_publish_latency_seconds", Type: openmetrics.TypeHistogram, Unit: "seconds",
		Help: "time from a message's acceptance (durably queued) to the broker's acknowledgement, offline time included"}
	famOutboxDepth = openmetrics.Family{Name: "tether_mqtt_outbox_messages", Type: openmetrics.TypeGauge,
		Help: "messages in the durable outbox, not yet acknowledged by the broker"}
	famOutboxBytes = openmetrics.Family{Name: "tether_mqtt_outbox_bytes", Type: openmetrics.TypeGauge, Unit: "bytes",
		Help: "stored size of the messages in the outbox"}
	famOutboxOldest = openmetrics.Family{Name: "tether_mqtt_outbox_oldest_age_seconds", Type: openmetrics.TypeGauge, Unit: "seconds",
		Help: "age of the oldest message in the outbox; 0 when it is empty"}
	famOutboxRefused = openmetrics.Family{Name: "tether_mqtt_outbox_full_refusals", Type: openmetrics.TypeCounter,
		Help: "publishes refused because the outbox was full"}
	famOutboxLog = openmetrics.Family{Name: "tether_mqtt_outbox_log", Type: openmetrics.TypeGauge,
		Help: "1 while the outbox commits to its log; 0 when every commit is a state-file transaction (slower: see the agent's log)"}
	famDeadLetters = openmetrics.Family{Name: "tether_mqtt_dead_letters", Type: openmetrics.TypeGauge,
		Help: "messages kept in the dead letters (refused by the broker or by the client)"}
	famDeadLettered = openmetrics.Family{Name: "tether_mqtt_dead_lettered", Type: openmetrics.TypeCounter,
		Help: "messages moved to the dead letters since the agent started"}
)

// The process's families, under the names the Prometheus clients use, so
// that existing dashboards find them.
var (
	famBuild = openmetrics.Family{Name: "tether_build", Type: openmetrics.TypeInfo,
		Help: "the running tether's version"}
	famStart = openmetrics.Family{Name: "process_start_time_seconds", Type: openmetrics.TypeGauge, Unit: "seconds",
		Help: "Unix time the agent started"}
	famRSS = openmetrics.Family{Name: "process_resident_memory_bytes", Type: openmetrics.TypeGauge, Unit: "bytes",
		Help: "resident set size of the agent (anonymous and file-backed pages)"}
	famVirtual = openmetrics.Family{Name: "process_virtual_memory_bytes", Type: openmetrics.TypeGauge, Unit: "bytes",
		Help: "virtual memory size of the agent"}
	famHeap = openmetrics.Family{Name: "tether_go_heap_objects_bytes", Type: openmetrics.TypeGauge, Unit: "bytes",
		Help: "bytes of Go heap objects, live or not yet swept"}
	famMapped = openmetrics.Family{Name: "tether_go_mapped_bytes", Type: openmetrics.TypeGauge, Unit: "bytes",
		Help: "memory the Go runtime holds from the kernel: heap, stacks, metadata"}
	famGoroutines = openmetrics.Family{Name: "go_goroutines", Type: openmetrics.TypeGauge,
		Help: "number of goroutines"}
)

// metrics writes the agent's metrics in f.
func (a *Agent) metrics(f openmetrics.Format) ([]byte, error) {
	now := time.Now()
	e := openmetrics.NewEncoder(f)

	e.Begin(famBuild)
	e.Sample(1, openmetrics.Label{Name: "version", Value: a.opts.Version})

	a.roleMetrics(e, now)

	e.Begin(famCertExpiry)
	if leaf := a.id.Leaf(); leaf != nil {
		e.Sample(leaf.NotAfter.Sub(now).Seconds())
	}

	a.mqttMetrics(e, now)

	e.Begin(famRefused)
	for _, ep := range []struct {
		name    string
		on      bool
		c       *refusalCounts
		reasons []refusalReason
	}{
		{"socket", true, &a.d.refused.socket, []refusalReason{refusedNotAllowed, refusedRoleNotAllowed, refusedWorkloadRole, refusedUnknownPeer, refusedOverLimit}},
		{"container", a.container != nil, &a.d.refused.container, []refusalReason{refusedNotAllowed, refusedRoleNotAllowed, refusedWorkloadRole, refusedUnknownPeer, refusedOverLimit,
			refusedForwarded, refusedBadHost, refusedBadToken}},
		{"imds", a.imds != nil, &a.d.refused.imds, []refusalReason{refusedNotAllowed, refusedRoleNotAllowed, refusedWorkloadRole, refusedUnknownPeer, refusedOverLimit,
			refusedForwarded, refusedBadHost, refusedBadToken, refusedNotLocal}},
	} {
		if !ep.on {
			continue
		}
		for _, r := range ep.reasons {
			e.Sample(float64(ep.c[r].Load()), openmetrics.Label{Name: "endpoint", Value: ep.name}, openmetrics.Label{Name: "reason", Value: refusalNames[r]})
		}
	}

	processMetrics(e, a.started)
	return e.Bytes()
}

func (a *Agent) roleMetrics(e *openmetrics.Encoder, now time.Time) {
	names := make([]string, 0, len(a.roles))
	for n := range a.roles {
		names = append(names, n)
	}
	sort.Strings(names)
	sts := make([]credprovider.Status, len(names))
	for i, n := range names {
		sts[i] = a.roles[n].ref.Status()
	}
	role := func(i int) openmetrics.Label { return openmetrics.Label{Name: "role", Value: names[i]} }

	e.Begin(famRoleValid)
	for i, st := range sts {
		e.Sample(b2f(st.Valid), role(i))
	}
	e.Begin(famRoleExpiry)
	for i, st := range sts {
		if st.Valid && !st.Expires.IsZero() {
			e.Sample(st.Expires.Sub(now).Seconds(), role(i))
		}
	}
	e.Begin(famRoleLastSuccess)
	for i, st := range sts {
		if !st.LastRefresh.IsZero() {
			e.Sample(float64(st.LastRefresh.UnixMilli())/1e3, role(i))
		}
	}
	e.Begin(famRoleRefreshes)
	for i, st := range sts {
		e.Sample(float64(st.Refreshes), role(i))
	}
	e.Begin(famRoleFailures)
	for i, st := range sts {
		for _, r := range credprovider.FailureReasons() {
			e.Sample(float64(st.FailuresByReason[r]), role(i), openmetrics.Label{Name: "reason", Value: r.String()})
		}
	}
	e.Begin(famRoleConsecutive)
	for i, st := range sts {
		e.Sample(float64(st.Failures), role(i))
	}
}

// mqttMetrics writes the session's and the outbox's families, when [mqtt]
// is configured. While the session restarts, the outbox is still read.
func (a *Agent) mqttMetrics(e *openmetrics.Encoder, now time.Time) {
	if a.outbox == nil {
		return
	}
	s := a.session()
	if s == nil {
		e.Begin(famMQTTConnected)
		e.Sample(0)
		outboxMetrics(e, a.outbox.Stats(), now)
		return
	}
	st := s.Status()
	e.Begin(famMQTTConnected)
	e.Sample(b2f(st.State == mqtt.StateConnected))
	e.Begin(famMQTTConnects)
	e.Sample(float64(st.Connects))
	e.Begin(famMQTTReconnects)
	e.Sample(float64(st.Reconnects))
	e.Begin(famMQTTAttempts)
	e.Sample(float64(st.Attempts))
	e.Begin(famMQTTInflight)
	e.Sample(float64(st.Inflight))
	e.Begin(famMQTTDropped)
	e.Sample(float64(st.Dropped))
	e.Begin(famMQTTLatency)
	e.Histogram(s.PublishLatency())
	outboxMetrics(e, st.Outbox, now)
}

func outboxMetrics(e *openmetrics.Encoder, ob store.OutboxStats, now time.Time) {
	e.Begin(famOutboxDepth)
	e.Sample(float64(ob.Depth))
	e.Begin(famOutboxBytes)
	e.Sample(float64(ob.Bytes))
	e.Begin(famOutboxOldest)
	age := 0.0
	if !ob.Oldest.IsZero() {
		age = max(0, now.Sub(ob.Oldest).Seconds())
	}
	e.Sample(age)
	e.Begin(famOutboxRefused)
	e.Sample(float64(ob.Refused))
	e.Begin(famOutboxLog)
	e.Sample(b2f(ob.Log))
	e.Begin(famDeadLetters)
	e.Sample(float64(ob.DeadLetters))
	e.Begin(famDeadLettered)
	e.Sample(float64(ob.DeadLettered))
}

// processMetrics writes the process's own figures: start time, memory as
// the kernel counts it (/proc/self/statm) and as the Go runtime does.
func processMetrics(e *openmetrics.Encoder, started time.Time) {
	e.Begin(famStart)
	e.Sample(float64(started.UnixMilli()) / 1e3)
	if b, err := os.ReadFile("/proc/self/statm"); err == nil {
		// size resident shared text lib data dt, in pages.
		if f := strings.Fields(string(b)); len(f) >= 2 {
			page := float64(os.Getpagesize())
			if v, err := strconv.ParseUint(f[0], 10, 64); err == nil {
				e.Begin(famVirtual)
				e.Sample(float64(v) * page)
			}
			if v, err := strconv.ParseUint(f[1], 10, 64); err == nil {
				e.Begin(famRSS)
				e.Sample(float64(v) * page)
			}
		}
	}
	m := memoryStatus()
	e.Begin(famHeap)
	e.Sample(float64(m.HeapInUse))
	e.Begin(famMapped)
	e.Sample(float64(m.Mapped))
	e.Begin(famGoroutines)
	e.Sample(float64(m.Goroutines))
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// serveMetrics answers GET /v1/metrics in the format the scraper asks for.
func serveMetrics(w http.ResponseWriter, r *http.Request, metrics func(openmetrics.Format) ([]byte, error)) {
	if metrics == nil {
		writeError(w, http.StatusNotFound, "not_found", "this endpoint has no metrics")
		return
	}
	f := openmetrics.Negotiate(r.Header.Get("Accept"))
	b, err := metrics(f)
	if err != nil {
		writeError(w, http.StatusInternalServerError, "internal", "cannot write the metrics: "+err.Error())
		return
	}
	h := w.Header()
	h.Set("Content-Type", f.ContentType())
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Length", strconv.Itoa(len(b)))
	w.Write(b)
}
