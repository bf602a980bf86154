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
}

func (m *memMailboxes) UpdateMailbox(ctx context.Context, id string, fn func(*mailpush.Mailbox) error) (*mailpush.Mailbox, error) {
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
// just went away, and records the others.
type flakySink struct {
	failures int
	got      []mailpush.Event
}

func (f *flakySink) HandleEvent(ctx context.Context, ev mailpush.Event) error {
	if f.failures > 0 {
		f.failures--
		return mailpush.Errorf(mailpush.EUnavailable, "the database failed")
	}
	f.got = append(f.got, ev)
	return nil
}

func (f *flakySink) HandleUnresolvedEvent(ctx context.Context, ev mailpush.Event) error {
	return f.HandleEvent(ctx, ev)
}

type quietEngine struct{ mailpush.SubscriptionEngine }

func (quietEngine) Heard(host, mailboxID string, at time.Time) {}

// TestRetryAfterAFailedEnqueueIsNotAReplay: the mailbox update succeeds,
// queueing the event fails (the database went away between the two writes),
// so Exchange is answered with an error and sends the notification again.
// The retry must queue the event, not be taken for a replay of a handled
// notification (that would acknowledge it OK without a push); once queued,
// a replay is a replay.
func TestRetryAfterAFailedEnqueueIsNotAReplay(t *testing.T) {
	store := &memMailboxes{mb: mailpush.Mailbox{ID: "mb1", TenantID: "t1", Source: mailpush.SourceEWS, Mode: mailpush.ModeDeviceSubscribed,
		Status: mailpush.StatusActive, SubscriptionID: "sub1", Watermark: "wm0", Badge: mailpush.NoBadge}}
	sink := &flakySink{failures: 1}
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
	// A third delivery of the same notification is a replay: no event.
	if st, err := s.handle(ctx, tok, n); err != nil || st != StatusOK || len(sink.got) != 1 {
		t.Fatalf("replay = %q, %v, %d events queued", st, err, len(sink.got))
	}
}
