// Package fleetsim simulates a fleet of tether agents against AWS endpoints
// that limit the account's request rate, on a fake clock, so that `make
// bench` can show what 100,000 gateways do to the IoT credentials provider
// and to AWS IoT Core after an outage without sleeping through one.
//
// The credentials side runs the real refresh engine: one
// credprovider.Refresher per simulated agent, all on one clocktest.Clock,
// each fetching from a model of the credentials provider that answers 429
// above its per-second limit and 503 during an outage. The MQTT side replays
// the session's reconnect rule (mqtt.ReconnectDelay) against a model of the
// broker's connect-rate limit.
package fleetsim

import (
	"fmt"
	"slices"
	"sync"
	"time"
)

// Outcome is how the modelled endpoint answered one request.
type Outcome int

const (
	// Served: the request was within the limit and the endpoint was up.
	Served Outcome = iota
	// Refused: above the per-second limit (HTTP 429, or a refused CONNECT).
	Refused
	// Down: during the outage.
	Down
)

// Endpoint models an account-wide request-rate limit: in each second of
// simulated time the first Limit requests are served and the rest refused;
// during the outage every request fails. It counts every answer per second.
type Endpoint struct {
	// Limit is the requests per second served; 0: no limit.
	Limit int
	// OutageStart and OutageEnd bound the outage, as offsets from Start.
	OutageStart, OutageEnd time.Duration
	// Start is the simulation's time zero.
	Start time.Time

	mu     sync.Mutex
	counts [][3]int // per second: served, refused, down
}

// Request answers one request made at now.
func (e *Endpoint) Request(now time.Time) Outcome {
	at := now.Sub(e.Start)
	sec := int(at / time.Second)
	e.mu.Lock()
	defer e.mu.Unlock()
	for len(e.counts) <= sec {
		e.counts = append(e.counts, [3]int{})
	}
	c := &e.counts[sec]
	switch {
	case at >= e.OutageStart && at < e.OutageEnd:
		c[Down]++
		return Down
	case e.Limit > 0 && c[Served] >= e.Limit:
		c[Refused]++
		return Refused
	}
	c[Served]++
	return Served
}

// Counts returns the per-second counts of served, refused and failed
// requests.
func (e *Endpoint) Counts() [][3]int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.counts)
}

// Sample is the share of the fleet holding what it needs at one moment.
type Sample struct {
	At    time.Duration
	Share float64
}

// Result is one simulation's record and its figures.
type Result struct {
	Name   string
	Agents int
	Limit  int
	// Counts is per second: served, refused, down.
	Counts [][3]int
	// Valid is the share of agents with valid credentials (or connected
	// sessions), sampled every SampleEvery.
	Valid []Sample
	// Phases are the recoveries measured (after boot, after the outage).
	Phases []Phase
	// Steady describes the refreshes between boot and the outage.
	Steady Steady
}

// Phase is the recovery from one event in which the whole fleet lost what it
// needed (a simultaneous boot, the end of an outage).
type Phase struct {
	Name string
	// From is when the endpoint could serve again.
	From time.Duration
	// PeakRate is the highest requests per second (served + refused) after From.
	PeakRate int
	// Requests and RefusedShare count from From until every agent recovered.
	Requests     int
	RefusedShare float64
	// To99 and To100 are the times from From until 99% and all agents
	// recovered; negative when they did not within the simulation.
	To99, To100 time.Duration
	// OutageRequests counts the requests made during the outage itself.
	OutageRequests int
}

// Steady summarises the refresh rate over a stretch of normal operation.
type Steady struct {
	From, To time.Duration
	// MeanPerMinute and PeakPerMinute are refreshes per minute.
	MeanPerMinute, PeakPerMinute float64
	// PeakRate is the highest requests in one second.
	PeakRate int
}

// SampleEvery is the interval of Result.Valid.
const SampleEvery = 10 * time.Second

// phase measures a recovery starting at from, with the outage's own
// requests counted over [outageFrom, from).
func (r *Result) phase(name string, outageFrom, from time.Duration) Phase {
	p := Phase{Name: name, From: from, To99: -1, To100: -1}
	for _, s := range r.Valid {
		if s.At < from {
			continue
		}
		if p.To99 < 0 && s.Share >= 0.99 {
			p.To99 = s.At - from
		}
		if s.Share >= 1 {
			p.To100 = s.At - from
			break
		}
	}
	end := len(r.Counts)
	if p.To100 >= 0 {
		end = min(end, int((from+p.To100)/time.Second)+1)
	}
	refused := 0
	for sec := int(outageFrom / time.Second); sec < end && sec < len(r.Counts); sec++ {
		c := r.Counts[sec]
		if time.Duration(sec)*time.Second < from {
			p.OutageRequests += c[Served] + c[Refused] + c[Down]
			continue
		}
		n := c[Served] + c[Refused] + c[Down]
		p.Requests += n
		refused += c[Refused]
		p.PeakRate = max(p.PeakRate, n)
	}
	if p.Requests > 0 {
		p.RefusedShare = float64(refused) / float64(p.Requests)
	}
	return p
}

// steady measures the served requests per minute over [from, to).
func (r *Result) steady(from, to time.Duration) Steady {
	s := Steady{From: from, To: to}
	var minutes []int
	for sec := int(from / time.Second); sec < int(to/time.Second) && sec < len(r.Counts); sec++ {
		m := (sec - int(from/time.Second)) / 60
		for len(minutes) <= m {
			minutes = append(minutes, 0)
		}
		c := r.Counts[sec]
		minutes[m] += c[Served] + c[Refused]
		s.PeakRate = max(s.PeakRate, c[Served]+c[Refused])
	}
	if len(minutes) == 0 {
		return s
	}
	total := 0
	for _, n := range minutes {
		total += n
		s.PeakPerMinute = max(s.PeakPerMinute, float64(n))
	}
	s.MeanPerMinute = float64(total) / float64(len(minutes))
	return s
}

// Table formats results as a Markdown table, one row per phase.
func Table(rs ...*Result) string {
	out := "| simulation | agents | limit/s | phase | peak req/s | peak/limit | requests | refused | to 99% | to 100% | requests during outage |\n" +
		"|---|---|---|---|---|---|---|---|---|---|---|\n"
	for _, r := range rs {
		for _, p := range r.Phases {
			out += fmt.Sprintf("| %s | %d | %d | %s | %d | %.1f | %d (%.2f/agent) | %.1f%% | %s | %s | %d (%.1f/agent) |\n",
				r.Name, r.Agents, r.Limit, p.Name, p.PeakRate, float64(p.PeakRate)/float64(max(r.Limit, 1)),
				p.Requests, float64(p.Requests)/float64(r.Agents), 100*p.RefusedShare,
				dur(p.To99), dur(p.To100), p.OutageRequests, float64(p.OutageRequests)/float64(r.Agents))
		}
	}
	return out
}

func dur(d time.Duration) string {
	if d < 0 {
		return "not reached"
	}
	return d.Round(time.Second).String()
}
