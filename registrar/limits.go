package registrar

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mailpush/mailpush"
)

// Two bounds keep one tenant from flooding the server through its app
// token, which ships inside every copy of the app, so anyone may hold it:
//
//   - A token bucket per tenant and scope for the calls that create or renew
//     a registration (Register, CheckIn). It is taken first, before the
//     request is even parsed: a refused call is 429 rate_limited with
//     Retry-After, and nothing is opened, stored or sent. App tokens get
//     registrations.rate (default 50/s, bursts of 200: a tenant whose
//     100,000 devices all check in once a day averages about 1/s).
//     Backend tokens get their own bucket, ten times larger by default
//     (registrations.backendRate, backendBurst): the tenant's own server
//     holds them to register users in bulk (service mode), and they never
//     ship in an app, so they are not the flood this guards against; a
//     leaked one is still bounded. Admin tokens cannot register at all.
//     The check is a map lookup under a mutex (no store read), and with
//     several nodes each node allows its share, rate/(live nodes), as the
//     per-tenant push rate does (docs/cluster.md): an honest split, not a
//     shared bucket, so a balancer that sends a tenant's calls unevenly
//     may refuse some below the cluster rate for a moment.
//   - The opening of costly credentials (a client identity: a PKCS#12's key
//     derivation runs as many iterations as its maker chose, up to
//     mailpush.MaxPKCS12Iterations, about a second at the cap) is bounded
//     per tenant and in total (openers). A tenant opens one identity at a
//     time with at most openerQueue more waiting; beyond that its request
//     is refused at once (429 rate_limited, Retry-After), never queued
//     forever. All tenants together open at most half the CPUs' worth at
//     once (at least two), and a tenant waits for a global place in
//     arrival order with at most one place per other tenant ahead of it: a
//     tenant flooding costly identities holds one place only, so another
//     tenant's identity is opened at once when there are two places, and
//     after at most one opening of each other busy tenant otherwise. It
//     all happens before anything is stored (CredentialPreparer).

// Default registration rates, per tenant and per second (bursts: calls at
// once).
const (
	DefaultRate         = 50
	DefaultBurst        = 200
	DefaultBackendRate  = 500
	DefaultBackendBurst = 2000
)

// Bounds of the costly credential openings.
const (
	openerQueue       = 4  // a tenant's openings waiting behind its running one
	openerGlobalQueue = 64 // openings waiting for a global place, all tenants
)

// Rate is a token bucket: calls per second, and at once.
type Rate struct {
	PerSecond float64
	Burst     int
}

// takeRate spends one call of the tenant's registration rate for scope.
func (s *Service) takeRate(t *mailpush.Tenant, scope mailpush.Scope) error {
	q := s.TenantQuotas(t)
	r, key := q.Rate, "registrations.rate"
	if scope == mailpush.ScopeBackend {
		r, key = q.BackendRate, "registrations.backendRate"
	}
	nodes := max(1, int(s.nodes.Load()))
	wait := s.rates.Take(t.ID+"\x00"+string(scope), r.PerSecond/float64(nodes), max(1, r.Burst/nodes), s.Clock.Now())
	if wait == 0 {
		return nil
	}
	s.Metrics.refused("rate")
	e := mailpush.Errorf(mailpush.ERateLimited, "tenant %s makes more registration calls with %s tokens than its limit, %g per second with bursts of %d (%s%s): retry after %s",
		t.Name, scope, r.PerSecond, r.Burst, key, split(nodes), wait.Round(time.Millisecond))
	e.RetryAfter = wait
	return e
}

// split names this node's share of a rate.
func split(nodes int) string {
	if nodes == 1 {
		return ""
	}
	return fmt.Sprintf(", shared by %d nodes", nodes)
}

// ShareRates makes this node allow its share of every tenant's registration
// rate when nodes nodes serve the tenants: rate/nodes per second, bursts
// likewise (at least 1). The cluster calls it as live nodes come and go.
func (s *Service) ShareRates(nodes int) {
	if nodes >= 1 {
		s.nodes.Store(int32(nodes))
	}
}

// prepare opens costly credentials (a client identity) through the source's
// CredentialPreparer within the openers' bounds, before anything is stored
// or sent. Other credentials come back as they are.
func (s *Service) prepare(ctx context.Context, t *mailpush.Tenant, src mailpush.Source, creds mailpush.Credentials) (mailpush.Credentials, error) {
	p, ok := s.Watchers[src].(mailpush.CredentialPreparer)
	if !ok || !creds.HasIdentity() {
		return creds, nil
	}
	o := s.openers()
	release, err := o.acquire(ctx, t)
	if err != nil {
		if mailpush.ErrorRetryAfter(err) > 0 { // refused for a full queue, not given up by its caller
			s.Metrics.refused("openers")
		}
		return mailpush.Credentials{}, err
	}
	start := time.Now()
	defer func() { release(time.Since(start)) }()
	return p.PrepareCredentials(ctx, t, creds)
}

