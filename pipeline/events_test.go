package pipeline_test

import (
	"context"
	"database/sql"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/mailpush/mailpush"
	"github.com/mailpush/mailpush/pipeline"
)

// deviceRowsEverWritten is how many device pushes the outbox ever stored
// (its AUTOINCREMENT counter): the event tier must leave it at zero when
// every device answers 200.
func deviceRowsEverWritten(t *testing.T, path string) int64 {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+path+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var n int64
	err = db.QueryRow(`SELECT coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'outbox'), 0)`).Scan(&n)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestCommonCaseWritesNothingPerDevice(t *testing.T) {
	f := newFixture(t, pipeline.Config{})
	for i := range 100 {
		f.register(t, mailpush.PlatformIOS, tok(i+1), mailpush.ContentSubject, nil)
	}
	f.event(t, mailpush.EventNewMail, 3, "Quarterly report", "Bob")
	f.event(t, mailpush.EventChanged, 2, "", "")
	if d := f.depth(t); d != 2 {
		t.Fatalf("depth = %d after two events to 100 devices, want 2", d)
	}
	f.drain(t)
	if n := len(f.ios.delivered()); n != 200 {
		t.Fatalf("delivered %d, want 200", n)
	}
	if n := deviceRowsEverWritten(t, f.path); n != 0 {
		t.Errorf("%d device rows written although every device answered 200", n)
	}
	if d := f.depth(t); d != 0 {
		t.Errorf("depth = %d after delivery", d)
	}
}

// TestEventQueuesBehindARetryingDevice: a device whose earlier push waits
// for a retry gets the next event's push only after it; the other devices
// of the mailbox get it at once.
func TestEventQueuesBehindARetryingDevice(t *testing.T) {
	f := newFixture(t, pipeline.Config{RetryBase: time.Second})
	slow := f.register(t, mailpush.PlatformIOS, tok(1), mailpush.ContentSubject, nil)
	f.register(t, mailpush.PlatformIOS, tok(2), mailpush.ContentSubject, nil)
	f.ios.answer = func(p *mailpush.Push, call int) (mailpush.PushResult, error) {
		if p.Device.Token == tok(1) && call <= 2 {
			return mailpush.PushResult{Outcome: mailpush.PushRetry, Status: 503}, nil
		}
		return mailpush.PushResult{Outcome: mailpush.PushDelivered}, nil
	}
	f.event(t, mailpush.EventNewMail, 1, "first", "")
	f.drain(t)
	f.event(t, mailpush.EventNewMail, 2, "second", "")
	f.drain(t)
	var fast []string
	for _, p := range f.ios.delivered() {
		if p.RegistrationID == slow.ID {
			t.Fatalf("the retrying device got %q before its first push", p.Subject)
		}
		fast = append(fast, p.Subject)
	}
	if fmt.Sprint(fast) != "[first second]" {
		t.Fatalf("the healthy device got %v, want [first second] at once", fast)
	}
	f.clock.Add(time.Second)
	f.drain(t)
	var got []string
	for _, p := range f.ios.delivered() {
		if p.RegistrationID == slow.ID {
			got = append(got, p.Subject)
		}
	}
	if fmt.Sprint(got) != "[first second]" {
		t.Fatalf("the retrying device got %v, want [first second]", got)
	}
	if d := f.depth(t); d != 0 {
		t.Errorf("depth = %d", d)
	}
}

// TestFanOutInterruptedIsSentAgain: a process that dies in the middle of a
// fan-out (the event leased, nothing settled) loses nothing: when the lease
// ends the whole event is fanned out again.
func TestFanOutInterruptedIsSentAgain(t *testing.T) {
	f := newFixture(t, pipeline.Config{Lease: time.Minute})
	for i := range 5 {
		f.register(t, mailpush.PlatformIOS, tok(i+1), mailpush.ContentBadge, nil)
	}
	f.event(t, mailpush.EventChanged, 9, "", "")
	// The dying process claimed the event and sent some pushes.
	claimed, err := f.store.ClaimEvents(context.Background(), f.clock.Now(), 10, time.Minute)
	if err != nil || len(claimed) != 1 {
		t.Fatalf("claim: %v, %v", claimed, err)
	}
	f.drain(t)
	if n := len(f.ios.delivered()); n != 0 {
		t.Fatalf("%d pushes sent while the event was leased elsewhere", n)
	}
	f.clock.Add(time.Minute + time.Millisecond)
	f.drain(t)
	seen := map[string]bool{}
	for _, p := range f.ios.delivered() {
		seen[p.Device.Token] = p.Badge == 9
	}
	if len(seen) != 5 {
		t.Fatalf("devices reached after the lease: %d, want 5", len(seen))
	}
}

// resolver completes events as a fetch stage would (issue: acknowledge
// before fetching).
type resolver struct{ calls int }

func (r *resolver) Resolve(ctx context.Context, e *mailpush.OutboxEvent) error {
	r.calls++
	if r.calls == 1 {
		return fmt.Errorf("mail server unreachable")
	}
	e.Event.Badge, e.Event.Subject = 12, "fetched subject"
	return nil
}

func TestUnresolvedEventIsResolvedBeforeFanOut(t *testing.T) {
	r := &resolver{}
	f := newFixture(t, pipeline.Config{Resolver: r, Lease: time.Minute})
	f.register(t, mailpush.PlatformIOS, tok(1), mailpush.ContentSubject, nil)
	ev := mailpush.Event{TenantID: f.tenant.ID, MailboxID: f.mb.ID, Kind: mailpush.EventNewMail, Badge: mailpush.NoBadge, Seq: 1, At: f.clock.Now()}
	if err := f.p.HandleUnresolvedEvent(context.Background(), ev); err != nil {
		t.Fatal(err)
	}
	f.drain(t)
	if n := len(f.ios.delivered()); n != 0 || r.calls != 1 {
		t.Fatalf("delivered %d after a failed resolve (calls %d)", n, r.calls)
	}
	f.clock.Add(time.Minute + time.Millisecond) // the lease ends: tried again
	f.drain(t)
	ps := f.ios.delivered()
	if len(ps) != 1 || ps[0].Kind != mailpush.PushAlert || ps[0].Subject != "fetched subject" || ps[0].Badge != 12 {
		t.Fatalf("pushes = %+v, want the resolved alert", ps)
	}
}

// seqResolver resolves every event and remembers the sequences it saw.
type seqResolver struct{ seqs []int64 }

func (r *seqResolver) Resolve(ctx context.Context, e *mailpush.OutboxEvent) error {
	r.seqs = append(r.seqs, e.Event.Seq)
	e.Event.Badge = 7
	return nil
}

// TestUnresolvedMailboxEventTakesTheMailboxSequence: an unresolved event
// stored with its mailbox's move (one write, as the EWS source does) carries
// the sequence that write gave the mailbox, to the resolver and to the push.
func TestUnresolvedMailboxEventTakesTheMailboxSequence(t *testing.T) {
	r := &seqResolver{}
	f := newFixture(t, pipeline.Config{Resolver: r})
	f.register(t, mailpush.PlatformIOS, tok(1), mailpush.ContentBadge, nil)
	before, err := f.store.Mailbox(context.Background(), f.mb.ID)
	if err != nil {
		t.Fatal(err)
	}
	ev := mailpush.Event{TenantID: f.tenant.ID, MailboxID: f.mb.ID, Kind: mailpush.EventChanged, Badge: mailpush.NoBadge, At: f.clock.Now()}
	err = f.p.HandleUnresolvedMailboxEvent(context.Background(), ev, func(m *mailpush.Mailbox) bool {
		m.Watermark = "wm-after"
		m.Record(ev)
		return true
	})
	if err != nil {
		t.Fatal(err)
	}
	after, err := f.store.Mailbox(context.Background(), f.mb.ID)
	if err != nil {
		t.Fatal(err)
	}
	if after.Seq != before.Seq+1 || after.Watermark != "wm-after" {
		t.Fatalf("mailbox seq %d watermark %q, want %d and the record's watermark", after.Seq, after.Watermark, before.Seq+1)
	}
	f.drain(t)
	ps := f.ios.delivered()
	if len(r.seqs) != 1 || r.seqs[0] != after.Seq || len(ps) != 1 || ps[0].Seq != after.Seq || ps[0].Badge != 7 {
		t.Fatalf("resolver saw %v, pushes %+v; want sequence %d and the resolved badge", r.seqs, ps, after.Seq)
	}
}

func TestUnresolvedEventNeedsAResolver(t *testing.T) {
	f := newFixture(t, pipeline.Config{})
	f.register(t, mailpush.PlatformIOS, tok(1), mailpush.ContentSubject, nil)
	ev := mailpush.Event{TenantID: f.tenant.ID, MailboxID: f.mb.ID, Kind: mailpush.EventNewMail, Badge: mailpush.NoBadge, Seq: 1}
	if err := f.p.HandleUnresolvedEvent(context.Background(), ev); err == nil {
		t.Fatal("an unresolved event was accepted without a resolver to complete it")
	}
	if d := f.depth(t); d != 0 {
		t.Errorf("depth = %d", d)
	}
}

// TestPayloadsSharedPerEventAndContentMode: pushes of one event that carry
// the same content share one payload holder (the provider encodes it once);
// sealed content, which differs per device, shares nothing.
func TestPayloadsSharedPerEventAndContentMode(t *testing.T) {
	f := newFixture(t, pipeline.Config{})
	var subj []*mailpush.Registration
	for i := range 3 {
		subj = append(subj, f.register(t, mailpush.PlatformIOS, tok(i+1), mailpush.ContentSubject, nil))
	}
	badge := f.register(t, mailpush.PlatformIOS, tok(9), mailpush.ContentBadge, nil)
	badge2 := f.register(t, mailpush.PlatformIOS, tok(10), mailpush.ContentBadge, nil)
	var mu sync.Mutex
	shared := map[string]*mailpush.SharedPayload{}
	f.ios.answer = func(p *mailpush.Push, call int) (mailpush.PushResult, error) {
		mu.Lock()
		shared[p.RegistrationID] = p.Shared
		mu.Unlock()
		return mailpush.PushResult{Outcome: mailpush.PushDelivered}, nil
	}
	f.event(t, mailpush.EventNewMail, 3, "Quarterly report", "Bob")
	f.drain(t)
	if shared[subj[0].ID] == nil || shared[subj[0].ID] != shared[subj[1].ID] || shared[subj[1].ID] != shared[subj[2].ID] {
		t.Errorf("subject pushes do not share their payload: %v", shared)
	}
	if shared[badge.ID] == nil || shared[badge.ID] != shared[badge2.ID] || shared[badge.ID] == shared[subj[0].ID] {
		t.Errorf("badge pushes: %p %p, subject %p; want one holder for the badges, another for the subjects", shared[badge.ID], shared[badge2.ID], shared[subj[0].ID])
	}
	calls := 0
	body, err := shared[badge.ID].Payload("test", func() ([]byte, error) { calls++; return []byte("x"), nil })
	body2, _ := shared[badge2.ID].Payload("test", func() ([]byte, error) { calls++; return []byte("y"), nil })
	if err != nil || string(body) != "x" || string(body2) != "x" || calls != 1 {
		t.Errorf("payload built %d times (%q, %q), want once", calls, body, body2)
	}
}
