package storetest

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/mailpush/mailpush"
)

// outboxFixture registers n active devices on one mailbox.
func outboxFixture(t *testing.T, s mailpush.Store, e *env, n int) []*mailpush.Registration {
	t.Helper()
	ctx := context.Background()
	tn := mustTenant(t, s, "acme")
	var regs []*mailpush.Registration
	for i := range n {
		reg, mb := newReg(e, tn.ID, "alice@example.com", fmt.Sprintf("%064x", i+1))
		reg.Status = mailpush.StatusActive
		if _, err := s.Register(ctx, reg, mb, nil); err != nil {
			t.Fatal(err)
		}
		regs = append(regs, reg)
	}
	return regs
}

func pushFor(reg *mailpush.Registration, kind mailpush.PushKind, seq int64) *mailpush.Push {
	return &mailpush.Push{ID: fmt.Sprintf("push-%s-%d-%s", kind, seq, reg.ID), TenantID: reg.TenantID, RegistrationID: reg.ID, MailboxID: reg.MailboxID,
		Kind: kind, Badge: int(seq), Seq: seq, CollapseID: "badge-" + reg.MailboxID}
}

func claim(t *testing.T, s mailpush.Store, e *env, limit int) []*mailpush.QueuedPush {
	t.Helper()
	got, err := s.ClaimPushes(context.Background(), e.clock.Now(), limit, time.Minute)
	if err != nil {
		t.Fatalf("ClaimPushes: %v", err)
	}
	return got
}

func testOutboxClaimAndLease(t *testing.T, s mailpush.Store, e *env) {
	ctx := context.Background()
	regs := outboxFixture(t, s, e, 2)
	alert := pushFor(regs[0], mailpush.PushAlert, 1)
	alert.Subject, alert.Sender = "Quarterly report", "Bob"
	sealed := pushFor(regs[1], mailpush.PushAlert, 1)
	sealed.Sealed = "sealed-content"
	if err := s.EnqueuePushes(ctx, []*mailpush.Push{alert, sealed}); err != nil {
		t.Fatal(err)
	}
	if n, err := s.OutboxDepth(ctx); err != nil || n != 2 {
		t.Fatalf("OutboxDepth = %d, %v; want 2", n, err)
	}
	got := claim(t, s, e, 10)
	if len(got) != 2 {
		t.Fatalf("claimed %d, want 2", len(got))
	}
	a, b := got[0], got[1]
	if a.Push.ID != alert.ID || a.Push.Subject != "Quarterly report" || a.Push.Sender != "Bob" || a.Attempts != 1 ||
		a.Push.Device.Token != regs[0].Device.Token || a.Push.Device.Platform != mailpush.PlatformIOS || a.Push.Kind != mailpush.PushAlert || a.Push.Seq != 1 {
		t.Errorf("first claimed = %+v", a)
	}
	if b.Push.Sealed != "sealed-content" || b.Push.Subject != "" || b.Push.Device.Token != regs[1].Device.Token {
		t.Errorf("second claimed = %+v", b)
	}
	if more := claim(t, s, e, 10); len(more) != 0 {
		t.Fatalf("leased pushes claimed again: %d", len(more))
	}
	// A process that died holding the lease: the pushes come back after it.
	e.clock.Add(time.Minute + time.Millisecond)
	again := claim(t, s, e, 1)
	if len(again) != 1 || again[0].Push.ID != alert.ID || again[0].Attempts != 2 {
		t.Fatalf("after the lease: %+v", again)
	}
	if n, _ := s.OutboxDepth(ctx); n != 2 {
		t.Errorf("OutboxDepth = %d, want 2 (claims do not remove)", n)
	}
}

