package ews

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/mailpush/mailpush"
	"github.com/mailpush/mailpush/clocktest"
)

// memMailboxes is the one mailbox of the test; its writes can be made to fail.
type memMailboxes struct {
	mailpush.Store // only UpdateMailbox is used
	mu             sync.Mutex
	mb             mailpush.Mailbox
	updates        int // UpdateMailbox calls: writes besides the sink's
}

func (m *memMailboxes) UpdateMailbox(ctx context.Context, id string, fn func(*mailpush.Mailbox) error) (*mailpush.Mailbox, error) {
	m.mu.Lock()
	m.updates++
	m.mu.Unlock()
	return m.apply(fn)
}

// apply is UpdateMailbox as the sink's own transaction does it.
func (m *memMailboxes) apply(fn func(*mailpush.Mailbox) error) (*mailpush.Mailbox, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	c := m.mb
	if err := fn(&c); err != nil {
		return nil, err
	}
	m.mb = c
	out := c
	return &out, nil
}

func (m *memMailboxes) get() mailpush.Mailbox {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.mb
}

type admitAll struct {
	mailpush.RegistrationRules
	store *memMailboxes
}

func (a admitAll) Admit(ctx context.Context, tok mailpush.CallbackToken, sub string) (mailpush.Admission, error) {
	mb := a.store.get()
	return mailpush.Admission{Mailbox: &mb}, nil
}

// flakySink fails its first failures events, as an outbox whose database
// just went away (the mailbox's move in the same transaction is not
// written either), and records the others.
type flakySink struct {
	store    *memMailboxes
	failures int
	got      []mailpush.Event
}

func (f *flakySink) HandleEvent(ctx context.Context, ev mailpush.Event) error {
	return f.HandleMailboxEvent(ctx, ev, nil)
}

func (f *flakySink) HandleUnresolvedEvent(ctx context.Context, ev mailpush.Event) error {
	return f.HandleMailboxEvent(ctx, ev, nil)
}

func (f *flakySink) HandleUnresolvedMailboxEvent(ctx context.Context, ev mailpush.Event, record func(*mailpush.Mailbox) bool) error {
	return f.HandleMailboxEvent(ctx, ev, record)
}

func (f *flakySink) HandleMailboxEvent(ctx context.Context, ev mailpush.Event, record func(*mailpush.Mailbox) bool) error {
	if f.failures > 0 {
		f.failures--
		return mailpush.Errorf(mailpush.EUnavailable, "the database failed")
	}
	if record != nil {
		news := false
		m, err := f.store.apply(func(m *mailpush.Mailbox) error {
			news = record(m)
			return nil
		})
		if err != nil || !news {
			return err
		}
		ev.Seq = m.Seq
	}
	f.got = append(f.got, ev)
	return nil
}

type quietEngine struct{ mailpush.SubscriptionEngine }

func (quietEngine) Heard(host, mailboxID string, at time.Time) {}