func (s *Service) openers() *openers {
	s.openersOnce.Do(func() {
		s.openersState = newOpeners(max(2, runtime.GOMAXPROCS(0)/2), openerQueue, openerGlobalQueue)
	})
	return s.openersState
}

// openers bounds the costly credential openings: per tenant one at a time
// with queue more waiting, and in total global at once with globalQueue
// more waiting in arrival order (see the comment at the top of this file).
// Entries exist only while in use.
type openers struct {
	global, queue, globalQueue int

	mu      sync.Mutex
	tenants map[string]*places
	all     places
	cost    time.Duration // a recent opening's duration, for Retry-After
}

// places is a counting semaphore whose waiters are served in arrival order;
// its owner's mutex guards it.
type places struct {
	held    int
	waiting []chan struct{}
}

func newOpeners(global, queue, globalQueue int) *openers {
	return &openers{global: global, queue: queue, globalQueue: globalQueue, tenants: map[string]*places{}, cost: time.Second}
}

// take takes a place at once (nil, true), or a place in the queue (its
// channel closes when the place is handed over), or none when the queue is
// full (false).
func (p *places) take(n, queue int) (chan struct{}, bool) {
	if p.held < n {
		p.held++
		return nil, true
	}
	if len(p.waiting) >= queue {
		return nil, false
	}
	ch := make(chan struct{})
	p.waiting = append(p.waiting, ch)
	return ch, true
}

// give frees a place, handing it to the first waiter if there is one.
func (p *places) give() {
	if len(p.waiting) > 0 {
		close(p.waiting[0])
		p.waiting = p.waiting[1:]
		return
	}
	p.held--
}

// leave takes ch out of the queue; false when its place was handed over
// already (the caller holds it then, and must give it).
func (p *places) leave(ch chan struct{}) bool {
	for i, w := range p.waiting {
		if w == ch {
			p.waiting = append(p.waiting[:i], p.waiting[i+1:]...)
			return true
		}
	}
	return false
}

// acquire waits for the tenant's place, then a global one, while ctx
// allows; a full queue refuses at once. release takes how long the opening
// took (for the Retry-After of later refusals).
func (o *openers) acquire(ctx context.Context, t *mailpush.Tenant) (release func(time.Duration), err error) {
	o.mu.Lock()
	mine := o.tenants[t.ID]
	if mine == nil {
		mine = &places{}
		o.tenants[t.ID] = mine
	}
	ch, ok := mine.take(1, o.queue)
	if !ok {
		wait := o.cost * time.Duration(o.queue+1)
		o.mu.Unlock()
		e := mailpush.Errorf(mailpush.ERateLimited, "tenant %s already has a client identity being opened and %d waiting, the most per tenant (opening a PKCS#12 costs CPU): retry after %s", t.Name, o.queue, wait.Round(time.Millisecond))
		e.RetryAfter = wait
		return nil, e
	}
	o.mu.Unlock()
	giveMine := func() {
		o.mu.Lock()
		mine.give()
		if mine.held == 0 && len(mine.waiting) == 0 {
			delete(o.tenants, t.ID)
		}
		o.mu.Unlock()
	}
	if err := o.wait(ctx, mine, ch); err != nil {
		o.mu.Lock()
		if mine.held == 0 && len(mine.waiting) == 0 {
			delete(o.tenants, t.ID)
		}
		o.mu.Unlock()
		return nil, err
	}
	o.mu.Lock()
	ch, ok = o.all.take(o.global, o.globalQueue)
	if !ok {
		wait := o.cost
		o.mu.Unlock()
		giveMine()
		e := mailpush.Errorf(mailpush.EUnavailable, "the server is opening as many client identities as it may, with %d more waiting: retry after %s", o.globalQueue, wait.Round(time.Millisecond))
		e.RetryAfter = wait
		return nil, e
	}
	o.mu.Unlock()
	if err := o.wait(ctx, &o.all, ch); err != nil {
		giveMine() // the tenant's place was held; the global one is not
		return nil, err
	}
	var once atomic.Bool
	return func(took time.Duration) {
		if !once.CompareAndSwap(false, true) {
			return
		}
		o.mu.Lock()
		o.cost = max(took, 100*time.Millisecond)
		o.all.give()
		o.mu.Unlock()
		giveMine()
	}, nil
}

// wait waits for a queued place (ch; nil: held already). When ctx ends
// first, it leaves the queue, or gives back the place it was handed
// meanwhile: on an error the caller holds no place of p.
func (o *openers) wait(ctx context.Context, p *places, ch chan struct{}) error {
	if ch == nil {
		return nil
	}
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if !p.leave(ch) {
		p.give()
	}
	return mailpush.WrapError(mailpush.EUnavailable, "gave up waiting to open the client identity; try again", ctx.Err())
}