func testOutboxSettle(t *testing.T, s mailpush.Store, e *env) {
	ctx := context.Background()
	regs := outboxFixture(t, s, e, 1)
	reg := regs[0]
	var ps []*mailpush.Push
	for i := range 3 {
		ps = append(ps, pushFor(reg, mailpush.PushAlert, int64(i+1)))
	}
	if err := s.EnqueuePushes(ctx, ps); err != nil {
		t.Fatal(err)
	}
	got := claim(t, s, e, 10)
	if len(got) != 3 || got[0].Push.Seq != 1 || got[2].Push.Seq != 3 {
		t.Fatalf("claimed %+v, want seq 1, 2, 3 in order", got)
	}
	err := s.SettlePushes(ctx, []mailpush.PushSettlement{
		{OutboxID: got[1].OutboxID, Action: mailpush.SettleDone, RegistrationID: reg.ID, Seq: 2},
		{OutboxID: got[0].OutboxID, Action: mailpush.SettleRetry, DueAt: e.clock.Now().Add(10 * time.Second), Reason: "503 ServiceUnavailable"},
		{OutboxID: got[2].OutboxID, Action: mailpush.SettleDead, RegistrationID: reg.ID, Reason: "400 BadPayload"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := s.OutboxDepth(ctx); n != 1 {
		t.Errorf("OutboxDepth = %d, want 1", n)
	}
	dead, err := s.DeadLetters(ctx, 10)
	if err != nil || len(dead) != 1 || dead[0].PushID != ps[2].ID || dead[0].Reason != "400 BadPayload" || dead[0].Attempts != 1 || dead[0].Kind != mailpush.PushAlert {
		t.Errorf("DeadLetters = %+v, %v", dead, err)
	}
	if more := claim(t, s, e, 10); len(more) != 0 {
		t.Errorf("retry claimed before its due time: %+v", more)
	}
	e.clock.Add(10 * time.Second)
	retried := claim(t, s, e, 10)
	if len(retried) != 1 || retried[0].Push.ID != ps[0].ID || retried[0].Attempts != 2 || retried[0].LastSeq != 2 {
		t.Fatalf("retried = %+v", retried)
	}
	// An attempt that did not happen (rate limit) is not counted.
	if err := s.SettlePushes(ctx, []mailpush.PushSettlement{{OutboxID: retried[0].OutboxID, Action: mailpush.SettleRetry, Undo: true, DueAt: e.clock.Now()}}); err != nil {
		t.Fatal(err)
	}
	if again := claim(t, s, e, 10); len(again) != 1 || again[0].Attempts != 2 {
		t.Errorf("after an undone attempt: %+v", again)
	}
	// A lower sequence never lowers the registration's last delivered one.
	if err := s.SettlePushes(ctx, []mailpush.PushSettlement{{OutboxID: retried[0].OutboxID, Action: mailpush.SettleDone, RegistrationID: reg.ID, Seq: 1}}); err != nil {
		t.Fatal(err)
	}
	if err := s.EnqueuePushes(ctx, []*mailpush.Push{pushFor(reg, mailpush.PushBadge, 4)}); err != nil {
		t.Fatal(err)
	}
	if got := claim(t, s, e, 10); len(got) != 1 || got[0].LastSeq != 2 {
		t.Errorf("LastSeq = %+v, want 2", got)
	}
}

func testOutboxCoalesces(t *testing.T, s mailpush.Store, e *env) {
	ctx := context.Background()
	regs := outboxFixture(t, s, e, 2)
	var ps []*mailpush.Push
	for seq := int64(1); seq <= 5; seq++ {
		ps = append(ps, pushFor(regs[0], mailpush.PushBadge, seq), pushFor(regs[1], mailpush.PushBadge, seq))
	}
	ps = append(ps, pushFor(regs[0], mailpush.PushAlert, 6), pushFor(regs[0], mailpush.PushSync, 7), pushFor(regs[0], mailpush.PushSync, 8))
	for _, p := range ps {
		// One event per transaction, as sources deliver them.
		if err := s.EnqueuePushes(ctx, []*mailpush.Push{p}); err != nil {
			t.Fatal(err)
		}
	}
	// An older badge arriving late is dropped: a newer one is queued.
	if err := s.EnqueuePushes(ctx, []*mailpush.Push{pushFor(regs[1], mailpush.PushBadge, 3)}); err != nil {
		t.Fatal(err)
	}
	got := claim(t, s, e, 100)
	var seen []string
	for _, q := range got {
		seen = append(seen, fmt.Sprintf("%d:%s:%d", map[string]int{regs[0].ID: 0, regs[1].ID: 1}[q.Push.RegistrationID], q.Push.Kind, q.Push.Seq))
	}
	want := "[0:badge:5 1:badge:5 0:alert:6 0:sync:8]"
	if fmt.Sprint(seen) != want {
		t.Errorf("queued after coalescing = %v, want %s", seen, want)
	}
}

func testOutboxInactiveRegistration(t *testing.T, s mailpush.Store, e *env) {
	ctx := context.Background()
	regs := outboxFixture(t, s, e, 3)
	var ps []*mailpush.Push
	for _, r := range regs {
		ps = append(ps, pushFor(r, mailpush.PushBadge, 1))
	}
	if err := s.EnqueuePushes(ctx, ps); err != nil {
		t.Fatal(err)
	}
	if _, err := s.UpdateRegistration(ctx, regs[0].TenantID, regs[0].ID, func(r *mailpush.Registration) error {
		r.Status = mailpush.StatusInactive
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteRegistration(ctx, regs[1].TenantID, regs[1].ID); err != nil {
		t.Fatal(err)
	}
	got := claim(t, s, e, 10)
	if len(got) != 1 || got[0].Push.RegistrationID != regs[2].ID {
		t.Fatalf("claimed %+v, want only the active registration's push", got)
	}
	if n, _ := s.OutboxDepth(ctx); n != 1 {
		t.Errorf("OutboxDepth = %d, want 1: pushes of gone registrations are deleted", n)
	}
}

// A push coalesced away while in flight is settled after its replacement was
// queued: settling it must never touch the replacement.
func testOutboxSettleAfterCoalesce(t *testing.T, s mailpush.Store, e *env) {
	ctx := context.Background()
	reg := outboxFixture(t, s, e, 1)[0]
	if err := s.EnqueuePushes(ctx, []*mailpush.Push{pushFor(reg, mailpush.PushBadge, 1)}); err != nil {
		t.Fatal(err)
	}
	inFlight := claim(t, s, e, 10)
	if len(inFlight) != 1 {
		t.Fatalf("claimed %d", len(inFlight))
	}
	if err := s.EnqueuePushes(ctx, []*mailpush.Push{pushFor(reg, mailpush.PushBadge, 2)}); err != nil {
		t.Fatal(err)
	}
	if err := s.SettlePushes(ctx, []mailpush.PushSettlement{{OutboxID: inFlight[0].OutboxID, Action: mailpush.SettleDone, RegistrationID: reg.ID, Seq: 1}}); err != nil {
		t.Fatal(err)
	}
	got := claim(t, s, e, 10)
	if len(got) != 1 || got[0].Push.Seq != 2 {
		t.Fatalf("after settling the replaced push: %+v, want the seq 2 push still queued", got)
	}
}

// testOutboxClaimKeepsDeviceOrder: a push is not claimed while an older one
// of its registration is in flight or waiting for a retry; other
// registrations' pushes are.
func testOutboxClaimKeepsDeviceOrder(t *testing.T, s mailpush.Store, e *env) {
	ctx := context.Background()
	regs := outboxFixture(t, s, e, 2)
	if err := s.EnqueuePushes(ctx, []*mailpush.Push{pushFor(regs[0], mailpush.PushAlert, 1)}); err != nil {
		t.Fatal(err)
	}
	first := claim(t, s, e, 10)
	if len(first) != 1 {
		t.Fatalf("claimed %d, want 1", len(first))
	}
	if err := s.EnqueuePushes(ctx, []*mailpush.Push{pushFor(regs[0], mailpush.PushAlert, 2), pushFor(regs[1], mailpush.PushAlert, 2)}); err != nil {
		t.Fatal(err)
	}
	// The first is in flight: only the other device's push may go.
	if got := claim(t, s, e, 10); len(got) != 1 || got[0].Push.RegistrationID != regs[1].ID {
		t.Fatalf("claimed %+v while an older push of the device was in flight, want only the other device's", got)
	}
	// The first waits for a retry: the second still waits behind it.
	if err := s.SettlePushes(ctx, []mailpush.PushSettlement{{OutboxID: first[0].OutboxID, Action: mailpush.SettleRetry, DueAt: e.clock.Now().Add(5 * time.Second)}}); err != nil {
		t.Fatal(err)
	}
	if got := claim(t, s, e, 10); len(got) != 0 {
		t.Fatalf("claimed %+v before the older push waiting for its retry", got)
	}
	e.clock.Add(5 * time.Second)
	got := claim(t, s, e, 10)
	if len(got) != 2 || got[0].Push.Seq != 1 || got[1].Push.Seq != 2 || got[1].Push.RegistrationID != regs[0].ID {
		t.Fatalf("after the retry came due: %+v, want seq 1 then 2 of the first device", got)
	}
}
