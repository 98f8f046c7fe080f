package credprovider_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tetherd/tether/credprovider"
	"github.com/tetherd/tether/credprovider/ststest"
)

// roleCache is a ConfigCache of roles "role-a" and "role-b" assumed from an
// IAM user at srv, counting the providers it builds.
func roleCache(t testing.TB, srv *ststest.Server, max int, built *atomic.Int64) *credprovider.ConfigCache {
	user := srv.NewUser("ops")
	// One HTTP client for every role's STS calls and every service client,
	// as a program with hundreds of roles should have.
	hc := awshttp.NewBuildableClient()
	creds := credprovider.AssumeRoleCredentials(static(user), func(role string) (credprovider.AssumeRoleOptions, error) {
		if built != nil {
			built.Add(1)
		}
		if role == "broken" {
			return credprovider.AssumeRoleOptions{}, errors.New("no such role")
		}
		so := stsOpts(srv)
		so.HTTPClient = hc
		return credprovider.AssumeRoleOptions{STSOptions: so, RoleARN: "arn:aws:iam::123456789012:role/" + role, SessionName: "cache"}, nil
	}, credprovider.RefreshOptions{Mode: credprovider.Deferred})
	c, err := credprovider.NewConfigCache(credprovider.ConfigCacheOptions{MaxEntries: max, Credentials: creds,
		Base: aws.Config{BaseEndpoint: aws.String(srv.URL), HTTPClient: hc}})
	require.NoError(t, err)
	return c
}

// TestConfigCacheLRU ensures that the per-role configuration cache keeps at most MaxEntries, evicting the least recently used.
func TestConfigCacheLRU(t *testing.T) {
	srv := stsServer(t)
	var built atomic.Int64
	c := roleCache(t, srv, 2, &built)
	ctx := t.Context()
	a1, err := c.Config(ctx, credprovider.ConfigKey{Role: "role-a", Region: "eu-west-1"})
	require.NoError(t, err)
	assert.Equal(t, "eu-west-1", a1.Region)
	a2, err := c.Config(ctx, credprovider.ConfigKey{Role: "role-a", Region: "us-east-1"})
	require.NoError(t, err)
	assert.Same(t, a1.Credentials, a2.Credentials, "one provider per role, whatever the region")
	assert.EqualValues(t, 1, built.Load())

	// The credentials of both regions come from one AssumeRole.
	_, err = a1.Credentials.Retrieve(ctx)
	require.NoError(t, err)
	_, err = a2.Credentials.Retrieve(ctx)
	require.NoError(t, err)
	assert.Len(t, srv.CallsFor(roleA), 1)

	_, err = c.Config(ctx, credprovider.ConfigKey{Role: "role-a", Region: "eu-west-1"}) // most recent now
	require.NoError(t, err)
	_, err = c.Config(ctx, credprovider.ConfigKey{Role: "role-b", Region: "eu-west-1"}) // evicts role-a/us-east-1
	require.NoError(t, err)
	assert.Equal(t, 2, c.Len())
	assert.EqualValues(t, 3, c.Builds())
	_, err = c.Config(ctx, credprovider.ConfigKey{Role: "role-a", Region: "eu-west-1"})
	require.NoError(t, err)
	assert.EqualValues(t, 3, c.Builds(), "still cached")
	_, err = c.Config(ctx, credprovider.ConfigKey{Role: "role-a", Region: "us-east-1"})
	require.NoError(t, err)
	assert.EqualValues(t, 4, c.Builds(), "was evicted")

	// Failures are not cached.
	_, err = c.Config(ctx, credprovider.ConfigKey{Role: "broken", Region: "eu-west-1"})
	assert.ErrorContains(t, err, "role broken: no such role")
	_, err = c.Config(ctx, credprovider.ConfigKey{Role: "broken", Region: "eu-west-1"})
	assert.Error(t, err)
	assert.EqualValues(t, 6, c.Builds())
}

