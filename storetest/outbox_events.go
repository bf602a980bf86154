package storetest

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/mailpush/mailpush"
)

// The event tier of the outbox: one row per accepted event (see
// mailpush.Outbox).

func eventFor(reg *mailpush.Registration, kind mailpush.EventKind, badge int, seq int64) *mailpush.OutboxEvent {
	return &mailpush.OutboxEvent{ID: fmt.Sprintf("00000000-0000-4000-8000-%012d", seq),
		Event: mailpush.Event{TenantID: reg.TenantID, MailboxID: reg.MailboxID, Kind: kind, Badge: badge, Seq: seq}}
}

func claimEvents(t *testing.T, s mailpush.Store, e *env, limit int) []*mailpush.OutboxEvent {
	t.Helper()
	got, err := s.ClaimEvents(context.Background(), e.clock.Now(), limit, time.Minute)
	if err != nil {
		t.Fatalf("ClaimEvents: %v", err)
	}
	return got
}

func enqueueEvents(t *testing.T, s mailpush.Store, evs ...*mailpush.OutboxEvent) {
	t.Helper()
	if err := s.EnqueueEvents(context.Background(), evs); err != nil {
		t.Fatalf("EnqueueEvents: %v", err)
	}
}

// testOutboxEventsClaimAndLease: an event is one row whatever its devices,
// keeps its content (sealed at rest) and its unresolved mark, and comes back
// after a lease that ran out (a process that died in the middle of the
// fan-out).
func testOutboxEventsClaimAndLease(t *testing.T, s mailpush.Store, e *env) {
	ctx := context.Background()
	regs := outboxFixture(t, s, e, 3)
	ev := eventFor(regs[0], mailpush.EventNewMail, 4, 1)
	ev.Event.Subject, ev.Event.Sender = "Quarterly report", "Bob"
	ev.CreatedAt = e.clock.Now().Add(-time.Second)
	unresolved := eventFor(regs[0], mailpush.EventNewMail, mailpush.NoBadge, 2)
	unresolved.Unresolved = true
	enqueueEvents(t, s, ev, unresolved)
	if n, err := s.OutboxDepth(ctx); err != nil || n != 2 {
		t.Fatalf("OutboxDepth = %d, %v; want 2 (one row per event, not per device)", n, err)
	}
	got := claimEvents(t, s, e, 10)
	if len(got) != 2 {
		t.Fatalf("claimed %d events, want 2", len(got))
	}
	a := got[0]
	if a.ID != ev.ID || a.Event.Subject != "Quarterly report" || a.Event.Sender != "Bob" || a.Event.Badge != 4 || a.Event.Seq != 1 ||
		a.Event.Kind != mailpush.EventNewMail || a.Event.MailboxID != regs[0].MailboxID || a.Event.TenantID != regs[0].TenantID ||
		a.Attempts != 1 || a.Unresolved || !a.CreatedAt.Equal(ev.CreatedAt) {
		t.Errorf("claimed %+v", a)
	}
	if !got[1].Unresolved || got[1].Event.Badge != mailpush.NoBadge {
		t.Errorf("unresolved event claimed as %+v", got[1])
	}
	if more := claimEvents(t, s, e, 10); len(more) != 0 {
		t.Fatalf("leased events claimed again: %d", len(more))
	}
	e.clock.Add(time.Minute + time.Millisecond)
	again := claimEvents(t, s, e, 1)
	if len(again) != 1 || again[0].ID != ev.ID || again[0].Attempts != 2 {
		t.Fatalf("after the lease: %+v", again)
	}
}

// testOutboxEventsCoalesce: an event whose pushes would all be badges (or
// all syncs) replaces the queued, unclaimed ones of its mailbox; an event
// that may become an alert never does; a claimed one is never removed.
func testOutboxEventsCoalesce(t *testing.T, s mailpush.Store, e *env) {
	ctx := context.Background()
	reg := outboxFixture(t, s, e, 1)[0]
	for seq := int64(1); seq <= 3; seq++ {
		enqueueEvents(t, s, eventFor(reg, mailpush.EventChanged, int(seq), seq))
	}
	alert := eventFor(reg, mailpush.EventNewMail, 4, 4)
	alert.Event.Subject = "news"
	enqueueEvents(t, s, alert, eventFor(reg, mailpush.EventResync, mailpush.NoBadge, 5), eventFor(reg, mailpush.EventChanged, mailpush.NoBadge, 6))
	// Late and older than the queued badge: dropped.
	enqueueEvents(t, s, eventFor(reg, mailpush.EventChanged, 2, 2))
	got := claimEvents(t, s, e, 10)
	var seqs []int64
	for _, ev := range got {
		seqs = append(seqs, ev.Event.Seq)
	}
	if fmt.Sprint(seqs) != "[3 4 6]" {
		t.Fatalf("events after coalescing = %v, want [3 4 6] (badge 3, the alert, the last sync)", seqs)
	}
	// Claimed events stay, even when a newer one of their class arrives.
	enqueueEvents(t, s, eventFor(reg, mailpush.EventChanged, 7, 7))
	if n, _ := s.OutboxDepth(ctx); n != 4 {
		t.Errorf("OutboxDepth = %d, want 4: a claimed event was coalesced away", n)
	}
}

