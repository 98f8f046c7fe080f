package credprovider

import (
	"container/list"
	"context"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/aws/aws-sdk-go-v2/aws"
)

// DefaultCacheSize bounds a ConfigCache or ClientCache when no size is given.
const DefaultCacheSize = 256

// ConfigKey identifies a cached configuration: a role and a region.
type ConfigKey struct {
	Role   string
	Region string
}

// ConfigCacheOptions configures a ConfigCache.
type ConfigCacheOptions struct {
	// MaxEntries bounds the number of (role, region) configurations kept;
	// the least recently used is dropped first. Default DefaultCacheSize.
	MaxEntries int
	// Credentials returns the credentials provider of a role, normally a
	// Refresher (see AssumeRoleCredentials). It is called once per role
	// while any configuration of that role is cached: all regions of a role
	// share one provider, so one AssumeRole serves them all. Required.
	Credentials func(ctx context.Context, role string) (aws.CredentialsProvider, error)
	// Base is copied into every configuration (HTTP client, retryer,
	// endpoints, ...); Region and Credentials are set per key.
	Base aws.Config
}

// ConfigCache is a bounded LRU cache of aws.Configs whose credentials refresh
// themselves, keyed by role and region: the "hundreds of accounts, several
// regions, all day" case. It is safe for concurrent use, and concurrent
// callers asking for the same missing key share one construction.
//
// The Credentials of a cached aws.Config are the role's provider itself, not
// wrapped in aws.CredentialsCache: a Refresher caches already, and an SDK
// cache in front of it would hide the advisory window from it.
type ConfigCache struct {
	opts  ConfigCacheOptions
	cache *lru[ConfigKey, aws.Config]

	mu    sync.Mutex
	creds map[string]*roleCreds
}

type roleCreds struct {
	p    aws.CredentialsProvider
	refs int
}

// NewConfigCache returns an empty cache.
func NewConfigCache(opts ConfigCacheOptions) (*ConfigCache, error) {
	if opts.Credentials == nil {
		return nil, fmt.Errorf("%w: ConfigCacheOptions.Credentials is nil", ErrInvalidConfig)
	}
	if opts.MaxEntries < 0 {
		return nil, fmt.Errorf("%w: ConfigCacheOptions.MaxEntries %d is negative", ErrInvalidConfig, opts.MaxEntries)
	}
	if opts.MaxEntries == 0 {
		opts.MaxEntries = DefaultCacheSize
	}
	c := &ConfigCache{opts: opts, creds: map[string]*roleCreds{}}
	c.cache = newLRU[ConfigKey, aws.Config](opts.MaxEntries, c.evicted)
	return c, nil
}

// Config returns the configuration for key, building it on first use.
func (c *ConfigCache) Config(ctx context.Context, key ConfigKey) (aws.Config, error) {
	return c.cache.get(ctx, key, func(ctx context.Context) (aws.Config, error) {
		p, err := c.provider(ctx, key.Role)
		if err != nil {
			return aws.Config{}, err
		}
		cfg := c.opts.Base.Copy()
		cfg.Region = key.Region
		cfg.Credentials = p
		return cfg, nil
	})
}

