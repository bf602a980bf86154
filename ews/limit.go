package ews

import (
	"context"
	"sync"
	"time"

	"github.com/mailpush/mailpush"
)

// limiter bounds the EWS requests that mailpush starts on its own
// (resubscriptions): at most perHost at once per Exchange host and
// perAccount at once per account (EWS's EWSMaxConcurrency is 27 per account;
// a service account shared by a tenant is one account). A host that answered
// ErrorServerBusy gets no request before its BackOffMilliseconds have
// passed. Entries exist only while in use, so memory follows concurrency,
// not the number of mailboxes.
type limiter struct {
	perHost, perAccount int

	mu       sync.Mutex
	hosts    map[string]*slot
	accounts map[string]*slot
	backoff  map[string]time.Time // host → no request before
}

type slot struct {
	ch   chan struct{}
	refs int
}

func newLimiter(perHost, perAccount int) *limiter {
	return &limiter{perHost: perHost, perAccount: perAccount,
		hosts: map[string]*slot{}, accounts: map[string]*slot{}, backoff: map[string]time.Time{}}
}

func (l *limiter) ref(m map[string]*slot, key string, n int) *slot {
	s := m[key]
	if s == nil {
		s = &slot{ch: make(chan struct{}, n)}
		m[key] = s
	}
	s.refs++
	return s
}

func (l *limiter) unref(m map[string]*slot, key string) {
	if s := m[key]; s != nil {
		if s.refs--; s.refs == 0 {
			delete(m, key)
		}
	}
}

// acquire waits for a free place for host and account, and for the host's
// back-off to pass. The returned release must be called once.
func (l *limiter) acquire(ctx context.Context, host, account string) (release func(), err error) {
	l.mu.Lock()
	h := l.ref(l.hosts, host, l.perHost)
	a := l.ref(l.accounts, account, l.perAccount)
	l.mu.Unlock()
	held := 0
	release = func() {
		if held > 1 {
			<-a.ch
		}
		if held > 0 {
			<-h.ch
		}
		l.mu.Lock()
		l.unref(l.hosts, host)
		l.unref(l.accounts, account)
		l.mu.Unlock()
	}
	if err := l.waitBackoff(ctx, host); err != nil {
		release()
		return nil, err
	}
	for _, s := range []*slot{h, a} {
		select {
		case s.ch <- struct{}{}:
			held++
		case <-ctx.Done():
			release()
			return nil, ctx.Err()
		}
	}
	return release, nil
}

// waitBackoff waits until host's back-off, if any, has passed.
func (l *limiter) waitBackoff(ctx context.Context, host string) error {
	for {
		l.mu.Lock()
		until, ok := l.backoff[host]
		wait := time.Until(until)
		if ok && wait <= 0 {
			delete(l.backoff, host)
		}
		l.mu.Unlock()
		if wait <= 0 {
			return nil
		}
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		}
	}
}

// busy records that host asked for a pause of d.
func (l *limiter) busy(host string, d time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if until := time.Now().Add(d); until.After(l.backoff[host]) {
		l.backoff[host] = until
	}
}

// credCache keeps the credentials that sealed-mode callback tokens carried,
// per mailbox, in memory only, so that a dead subscription can be made again
// without the device. It is bounded: when full, an arbitrary entry gives way
// (that mailbox then falls back to asking its device to check in).
type credCache struct {
	mu  sync.Mutex
	max int
	m   map[string]cachedCreds
}

type cachedCreds struct {
	serverURL string
	creds     mailpush.Credentials // sealed mode
	address   string               // service mode: the mailbox to impersonate
}

func newCredCache(max int) *credCache { return &credCache{max: max, m: map[string]cachedCreds{}} }

func (c *credCache) put(mailboxID string, v cachedCreds) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.m[mailboxID]; !ok && len(c.m) >= c.max {
		for k := range c.m {
			delete(c.m, k)
			break
		}
	}
	c.m[mailboxID] = v
}

func (c *credCache) get(mailboxID string) (cachedCreds, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	v, ok := c.m[mailboxID]
	return v, ok
}

func (c *credCache) drop(mailboxID string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.m, mailboxID)
}
