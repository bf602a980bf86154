package postgres_test

import (
	"context"
	"flag"
	"fmt"
	"testing"
	"time"

	"github.com/mailpush/mailpush"
	"github.com/mailpush/mailpush/postgres"
	"github.com/mailpush/mailpush/postgres/pgtest"
	"github.com/mailpush/mailpush/storetest"
)

var (
	takeoverLease = flag.Duration("takeover.lease", time.Second, "TestOutboxTakeover: the lease (push.lease) the dead node claimed with")
	takeoverPoll  = flag.Duration("takeover.poll", 100*time.Millisecond, "TestOutboxTakeover: how often the surviving node claims (the pipeline's poll interval, 1s in mailpush)")
)

// TestOutboxTakeover is a dead node's outbox moving to a surviving node. Node
// A claims 100 events and dies without settling them; node B claims on its
// poll interval: it gets none of them while A's lease holds (checked against
// the claim times passed to the store, not the wall clock), then all of
// them, each once. The time B took is logged: the figure in
// docs/PERFORMANCE.md (lease plus at most one poll interval).
func TestOutboxTakeover(t *testing.T) {
	ctx := context.Background()
	url, schema := pgtest.Schema(t)
	cipher := storetest.Keyring(t)
	open := func() *postgres.Store {
		s, err := postgres.Open(ctx, postgres.Config{URL: url, Schema: schema}, cipher, mailpush.SystemClock{})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	a, b := open(), open()
	defer b.Close()
	tn := &mailpush.Tenant{Name: "acme", AllowedHosts: []string{"mail.example.com"}, MaxContent: mailpush.ContentSubject}
	if err := a.CreateTenant(ctx, tn); err != nil {
		t.Fatal(err)
	}
	// One event for each of 100 mailboxes (a mailbox's events are claimed
	// one at a time, in order).
	const events = 100
	var evs []*mailpush.OutboxEvent
	for i := range events {
		mb, err := a.Register(ctx, &mailpush.Registration{Device: mailpush.Device{Platform: mailpush.PlatformIOS, Token: fmt.Sprintf("%064x", i+1), Environment: mailpush.EnvProduction},
			Content: mailpush.ContentBadge, Status: mailpush.StatusActive, ExpiresAt: time.Now().Add(time.Hour)},
			&mailpush.Mailbox{TenantID: tn.ID, AddressHash: cipher.HashField([]byte(fmt.Sprintf("user%d@example.com", i))), Source: mailpush.SourceEWS, Mode: mailpush.ModeSealed, Badge: mailpush.NoBadge, Status: mailpush.StatusActive}, nil)
		if err != nil {
			t.Fatal(err)
		}
		evs = append(evs, &mailpush.OutboxEvent{ID: fmt.Sprintf("event-%03d", i), CreatedAt: time.Now(),
			Event: mailpush.Event{TenantID: tn.ID, MailboxID: mb.ID, Kind: mailpush.EventNewMail, Badge: 1, Seq: 1, At: time.Now()}})
	}
	if err := a.EnqueueEvents(ctx, evs); err != nil {
		t.Fatal(err)
	}

	lease := *takeoverLease
	claimedAt := time.Now()
	got, err := a.ClaimEvents(ctx, claimedAt, events, lease)
	if err != nil || len(got) != events {
		t.Fatalf("A claimed %d events, %v", len(got), err)
	}
	a.Close() // A dies holding the lease

	// B polls. Any claim at a time inside A's lease gets nothing; the first
	// one at or after its end gets everything, once.
	seen := map[string]bool{}
	polls := 0
	var tookOver time.Duration
	for len(seen) < events {
		now := time.Now()
		claimed, err := b.ClaimEvents(ctx, now, events, lease)
		if err != nil {
			t.Fatal(err)
		}
		polls++
		if len(claimed) > 0 && now.Before(claimedAt.Add(lease)) {
			t.Fatalf("B claimed %d events at %v, inside A's lease (until %v)", len(claimed), now, claimedAt.Add(lease))
		}
		for _, e := range claimed {
			if seen[e.ID] {
				t.Fatalf("event %s claimed twice by B within its own lease", e.ID)
			}
			seen[e.ID] = true
			tookOver = time.Since(claimedAt)
		}
		if polls > 10_000 {
			t.Fatalf("B never got A's events (%d of %d)", len(seen), events)
		}
		if len(seen) < events {
			time.Sleep(*takeoverPoll) // B's poll interval: the pace being measured
		}
	}
	t.Logf("lease %v, poll interval %v: the surviving node took over %d events %v after the dead node claimed them (%d polls)",
		lease, *takeoverPoll, events, tookOver.Round(time.Millisecond), polls)
}
