// Package pipeline turns a source's Event into one Push per active device of
// the mailbox, keeps it in the store's durable outbox, and delivers it
// through the provider of its tenant and platform.
//
// HandleEvent writes every push of an event to the outbox in one transaction
// before it returns, and sources acknowledge the mail server only after it
// returns: a push accepted is never lost, even to kill -9. Concurrent
// HandleEvent calls share that transaction (group commit), which is what
// SQLite's single writer needs to take thousands of pushes per second.
//
// The dispatcher claims due pushes in batches (one write transaction per
// batch) and keeps several batches in flight: the next batch is claimed while
// the previous ones are being sent, and when a batch's sends are done its
// settlement and the claim of the following batch share one transaction
// (when the store can: sqlite.Store.SettleAndClaim). Sends run on Workers
// long-lived goroutines, one registration's group of a batch at a time
// (a goroutine per group grew a fresh stack through the HTTP/2 client for
// every push): a registration's pushes reach
// the provider one after another in outbox order, and the outbox never hands
// out a push while an earlier one of its registration is in flight or
// waiting for a retry, so each device sees its mailbox's events in order
// while different devices are served in parallel. Because a
// push is deleted only after the provider answered, delivery is at least
// once: a crash between the answer and the settlement sends that push again.
//
// Failures: a permanent refusal goes to the dead letters at once; a
// temporary one is retried with exponential backoff and jitter, never sooner
// than the provider's Retry-After, and goes to the dead letters after
// MaxAttempts. When a push to a registration must wait, the registration's
// later pushes in the batch wait with it, so they cannot overtake it.
//
// Never spam: badge and sync pushes still queued are replaced by newer ones
// (the outbox coalesces them), a push whose mailbox sequence is older than
// the last one delivered to the device is dropped (a badge never goes
// backwards; an old alert is sent without its stale badge), background pushes
// are limited per device (Apple throttles apps that send many), and a token
// bucket per tenant protects the providers.
package pipeline

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	mathrand "math/rand/v2"
	"sync"
	"time"

	"github.com/mailpush/mailpush"
)

// Config holds the pipeline's dependencies and limits. Zero values take the
// defaults shown.
type Config struct {
	Store mailpush.Store
	// Pushers are the providers by platform, used when Route is nil or
	// finds none.
	Pushers map[mailpush.Platform]mailpush.Pusher
	// Route returns the provider for a tenant's platform (per-tenant
	// credentials), or nil when the tenant has none.
	Route func(tenantID string, platform mailpush.Platform) mailpush.Pusher
	// SealContent seals alert content to a device's content key (seal.SealContent).
	SealContent func(devicePub, plain []byte) (string, error)
	Logger      *slog.Logger
	Clock       mailpush.Clock
	Metrics     *Metrics // nil records nothing

	Workers      int           // concurrent sends; default 64
	BatchSize    int           // pushes claimed per transaction; default 512
	InFlight     int           // batches between claim and settlement at once; default 4
	Lease        time.Duration // how long a claim holds a push; default 2m
	PollInterval time.Duration // how often to look for retries that came due; default 1s
	SendTimeout  time.Duration // one provider call; default 30s
	MaxAttempts  int           // attempts before a dead letter; default 12
	RetryBase    time.Duration // first backoff; default 1s, doubling per attempt
	RetryMax     time.Duration // backoff cap; default 15m
	// Jitter spreads a backoff d; default: uniformly in [d/2, d).
	Jitter func(d time.Duration) time.Duration
	// SyncPerHour is how many background pushes a device may get per hour
	// (Apple tolerates a few); default 3. Extra ones wait, coalesced.
	SyncPerHour int
	// TenantRate is the pushes per second each tenant may send (bursts up to
	// TenantBurst); zero means no limit.
	TenantRate  float64
	TenantBurst int
}

// Pipeline fans events out to devices through the outbox.
type Pipeline struct {
	cfg     Config
	tenants *limiter // per tenant
	syncs   *limiter // per registration, background pushes only

	sem     chan struct{} // Workers send slots
	enqueue groupCommit

	wake      chan struct{}
	startOnce sync.Once
	stopOnce  sync.Once
	stop      chan struct{}
	done      chan struct{}
	cancel    context.CancelFunc
}