// testOutboxEventsRecord: an event with Record moves its mailbox in the
// write that stores it, and carries the mailbox's new sequence; one that is
// no news moves the mailbox and is not stored; an event of a mailbox that is
// gone stores nothing and fails nothing else of its batch.
func testOutboxEventsRecord(t *testing.T, s mailpush.Store, e *env) {
	ctx := context.Background()
	reg := outboxFixture(t, s, e, 1)[0]
	at := e.clock.Now().Add(-time.Minute).Truncate(time.Millisecond)
	record := func(badge int) func(*mailpush.Mailbox) bool {
		return func(m *mailpush.Mailbox) bool {
			m.LastEventAt = at
			if badge == m.Badge {
				return false
			}
			m.Record(mailpush.Event{Badge: badge})
			return true
		}
	}
	mb, err := s.Mailbox(ctx, reg.MailboxID)
	if err != nil {
		t.Fatal(err)
	}
	seq0 := mb.Seq
	first, same, second := eventFor(reg, mailpush.EventChanged, 5, 0), eventFor(reg, mailpush.EventChanged, 5, 0), eventFor(reg, mailpush.EventChanged, 6, 0)
	first.ID, same.ID, second.ID = "00000000-0000-4000-8000-0000000000a1", "00000000-0000-4000-8000-0000000000a2", "00000000-0000-4000-8000-0000000000a3"
	first.Record, same.Record, second.Record = record(5), record(5), record(6)
	gone := eventFor(reg, mailpush.EventChanged, 7, 0)
	gone.ID, gone.Event.MailboxID, gone.Record = "00000000-0000-4000-8000-0000000000a4", "no-such-mailbox", record(7)
	enqueueEvents(t, s, first, same, gone, second)
	if first.Event.Seq != seq0+1 || second.Event.Seq != seq0+2 {
		t.Errorf("sequences given: %d and %d, want %d and %d", first.Event.Seq, second.Event.Seq, seq0+1, seq0+2)
	}
	mb, err = s.Mailbox(ctx, reg.MailboxID)
	if err != nil {
		t.Fatal(err)
	}
	if mb.Seq != seq0+2 || mb.Badge != 6 || !mb.LastEventAt.Equal(at) {
		t.Errorf("mailbox after the events: seq %d badge %d last event %v; want %d, 6, %v", mb.Seq, mb.Badge, mb.LastEventAt, seq0+2, at)
	}
	got := claimEvents(t, s, e, 10)
	var ids []string
	for _, ev := range got {
		ids = append(ids, fmt.Sprintf("%s/%d/%d", ev.ID[len(ev.ID)-2:], ev.Event.Seq, ev.Event.Badge))
	}
	want := fmt.Sprintf("[a3/%d/6]", seq0+2) // badge 5 coalesced into 6; the repeat and the gone mailbox's not stored
	if fmt.Sprint(ids) != want {
		t.Errorf("stored events %v, want %s", ids, want)
	}
}

