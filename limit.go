package mailpush

import (
	"cmp"
	"sync"
	"time"
)

// Buckets are token buckets by key (a tenant, a mailbox, a device), driven
// by the caller's clock so that tests need no sleeps. The caller gives the
// rate and burst with every Take, so one set of buckets serves keys with
// limits of their own (a tenant's configured rate) and limits that change
// (a cluster's rate split by its live nodes). The pipeline's per-tenant push
// rate, the EWS per-mailbox fetch limit and the registrar's per-tenant
// registration rate are all Buckets.
//
// Memory follows the active keys: when Max keys are held, the buckets that
// are full by now are forgotten (they behave like new ones), and if none is,
// an arbitrary one (its next Take finds a full bucket: an error in the
// caller's favour, bounded by one burst).
type Buckets struct {
	// Max is how many keys are held; 0 means DefaultMaxBuckets.
	Max int

	mu sync.Mutex
	m  map[string]*bucket
}

// DefaultMaxBuckets is the keys a Buckets holds by default.
const DefaultMaxBuckets = 100_000

type bucket struct {
	tokens float64
	at     time.Time
	rate   float64 // of the last Take: what pruning refills with
	burst  float64
}

// Take spends one token of key's bucket at now; the bucket fills at rate
// tokens per second and holds at most burst (at least 1). It returns zero
// when a token was there, otherwise how long until one will be (and spends
// nothing); with a rate of zero or less, an hour.
func (b *Buckets) Take(key string, rate float64, burst int, now time.Time) time.Duration {
	full := float64(max(1, burst))
	b.mu.Lock()
	defer b.mu.Unlock()
	k, ok := b.m[key]
	if !ok {
		if b.m == nil {
			b.m = map[string]*bucket{}
		}
		if limit := cmp.Or(b.Max, DefaultMaxBuckets); len(b.m) >= limit {
			b.pruneLocked(now)
		}
		k = &bucket{tokens: full, at: now}
		b.m[key] = k
	}
	k.rate, k.burst = rate, full
	if now.After(k.at) {
		k.tokens = min(full, k.tokens+now.Sub(k.at).Seconds()*max(rate, 0))
		k.at = now
	}
	k.tokens = min(k.tokens, full) // a burst lowered since
	if k.tokens >= 1 {
		k.tokens--
		return 0
	}
	if rate <= 0 {
		return time.Hour
	}
	return time.Duration((1 - k.tokens) / rate * float64(time.Second))
}

// Len is how many keys are held.
func (b *Buckets) Len() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.m)
}

// pruneLocked forgets the buckets that are full by now, or one arbitrary
// bucket when none is.
func (b *Buckets) pruneLocked(now time.Time) {
	for key, k := range b.m {
		if k.tokens+now.Sub(k.at).Seconds()*k.rate >= k.burst {
			delete(b.m, key)
		}
	}
	if len(b.m) < cmp.Or(b.Max, DefaultMaxBuckets) {
		return
	}
	for key := range b.m {
		delete(b.m, key)
		return
	}
}