// TestRetryAfterAFailedEnqueueIsNotAReplay: the write that queues the event
// and moves the mailbox fails (the database went away), so Exchange is
// answered with an error and sends the notification again; the watermark
// did not move with it.
// The retry must queue the event, not be taken for a replay of a handled
// notification (that would acknowledge it OK without a push); once queued,
// a replay is a replay.
func TestRetryAfterAFailedEnqueueIsNotAReplay(t *testing.T) {
	store := &memMailboxes{mb: mailpush.Mailbox{ID: "mb1", TenantID: "t1", Source: mailpush.SourceEWS, Mode: mailpush.ModeDeviceSubscribed,
		Status: mailpush.StatusActive, SubscriptionID: "sub1", Watermark: "wm0", Badge: mailpush.NoBadge}}
	sink := &flakySink{store: store, failures: 1}
	s := &Source{Store: store, Rules: admitAll{store: store}, Sink: sink, Engine: quietEngine{},
		Logger: slog.New(slog.DiscardHandler), Clock: clocktest.New(time.Date(2026, 12, 1, 3, 0, 0, 0, time.UTC)), CallbackMaxAge: -1}
	tok := mailpush.CallbackToken{TenantID: "t1", MailboxID: "mb1", ServerURL: "https://mail.example.com/EWS/Exchange.asmx"}
	n := &Notification{SubscriptionID: "sub1", PreviousWatermark: "wm0", Events: []Event{
		{Type: NewMailEvent, Watermark: "wm1", ItemID: "item1", UnreadCount: -1},
		{Type: ModifiedEvent, Watermark: "wm2", FolderID: "inbox", UnreadCount: 1},
	}}
	ctx := context.Background()
	if _, err := s.handle(ctx, tok, n); err == nil {
		t.Fatal("handled although the event could not be queued")
	}
	if got := store.get().Watermark; got != "wm0" {
		t.Fatalf("watermark %q after the failed enqueue: the retry would be taken for a replay", got)
	}
	st, err := s.handle(ctx, tok, n) // Exchange's retry
	if err != nil || st != StatusOK {
		t.Fatalf("retry = %q, %v", st, err)
	}
	if len(sink.got) != 1 || sink.got[0].Badge != 1 || sink.got[0].Kind != mailpush.EventNewMail {
		t.Fatalf("queued after the retry: %+v, want the new-mail event with badge 1", sink.got)
	}
	if got := store.get().Watermark; got != "wm2" {
		t.Fatalf("watermark %q after the retry, want wm2", got)
	}
	// One write per notification: the event and the mailbox's move
	// (sequence, watermark, last event) in the sink's transaction.
	if store.updates != 0 {
		t.Fatalf("%d mailbox writes besides the event's: the acknowledgement waits for more than one commit", store.updates)
	}
	if got := store.get(); got.Seq != 1 || got.Badge != 1 || sink.got[0].Seq != 1 {
		t.Fatalf("mailbox seq %d badge %d, event seq %d: want the event's sequence moved with it", got.Seq, got.Badge, sink.got[0].Seq)
	}
	// A third delivery of the same notification is a replay: no event.
	if st, err := s.handle(ctx, tok, n); err != nil || st != StatusOK || len(sink.got) != 1 {
		t.Fatalf("replay = %q, %v, %d events queued", st, err, len(sink.got))
	}
}

// TestFetchPlanKeptUnderTheEventsSequence: in sealed mode a new message
// needs a fetch, so the event is stored unresolved in the write that moves
// the mailbox; its fetch plan is kept under the sequence that write gives
// the event (Resolve finds it by that sequence), and a failed write keeps
// no plan.
func TestFetchPlanKeptUnderTheEventsSequence(t *testing.T) {
	store := &memMailboxes{mb: mailpush.Mailbox{ID: "mb1", TenantID: "t1", Source: mailpush.SourceEWS, Mode: mailpush.ModeSealed,
		Status: mailpush.StatusActive, SubscriptionID: "sub1", Watermark: "wm0", Badge: 3, Seq: 41}}
	sink := &flakySink{store: store, failures: 1}
	s := &Source{Store: store, Rules: admitAll{store: store}, Sink: sink, Engine: quietEngine{},
		Logger: slog.New(slog.DiscardHandler), Clock: clocktest.New(time.Date(2026, 12, 1, 3, 0, 0, 0, time.UTC)), CallbackMaxAge: -1}
	tok := mailpush.CallbackToken{TenantID: "t1", MailboxID: "mb1", ServerURL: "https://mail.example.com/EWS/Exchange.asmx",
		Credentials: mailpush.Credentials{Username: "adele", Password: "secret"}}
	n := &Notification{SubscriptionID: "sub1", PreviousWatermark: "wm0", Events: []Event{
		{Type: NewMailEvent, Watermark: "wm1", ItemID: "item1", UnreadCount: -1},
	}}
	ctx := context.Background()
	if _, err := s.handle(ctx, tok, n); err == nil {
		t.Fatal("handled although the event could not be queued")
	}
	if st := s.init(); st.pending.n != 0 {
		t.Fatalf("%d fetch plans kept after the failed write", st.pending.n)
	}
	if st, err := s.handle(ctx, tok, n); err != nil || st != StatusOK {
		t.Fatalf("retry = %q, %v", st, err)
	}
	if len(sink.got) != 1 || sink.got[0].Seq != 42 || store.get().Seq != 42 || store.get().Watermark != "wm1" {
		t.Fatalf("queued %+v, mailbox %+v: want one event with sequence 42 and the watermark moved", sink.got, store.get())
	}
	plan, ok := s.init().pending.take("mb1", 42)
	if !ok || plan.itemID != "item1" {
		t.Fatalf("fetch plan under sequence 42: %+v, %v", plan, ok)
	}
	if store.updates != 0 {
		t.Fatalf("%d mailbox writes besides the event's", store.updates)
	}
}
