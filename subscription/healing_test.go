package subscription_test

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/mailpush/mailpush"
	"github.com/mailpush/mailpush/clocktest"
	"github.com/mailpush/mailpush/subscription"
)

// blockingHealer holds each heal until told how it ends.
type blockingHealer struct {
	started chan string
	outcome chan mailpush.HealOutcome
}

func (h *blockingHealer) Heal(_ context.Context, mb *mailpush.Mailbox) mailpush.HealOutcome {
	h.started <- mb.ID
	return <-h.outcome
}

// TestHealingListsRunningAndEndedHeals: a heal is listed as running (with
// its mailbox ID and reason) while the source works on it, then among the
// ended ones with its outcome.
func TestHealingListsRunningAndEndedHeals(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 8, 0, 0, 0, time.UTC)
	clock := clocktest.New(t0)
	st := &memStore{mbs: map[string]*mailpush.Mailbox{}}
	for _, id := range []string{"mb1", "mb2"} {
		st.mbs[id] = &mailpush.Mailbox{ID: id, TenantID: "t1", Source: mailpush.SourceEWS, Status: mailpush.StatusActive, LastEventAt: t0}
		st.ids = append(st.ids, id)
	}
	h := &blockingHealer{started: make(chan string), outcome: make(chan mailpush.HealOutcome)}
	e := &subscription.Engine{Store: st, Source: mailpush.SourceEWS, Healer: h, Logger: slog.New(slog.DiscardHandler), Clock: clock,
		DueAfter: 10 * time.Minute, Rate: 1e9, Workers: 1}
	clock.Advance(11 * time.Minute)
	done := make(chan struct{})
	go func() {
		defer close(done)
		e.Check(context.Background())
	}()
	first := <-h.started
	running, ended := e.Healing()
	if len(running) != 1 || running[0].MailboxID != first || running[0].TenantID != "t1" || !strings.Contains(running[0].Reason, "no event for 10m0s") || len(ended) != 0 {
		t.Fatalf("while healing %s: running %+v, ended %+v", first, running, ended)
	}
	h.outcome <- mailpush.HealAsked
	// The next start waits on the engine's pacing timer: move the clock.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := clock.WaitPending(ctx, 1); err != nil {
		t.Fatal(err)
	}
	clock.AdvanceNext(time.Minute)
	second := <-h.started
	h.outcome <- mailpush.HealResubscribed
	<-done
	running, ended = e.Healing()
	if len(running) != 0 || len(ended) != 2 {
		t.Fatalf("after the sweep: running %+v, ended %+v", running, ended)
	}
	got := map[string]mailpush.HealOutcome{ended[0].MailboxID: ended[0].Outcome, ended[1].MailboxID: ended[1].Outcome}
	if got[first] != mailpush.HealAsked || got[second] != mailpush.HealResubscribed || ended[0].Ended.IsZero() {
		t.Errorf("ended heals = %+v", ended)
	}
}
