package pipeline

import (
	"sync"
	"time"
)

// limiter is a set of token buckets by key, driven by the caller's clock so
// that tests need no sleeps. It forgets full buckets when it grows large, so
// its memory follows the active keys.
type limiter struct {
	rate  float64 // tokens per second
	burst float64

	mu      sync.Mutex
	buckets map[string]*bucket
}

type bucket struct {
	tokens float64
	at     time.Time
}

const maxBuckets = 100_000

func newLimiter(rate float64, burst int) *limiter {
	return &limiter{rate: rate, burst: float64(burst), buckets: map[string]*bucket{}}
}

// setRate changes the rate and burst of every bucket from now on.
func (l *limiter) setRate(rate float64, burst int) {
	l.mu.Lock()
	l.rate, l.burst = rate, float64(burst)
	l.mu.Unlock()
}

// take spends a token of key at now. It returns zero when one was there,
// otherwise how long until one will be (and spends nothing).
func (l *limiter) take(key string, now time.Time) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	b, ok := l.buckets[key]
	if !ok {
		if len(l.buckets) >= maxBuckets {
			l.pruneLocked(now)
		}
		b = &bucket{tokens: l.burst, at: now}
		l.buckets[key] = b
	}
	if now.After(b.at) {
		b.tokens = min(l.burst, b.tokens+now.Sub(b.at).Seconds()*l.rate)
		b.at = now
	}
	if b.tokens >= 1 {
		b.tokens--
		return 0
	}
	if l.rate <= 0 {
		return time.Hour
	}
	return time.Duration((1 - b.tokens) / l.rate * float64(time.Second))
}

// pruneLocked forgets the buckets that are full by now: they behave like new ones.
func (l *limiter) pruneLocked(now time.Time) {
	for k, b := range l.buckets {
		if b.tokens+now.Sub(b.at).Seconds()*l.rate >= l.burst {
			delete(l.buckets, k)
		}
	}
}
