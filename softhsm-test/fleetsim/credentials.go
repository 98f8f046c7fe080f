package fleetsim

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/tetherd/tether/credprovider"
	"github.com/tetherd/tether/credprovider/clocktest"
)

// CredentialsOptions describes a fleet fetching from the IoT credentials
// provider.
type CredentialsOptions struct {
	// Agents is the fleet's size.
	Agents int
	// Limit is the provider's requests per second for the account.
	Limit int
	// Lifetime of the credentials issued (the role alias's duration).
	Lifetime time.Duration
	// Outage: the provider fails every request over [OutageStart,
	// OutageStart+OutageLength). Every agent boots at time zero.
	OutageStart, OutageLength time.Duration
	// Length is the simulated time.
	Length time.Duration
	// Refresh is each agent's refresh configuration (Clock, Rand,
	// NotBefore are set by the simulation).
	Refresh credprovider.RefreshOptions
	// Seed makes a run repeatable.
	Seed uint64
}

// device is one simulated agent's view of the provider.
type device struct {
	ep         *Endpoint
	clk        *clocktest.Clock
	lifetime   time.Duration
	serveUntil atomic.Int64 // unix nanoseconds
}

var errOutage = &credprovider.ServiceError{Endpoint: "simulated", RoleAlias: "fleet", StatusCode: http.StatusServiceUnavailable}
var errThrottled = &credprovider.ServiceError{Endpoint: "simulated", RoleAlias: "fleet", StatusCode: http.StatusTooManyRequests}

// Retrieve is the provider's answer to one fetch.
func (d *device) Retrieve(context.Context) (aws.Credentials, error) {
	now := d.clk.Now()
	switch d.ep.Request(now) {
	case Down:
		return aws.Credentials{}, errOutage
	case Refused:
		return aws.Credentials{}, errThrottled
	}
	exp := now.Add(d.lifetime)
	d.serveUntil.Store(exp.Add(-credprovider.DefaultMandatoryWindow).UnixNano())
	return aws.Credentials{AccessKeyID: "ASIASIMULATED", SecretAccessKey: "simulated", SessionToken: "simulated",
		Source: "fleetsim", CanExpire: true, Expires: exp}, nil
}

// RunCredentials simulates the fleet: every agent boots at time zero with
// no credentials, the provider fails during the outage, and the simulation
// ends after Length. It returns the record with the boot and outage
// recoveries and the steady state between them measured.
func RunCredentials(ctx context.Context, o CredentialsOptions) (*Result, error) {
	start := time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)
	clk := clocktest.New(start)
	ep := &Endpoint{Limit: o.Limit, Start: start, OutageStart: o.OutageStart, OutageEnd: o.OutageStart + o.OutageLength}
	devs := make([]*device, o.Agents)
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	for i := range devs {
		d := &device{ep: ep, clk: clk, lifetime: o.Lifetime}
		devs[i] = d
		ro := o.Refresh
		ro.Clock, ro.NotBefore = clk, start.Add(-24*time.Hour)
		ro.Rand = rand.New(rand.NewPCG(o.Seed, uint64(i))).Float64
		r, err := credprovider.NewRefresher(d, ro)
		if err != nil {
			return nil, err
		}
		wg.Go(func() { r.Run(ctx) })
	}
	res := &Result{Name: "credentials", Agents: o.Agents, Limit: o.Limit}
	end := start.Add(o.Length)
	nextSample := start
	for {
		// Every agent has gone to sleep on its next refresh or retry.
		if err := clk.BlockUntil(ctx, o.Agents); err != nil {
			return nil, err
		}
		next, ok := clk.Next()
		if !ok {
			return nil, fmt.Errorf("fleetsim: no agent has a refresh scheduled")
		}
		for !nextSample.After(next) && !nextSample.After(end) {
			valid := 0
			for _, d := range devs {
				if d.serveUntil.Load() > nextSample.UnixNano() {
					valid++
				}
			}
			res.Valid = append(res.Valid, Sample{At: nextSample.Sub(start), Share: float64(valid) / float64(len(devs))})
			nextSample = nextSample.Add(SampleEvery)
		}
		if next.After(end) {
			break
		}
		// Whole seconds: the limit is counted per second anyway, and the
		// fleet's requests of one second are served in a random order.
		clk.Set(next.Truncate(time.Second).Add(time.Second - time.Nanosecond))
	}
	res.Counts = ep.Counts()
	outageEnd := o.OutageStart + o.OutageLength
	res.Phases = []Phase{res.phase("boot, all at once", 0, 0), res.phase(fmt.Sprintf("after a %v outage", o.OutageLength), o.OutageStart, outageEnd)}
	res.Steady = res.steady(o.OutageStart/2, o.OutageStart)
	return res, nil
}
