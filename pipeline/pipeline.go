// Package pipeline turns a source's Event into one Push per active device of
// the mailbox and hands each to the provider of its platform.
//
// Events are turned into pushes synchronously (a store read), then queued on
// bounded queues that a fixed pool of workers drains. A mailbox's pushes
// always go to the same worker, so they reach the provider in the order of
// the mailbox's events (badges 1, 2, 3 never arrive as 1, 3, 2). When a queue is full
// HandleEvent refuses the event with EUnavailable, so the source answers the
// mail server with an error and the mail server retries later: back-pressure
// instead of unbounded memory. The queue is in memory, so pushes queued when
// the process dies are lost; the durable outbox replaces it (see issue
// "Push delivery that never loses a notification").
package pipeline

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"sync"
	"time"

	"github.com/mailpush/mailpush"
)

// Config holds the pipeline's dependencies and limits.
type Config struct {
	Store   mailpush.Store
	Pushers map[mailpush.Platform]mailpush.Pusher
	// SealContent seals alert content to a device's content key (seal.SealContent).
	SealContent func(devicePub, plain []byte) (string, error)
	Logger      *slog.Logger
	Clock       mailpush.Clock
	Workers     int // default 8
	QueueSize   int // total over all workers; default 10,000
	MaxAttempts int // default 4 (transient failures only)
	// Backoff is the wait before retry n (1-based); default 200ms·2^(n-1).
	Backoff func(n int) time.Duration
}

// Pipeline fans events out to devices.
type Pipeline struct {
	cfg    Config
	queues []chan *mailpush.Push // one per worker

	startOnce sync.Once
	stopOnce  sync.Once
	stop      chan struct{}
	wg        sync.WaitGroup
}

// New returns a pipeline; Start launches its workers.
func New(cfg Config) *Pipeline {
	if cfg.Workers <= 0 {
		cfg.Workers = 8
	}
	if cfg.QueueSize <= 0 {
		cfg.QueueSize = 10_000
	}
	if cfg.MaxAttempts <= 0 {
		cfg.MaxAttempts = 4
	}
	if cfg.Backoff == nil {
		cfg.Backoff = func(n int) time.Duration { return 200 * time.Millisecond << (n - 1) }
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	p := &Pipeline{cfg: cfg, stop: make(chan struct{})}
	per := max(1, cfg.QueueSize/cfg.Workers)
	for range cfg.Workers {
		p.queues = append(p.queues, make(chan *mailpush.Push, per))
	}
	return p
}

// Start launches the workers. Calling it again does nothing.
func (p *Pipeline) Start() {
	p.startOnce.Do(func() {
		for _, q := range p.queues {
			p.wg.Add(1)
			go p.worker(q)
		}
	})
}

// Shutdown stops accepting work, lets the workers send what is queued until
// ctx ends, and waits for them. It is safe to call more than once.
func (p *Pipeline) Shutdown(ctx context.Context) error {
	p.stopOnce.Do(func() { close(p.stop) })
	done := make(chan struct{})
	go func() { p.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("pipeline: shutdown: %d pushes not sent: %w", p.Queued(), ctx.Err())
	}
}

// HandleEvent queues one push for every active device of the event's mailbox.
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
	var pushes []*mailpush.Push
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
	q := p.queues[shard(ev.MailboxID, len(p.queues))]
	if len(pushes) > cap(q)-len(q) {
		return mailpush.Errorf(mailpush.EUnavailable, "push queue is full")
	}
	for _, push := range pushes {
		select {
		case q <- push:
		default:
			return mailpush.Errorf(mailpush.EUnavailable, "push queue is full")
		}
	}
	return nil
}

// Queued returns the number of pushes waiting in the queues.
func (p *Pipeline) Queued() int {
	n := 0
	for _, q := range p.queues {
		n += len(q)
	}
	return n
}

func shard(key string, n int) int {
	h := fnv.New32a()
	h.Write([]byte(key))
	return int(h.Sum32() % uint32(n))
}

func (p *Pipeline) build(ev mailpush.Event, reg *mailpush.Registration) (*mailpush.Push, error) {
	push := &mailpush.Push{
		ID: newUUID(), TenantID: reg.TenantID, RegistrationID: reg.ID, MailboxID: reg.MailboxID,
		Device: reg.Device, Badge: ev.Badge, Seq: ev.Seq, CreatedAt: p.cfg.Clock.Now(),
	}
	switch {
	case ev.Kind == mailpush.EventNewMail && ev.Subject != "" && reg.Content.Rank() >= mailpush.ContentSubject.Rank():
		push.Kind = mailpush.PushAlert
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
	default:
		push.Kind = mailpush.PushBadge
		// Later badge pushes replace earlier ones that are still pending.
		push.CollapseID = "badge-" + reg.MailboxID
	}
	return push, nil
}

func (p *Pipeline) worker(q chan *mailpush.Push) {
	defer p.wg.Done()
	for {
		select {
		case push := <-q:
			p.deliver(push)
		case <-p.stop:
			// Drain what is queued, then stop.
			for {
				select {
				case push := <-q:
					p.deliver(push)
				default:
					return
				}
			}
		}
	}
}

func (p *Pipeline) deliver(push *mailpush.Push) {
	pusher, ok := p.cfg.Pushers[push.Device.Platform]
	log := p.cfg.Logger.With("registration", push.RegistrationID, "platform", push.Device.Platform, "kind", push.Kind)
	if !ok {
		log.Warn("push dropped: no provider configured for the platform")
		return
	}
	for attempt := 1; ; attempt++ {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		res, err := pusher.Push(ctx, push)
		cancel()
		switch res.Outcome {
		case mailpush.PushDelivered:
			log.Debug("push delivered", "seq", push.Seq)
			return
		case mailpush.PushDropToken:
			p.dropToken(push, res)
			return
		case mailpush.PushFailed:
			log.Warn("push refused by provider", "status", res.Status, "reason", res.Reason)
			return
		}
		if attempt >= p.cfg.MaxAttempts {
			log.Warn("push given up after retries", "attempts", attempt, "status", res.Status, "reason", res.Reason, "err", err)
			return
		}
		wait := p.cfg.Backoff(attempt)
		if res.RetryAfter > wait {
			wait = res.RetryAfter
		}
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-p.stop:
			t.Stop()
			log.Warn("push not retried: shutting down", "attempts", attempt)
			return
		}
	}
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