// New returns a pipeline; Start launches its dispatcher.
func New(cfg Config) *Pipeline {
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	defDur := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&cfg.Workers, 64)
	def(&cfg.BatchSize, 512)
	def(&cfg.InFlight, 4)
	def(&cfg.MaxAttempts, 12)
	def(&cfg.SyncPerHour, 3)
	defDur(&cfg.Lease, 2*time.Minute)
	defDur(&cfg.PollInterval, time.Second)
	defDur(&cfg.SendTimeout, 30*time.Second)
	defDur(&cfg.RetryBase, time.Second)
	defDur(&cfg.RetryMax, 15*time.Minute)
	if cfg.Jitter == nil {
		cfg.Jitter = func(d time.Duration) time.Duration {
			if d < 2 {
				return d
			}
			return d/2 + time.Duration(mathrand.Int64N(int64(d/2)))
		}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Clock == nil {
		cfg.Clock = mailpush.SystemClock{}
	}
	p := &Pipeline{
		cfg:   cfg,
		wake:  make(chan struct{}, 1),
		stop:  make(chan struct{}),
		done:  make(chan struct{}),
		syncs: newLimiter(float64(cfg.SyncPerHour)/3600, cfg.SyncPerHour),
		sem:   make(chan struct{}, cfg.Workers),
	}
	p.enqueue.store = cfg.Store
	if cfg.TenantRate > 0 {
		p.tenants = newLimiter(cfg.TenantRate, max(1, cfg.TenantBurst))
	}
	return p
}

// Start launches the dispatcher. Calling it again does nothing.
func (p *Pipeline) Start() {
	p.startOnce.Do(func() {
		ctx, cancel := context.WithCancel(context.Background())
		p.cancel = cancel
		go p.run(ctx)
	})
}

// Shutdown stops accepting events and lets the batches in flight finish until
// ctx ends. Pushes still queued stay in the outbox for the next start. It is
// safe to call more than once, and without Start.
func (p *Pipeline) Shutdown(ctx context.Context) error {
	p.stopOnce.Do(func() { close(p.stop) })
	p.startOnce.Do(func() { close(p.done) }) // never started: nothing to wait for
	defer func() {
		if p.cancel != nil {
			p.cancel()
		}
	}()
	select {
	case <-p.done:
		return nil
	case <-ctx.Done():
		p.cancel() // abort the sends in flight; their pushes stay queued
		<-p.done
		return fmt.Errorf("pipeline: shutdown: %w", ctx.Err())
	}
}

// HandleEvent stores one push for every active device of the event's mailbox
// in the outbox, in one transaction. When it returns nil the pushes are
// durable.
func (p *Pipeline) HandleEvent(ctx context.Context, ev mailpush.Event) error {
	select {
	case <-p.stop:
		return mailpush.Errorf(mailpush.EUnavailable, "shutting down")
	default:
	}
	regs, err := p.cfg.Store.ActiveRegistrations(ctx, ev.MailboxID)
	if err != nil {
		return fmt.Errorf("pipeline: %w", err)
	}
	pushes := make([]*mailpush.Push, 0, len(regs))
	for _, reg := range regs {
		if reg.Status != mailpush.StatusActive {
			continue
		}
		push, err := p.build(ev, reg)
		if err != nil {
			p.cfg.Logger.Error("cannot build push", "registration", reg.ID, "err", err)
			continue
		}
		pushes = append(pushes, push)
	}
	if len(pushes) == 0 {
		return nil
	}
	if err := p.enqueue.do(ctx, pushes); err != nil {
		return fmt.Errorf("pipeline: %w", err)
	}
	p.cfg.Metrics.enqueued(pushes)
	select {
	case p.wake <- struct{}{}:
	default:
	}
	return nil
}

