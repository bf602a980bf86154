// Package pipeline turns a source's Event into one Push per active device of
// the mailbox and delivers it through the provider of its tenant and
// platform, with the store's durable two-tier outbox in between.
//
// # Durability at one write per event
//
// HandleEvent writes the event, not its pushes: one row in the event tier
// (outbox_events in SQLite) whatever the number of devices behind the
// mailbox, and returns once it is committed. Sources acknowledge the mail
// server only after it returns, so an acknowledged event is never lost, even
// to kill -9. Concurrent HandleEvent calls share one transaction (group
// commit), which is what SQLite's single writer needs to take thousands of
// events per second. Acknowledging therefore costs the same for a mailbox
// with one device as for one with a thousand.
//
// Fan-out, payloads and sends come after the acknowledgement. The dispatcher
// claims events in batches sized so that their pushes fill about BatchSize
// (it learns the pushes per event from the previous fan-out), reads the
// devices of the batch's mailboxes in one query (Recipients: push tokens
// opened once per batch, with each device's last delivered sequence and
// whether it has device pushes queued), builds the pushes in memory (one
// allocation for the batch; subject, sender and the collapse IDs shared per
// event, the sealed-content plaintext built once per event and content mode)
// and hands them, grouped by registration, to Workers long-lived send
// goroutines. When the batch's sends are done, one transaction deletes its
// events, raises the delivered sequences (one UPDATE for the batch), writes
// what must wait and the dead letters, and claims the next batch.
//
// # The device tier: per-device rows only where they carry state
//
// A push becomes a row of its own (the device tier, outbox in SQLite) only
// when the event row cannot carry its state:
//
//   - retry: the provider failed temporarily; the row holds the attempts
//     made, the next due time (exponential backoff with jitter, never sooner
//     than the provider's Retry-After) and the last error;
//   - order: the device already has a push waiting (a retry, a rate limit),
//     so this one is queued behind it instead of overtaking it; the same
//     holds for the pushes after a failed one within a batch;
//   - rate limit: the device's background-push budget or the tenant's rate
//     is spent; the row waits (the attempt is not counted).
//
// When every device answers 200 nothing is written or deleted per device:
// the common case costs one insert and one delete per event, plus one UPDATE
// of last sequences per batch. The device tier is claimed by its own loop
// (ClaimPushes, with a lease, oldest first, never a push while an earlier one
// of its registration is leased or waiting) with the same send and settle
// path; a permanent refusal, or MaxAttempts temporary ones, makes a dead
// letter, which keeps no content and no token.
//
// # Schema and states (SQLite; storetest holds every store to the same)
//
//   - outbox_events: id (never reused), event_id (push IDs derive from
//     it), tenant, mailbox, kind, class ('badge' or 'sync' when every push
//     would be of that coalescing kind, else empty), badge, seq, content (subject
//     and sender sealed with the field cipher), unresolved, attempts, due_at
//     (doubles as the lease), created_at. States: queued (due_at <= now),
//     leased (due_at > now: being fanned out), gone (settled).
//   - outbox (the device tier): one push with its registration, kind, badge,
//     seq, collapse ID, sealed content, attempts, due_at, last_error. States:
//     due, leased, waiting (a retry or a rate limit: due_at in the future),
//     gone (delivered, superseded, or moved to the dead letters).
//   - outbox_dead: dead letters, without content or token.
//   - mailboxes.fanned_seq: the highest event sequence fanned out to the
//     mailbox (one write per event); registrations.last_seq: what the device
//     tier delivered; a device's last sequence is the higher of the two.
//     registrations.left_active_at: when an active registration became
//     pending, so that it still gets the events accepted while it was
//     active (they were decided for it).
//
// # Promises, and what keeps each
//
//   - At least once across kill -9: an event leaves the outbox in the
//     transaction that records its fan-out's leftovers (device rows, dead
//     letters); a process that dies in the middle of a fan-out leaves the
//     event leased, and when the lease ends the whole event is fanned out
//     again (the devices already served get it twice; push IDs derive from
//     the event ID and the registration, so the repeat carries the same
//     apns-id). A device row likewise leaves only once settled.
//   - Order per device: an event is not claimed while an older event of its
//     mailbox is leased (a mailbox's events are fanned out in order, and a
//     batch keeps them in order per registration); a device with queued
//     device rows gets the event's push queued behind them (Recipient.Held);
//     the device tier never hands out a push while an earlier one of its
//     registration is in flight or waiting.
//   - Monotonic badges: a push whose mailbox sequence is older than the last
//     one delivered to the device is dropped (an old alert is sent without its
//     stale badge); the last sequence is raised, never lowered, at settlement.
//   - Coalescing: an event whose pushes would all be badges (or all
//     background syncs) replaces the queued, unclaimed events of its mailbox
//     of the same class at enqueue (a burst of flag changes while the
//     providers are down stays one row per mailbox); within a batch a
//     registration's badge and sync pushes are cut to the newest of each
//     kind; device rows of those kinds coalesce as they are queued.
//   - Bounded memory: queued work lives in the database, not the heap; the
//     dispatcher holds at most InFlight batches per tier of about BatchSize
//     pushes each (a single event with more devices than BatchSize is one
//     batch).
//
// # Acknowledge before fetching: unresolved events
//
// A source that must answer the mail server before it knows the badge and
// content (Microsoft Graph and EWS: a webhook is answered as soon as its
// notifications are durable, the unread count and the subject are fetched
// afterwards) stores the event with
// HandleUnresolvedEvent: the row is marked unresolved and carries no badge
// and no content yet. After the claim and before the fan-out the pipeline
// calls Config.Resolver (SourceResolvers routes each event to its
// mailbox's source), which fetches and fills in the event; a failure
// leaves the event leased, to be tried again when the lease ends. Credentials
// are never stored with the event: in sealed mode they exist only in memory
// (the resolver keeps them, e.g. by mailbox, from the notification that
// carried them); a resolver that has lost them to a restart resolves the
// event as a background push (Badge NoBadge) so the device fetches for
// itself. The unresolved events of a batch are resolved concurrently (at
// most resolveConcurrency at once), so a batch waits for its slowest fetch,
// not for the sum of them.
//
// Never spam: besides coalescing and monotonic badges, background pushes are
// limited per device (Apple throttles apps that send many), and a token
// bucket per tenant protects the providers.
package pipeline

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	mathrand "math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mailpush/mailpush"
)

