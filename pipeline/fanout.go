package pipeline

import (
	"context"
	"sync"
	"time"

	"github.com/mailpush/mailpush"
)

// eventLimit is how many events to claim so that their pushes fill about one
// batch, judging by the last fan-out's pushes per event.
func (p *Pipeline) eventLimit() int {
	fan := int(p.fan.Load()) // pushes per event x16
	if fan <= 16 {
		return p.cfg.BatchSize
	}
	return max(1, p.cfg.BatchSize*16/fan)
}

// fanOut turns claimed events into one push per active device of their
// mailboxes, grouped by registration in event order: one read of the
// batch's devices (tokens opened once per batch), payload parts built once
// per event and content mode.
func (p *Pipeline) fanOut(ctx context.Context, evs []*mailpush.OutboxEvent) *batch {
	b := &batch{tier: tierEvents, size: len(evs), events: make([]*mailpush.OutboxEvent, 0, len(evs))}
	mailboxes := make([]string, 0, len(evs))
	seen := make(map[string]bool, len(evs))
	failed := p.resolve(ctx, evs)
	for i, e := range evs {
		if failed[i] {
			continue // left leased: claimed again when the lease ends
		}
		b.events = append(b.events, e)
		if !seen[e.Event.MailboxID] {
			seen[e.Event.MailboxID] = true
			mailboxes = append(mailboxes, e.Event.MailboxID)
		}
	}
	var since time.Time
	for _, e := range b.events {
		if since.IsZero() || e.CreatedAt.Before(since) {
			since = e.CreatedAt
		}
	}
	recipients, err := p.cfg.Store.Recipients(ctx, mailboxes, since)
	if err != nil {
		// Nothing is settled: the events come back after their lease.
		p.cfg.Logger.Error("outbox: cannot read the devices of a batch; it is tried again after its lease", "err", err)
		b.events = nil
		return b
	}
	// Recipients come ordered by mailbox: slice them per mailbox.
	byMailbox := make(map[string][]*mailpush.Recipient, len(mailboxes))
	for i := 0; i < len(recipients); {
		j := i + 1
		for j < len(recipients) && recipients[j].MailboxID == recipients[i].MailboxID {
			j++
		}
		byMailbox[recipients[i].MailboxID] = recipients[i:j:j]
		i = j
	}
	total := 0
	for _, e := range b.events {
		total += len(byMailbox[e.Event.MailboxID])
	}
	// One allocation for every push of the batch.
	arena := make([]mailpush.QueuedPush, total)
	g := newGrouper(total)
	now := p.cfg.Clock.Now()
	var counts kindCounts
	n := 0
	for _, e := range b.events {
		ep := newEventPushes(e)
		for _, r := range byMailbox[e.Event.MailboxID] {
			if !r.LeftActiveAt.IsZero() && r.LeftActiveAt.Before(e.CreatedAt) {
				continue // pending since before the event: not its audience
			}
			q := &arena[n]
			n++
			if err := p.build(ep, r, q); err != nil || r.Unreadable != "" {
				reason := r.Unreadable
				if reason == "" {
					reason = "cannot seal the content to the device's key"
					p.cfg.Logger.Error("outbox: cannot build push", "registration", r.RegistrationID, "err", err)
				}
				b.dead = append(b.dead, deadLetter(q, reason, now))
				continue
			}
			counts.add(q.Push.Kind)
			g.add(b, q, r.Held)
		}
		ep.done()
	}
	g.finish(b)
	for i := range b.groups {
		b.groups[i].pushes = coalesce(b.groups[i].pushes)
	}
	if len(b.events) > 0 {
		p.fan.Store(int64(total * 16 / len(b.events)))
	}
	p.cfg.Metrics.enqueued(counts)
	return b
}

// resolveConcurrency bounds the Resolver calls of one batch running at once.
const resolveConcurrency = 16

