package subscription

import (
	"context"
	"sync"
	"time"

	"github.com/mailpush/mailpush"
)

// limiter bounds the requests that mailpush starts on its own
// (resubscriptions, renewals): at most perHost at once per mail-server host
// and perAccount at once per account (EWS's EWSMaxConcurrency is 27 per
// account, and a service account shared by a tenant is one account; Graph
// allows 4 per app and mailbox). A host that asked for a pause (EWS's
// ErrorServerBusy BackOffMilliseconds, Graph's 429 Retry-After) gets no
// request before it has passed. Entries exist only while in use, so memory follows concurrency,
// not the number of mailboxes.
type limiter struct {
	clock               mailpush.Clock
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

func newLimiter(clock mailpush.Clock, perHost, perAccount int) *limiter {
	return &limiter{clock: clock, perHost: perHost, perAccount: perAccount,
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
		wait := until.Sub(l.clock.Now())
		if ok && wait <= 0 {
			delete(l.backoff, host)
		}
		l.mu.Unlock()
		if wait <= 0 {
			return nil
		}
		if err := mailpush.Sleep(ctx, l.clock, wait); err != nil {
			return err
		}
	}
}

// busy records that host asked for a pause of d.
func (l *limiter) busy(host string, d time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if until := l.clock.Now().Add(d); until.After(l.backoff[host]) {
		l.backoff[host] = until
	}
}
