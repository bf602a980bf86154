package gate

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/mailpush/mailpush"
)

// cache keeps the registry's answer per DeviceId for a TTL, so that the
// steady stream of Ping and Sync requests of a device does not reach the
// store. It is bounded: when full, an arbitrary entry makes room (Go's map
// iteration order is random, which makes this random eviction).
//
// A change made through this process calls invalidate, which also bumps a
// generation: a lookup that started before the change cannot put its stale
// answer back afterwards.
type cache struct {
	ttl time.Duration
	max int

	mu      sync.RWMutex
	gen     uint64
	entries map[string]*cacheEntry

	hits, misses atomic.Uint64
}

type cacheEntry struct {
	dev     *mailpush.GateDevice // nil: not registered
	expires time.Time
	touched atomic.Int64 // when last seen was last queued (Unix ns)
}

func newCache(ttl time.Duration, max int) *cache {
	return &cache{ttl: ttl, max: max, entries: make(map[string]*cacheEntry)}
}

// get returns the live entry for id, and the generation to pass to put
// after a miss.
func (c *cache) get(id string, now time.Time) (*cacheEntry, uint64) {
	c.mu.RLock()
	e, gen := c.entries[id], c.gen
	c.mu.RUnlock()
	if e != nil && now.Before(e.expires) {
		c.hits.Add(1)
		return e, gen
	}
	c.misses.Add(1)
	return nil, gen
}

// put stores a registry answer unless the cache changed generation since gen.
func (c *cache) put(id string, dev *mailpush.GateDevice, gen uint64, now time.Time) *cacheEntry {
	e := &cacheEntry{dev: dev, expires: now.Add(c.ttl)}
	e.touched.Store(now.UnixNano())
	if c.ttl <= 0 {
		return e
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gen != gen {
		return e
	}
	if _, ok := c.entries[id]; !ok && len(c.entries) >= c.max {
		for k := range c.entries {
			delete(c.entries, k)
			break
		}
	}
	c.entries[id] = e
	return e
}

func (c *cache) invalidate(id string) {
	c.mu.Lock()
	c.gen++
	delete(c.entries, id)
	c.mu.Unlock()
}

func (c *cache) len() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.entries)
}

// clear drops every entry; like invalidate it bumps the generation.
func (c *cache) clear() {
	c.mu.Lock()
	c.gen++
	clear(c.entries)
	c.mu.Unlock()
}

// memo remembers keyed hashes the gate computes on every request (the
// user's, and the audit log's DeviceId and IP), so that a device's steady
// stream of requests costs one HMAC per value rather than one per request.
// It is bounded: when full it starts over. It lives in memory only, like the
// request it came from.
type memo struct {
	max int
	mu  sync.RWMutex
	m   map[memoKey][]byte
}

// memoKey is what a hash is of; a struct, so that a lookup builds no string.
type memoKey struct {
	kind  hashKind
	value string
}

func newMemo(max int) *memo { return &memo{max: max, m: make(map[memoKey][]byte)} }

func (c *memo) get(key memoKey, compute func() []byte) []byte {
	c.mu.RLock()
	v, ok := c.m[key]
	c.mu.RUnlock()
	if ok {
		return v
	}
	v = compute()
	c.mu.Lock()
	if len(c.m) >= c.max {
		clear(c.m)
	}
	c.m[key] = v
	c.mu.Unlock()
	return v
}