// TestCachesBuildOncePerKey ensures that concurrent callers of one cached client build it, its configuration and its provider once.
//
// 100 goroutines asking for the same client
// build one client, one configuration and one provider, and the client works
// as the assumed role.
func TestCachesBuildOncePerKey(t *testing.T) {
	srv := stsServer(t)
	var built atomic.Int64
	configs := roleCache(t, srv, 0, &built)
	clients := credprovider.NewClientCache(configs, 0, sts.NewFromConfig)
	key := credprovider.ConfigKey{Role: "role-a", Region: srv.Region()}
	const n = 100
	got := make([]*sts.Client, n)
	errs := make([]error, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			<-start
			got[i], errs[i] = clients.Client(context.Background(), key)
		})
	}
	close(start)
	wg.Wait()
	for i := range n {
		require.NoError(t, errs[i])
		assert.Same(t, got[0], got[i])
	}
	assert.EqualValues(t, 1, clients.Builds())
	assert.EqualValues(t, 1, configs.Builds())
	assert.EqualValues(t, 1, built.Load())

	out, err := got[0].GetCallerIdentity(t.Context(), &sts.GetCallerIdentityInput{})
	require.NoError(t, err)
	assert.Equal(t, "arn:aws:sts::123456789012:assumed-role/role-a/cache", aws.ToString(out.Arn))
	cfg, err := configs.Config(t.Context(), key)
	require.NoError(t, err)
	id, err := credprovider.CallerIdentity(t.Context(), cfg)
	require.NoError(t, err)
	assert.Equal(t, aws.ToString(out.Arn), id.ARN, "the identity of a cached role is the assumed role's")
}

// BenchmarkCaches compares a cached aws.Config and client with building them
// fresh (new AssumeRole provider, Refresher and client; no network), in the
// same run, and reports the memory each cached session holds.
func BenchmarkCaches(b *testing.B) {
	srv := ststest.NewServer()
	b.Cleanup(srv.Close)
	configs := roleCache(b, srv, 0, nil)
	clients := credprovider.NewClientCache(configs, 0, sts.NewFromConfig)
	key := credprovider.ConfigKey{Role: "role-a", Region: srv.Region()}
	ctx := context.Background()
	_, err := clients.Client(ctx, key)
	require.NoError(b, err)
	user := srv.NewUser("bench")

	fresh := func() {
		p, err := credprovider.NewAssumeRole(static(user), credprovider.AssumeRoleOptions{STSOptions: stsOpts(srv), RoleARN: roleA, SessionName: "fresh"})
		if err != nil {
			b.Fatal(err)
		}
		r, err := credprovider.NewRefresher(p, credprovider.RefreshOptions{Mode: credprovider.Deferred})
		if err != nil {
			b.Fatal(err)
		}
		_ = sts.NewFromConfig(aws.Config{Region: key.Region, Credentials: r, BaseEndpoint: aws.String(srv.URL)})
	}
	b.Run("client", func(b *testing.B) {
		const freshN = 200
		t0 := time.Now()
		for range freshN {
			fresh()
		}
		perFresh := time.Since(t0) / freshN
		b.ResetTimer()
		for b.Loop() {
			if _, err := clients.Client(ctx, key); err != nil {
				b.Fatal(err)
			}
		}
		perCached := b.Elapsed() / time.Duration(b.N)
		b.ReportMetric(float64(perFresh.Nanoseconds()), "fresh-ns/op")
		b.ReportMetric(float64(perFresh)/float64(max(perCached, 1)), "fresh/cached")
	})
	b.Run("config", func(b *testing.B) {
		const freshN = 200
		t0 := time.Now()
		for range freshN {
			p, _ := credprovider.NewAssumeRole(static(user), credprovider.AssumeRoleOptions{STSOptions: stsOpts(srv), RoleARN: roleA, SessionName: "fresh"})
			_, _ = credprovider.NewRefresher(p, credprovider.RefreshOptions{Mode: credprovider.Deferred})
		}
		perFresh := time.Since(t0) / freshN
		b.ResetTimer()
		for b.Loop() {
			if _, err := configs.Config(ctx, key); err != nil {
				b.Fatal(err)
			}
		}
		perCached := b.Elapsed() / time.Duration(b.N)
		b.ReportMetric(float64(perFresh.Nanoseconds()), "fresh-ns/op")
		b.ReportMetric(float64(perFresh)/float64(max(perCached, 1)), "fresh/cached")
	})
	b.Run("memory", func(b *testing.B) {
		// Bytes held per cached (role, region) session: a config, its
		// role's AssumeRole provider and Refresher (with credentials) and
		// an STS client.
		const sessions = 500
		for b.Loop() {
			b.StopTimer()
			c := roleCache(b, srv, sessions, nil)
			cc := credprovider.NewClientCache(c, sessions, sts.NewFromConfig)
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			b.StartTimer()
			for i := range sessions {
				k := credprovider.ConfigKey{Role: fmt.Sprintf("role-%d", i), Region: "us-east-1"}
				if _, err := cc.Client(ctx, k); err != nil {
					b.Fatal(err)
				}
				cfg, _ := c.Config(ctx, k)
				srv.AddRole(ststest.Role{ARN: "arn:aws:iam::123456789012:role/" + k.Role})
				if _, err := cfg.Credentials.Retrieve(ctx); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			runtime.GC()
			runtime.ReadMemStats(&after)
			b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/sessions, "bytes/session")
			runtime.KeepAlive(cc)
			b.StartTimer()
		}
	})
}
