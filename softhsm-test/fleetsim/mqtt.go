package fleetsim

import (
	"container/heap"
	"math/rand/v2"
	"time"

	"github.com/tetherd/tether/mqtt"
)

// MQTTOptions describes a fleet of MQTT sessions reconnecting after the
// broker went away.
type MQTTOptions struct {
	// Agents is the fleet's size.
	Agents int
	// Limit is the broker's CONNECT requests per second for the account.
	Limit int
	// OutageLength: every session is dropped at time zero and the broker
	// refuses connections until then.
	OutageLength time.Duration
	// Length is the simulated time.
	Length time.Duration
	// MinBackoff and MaxBackoff are the sessions' backoff settings (0: the
	// mqtt package's defaults).
	MinBackoff, MaxBackoff time.Duration
	// Seed makes a run repeatable.
	Seed uint64
}

type attempt struct {
	at    time.Duration
	agent int
}

type attempts []attempt

func (h attempts) Len() int           { return len(h) }
func (h attempts) Less(i, j int) bool { return h[i].at < h[j].at }
func (h attempts) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *attempts) Push(x any)        { *h = append(*h, x.(attempt)) }
func (h *attempts) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// RunMQTT simulates the fleet's reconnects with the session's rule,
// mqtt.ReconnectDelay: each session waits a delay drawn from its backoff,
// attempts, and on failure counts one more consecutive failure.
func RunMQTT(o MQTTOptions) *Result {
	if o.MinBackoff == 0 {
		o.MinBackoff = mqtt.DefaultMinBackoff
	}
	if o.MaxBackoff == 0 {
		o.MaxBackoff = mqtt.DefaultMaxBackoff
	}
	start := time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)
	ep := &Endpoint{Limit: o.Limit, Start: start, OutageStart: 0, OutageEnd: o.OutageLength}
	rng := rand.New(rand.NewPCG(o.Seed, 0x6d717474))
	failures := make([]int, o.Agents)
	h := make(attempts, 0, o.Agents)
	for i := range o.Agents {
		h = append(h, attempt{at: mqtt.ReconnectDelay(o.MinBackoff, o.MaxBackoff, 0, rng), agent: i})
	}
	heap.Init(&h)
	res := &Result{Name: "mqtt", Agents: o.Agents, Limit: o.Limit}
	connected := 0
	nextSample := time.Duration(0)
	for h.Len() > 0 && h[0].at < o.Length {
		a := heap.Pop(&h).(attempt)
		for ; nextSample <= a.at; nextSample += SampleEvery {
			res.Valid = append(res.Valid, Sample{At: nextSample, Share: float64(connected) / float64(o.Agents)})
		}
		if ep.Request(start.Add(a.at)) == Served {
			connected++
			continue
		}
		failures[a.agent]++
		heap.Push(&h, attempt{at: a.at + mqtt.ReconnectDelay(o.MinBackoff, o.MaxBackoff, failures[a.agent], rng), agent: a.agent})
	}
	for ; nextSample <= o.Length; nextSample += SampleEvery {
		res.Valid = append(res.Valid, Sample{At: nextSample, Share: float64(connected) / float64(o.Agents)})
	}
	res.Counts = ep.Counts()
	res.Phases = []Phase{res.phase("after a "+o.OutageLength.String()+" broker outage", 0, o.OutageLength)}
	return res
}
