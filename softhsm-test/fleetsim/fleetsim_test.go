package fleetsim

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tetherd/tether/credprovider"
)

// fleet is the simulated fleet: size and limit, scaled together so that
// the ratio that matters (seconds the limit needs to serve everyone) stays
// that of 100,000 agents at 100 requests per second.
func fleet(agents int) (int, int) { return agents, max(agents/1000, 1) }

// TestCredentialsFleet ensures that a fleet booted at once and cut off for
// two hours recovers within twice what the rate limit allows, without a
// retry storm, and that its refreshes spread out instead of staying in step.
func TestCredentialsFleet(t *testing.T) {
	agents, limit := fleet(2000)
	r, err := RunCredentials(t.Context(), CredentialsOptions{Agents: agents, Limit: limit, Lifetime: time.Hour,
		OutageStart: 6 * time.Hour, OutageLength: 2 * time.Hour, Length: 10 * time.Hour, Seed: 1})
	require.NoError(t, err)
	floor := time.Duration(agents/limit) * time.Second // the limit's own pace
	for _, p := range r.Phases {
		assert.Positive(t, p.To100, "%s: every agent recovers", p.Name)
		assert.Less(t, p.To100, 2*floor, "%s: recovery within twice the limit's pace", p.Name)
		assert.Less(t, float64(p.Requests)/float64(agents), 8.0, "%s: requests per agent", p.Name)
	}
	// Two hours down with a 5-minute backoff cap: about one attempt per
	// 2.5 minutes per agent, no hot loop.
	assert.Less(t, float64(r.Phases[1].OutageRequests)/float64(agents), 60.0)
	// Steady state: one refresh per ~40 minutes per agent, spread evenly.
	assert.Less(t, r.Steady.PeakPerMinute, 2.5*r.Steady.MeanPerMinute, "refreshes stay spread: %+v", r.Steady)
	assert.InDelta(t, float64(agents)/40, r.Steady.MeanPerMinute, float64(agents)/40*0.3)
}

// TestMQTTFleet ensures that sessions reconnecting after a broker outage
// come back within twice the connect limit's pace.
func TestMQTTFleet(t *testing.T) {
	agents, limit := 2000, 10
	r := RunMQTT(MQTTOptions{Agents: agents, Limit: limit, OutageLength: 30 * time.Minute, Length: 2 * time.Hour, Seed: 1})
	p := r.Phases[0]
	floor := time.Duration(agents/limit) * time.Second
	assert.Positive(t, p.To100)
	assert.Less(t, p.To100, 2*floor)
	assert.Less(t, float64(p.Requests)/float64(agents), 4.0)
}

// BenchmarkFleet simulates 100,000 agents (TETHER_FLEET_AGENTS) against a
// credentials provider limited to 100 requests per second and an MQTT broker
// limited to 500 connects per second, and writes the table and the plot
// beside the bench output (TETHER_BENCH_DIR, default the temporary
// directory). The baseline of each recovery is the limit's own pace: agents
// divided by the limit.
func BenchmarkFleet(b *testing.B) {
	agents := 100_000
	if s := os.Getenv("TETHER_FLEET_AGENTS"); s != "" {
		agents, _ = strconv.Atoi(s)
	}
	dir := os.Getenv("TETHER_BENCH_DIR")
	if dir == "" {
		dir = b.TempDir()
	}
	credLimit, mqttLimit := max(agents/1000, 1), max(agents/200, 1)
	for b.Loop() {
		cr, err := RunCredentials(b.Context(), CredentialsOptions{Agents: agents, Limit: credLimit, Lifetime: time.Hour,
			OutageStart: 6 * time.Hour, OutageLength: 2 * time.Hour, Length: 10 * time.Hour,
			Refresh: credprovider.RefreshOptions{}, Seed: 1})
		if err != nil {
			b.Fatal(err)
		}
		mr := RunMQTT(MQTTOptions{Agents: agents, Limit: mqttLimit, OutageLength: 2 * time.Hour, Length: 4 * time.Hour, Seed: 1})
		for _, x := range []struct {
			name   string
			r      *Result
			limit  int
			phases []string
		}{{"credentials", cr, credLimit, []string{"boot", "outage"}}, {"mqtt", mr, mqttLimit, []string{"outage"}}} {
			floor := float64(agents) / float64(x.limit)
			for i, p := range x.r.Phases {
				tag := x.name + "-" + x.phases[i]
				b.ReportMetric(float64(p.PeakRate)/float64(x.limit), tag+"-peak/limit")
				b.ReportMetric(100*p.RefusedShare, tag+"-refused-%")
				b.ReportMetric(p.To99.Seconds()/floor, tag+"-to99/floor")
				b.ReportMetric(p.To100.Seconds()/floor, tag+"-to100/floor")
				b.ReportMetric(float64(p.Requests)/float64(agents), tag+"-requests/agent")
				b.ReportMetric(float64(p.OutageRequests)/float64(agents), tag+"-outage-requests/agent")
			}
		}
		b.ReportMetric(cr.Steady.PeakPerMinute/cr.Steady.MeanPerMinute, "steady-peak/mean-per-minute")
		b.ReportMetric(float64(cr.Steady.PeakRate)/float64(credLimit), "steady-peak/limit")
		table := Table(cr, mr)
		if err := os.WriteFile(filepath.Join(dir, "fleet.md"), []byte(table), 0o644); err != nil {
			b.Fatal(err)
		}
		if err := Plot(filepath.Join(dir, "fleet.png"), cr, mr); err != nil {
			b.Fatal(err)
		}
		b.Logf("fleet simulation (%s/fleet.png):\n%s", dir, table)
	}
}