// resolve completes a batch's unresolved events, concurrently; it reports
// which could not be resolved (nil when none was unresolved).
func (p *Pipeline) resolve(ctx context.Context, evs []*mailpush.OutboxEvent) []bool {
	var failed []bool
	var wg sync.WaitGroup
	slots := make(chan struct{}, resolveConcurrency)
	for i, e := range evs {
		if !e.Unresolved {
			continue
		}
		if failed == nil {
			failed = make([]bool, len(evs))
		}
		if p.cfg.Resolver == nil {
			p.cfg.Logger.Warn("outbox: an unresolved event and no resolver: fanned out as it is")
			e.Unresolved = false
			continue
		}
		slots <- struct{}{}
		wg.Go(func() {
			defer func() { <-slots }()
			if err := p.cfg.Resolver.Resolve(ctx, e); err != nil {
				p.cfg.Logger.Warn("outbox: cannot resolve an event; it is tried again after its lease", "err", err)
				failed[i] = true
				return
			}
			e.Unresolved = false
		})
	}
	wg.Wait()
	if failed == nil {
		return make([]bool, len(evs))
	}
	return failed
}

// coalesce drops the badge and sync pushes of a registration's group that a
// later one of the same kind makes redundant (the one with the highest
// sequence is kept), as the device tier does when it queues them.
func coalesce(g []*mailpush.QueuedPush) []*mailpush.QueuedPush {
	if len(g) < 2 {
		return g
	}
	keep := map[mailpush.PushKind]int{}
	for i, q := range g {
		if k := q.Push.Kind; k == mailpush.PushBadge || k == mailpush.PushSync {
			if j, ok := keep[k]; !ok || q.Push.Seq >= g[j].Push.Seq {
				keep[k] = i
			}
		}
	}
	out := g[:0]
	for i, q := range g {
		if k := q.Push.Kind; (k == mailpush.PushBadge || k == mailpush.PushSync) && keep[k] != i {
			continue
		}
		out = append(out, q)
	}
	return out
}

// eventSettlement waits for an event batch's sends and says what they leave
// behind: nothing per device when every device answered 200.
func (p *Pipeline) eventSettlement(b *batch) mailpush.EventSettlement {
	b.wg.Wait()
	now := p.cfg.Clock.Now()
	st := mailpush.EventSettlement{Dead: b.dead, Events: make([]int64, 0, len(b.events))}
	for _, e := range b.events {
		st.Events = append(st.Events, e.OutboxID)
	}
	for gi := range b.groups {
		g := &b.groups[gi]
		if g.held {
			for _, q := range g.pushes {
				if q.Push.Seq > 0 && q.Push.Seq < q.LastSeq {
					if q.Push.Kind != mailpush.PushAlert {
						continue // stale before it was queued
					}
					q.Push.Badge = mailpush.NoBadge
					q.Push.Shared = nil
				}
				st.Queue = append(st.Queue, mailpush.DevicePush{Push: &q.Push, DueAt: now, Reason: "behind an earlier push of the device"})
			}
			continue
		}
		for k, s := range g.settled {
			q := g.pushes[k]
			switch s.Action {
			case mailpush.SettleRetry:
				attempts := q.Attempts
				if s.Undo {
					attempts--
				}
				st.Queue = append(st.Queue, mailpush.DevicePush{Push: &q.Push, DueAt: s.DueAt, Attempts: attempts, Reason: s.Reason})
			case mailpush.SettleDead:
				st.Dead = append(st.Dead, deadLetter(q, s.Reason, now))
			}
			// Delivered: the event's sequence, raised for its mailbox by
			// the settlement, counts for the device; nothing to write.
		}
	}
	return st
}

// deadLetter is the content-free record of a push given up on.
func deadLetter(q *mailpush.QueuedPush, reason string, now time.Time) mailpush.DeadLetter {
	p := &q.Push
	return mailpush.DeadLetter{PushID: p.ID, TenantID: p.TenantID, RegistrationID: p.RegistrationID, MailboxID: p.MailboxID,
		Kind: p.Kind, Seq: p.Seq, Attempts: q.Attempts, Reason: reason, CreatedAt: p.CreatedAt, DeadAt: now}
}

// kindCounts counts pushes by kind, for the metrics.
type kindCounts [3]int

func (c *kindCounts) add(k mailpush.PushKind) {
	switch k {
	case mailpush.PushBadge:
		c[0]++
	case mailpush.PushSync:
		c[1]++
	case mailpush.PushAlert:
		c[2]++
	}
}
