// Package subscription is the engine that keeps mail-server subscriptions
// alive, shared by the sources that subscribe on a mail server (EWS, Graph).
//
// A source plugs in as a mailpush.Healer: the engine finds the mailboxes
// whose subscription is due (Check: silent for longer than DueAfter, which is
// 2×StatusFrequency for EWS and about half the subscription's lifetime for
// Graph; CheckHosts: every subscription of a host that went silent as a
// whole), claims each one in the store so that no other sweep or node takes
// it, and hands it to the source's Heal at a paced rate. Pacing is the point:
// when many subscriptions fall due together (a restarted Exchange, a wave of
// registrations reaching half their lifetime) they are healed at most Rate
// per second with random spacing, never in a burst, and each request runs
// within the per-host and per-account limits (Acquire) and after any pause a
// host asked for (Busy).
//
// With several nodes on one database the claim is a lease: a row-locked
// compare-and-set of the mailbox's LastEventAt, which only one node's claim
// wins, and which holds for DueAfter (the mailbox is not due again before).
// No node owns a subscription; a node that dies mid-heal leaves its claims
// to run out, and any survivor's next sweep takes them (docs/cluster.md).
//
// Everything is driven by the injected mailpush.Clock, timers included, so a
// test with a clocktest.Clock decides when time passes.
package subscription

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mailpush/mailpush"
)

// Defaults of the engine.
const (
	DefaultRate          = 100 // heals started per second, at most
	DefaultWorkers       = 64  // heals in flight, at most
	DefaultMaxPerHost    = 32  // requests in flight per mail-server host
	DefaultMaxPerAccount = 8   // requests in flight per account (EWS allows 27, Graph 4 per app and mailbox)
	DefaultHostBookSize  = 100_000
	staleBatch           = 500
)

// Engine keeps one source's subscriptions alive. Set the fields, then call
// Run (or Check and CheckHosts yourself); Close stops it.
type Engine struct {
	Store  mailpush.MailboxStore
	Source mailpush.Source // whose mailboxes it sweeps
	Healer mailpush.Healer
	Logger *slog.Logger
	Clock  mailpush.Clock

	// DueAfter: a subscription whose mailbox's LastEventAt is older is due.
	DueAfter time.Duration
	// Zero values mean the defaults.
	Interval      time.Duration // between Checks; default DueAfter/4
	Rate          float64       // heals started per second, at most
	Workers       int           // heals in flight, at most
	MaxPerHost    int           // requests in flight per host
	MaxPerAccount int           // requests in flight per account

	// The host-level rule (hosts.go); HostRule.MinSubscriptions 0 turns it
	// off, and so does a source that never calls Heard.
	HostRule          HostRule
	HostCheckInterval time.Duration
	HostBookSize      int
	// HostRuleElsewhere: Run leaves CheckHosts to the caller (a cluster
	// runs it on its leader node only).
	HostRuleElsewhere bool

	st state
}

var _ mailpush.SubscriptionEngine = (*Engine)(nil)

type state struct {
	once   sync.Once
	limit  *limiter
	hosts  *hostBook
	heals  healBook
	mu     sync.Mutex
	next   time.Time // when the next claim may start (pacing, shared by Check and CheckHosts)
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func (e *Engine) init() *state {
	e.st.once.Do(func() {
		e.st.limit = newLimiter(e.Clock, orDefault(e.MaxPerHost, DefaultMaxPerHost), orDefault(e.MaxPerAccount, DefaultMaxPerAccount))
		e.st.hosts = newHostBook(orDefault(e.HostBookSize, DefaultHostBookSize))
	})
	return &e.st
}

func orDefault[T int | float64 | time.Duration](v, def T) T {
	if v <= 0 {
		return def
	}
	return v
}

// Acquire waits for a place for one request to host for account, and for
// the host's pause, if any, to pass.
func (e *Engine) Acquire(ctx context.Context, host, account string) (func(), error) {
	return e.init().limit.acquire(ctx, host, account)
}

// Busy records that host asked for a pause of d.
func (e *Engine) Busy(host string, d time.Duration) { e.init().limit.busy(host, d) }

// Heard records a notification of mailboxID from host at at, for the
// host-level rule.
func (e *Engine) Heard(host, mailboxID string, at time.Time) {
	if host != "" && e.HostRule.MinSubscriptions > 0 {
		e.init().hosts.heard(host, mailboxID, at)
	}
}

// Run starts the sweeps: Check every Interval and, with a host rule,
// CheckHosts every HostCheckInterval, on the engine's clock. It returns at
// once; Close stops it.
func (e *Engine) Run(ctx context.Context) {
	st := e.init()
	ctx, cancel := context.WithCancel(ctx)
	st.mu.Lock()
	if st.cancel != nil {
		st.mu.Unlock()
		cancel()
		return // already running
	}
	st.cancel = cancel
	st.mu.Unlock()
	st.wg.Add(1)
	go e.every(ctx, orDefault(e.Interval, e.DueAfter/4), "health check", e.Check)
	if e.HostRule.MinSubscriptions > 0 && !e.HostRuleElsewhere {
		st.wg.Add(1)
		go e.every(ctx, orDefault(e.HostCheckInterval, DefaultHostCheckInterval), "host check", e.CheckHosts)
	}
}

// every runs check every d until ctx ends; Run owns it (st.wg).
func (e *Engine) every(ctx context.Context, d time.Duration, name string, check func(context.Context) (CheckResult, error)) {
	defer e.st.wg.Done()
	t, tick := e.Clock.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick:
		}
		if res, err := check(ctx); err != nil && ctx.Err() == nil {
			e.Logger.Error(name+" failed", "err", err)
		} else if res.Stale > 0 {
			e.Logger.Info(name, "stale", res.Stale, "resubscribed", res.Resubscribed, "askedDevices", res.AskedDevices, "failed", res.Failed)
		}
	}
}