func (p *Pipeline) build(ev mailpush.Event, reg *mailpush.Registration) (*mailpush.Push, error) {
	push := &mailpush.Push{
		ID: newUUID(), TenantID: reg.TenantID, RegistrationID: reg.ID, MailboxID: reg.MailboxID,
		Device: reg.Device, Badge: ev.Badge, Seq: ev.Seq, CreatedAt: p.cfg.Clock.Now(),
		// Later pushes of a mailbox replace earlier ones still pending at
		// the provider.
		CollapseID: "mb-" + reg.MailboxID,
	}
	switch {
	case ev.Kind == mailpush.EventNewMail && ev.Subject != "" && reg.Content.Rank() >= mailpush.ContentSubject.Rank():
		push.Kind = mailpush.PushAlert
		push.CollapseID = "" // every new message is shown
		subject, sender := ev.Subject, ""
		if reg.Content == mailpush.ContentSubjectSender {
			sender = ev.Sender
		}
		if len(reg.Device.ContentKey) > 0 && p.cfg.SealContent != nil {
			plain, _ := json.Marshal(struct {
				Subject string `json:"subject"`
				Sender  string `json:"sender,omitempty"`
			}{subject, sender})
			sealed, err := p.cfg.SealContent(reg.Device.ContentKey, plain)
			clear(plain)
			if err != nil {
				return nil, err
			}
			push.Sealed = sealed
		} else {
			push.Subject, push.Sender = subject, sender
		}
	case ev.Kind == mailpush.EventResync || ev.Badge == mailpush.NoBadge:
		push.Kind = mailpush.PushSync
		push.CollapseID = "sync-" + reg.MailboxID
	default:
		push.Kind = mailpush.PushBadge
	}
	return push, nil
}

// sendGroup sends one registration's pushes of a batch in outbox order.
func (p *Pipeline) sendGroup(ctx context.Context, group []*mailpush.QueuedPush) []mailpush.PushSettlement {
	out := make([]mailpush.PushSettlement, 0, len(group))
	var held time.Time // an earlier push waits until then
	var lastSeq int64  // delivered in this batch
	for _, q := range group {
		if !held.IsZero() {
			// An earlier push to the device waits: do not overtake it.
			out = append(out, mailpush.PushSettlement{OutboxID: q.OutboxID, Action: mailpush.SettleRetry, Undo: true, DueAt: held, Reason: "behind an earlier push"})
			continue
		}
		if last := max(q.LastSeq, lastSeq); q.Push.Seq > 0 && q.Push.Seq < last {
			if q.Push.Kind != mailpush.PushAlert {
				p.cfg.Metrics.result(q, "superseded", "")
				out = append(out, mailpush.PushSettlement{OutboxID: q.OutboxID, Action: mailpush.SettleDone})
				continue
			}
			q.Push.Badge = mailpush.NoBadge // the message is news; its badge is not
		}
		s := p.send(ctx, q)
		if s.Action == mailpush.SettleRetry {
			held = s.DueAt
		}
		if s.Action == mailpush.SettleDone && s.Seq > lastSeq {
			lastSeq = s.Seq
		}
		out = append(out, s)
	}
	return out
}