// testOutboxEventsMailboxOrder: an event is not claimed while an older event
// of its mailbox is leased; other mailboxes' events are.
func testOutboxEventsMailboxOrder(t *testing.T, s mailpush.Store, e *env) {
	ctx := context.Background()
	tn := mustTenant(t, s, "order")
	var regs []*mailpush.Registration
	for i, addr := range []string{"a@example.com", "b@example.com"} {
		reg, mb := newReg(e, tn.ID, addr, fmt.Sprintf("%064x", i+100))
		reg.Status = mailpush.StatusActive
		if _, err := s.Register(ctx, reg, mb, nil); err != nil {
			t.Fatal(err)
		}
		regs = append(regs, reg)
	}
	first := eventFor(regs[0], mailpush.EventNewMail, 1, 1)
	first.Event.Subject = "one"
	enqueueEvents(t, s, first)
	leased := claimEvents(t, s, e, 10)
	if len(leased) != 1 {
		t.Fatalf("claimed %d, want 1", len(leased))
	}
	second := eventFor(regs[0], mailpush.EventNewMail, 2, 2)
	second.Event.Subject = "two"
	enqueueEvents(t, s, second, eventFor(regs[1], mailpush.EventChanged, 1, 3))
	got := claimEvents(t, s, e, 10)
	if len(got) != 1 || got[0].Event.MailboxID != regs[1].MailboxID {
		t.Fatalf("claimed %+v while an older event of the mailbox was leased, want only the other mailbox's", got)
	}
	// The first is settled: the second is free at once.
	got, err := s.SettleEvents(ctx, mailpush.EventSettlement{Events: []int64{leased[0].OutboxID}}, e.clock.Now(), 10, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Event.Subject != "two" {
		t.Errorf("claimed after the first was settled: %+v, want the second", got)
	}
}

// testOutboxRecipients: the active devices of a batch's mailboxes in one
// call, tokens opened, last sequences, and held when device pushes of the
// registration are queued.
func testOutboxRecipients(t *testing.T, s mailpush.Store, e *env) {
	ctx := context.Background()
	regs := outboxFixture(t, s, e, 4)
	// A registration that never proved itself (pending from the start).
	unproven, _ := newReg(e, regs[0].TenantID, "alice@example.com", fmt.Sprintf("%064x", 98))
	if _, err := s.Register(ctx, unproven, &mailpush.Mailbox{TenantID: regs[0].TenantID, AddressHash: e.keys.HashAddress(regs[0].TenantID, "alice@example.com"), Source: mailpush.SourceEWS}, nil); err != nil {
		t.Fatal(err)
	}
	before := e.clock.Now()
	e.clock.Add(time.Second)
	// regs[3] stops being active after "before" (a health check asks the
	// device to check in): it still gets the events accepted before.
	if _, err := s.UpdateRegistration(ctx, regs[3].TenantID, regs[3].ID, func(r *mailpush.Registration) error {
		r.Status = mailpush.StatusPending
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	other, mb := newReg(e, regs[0].TenantID, "bob@example.com", fmt.Sprintf("%064x", 99))
	other.Status = mailpush.StatusActive
	if _, err := s.Register(ctx, other, mb, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := s.UpdateRegistration(ctx, regs[2].TenantID, regs[2].ID, func(r *mailpush.Registration) error {
		r.Status = mailpush.StatusInactive
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	// regs[1] has a device push queued; regs[0] got sequence 5 delivered.
	if err := s.EnqueuePushes(ctx, []*mailpush.Push{pushFor(regs[1], mailpush.PushBadge, 1)}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.SettleEvents(ctx, mailpush.EventSettlement{Delivered: []mailpush.PushSettlement{{Action: mailpush.SettleDone, RegistrationID: regs[0].ID, Seq: 5}}}, e.clock.Now(), 0, 0); err != nil {
		t.Fatal(err)
	}
	if later, err := s.Recipients(ctx, []string{regs[0].MailboxID}, e.clock.Now().Add(time.Second)); err != nil || len(later) != 2 {
		t.Errorf("recipients for events accepted after regs[3] became pending: %d, %v; want the 2 active ones", len(later), err)
	}
	got, err := s.Recipients(ctx, []string{regs[0].MailboxID, other.MailboxID}, before)
	if err != nil {
		t.Fatal(err)
	}
	byID := map[string]*mailpush.Recipient{}
	for _, r := range got {
		byID[r.RegistrationID] = r
	}
	if len(got) != 4 || byID[regs[2].ID] != nil || byID[unproven.ID] != nil {
		t.Fatalf("recipients = %d (%v), want the 3 active ones and the one active until after the events", len(got), byID)
	}
	if r3 := byID[regs[3].ID]; r3 == nil || !r3.LeftActiveAt.Equal(e.clock.Now()) {
		t.Errorf("recipient made pending = %+v, want LeftActiveAt %v", r3, e.clock.Now())
	}
	r0, r1, ro := byID[regs[0].ID], byID[regs[1].ID], byID[other.ID]
	if r0 == nil || r1 == nil || ro == nil {
		t.Fatalf("missing recipients: %v", byID)
	}
	if r0.Device.Token != regs[0].Device.Token || r0.Device.Platform != mailpush.PlatformIOS || r0.LastSeq != 5 || r0.Held || r0.Content != mailpush.ContentBadge || !r0.LeftActiveAt.IsZero() ||
		r0.MailboxID != regs[0].MailboxID || r0.TenantID != regs[0].TenantID || r0.Unreadable != "" {
		t.Errorf("recipient 0 = %+v", r0)
	}
	if !r1.Held || r1.LastSeq != 0 {
		t.Errorf("recipient 1 = %+v, want held (a device push is queued)", r1)
	}
	if ro.MailboxID != other.MailboxID || ro.Device.Token != other.Device.Token {
		t.Errorf("other mailbox's recipient = %+v", ro)
	}
	// Ordered by mailbox: a mailbox's recipients are contiguous.
	for i := 1; i < len(got); i++ {
		for j := i + 1; j < len(got); j++ {
			if got[j].MailboxID == got[i-1].MailboxID && got[i].MailboxID != got[i-1].MailboxID {
				t.Errorf("recipients of one mailbox are not contiguous: %v", got)
			}
		}
	}
}

// testOutboxSettleEvents: the fan-out's settlement is one transaction: the
// events leave, delivered sequences rise (never fall), device pushes are
// queued with their state, dead letters keep no content; the next claim
// shares the transaction.
func testOutboxSettleEvents(t *testing.T, s mailpush.Store, e *env) {
	ctx := context.Background()
	regs := outboxFixture(t, s, e, 3)
	ev1 := eventFor(regs[0], mailpush.EventNewMail, 1, 1)
	ev1.Event.Subject = "secret subject"
	enqueueEvents(t, s, ev1)
	got := claimEvents(t, s, e, 10)
	if len(got) != 1 {
		t.Fatalf("claimed %d", len(got))
	}
	enqueueEvents(t, s, eventFor(regs[0], mailpush.EventChanged, 2, 2))
	retry := pushFor(regs[1], mailpush.PushAlert, 1)
	retry.Subject, retry.Sender = "secret subject", "Bob"
	dead := pushFor(regs[2], mailpush.PushAlert, 1)
	st := mailpush.EventSettlement{
		Events: []int64{got[0].OutboxID},
		Delivered: []mailpush.PushSettlement{
			{Action: mailpush.SettleDone, RegistrationID: regs[0].ID, Seq: 1},
		},
		Queue: []mailpush.DevicePush{{Push: retry, DueAt: e.clock.Now().Add(10 * time.Second), Attempts: 1, Reason: "503 ServiceUnavailable"}},
		Dead:  []mailpush.DeadLetter{{PushID: dead.ID, TenantID: dead.TenantID, RegistrationID: dead.RegistrationID, MailboxID: dead.MailboxID, Kind: dead.Kind, Seq: 1, Attempts: 1, Reason: "400 BadDeviceToken"}},
	}
	// The mailbox's next event is claimed in the same transaction: the
	// settlement freed it.
	next, err := s.SettleEvents(ctx, st, e.clock.Now(), 10, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if len(next) != 1 || next[0].Event.Seq != 2 {
		t.Fatalf("claimed with the settlement: %+v, want the seq 2 event", next)
	}
	// Settling again (after a lost answer) changes nothing more.
	if _, err := s.SettleEvents(ctx, mailpush.EventSettlement{Events: []int64{got[0].OutboxID}, Delivered: []mailpush.PushSettlement{{Action: mailpush.SettleDone, RegistrationID: regs[0].ID, Seq: 0}}}, e.clock.Now(), 0, 0); err != nil {
		t.Fatal(err)
	}
	if n, _ := s.OutboxDepth(ctx); n != 2 {
		t.Errorf("OutboxDepth = %d, want 2 (the leased event and the queued retry)", n)
	}
	dl, err := s.DeadLetters(ctx, 10)
	if err != nil || len(dl) != 1 || dl[0].PushID != dead.ID || dl[0].Reason != "400 BadDeviceToken" || dl[0].Attempts != 1 || dl[0].RegistrationID != regs[2].ID {
		t.Errorf("DeadLetters = %+v, %v", dl, err)
	}
	if q := claim(t, s, e, 10); len(q) != 0 {
		t.Fatalf("queued retry claimed before it is due: %+v", q)
	}
	e.clock.Add(10 * time.Second)
	q := claim(t, s, e, 10)
	if len(q) != 1 || q[0].Push.ID != retry.ID || q[0].Attempts != 2 || q[0].Push.Subject != "secret subject" || q[0].Push.Sender != "Bob" ||
		q[0].Push.Device.Token != regs[1].Device.Token || q[0].Push.Kind != mailpush.PushAlert {
		t.Fatalf("queued retry = %+v, want it with attempt 2 and its content", q)
	}
	// Sequences never fall.
	if _, err := s.SettleEvents(ctx, mailpush.EventSettlement{Events: []int64{next[0].OutboxID}, Delivered: []mailpush.PushSettlement{{Action: mailpush.SettleDone, RegistrationID: regs[0].ID, Seq: 0}, {Action: mailpush.SettleDone, RegistrationID: regs[1].ID, Seq: 3}}}, e.clock.Now(), 0, 0); err != nil {
		t.Fatal(err)
	}
	rs, err := s.Recipients(ctx, []string{regs[0].MailboxID}, e.clock.Now())
	if err != nil {
		t.Fatal(err)
	}
	last := map[string]int64{}
	for _, r := range rs {
		last[r.RegistrationID] = r.LastSeq
	}
	// The settled events (sequences 1 and 2) count for every device of the
	// mailbox; regs[1] got 3 from the device tier.
	if last[regs[0].ID] != 2 || last[regs[1].ID] != 3 || last[regs[2].ID] != 2 {
		t.Errorf("last sequences = %v, want 2 (the mailbox's last event fanned out), 3 (delivered by the device tier), 2", last)
	}
}