// Close stops the sweeps and waits for them. It is safe to call more than
// once, and without Run.
func (e *Engine) Close() {
	st := e.init()
	st.mu.Lock()
	cancel := st.cancel
	st.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	st.wg.Wait()
}

// CheckResult counts what one Check or CheckHosts did.
type CheckResult struct {
	Stale        int // due subscriptions found (and claimed)
	Resubscribed int // made again or renewed by mailpush
	AskedDevices int // devices asked to check in
	Failed       int // not healed; tried again after another DueAfter
}

// Check finds every subscription due (LastEventAt older than DueAfter) and
// heals it with the source's Healer: at most Rate started per second with
// random spacing, Workers at once. It returns when all are done.
func (e *Engine) Check(ctx context.Context) (CheckResult, error) {
	e.init()
	before := e.Clock.Now().Add(-e.DueAfter)
	reason := "no event for " + e.DueAfter.String() + ": due"
	return e.sweep(ctx, reason, func(jobs chan<- *mailpush.Mailbox) (int, error) { return e.claimStale(ctx, before, jobs) })
}

// sweep heals, with Workers workers, the mailboxes that feed claims, and
// returns when all are done.
func (e *Engine) sweep(ctx context.Context, reason string, feed func(jobs chan<- *mailpush.Mailbox) (int, error)) (CheckResult, error) {
	workers := orDefault(e.Workers, DefaultWorkers)
	jobs := make(chan *mailpush.Mailbox, workers)
	var resubscribed, asked, failed atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for mb := range jobs {
				// Paced here, where the request starts: a claim ahead of a
				// busy worker must not start late and then in a burst.
				if err := e.pace(ctx); err != nil {
					failed.Add(1)
					continue
				}
				rec := mailpush.HealRecord{MailboxID: mb.ID, TenantID: mb.TenantID, Reason: reason, Started: e.Clock.Now()}
				e.st.heals.begin(rec)
				rec.Outcome = e.Healer.Heal(ctx, mb)
				rec.Ended = e.Clock.Now()
				e.st.heals.end(rec)
				switch rec.Outcome {
				case mailpush.HealResubscribed:
					resubscribed.Add(1)
				case mailpush.HealAsked:
					asked.Add(1)
				case mailpush.HealFailed:
					failed.Add(1)
				}
			}
		}()
	}
	stale, err := feed(jobs)
	close(jobs)
	wg.Wait()
	return CheckResult{Stale: stale, Resubscribed: int(resubscribed.Load()), AskedDevices: int(asked.Load()), Failed: int(failed.Load())}, err
}

var errNotStale = errors.New("subscription: mailbox is no longer due")

// claimStale feeds jobs with the due mailboxes, paced, each claimed first
// by moving its LastEventAt to now: another sweep (or node) then leaves it
// alone for DueAfter, which is also when a failed attempt is retried.
func (e *Engine) claimStale(ctx context.Context, before time.Time, jobs chan<- *mailpush.Mailbox) (int, error) {
	n := 0
	for {
		mbs, err := e.Store.StaleMailboxes(ctx, e.Source, before, staleBatch)
		if err != nil {
			return n, err
		}
		claimed := 0
		for _, mb := range mbs {
			ok, err := e.claim(ctx, mb.ID, before, jobs)
			if err != nil {
				return n, err
			}
			if ok {
				claimed++
				n++
			}
		}
		if len(mbs) < staleBatch || claimed == 0 {
			return n, nil
		}
	}
}

// claim claims the mailbox if it is still live and silent since before,
// and hands it to jobs (whose workers start at most Rate heals per second,
// shared by every sweep). It reports whether it did.
func (e *Engine) claim(ctx context.Context, mailboxID string, before time.Time, jobs chan<- *mailpush.Mailbox) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	now := e.Clock.Now()
	c, err := e.Store.UpdateMailbox(ctx, mailboxID, func(m *mailpush.Mailbox) error {
		if m.Status == mailpush.StatusInactive || !m.LastEventAt.Before(before) {
			return errNotStale
		}
		m.LastEventAt = now
		return nil
	})
	if errors.Is(err, errNotStale) || mailpush.ErrorCode(err) == mailpush.ENotFound {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	select {
	case jobs <- c:
		return true, nil
	case <-ctx.Done():
		return true, ctx.Err()
	}
}

// Pace waits for the next start slot at the engine's Rate, the same slots
// its own heals take: writes a source starts on its own (a migration's
// new subscriptions) share the one budget with renewals.
func (e *Engine) Pace(ctx context.Context) error {
	e.init()
	return e.pace(ctx)
}

// pace waits, on the engine's clock, for the next start slot: spacing
// uniform in [1/Rate, 1.25/Rate), so that no second ever sees more than
// Rate starts and starts are never in lock step.
func (e *Engine) pace(ctx context.Context) error {
	rate := orDefault(e.Rate, DefaultRate)
	st := &e.st
	now := e.Clock.Now()
	st.mu.Lock()
	at := later(st.next, now)
	st.next = at.Add(time.Duration((1 + rand.Float64()/4) * float64(time.Second) / rate))
	st.mu.Unlock()
	return mailpush.Sleep(ctx, e.Clock, at.Sub(now))
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