// send delivers one push and says what to do with it.
func (p *Pipeline) send(ctx context.Context, q *mailpush.QueuedPush) mailpush.PushSettlement {
	push := &q.Push
	s := mailpush.PushSettlement{OutboxID: q.OutboxID, RegistrationID: push.RegistrationID}
	now := p.cfg.Clock.Now()
	if push.Kind == mailpush.PushSync {
		if wait := p.syncs.take(push.RegistrationID, now); wait > 0 {
			p.cfg.Metrics.result(q, "rate_limited", "device_sync")
			s.Action, s.Undo, s.DueAt, s.Reason = mailpush.SettleRetry, true, now.Add(wait), "background push limit of the device"
			return s
		}
	}
	if p.tenants != nil {
		if wait := p.tenants.take(push.TenantID, now); wait > 0 {
			p.cfg.Metrics.result(q, "rate_limited", "tenant")
			s.Action, s.Undo, s.DueAt, s.Reason = mailpush.SettleRetry, true, now.Add(wait), "tenant rate limit"
			return s
		}
	}
	pusher := p.pusher(push.TenantID, push.Device.Platform)
	log := p.cfg.Logger.With("registration", push.RegistrationID, "platform", push.Device.Platform, "kind", push.Kind)
	if pusher == nil {
		log.Warn("push dead: no provider configured for the tenant's platform")
		p.cfg.Metrics.result(q, "failed", "no_provider")
		s.Action, s.Reason = mailpush.SettleDead, "no provider for platform "+string(push.Device.Platform)
		return s
	}
	sctx, cancel := context.WithTimeout(ctx, p.cfg.SendTimeout)
	start := time.Now()
	res, err := pusher.Push(sctx, push)
	cancel()
	p.cfg.Metrics.sent(q, time.Since(start), p.cfg.Clock.Now())
	reason := res.Reason
	if reason == "" && res.Status != 0 {
		reason = fmt.Sprint(res.Status)
	}
	switch res.Outcome {
	case mailpush.PushDelivered:
		p.cfg.Metrics.result(q, "delivered", "")
		s.Action, s.Seq = mailpush.SettleDone, push.Seq
		return s
	case mailpush.PushDropToken:
		p.cfg.Metrics.result(q, "dropped_token", reason)
		p.dropToken(push, res)
		s.Action = mailpush.SettleDone
		return s
	case mailpush.PushFailed:
		log.Warn("push refused by provider", "status", res.Status, "reason", res.Reason, "err", err)
		p.cfg.Metrics.result(q, "failed", reason)
		s.Action, s.Reason = mailpush.SettleDead, fmt.Sprintf("refused: %d %s", res.Status, res.Reason)
		return s
	}
	if reason == "" {
		reason = "transport"
	}
	if ctx.Err() != nil {
		// Shutting down: the attempt was cut short, not refused.
		s.Action, s.Undo, s.DueAt, s.Reason = mailpush.SettleRetry, true, now, "interrupted"
		return s
	}
	if q.Attempts >= p.cfg.MaxAttempts {
		log.Warn("push dead after retries", "attempts", q.Attempts, "status", res.Status, "reason", res.Reason, "err", err)
		p.cfg.Metrics.result(q, "dead", reason)
		s.Action, s.Reason = mailpush.SettleDead, fmt.Sprintf("gave up after %d attempts: %s", q.Attempts, reason)
		return s
	}
	p.cfg.Metrics.result(q, "retry", reason)
	wait := p.Backoff(q.Attempts)
	if res.RetryAfter > wait {
		wait = res.RetryAfter
	}
	log.Debug("push will be retried", "attempts", q.Attempts, "in", wait, "status", res.Status, "reason", res.Reason, "err", err)
	s.Action, s.DueAt, s.Reason = mailpush.SettleRetry, p.cfg.Clock.Now().Add(wait), reason
	return s
}

// Backoff is the wait after the n-th failed attempt (1-based): RetryBase
// doubled per attempt, capped at RetryMax, jittered.
func (p *Pipeline) Backoff(n int) time.Duration {
	d := p.cfg.RetryMax
	if n-1 < 40 {
		if b := p.cfg.RetryBase << (n - 1); b > 0 && b < d {
			d = b
		}
	}
	return p.cfg.Jitter(d)
}

func (p *Pipeline) pusher(tenantID string, platform mailpush.Platform) mailpush.Pusher {
	if p.cfg.Route != nil {
		if ps := p.cfg.Route(tenantID, platform); ps != nil {
			return ps
		}
	}
	return p.cfg.Pushers[platform]
}

// dropToken deactivates a registration whose token the provider declared
// dead, unless the token was registered again after the provider's
// invalidation time (APNs 410 timestamp).
func (p *Pipeline) dropToken(push *mailpush.Push, res mailpush.PushResult) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	errStale := errors.New("token registered again after invalidation")
	_, err := p.cfg.Store.UpdateRegistration(ctx, push.TenantID, push.RegistrationID, func(r *mailpush.Registration) error {
		if r.Device.Token != push.Device.Token || (!res.InvalidAt.IsZero() && r.UpdatedAt.After(res.InvalidAt)) {
			return errStale
		}
		r.Status = mailpush.StatusInactive
		return nil
	})
	switch {
	case errors.Is(err, errStale):
		p.cfg.Logger.Info("dead-token answer ignored: the device registered again since", "registration", push.RegistrationID, "reason", res.Reason)
	case err != nil:
		p.cfg.Logger.Error("cannot deactivate registration with a dead token", "registration", push.RegistrationID, "err", err)
	default:
		p.cfg.Metrics.deadToken(push)
		p.cfg.Logger.Info("registration deactivated: dead push token", "registration", push.RegistrationID, "reason", res.Reason, "status", res.Status)
	}
}

func newUUID() string {
	var b [16]byte
	rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}
