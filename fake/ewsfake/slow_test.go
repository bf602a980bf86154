package ewsfake_test

import (
	"context"
	"testing"

	"github.com/mailpush/mailpush/ews"
	"github.com/mailpush/mailpush/fake/ewsfake"
)

// TestHold: a held operation is counted and waits until released, then is
// answered as usual; other operations go on meanwhile.
func TestHold(t *testing.T) {
	f, c, ep := newFake(t, ewsfake.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), waitMax)
	defer cancel()
	item := f.Deliver(address, "s", "A", "a@example.com")
	release := f.Hold("GetFolder")
	got := make(chan int, 1)
	go func() {
		n, err := c.GetInboxUnread(ctx, ep)
		if err != nil {
			t.Error(err)
		}
		got <- n
	}()
	if err := f.WaitFor(ctx, func(x *ewsfake.Server) bool { return x.Held("GetFolder") == 1 }); err != nil {
		t.Fatal(err)
	}
	if f.Requests("GetFolder") != 1 {
		t.Errorf("a held request is not counted: %d", f.Requests("GetFolder"))
	}
	select {
	case n := <-got:
		t.Fatalf("GetFolder answered %d while held", n)
	default:
	}
	// Another operation is not held.
	if _, err := c.GetItems(ctx, ep, []string{item}); err != nil {
		t.Fatal(err)
	}
	release()
	release() // a second call changes nothing
	if n := <-got; n != 1 {
		t.Errorf("GetFolder after release = %d, want 1", n)
	}
	if f.Held("GetFolder") != 0 {
		t.Errorf("%d requests still held after release", f.Held("GetFolder"))
	}
	// A client that gives up ends its held request.
	release = f.Hold("GetFolder")
	defer release()
	short, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { _, err := c.GetInboxUnread(short, ep); done <- err }()
	if err := f.WaitFor(ctx, func(x *ewsfake.Server) bool { return x.Held("GetFolder") == 1 }); err != nil {
		t.Fatal(err)
	}
	stop()
	if err := <-done; err == nil {
		t.Error("a cancelled request was answered")
	}
	if err := f.WaitFor(ctx, func(x *ewsfake.Server) bool { return x.Held("GetFolder") == 0 }); err != nil {
		t.Fatal(err)
	}
}

// TestHoldSubscribeAnswer: while SubscribeAnswer is held, a new
// subscription's notifications (its first status event, then new mail)
// reach the listener before Subscribe is answered, with the ID the answer
// then carries.
func TestHoldSubscribeAnswer(t *testing.T) {
	f, c, ep := newFake(t, ewsfake.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), waitMax)
	defer cancel()
	l := newListener(t, nil)
	release := f.Hold(ewsfake.SubscribeAnswer)
	defer release()
	type answer struct {
		id  string
		err error
	}
	got := make(chan answer, 1)
	go func() {
		sub, err := c.Subscribe(ctx, ep, ews.SubscribeRequest{StatusFrequency: 1440, URL: l.URL()})
		got <- answer{sub.SubscriptionID, err}
	}()
	notes := l.wait("the first status event", func(n []*ews.Notification) bool { return len(n) == 1 })
	f.Deliver(address, "early", "A", "a@example.com")
	notes = l.wait("the new mail", func(n []*ews.Notification) bool { return len(events(n, notes[0].SubscriptionID)) >= 2 })
	if f.Held(ewsfake.SubscribeAnswer) != 1 {
		t.Fatalf("%d Subscribe answers held, want 1", f.Held(ewsfake.SubscribeAnswer))
	}
	select {
	case a := <-got:
		t.Fatalf("Subscribe answered (%q, %v) while held", a.id, a.err)
	default:
	}
	release()
	a := <-got
	if a.err != nil || a.id != notes[0].SubscriptionID {
		t.Fatalf("Subscribe = %q, %v; the notifications came for %q", a.id, a.err, notes[0].SubscriptionID)
	}
	if len(notes[0].Events) != 1 || notes[0].Events[0].Type != ews.StatusEvent {
		t.Errorf("first notification before the answer: %+v", notes[0].Events)
	}
	if evs := events(notes, a.id); evs[0].Type != ews.NewMailEvent {
		t.Errorf("events before the answer: %+v", evs)
	}
}