// provider returns the role's shared provider and counts one more
// configuration using it.
func (c *ConfigCache) provider(ctx context.Context, role string) (aws.CredentialsProvider, error) {
	c.mu.Lock()
	if rc, ok := c.creds[role]; ok {
		rc.refs++
		c.mu.Unlock()
		return rc.p, nil
	}
	c.mu.Unlock()
	// Built outside the lock; the LRU's single flight is per key, so two
	// regions of one new role may race here, and the loser's provider is
	// dropped unused.
	p, err := c.opts.Credentials(ctx, role)
	if err != nil {
		return nil, fmt.Errorf("credprovider: role %s: %w", role, err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if rc, ok := c.creds[role]; ok {
		rc.refs++
		return rc.p, nil
	}
	c.creds[role] = &roleCreds{p: p, refs: 1}
	return p, nil
}

func (c *ConfigCache) evicted(key ConfigKey, _ aws.Config) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if rc, ok := c.creds[key.Role]; ok {
		if rc.refs--; rc.refs <= 0 {
			delete(c.creds, key.Role)
		}
	}
}

// Len returns the number of cached configurations.
func (c *ConfigCache) Len() int { return c.cache.len() }

// Builds returns how many configurations were built so far.
func (c *ConfigCache) Builds() int64 { return c.cache.builds.Load() }

// AssumeRoleCredentials returns a ConfigCacheOptions.Credentials function
// that assumes each role from source with the options roles returns, wrapped
// in a Refresher with refresh.
func AssumeRoleCredentials(source aws.CredentialsProvider, roles func(role string) (AssumeRoleOptions, error), refresh RefreshOptions) func(context.Context, string) (aws.CredentialsProvider, error) {
	return func(_ context.Context, role string) (aws.CredentialsProvider, error) {
		o, err := roles(role)
		if err != nil {
			return nil, err
		}
		p, err := NewAssumeRole(source, o)
		if err != nil {
			return nil, err
		}
		ro := refresh
		if ro.Name == "" {
			ro.Name = role
		}
		return NewRefresher(p, ro)
	}
}

// ClientCache is a bounded LRU cache of service clients built from a
// ConfigCache's configurations with a constructor such as s3.NewFromConfig.
// It is safe for concurrent use; concurrent callers asking for the same
// missing key share one construction.
type ClientCache[T any, O any] struct {
	configs *ConfigCache
	newFn   func(aws.Config, ...func(*O)) T
	optFns  []func(*O)
	cache   *lru[ConfigKey, T]
}

// NewClientCache returns an empty cache of at most max clients (0:
// DefaultCacheSize) made by newClient from configs' configurations, with
// optFns applied to each, e.g.
//
//	s3c := credprovider.NewClientCache(configs, 0, s3.NewFromConfig)
//	client, err := s3c.Client(ctx, credprovider.ConfigKey{Role: "audit", Region: "eu-west-1"})
func NewClientCache[T any, O any](configs *ConfigCache, max int, newClient func(aws.Config, ...func(*O)) T, optFns ...func(*O)) *ClientCache[T, O] {
	if max <= 0 {
		max = DefaultCacheSize
	}
	return &ClientCache[T, O]{configs: configs, newFn: newClient, optFns: optFns, cache: newLRU[ConfigKey, T](max, nil)}
}

// Client returns the client for key, building it (and its configuration) on
// first use.
func (c *ClientCache[T, O]) Client(ctx context.Context, key ConfigKey) (T, error) {
	return c.cache.get(ctx, key, func(ctx context.Context) (T, error) {
		cfg, err := c.configs.Config(ctx, key)
		if err != nil {
			var zero T
			return zero, err
		}
		return c.newFn(cfg, c.optFns...), nil
	})
}

// Len returns the number of cached clients.
func (c *ClientCache[T, O]) Len() int { return c.cache.len() }

// Builds returns how many clients were built so far.
func (c *ClientCache[T, O]) Builds() int64 { return c.cache.builds.Load() }

// lru is a bounded least-recently-used map whose missing entries are built
// once however many callers ask for them at the same time.
type lru[K comparable, V any] struct {
	max     int
	onEvict func(K, V)
	builds  atomic.Int64

	mu       sync.Mutex
	order    list.List // of *lruEntry; front is the most recently used
	items    map[K]*list.Element
	inflight map[K]*buildCall[V]
}

type lruEntry[K comparable, V any] struct {
	key K
	val V
}

type buildCall[V any] struct {
	done chan struct{}
	val  V
	err  error
}

func newLRU[K comparable, V any](max int, onEvict func(K, V)) *lru[K, V] {
	return &lru[K, V]{max: max, onEvict: onEvict, items: map[K]*list.Element{}, inflight: map[K]*buildCall[V]{}}
}

func (c *lru[K, V]) get(ctx context.Context, key K, build func(context.Context) (V, error)) (V, error) {
	c.mu.Lock()
	if el, ok := c.items[key]; ok {
		c.order.MoveToFront(el)
		v := el.Value.(*lruEntry[K, V]).val
		c.mu.Unlock()
		return v, nil
	}
	if call, ok := c.inflight[key]; ok {
		c.mu.Unlock()
		select {
		case <-call.done:
			return call.val, call.err
		case <-ctx.Done():
			var zero V
			return zero, ctx.Err()
		}
	}
	call := &buildCall[V]{done: make(chan struct{})}
	c.inflight[key] = call
	c.mu.Unlock()

	c.builds.Add(1)
	call.val, call.err = build(ctx)

	var evicted []*lruEntry[K, V]
	c.mu.Lock()
	delete(c.inflight, key)
	if call.err == nil {
		c.items[key] = c.order.PushFront(&lruEntry[K, V]{key: key, val: call.val})
		for c.order.Len() > c.max {
			e := c.order.Remove(c.order.Back()).(*lruEntry[K, V])
			delete(c.items, e.key)
			evicted = append(evicted, e)
		}
	}
	c.mu.Unlock()
	close(call.done)
	if c.onEvict != nil {
		for _, e := range evicted {
			c.onEvict(e.key, e.val)
		}
	}
	return call.val, call.err
}

func (c *lru[K, V]) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.order.Len()
}
