package storetest

import (
	"context"
	"testing"
	"time"

	"github.com/mailpush/mailpush"
)

// testOutboxSettleAndClaim: a settlement and the next claim in one
// transaction; the claim sees the settlement.
func testOutboxSettleAndClaim(t *testing.T, s mailpush.Store, e *env) {
	ctx := context.Background()
	regs := outboxFixture(t, s, e, 2)
	first, second, other := pushFor(regs[0], mailpush.PushAlert, 1), pushFor(regs[0], mailpush.PushAlert, 2), pushFor(regs[1], mailpush.PushAlert, 5)
	if err := s.EnqueuePushes(ctx, []*mailpush.Push{first, second, other}); err != nil {
		t.Fatal(err)
	}
	got := claim(t, s, e, 1)
	if len(got) != 1 || got[0].Push.ID != first.ID {
		t.Fatalf("claimed %+v, want the first push", got)
	}
	// The claim sees the settlement: the device's next push is free now,
	// with the sequence just delivered.
	next, err := s.SettleAndClaim(ctx, []mailpush.PushSettlement{{OutboxID: got[0].OutboxID, Action: mailpush.SettleDone, RegistrationID: regs[0].ID, Seq: 1}}, e.clock.Now(), 10, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if len(next) != 2 || next[0].Push.ID != second.ID || next[0].LastSeq != 1 || next[1].Push.ID != other.ID {
		t.Fatalf("SettleAndClaim claimed %+v, want the second push (last seq 1) and the other device's", next)
	}
	// All or nothing: a settlement that fails leaves the batch leased.
	bad := []mailpush.PushSettlement{{OutboxID: next[0].OutboxID, Action: mailpush.SettleDone, RegistrationID: regs[0].ID, Seq: 2}, {OutboxID: next[1].OutboxID, Action: mailpush.SettleAction(99)}}
	if _, err := s.SettleAndClaim(ctx, bad, e.clock.Now(), 10, time.Minute); err == nil {
		t.Fatal("SettleAndClaim accepted an unknown action")
	}
	if n, _ := s.OutboxDepth(ctx); n != 2 {
		t.Errorf("OutboxDepth = %d after a failed settlement, want 2", n)
	}
	// Several settlements of one registration raise its sequence to their
	// highest; a limit of 0 only settles.
	done := []mailpush.PushSettlement{
		{OutboxID: next[1].OutboxID, Action: mailpush.SettleDone, RegistrationID: regs[1].ID, Seq: 5},
		{OutboxID: next[1].OutboxID, Action: mailpush.SettleDone, RegistrationID: regs[1].ID, Seq: 3},
		{OutboxID: next[0].OutboxID, Action: mailpush.SettleRetry, DueAt: e.clock.Now()},
	}
	if more, err := s.SettleAndClaim(ctx, done, e.clock.Now(), 0, time.Minute); err != nil || len(more) != 0 {
		t.Fatalf("settle only: %+v, %v", more, err)
	}
	if err := s.EnqueuePushes(ctx, []*mailpush.Push{pushFor(regs[1], mailpush.PushBadge, 6)}); err != nil {
		t.Fatal(err)
	}
	last := map[string]int64{}
	for _, q := range claim(t, s, e, 10) {
		last[q.Push.RegistrationID] = q.LastSeq
	}
	if last[regs[0].ID] != 1 || last[regs[1].ID] != 5 {
		t.Errorf("last sequences = %v, want %s:1 %s:5", last, regs[0].ID, regs[1].ID)
	}
}