// Store is the pipeline's role of the store: the outbox, and dropping a
// device whose token the provider refused.
type Store interface {
	mailpush.Outbox
	UpdateRegistration(ctx context.Context, tenantID, id string, fn func(*mailpush.Registration) error) (*mailpush.Registration, error)
}

// Config holds the pipeline's dependencies and limits. Zero values take the
// defaults shown.
type Config struct {
	Store Store
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
	// Resolver completes unresolved events (HandleUnresolvedEvent) after
	// their claim, before their fan-out; nil when no source stores any.
	Resolver Resolver

	Workers      int           // concurrent sends; default 64
	BatchSize    int           // pushes per batch (events are claimed to fill it); default 512
	InFlight     int           // batches between claim and settlement at once, per tier; default 4
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

// Resolver completes an event that a source stored before knowing its badge
// and content (see the package doc). It fills in ev.Event (Badge, Subject,
// Sender, Kind) and clears nothing else. An error leaves the event in the
// outbox to be claimed again when its lease ends; a resolver that can never
// succeed (the credentials it needs were only in memory and the process
// restarted) should leave Badge at NoBadge and return nil: the devices then
// get a background push and fetch for themselves.
type Resolver interface {
	Resolve(ctx context.Context, ev *mailpush.OutboxEvent) error
}

// Pipeline fans events out to devices through the outbox.
type Pipeline struct {
	cfg     Config
	tenants *mailpush.Buckets // per tenant, at tenantShare (nil: no tenant rate)
	syncs   mailpush.Buckets  // per registration, background pushes only
	// tenantShare is this process's share of TenantRate and TenantBurst
	// (ShareTenantRate).
	tenantShare atomic.Pointer[rateShare]

	sem     chan struct{} // Workers send slots
	enqueue groupCommit

	wake      chan struct{} // an event was accepted
	wakeQueue chan struct{} // device pushes were queued
	fan       atomic.Int64  // pushes per event in the last fan-out, x16: sizes event claims
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
		cfg:       cfg,
		wake:      make(chan struct{}, 1),
		wakeQueue: make(chan struct{}, 1),
		stop:      make(chan struct{}),
		done:      make(chan struct{}),
		sem:       make(chan struct{}, cfg.Workers),
	}
	p.enqueue.store = cfg.Store
	if cfg.TenantRate > 0 {
		p.tenants = &mailpush.Buckets{}
		p.tenantShare.Store(&rateShare{cfg.TenantRate, max(1, cfg.TenantBurst)})
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

// HandleEvent stores the event in the outbox (one row, whatever the number
// of devices of its mailbox). When it returns nil the event is durable: the
// source may acknowledge the mail server. Fan-out and sends come after.
func (p *Pipeline) HandleEvent(ctx context.Context, ev mailpush.Event) error {
	return p.accept(ctx, &mailpush.OutboxEvent{ID: newUUID(), Event: ev, CreatedAt: p.cfg.Clock.Now()})
}

// HandleMailboxEvent is HandleEvent for a source that moves the event's
// mailbox with it (mailpush.MailboxEventSink): the mailbox update and the
// event row are one write, and the event carries the mailbox's new sequence.
func (p *Pipeline) HandleMailboxEvent(ctx context.Context, ev mailpush.Event, record func(*mailpush.Mailbox) bool) error {
	return p.accept(ctx, &mailpush.OutboxEvent{ID: newUUID(), Event: ev, CreatedAt: p.cfg.Clock.Now(), Record: record})
}

// HandleUnresolvedEvent stores an event whose badge and content are not known
// yet (a source that acknowledges before fetching them from the mail
// server): the Resolver completes it after the claim, before the fan-out.
// ev must not carry credentials; the resolver finds them itself.
func (p *Pipeline) HandleUnresolvedEvent(ctx context.Context, ev mailpush.Event) error {
	return p.HandleUnresolvedMailboxEvent(ctx, ev, nil)
}

// HandleUnresolvedMailboxEvent is HandleUnresolvedEvent for a source that
// moves the event's mailbox with it (mailpush.ResolvingMailboxSink): one
// write, as HandleMailboxEvent. A nil record moves nothing.
func (p *Pipeline) HandleUnresolvedMailboxEvent(ctx context.Context, ev mailpush.Event, record func(*mailpush.Mailbox) bool) error {
	if p.cfg.Resolver == nil {
		return fmt.Errorf("pipeline: an unresolved event needs Config.Resolver")
	}
	return p.accept(ctx, &mailpush.OutboxEvent{ID: newUUID(), Event: ev, Unresolved: true, CreatedAt: p.cfg.Clock.Now(), Record: record})
}

func (p *Pipeline) accept(ctx context.Context, e *mailpush.OutboxEvent) error {
	select {
	case <-p.stop:
		return mailpush.Errorf(mailpush.EUnavailable, "shutting down")
	default:
	}
	if err := p.enqueue.do(ctx, e); err != nil {
		return fmt.Errorf("pipeline: %w", err)
	}
	p.cfg.Metrics.event()
	select {
	case p.wake <- struct{}{}:
	default:
	}
	return nil
}

// eventPushes is what the pushes of one event share: built once per event
// and content mode, not per device.
type eventPushes struct {
	e                   *mailpush.OutboxEvent
	collapse, collapseS string    // "mb-<mailbox>", "sync-<mailbox>"
	plain               [2][]byte // sealed-content plaintext by content mode: subject, subject+sender
	// shared payloads: badge or sync (every device the same), plain alert
	// with subject, plain alert with subject and sender
	shared [3]mailpush.SharedPayload
}

func newEventPushes(e *mailpush.OutboxEvent) *eventPushes {
	return &eventPushes{e: e, collapse: "mb-" + e.Event.MailboxID, collapseS: "sync-" + e.Event.MailboxID}
}

// build makes the event's push for one recipient.
func (p *Pipeline) build(ep *eventPushes, r *mailpush.Recipient, q *mailpush.QueuedPush) error {
	ev := &ep.e.Event
	q.Attempts, q.LastSeq, q.RegUpdatedAt = 1, r.LastSeq, r.UpdatedAt
	push := &q.Push
	*push = mailpush.Push{
		ID: pushID(ep.e.ID, r.RegistrationID), TenantID: r.TenantID, RegistrationID: r.RegistrationID, MailboxID: r.MailboxID,
		Device: r.Device, Badge: ev.Badge, Seq: ev.Seq, CreatedAt: ep.e.CreatedAt,
		// Later pushes of a mailbox replace earlier ones still pending at
		// the provider.
		CollapseID: ep.collapse,
	}
	switch {
	case ev.Kind == mailpush.EventNewMail && ev.Subject != "" && r.Content.Rank() >= mailpush.ContentSubject.Rank():
		push.Kind = mailpush.PushAlert
		push.CollapseID = "" // every new message is shown
		withSender := r.Content == mailpush.ContentSubjectSender
		subject, sender := ev.Subject, ""
		if withSender {
			sender = ev.Sender
		}
		if len(r.Device.ContentKey) > 0 && p.cfg.SealContent != nil {
			mode := 0
			if withSender {
				mode = 1
			}
			if ep.plain[mode] == nil {
				ep.plain[mode], _ = json.Marshal(struct {
					Subject string `json:"subject"`
					Sender  string `json:"sender,omitempty"`
				}{subject, sender})
			}
			sealed, err := p.cfg.SealContent(r.Device.ContentKey, ep.plain[mode])
			if err != nil {
				return err
			}
			push.Sealed = sealed
		} else {
			push.Subject, push.Sender = subject, sender
			push.Shared = &ep.shared[1]
			if withSender {
				push.Shared = &ep.shared[2]
			}
		}
	case ev.Kind == mailpush.EventResync || ev.Badge == mailpush.NoBadge:
		push.Kind = mailpush.PushSync
		push.CollapseID = ep.collapseS
		push.Shared = &ep.shared[0]
	default:
		push.Kind = mailpush.PushBadge
		push.Shared = &ep.shared[0]
	}
	return nil
}

// done forgets the event's plaintext.
func (ep *eventPushes) done() {
	clear(ep.plain[0])
	clear(ep.plain[1])
}

// sendGroup sends one registration's pushes of a batch in outbox order,
// appending their settlements to out.
func (p *Pipeline) sendGroup(d *sendDeadline, group []*mailpush.QueuedPush, out []mailpush.PushSettlement) []mailpush.PushSettlement {
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
			q.Push.Shared = nil             // no longer what the event's other pushes carry
		}
		s := p.send(d, q)
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

// send delivers one push, within SendTimeout, and says what to do with it.
func (p *Pipeline) send(d *sendDeadline, q *mailpush.QueuedPush) mailpush.PushSettlement {
	ctx := d.parent
	push := &q.Push
	s := mailpush.PushSettlement{OutboxID: q.OutboxID, RegistrationID: push.RegistrationID}
	now := p.cfg.Clock.Now()
	if push.Kind == mailpush.PushSync {
		if wait := p.syncs.Take(push.RegistrationID, float64(p.cfg.SyncPerHour)/3600, p.cfg.SyncPerHour, now); wait > 0 {
			p.cfg.Metrics.result(q, "rate_limited", "device_sync")
			s.Action, s.Undo, s.DueAt, s.Reason = mailpush.SettleRetry, true, now.Add(wait), "background push limit of the device"
			return s
		}
	}
	if p.tenants != nil {
		share := p.tenantShare.Load()
		if wait := p.tenants.Take(push.TenantID, share.rate, share.burst, now); wait > 0 {
			p.cfg.Metrics.result(q, "rate_limited", "tenant")
			s.Action, s.Undo, s.DueAt, s.Reason = mailpush.SettleRetry, true, now.Add(wait), "tenant rate limit"
			return s
		}
	}
	pusher := p.pusher(push.TenantID, push.Device.Platform)
	// Built only when something is logged: With allocates, and the common
	// case logs nothing.
	log := func() *slog.Logger {
		return p.cfg.Logger.With("registration", push.RegistrationID, "platform", push.Device.Platform, "kind", push.Kind)
	}
	if pusher == nil {
		log().Warn("push dead: no provider configured for the tenant's platform")
		p.cfg.Metrics.result(q, "failed", "no_provider")
		s.Action, s.Reason = mailpush.SettleDead, "no provider for platform "+string(push.Device.Platform)
		return s
	}
	start := time.Now()
	res, err := pusher.Push(d.begin(), push)
	d.end()
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
		log().Warn("push refused by provider", "status", res.Status, "reason", res.Reason, "err", err)
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
		log().Warn("push dead after retries", "attempts", q.Attempts, "status", res.Status, "reason", res.Reason, "err", err)
		p.cfg.Metrics.result(q, "dead", reason)
		s.Action, s.Reason = mailpush.SettleDead, fmt.Sprintf("gave up after %d attempts: %s", q.Attempts, reason)
		return s
	}
	p.cfg.Metrics.result(q, "retry", reason)
	wait := p.Backoff(q.Attempts)
	if res.RetryAfter > wait {
		wait = res.RetryAfter
	}
	log().Debug("push will be retried", "attempts", q.Attempts, "in", wait, "status", res.Status, "reason", res.Reason, "err", err)
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
	return formatUUID(b)
}

// pushID is the ID of an event's push to a registration: the event's UUID
// with its second half mixed with a hash of the registration ID. It is
// stable, so a fan-out sent again after a crash reuses the apns-id.
func pushID(eventID, registrationID string) string {
	var b [16]byte
	if len(eventID) == 36 {
		hex.Decode(b[0:4], []byte(eventID[0:8]))
		hex.Decode(b[4:6], []byte(eventID[9:13]))
		hex.Decode(b[6:8], []byte(eventID[14:18]))
		hex.Decode(b[8:10], []byte(eventID[19:23]))
		hex.Decode(b[10:16], []byte(eventID[24:36]))
	} else {
		h := fnv.New128a()
		h.Write([]byte(eventID))
		h.Sum(b[:0])
	}
	h := fnv.New64a()
	h.Write([]byte(registrationID))
	binary.BigEndian.PutUint64(b[8:], binary.BigEndian.Uint64(b[8:])^h.Sum64())
	return formatUUID(b)
}

// formatUUID formats b as a version 4 UUID.
func formatUUID(b [16]byte) string {
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	var out [36]byte
	hex.Encode(out[0:8], b[0:4])
	out[8] = '-'
	hex.Encode(out[9:13], b[4:6])
	out[13] = '-'
	hex.Encode(out[14:18], b[6:8])
	out[18] = '-'
	hex.Encode(out[19:23], b[8:10])
	out[23] = '-'
	hex.Encode(out[24:36], b[10:16])
	return string(out[:])
}

// ShareTenantRate makes this process send its share of TenantRate when
// nodes processes share one outbox: TenantRate/nodes per second (bursts
// likewise, at least 1), so that the tenant's limit holds for the cluster.
// It does nothing without a TenantRate.
func (p *Pipeline) ShareTenantRate(nodes int) {
	if p.tenants == nil || nodes < 1 {
		return
	}
	p.tenantShare.Store(&rateShare{p.cfg.TenantRate / float64(nodes), max(1, p.cfg.TenantBurst/nodes)})
}

// rateShare is a token bucket's rate (per second) and burst.
type rateShare struct {
	rate  float64
	burst int
}
