package main

import (
	"context"
	"fmt"
	"sync"
	"syscall"
	"time"

	"github.com/mailpush/mailpush"
)

// The takeover scenario (-scenario takeover -nodes N, N ≥ 2, PostgreSQL):
// how long the surviving nodes take to finish what a node that died with
// SIGKILL was holding, measured separately for its two kinds of work.
//
//   - The outbox: every notification goes to the last node (the victim),
//     and the fake APNs answers each push after -apns-delay, so that every
//     node holds claimed events and pushes when the victim is killed (right
//     after the last notification was acknowledged). What the victim held
//     stays leased until push.lease runs out; then a survivor claims it.
//     Measured: from the kill until every device has its badge.
//   - The subscriptions: -mailboxes EWS mailboxes (one device each) are
//     stamped, at the kill, as the victim's claim of their heal writes them
//     (LastEventAt = now: "this node heals it"); the victim dies before it
//     healed them. No node owns a subscription: the claim is the lease, and
//     a survivor's sweep takes the mailbox once it is due again
//     (2 × ews.statusFrequency), at its next sweep (every healthInterval,
//     default a quarter of that). With no credentials in its memory the
//     survivor asks the devices to check in: a background push, which the
//     fake APNs sees. Measured: from the kill until every one arrived.
//
// The configuration is the default one but for push.lease (30s) and
// ews.statusFrequency (1 minute), so that one run takes minutes; the
// figures follow those settings (docs/PERFORMANCE.md gives the formula).

const (
	takeoverLease     = 30 * time.Second
	takeoverFrequency = 1 // ews.statusFrequency, minutes
)

// takeoverConfig is the scenario's part of the configuration.
const takeoverConfig = "  lease: 30s\n"

// takeoverEWS is the scenario's ews block.
const takeoverEWS = "ews:\n  statusFrequency: 1\n"

// takeover runs the scenario; the nodes run, the Dovecot mailboxes are
// seeded (one device each: b.devices).
func (b *bench) takeover(ctx context.Context) error {
	if len(b.nodes) == 0 {
		return fmt.Errorf("takeover needs -nodes 2 or more")
	}
	victim := b.nodes[len(b.nodes)-1]
	// The EWS mailboxes whose heal the victim will have claimed.
	ewsFirst := b.devices
	var ewsIDs []string
	for i := range b.f.mailboxes {
		mb := &mailpush.Mailbox{TenantID: b.tenant.ID, AddressHash: b.main.Keys.HashAddress(b.tenant.ID, fmt.Sprintf("ews%d@bench.example", i)), Source: mailpush.SourceEWS,
			Mode: mailpush.ModeSealed, ServerURL: "https://exchange.bench.example/EWS/Exchange.asmx", Badge: mailpush.NoBadge, Status: mailpush.StatusActive, SubscriptionID: fmt.Sprintf("bench-sub-%d", i)}
		reg := &mailpush.Registration{Device: mailpush.Device{Platform: mailpush.PlatformIOS, Token: benchToken(ewsFirst + i), Environment: mailpush.EnvProduction},
			Content: mailpush.ContentBadge, Status: mailpush.StatusActive, ExpiresAt: time.Now().Add(24 * time.Hour)}
		stored, err := b.main.Store.Register(ctx, reg, mb, nil)
		if err != nil {
			return err
		}
		ewsIDs = append(ewsIDs, stored.ID)
	}
	asked := make(chan time.Time, b.f.mailboxes)
	var askedOnce sync.Map
	onBackground := func(p string) {
		if i, ok := b.ewsIndex(p, ewsFirst); ok {
			if _, dup := askedOnce.LoadOrStore(i, true); !dup {
				asked <- time.Now()
			}
		}
	}
	b.onBackground.Store(&onBackground)

	// The outbox: every notification to the victim, pushes slowed down.
	b.bases = []string{victim.base}
	b.sentAt = map[int64]time.Time{}
	b.apnsDelay.Store(int64(b.f.apnsDelay))
	n := b.notifier()
	defer n.client.CloseIdleConnections()
	var wg sync.WaitGroup
	var firstErr error
	var errMu sync.Mutex
	jobs := make(chan int)
	for range b.f.concurrency {
		wg.Go(func() {
			for m := range jobs {
				if _, err := n.notify(ctx, m, 1); err != nil {
					errMu.Lock()
					firstErr = err
					errMu.Unlock()
				}
			}
		})
	}
	for m := range b.f.mailboxes {
		jobs <- m
	}
	close(jobs)
	wg.Wait()
	if firstErr != nil {
		return firstErr
	}
	// Every event is acknowledged (durable): the victim dies now, holding
	// what it claimed.
	delivered := b.delivered(1)
	if err := victim.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		return err
	}
	killed := time.Now()
	victim.cmd.Wait()
	// What the victim's heal claim wrote, at the moment it died.
	for _, id := range ewsIDs {
		if _, err := b.main.Store.UpdateMailbox(ctx, id, func(m *mailpush.Mailbox) error { m.LastEventAt = killed; return nil }); err != nil {
			return err
		}
	}
	fmt.Fprintf(b.out, "takeover: node %d killed (SIGKILL) at %s, %d of %d devices had their push; push.lease %s, ews.statusFrequency %d min (heal due after %s), APNs answers after %s\n",
		len(b.nodes)+1, killed.UTC().Format(time.TimeOnly), delivered, b.devices, takeoverLease, takeoverFrequency, 2*takeoverFrequency*time.Minute, b.f.apnsDelay)

	// The outbox: until every device has its badge.
	var outboxDone time.Duration
	for {
		if b.delivered(1) == b.devices {
			outboxDone = time.Since(killed)
			break
		}
		if time.Since(killed) > 10*time.Minute {
			return fmt.Errorf("takeover: %d of %d devices still without their push 10 minutes after the kill", b.devices-b.delivered(1), b.devices)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond): // polling with a deadline
		}
	}
	fmt.Fprintf(b.out, "  outbox: every device had its push %s after the kill (%d pushes in all: at least once may repeat one the dead node had sent)\n",
		outboxDone.Round(10*time.Millisecond), b.accepted.Load())
	// The subscriptions: until every device was asked to check in.
	var first, last time.Duration
	for i := range b.f.mailboxes {
		select {
		case at := <-asked:
			if i == 0 {
				first = at.Sub(killed)
			}
			last = at.Sub(killed)
		case <-time.After(10 * time.Minute):
			return fmt.Errorf("takeover: %d of %d subscriptions the dead node had claimed were not healed 10 minutes after the kill", b.f.mailboxes-i, b.f.mailboxes)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	fmt.Fprintf(b.out, "  subscriptions: the %d heals the dead node had claimed were taken by the survivors %s (first) to %s (last) after the kill\n",
		b.f.mailboxes, first.Round(10*time.Millisecond), last.Round(10*time.Millisecond))
	return nil
}

// delivered counts the Dovecot devices whose last badge is at least badge.
func (b *bench) delivered(badge int32) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := 0
	for _, got := range b.lastBadge {
		if got >= badge {
			n++
		}
	}
	return n
}

// ewsIndex maps a device token to the index of its EWS mailbox.
func (b *bench) ewsIndex(token string, first int) (int, bool) {
	for i := range b.f.mailboxes {
		if benchToken(first+i) == token {
			return i, true
		}
	}
	return 0, false
}
