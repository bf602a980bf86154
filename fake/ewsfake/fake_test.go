package ewsfake_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mailpush/mailpush"
	"github.com/mailpush/mailpush/ews"
	"github.com/mailpush/mailpush/fake/ewsfake"
)

func TestPushFlow(t *testing.T) {
	f, c, ep := newFake(t, ewsfake.Options{TimeScale: 0.001})
	l := newListener(t, nil)
	ctx := context.Background()

	// 1440 minutes: no periodic StatusEvent gets in the way here.
	sub, err := c.Subscribe(ctx, ep, ews.SubscribeRequest{StatusFrequency: 1440, URL: l.URL()})
	if err != nil {
		t.Fatalf("Subscribe: %v", err)
	}
	if sub.SubscriptionID == "" || sub.Watermark == "" {
		t.Fatalf("Subscribe = %+v", sub)
	}

	notes := l.wait("the first StatusEvent", func(n []*ews.Notification) bool { return len(n) >= 1 })
	first := notes[0]
	if first.SubscriptionID != sub.SubscriptionID || first.PreviousWatermark != sub.Watermark || first.MoreEvents ||
		len(first.Events) != 1 || first.Events[0].Type != ews.StatusEvent || first.Events[0].Watermark != sub.Watermark {
		t.Fatalf("first notification = %+v, want one StatusEvent at watermark %q", first, sub.Watermark)
	}

	var ids []string
	for i, subject := range []string{"Budget", "Lunch?", "Re: <urgent> & co"} {
		id := f.Deliver(address, subject, "Bob "+string(rune('A'+i)), "bob@example.com")
		if id == "" {
			t.Fatal("Deliver found no mailbox")
		}
		ids = append(ids, id)
	}
	notes = l.wait("three deliveries", func(n []*ews.Notification) bool { return len(folderCounts(events(n, sub.SubscriptionID))) >= 3 })
	evs := events(notes, sub.SubscriptionID)
	if got := folderCounts(evs); !slices.Equal(got, []int{1, 2, 3}) {
		t.Errorf("Inbox UnreadCounts %v, want [1 2 3]", got)
	}
	var newMail, created []string
	for _, e := range evs {
		if e.Watermark == "" || e.TimeStamp.IsZero() || e.ParentFolderID == "" || (e.ItemID == "") == (e.FolderID == "") {
			t.Errorf("incomplete event %+v", e)
		}
		switch e.Type {
		case ews.NewMailEvent:
			newMail = append(newMail, e.ItemID)
		case ews.CreatedEvent:
			created = append(created, e.ItemID)
		}
	}
	if !slices.Equal(newMail, ids) || !slices.Equal(created, ids) {
		t.Errorf("NewMailEvent items %v, CreatedEvent items %v, want %v for both", newMail, created, ids)
	}
	checkWatermarkChain(t, notes, sub)

	// What a push needs besides the events.
	if n, err := c.GetInboxUnread(ctx, ep); err != nil || n != 3 {
		t.Errorf("GetInboxUnread = %d, %v; want 3", n, err)
	}
	items, err := c.GetItems(ctx, ep, ids)
	if err != nil {
		t.Fatalf("GetItems: %v", err)
	}
	wantItems := []ews.Item{
		{ID: ids[0], Subject: "Budget", FromName: "Bob A", FromAddress: "bob@example.com"},
		{ID: ids[1], Subject: "Lunch?", FromName: "Bob B", FromAddress: "bob@example.com"},
		{ID: ids[2], Subject: "Re: <urgent> & co", FromName: "Bob C", FromAddress: "bob@example.com"},
	}
	if !slices.Equal(items, wantItems) {
		t.Errorf("GetItems =\n%+v\nwant\n%+v", items, wantItems)
	}

	// Read elsewhere, then deleted two ways.
	if err := f.MarkRead(address, ids[0], true); err != nil {
		t.Fatal(err)
	}
	l.wait("mark read", func(n []*ews.Notification) bool { return len(folderCounts(events(n, sub.SubscriptionID))) >= 4 })
	movedTo, err := f.SoftDelete(address, ids[1])
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Delete(address, ids[2]); err != nil {
		t.Fatal(err)
	}
	notes = l.wait("the deletes", func(n []*ews.Notification) bool { return len(folderCounts(events(n, sub.SubscriptionID))) >= 6 })
	evs = events(notes, sub.SubscriptionID)
	if got := folderCounts(evs); !slices.Equal(got, []int{1, 2, 3, 2, 1, 0}) {
		t.Errorf("Inbox UnreadCounts %v, want [1 2 3 2 1 0]", got)
	}
	var readEv, moved, deleted *ews.Event
	for i := range evs {
		e := &evs[i]
		switch {
		case e.Type == ews.ModifiedEvent && e.ItemID == ids[0]:
			readEv = e
		case e.Type == ews.MovedEvent:
			moved = e
		case e.Type == ews.DeletedEvent:
			deleted = e
		}
	}
	if readEv == nil {
		t.Errorf("no ModifiedEvent on the item read")
	}
	if moved == nil || moved.ItemID != movedTo || moved.OldItemID != ids[1] || moved.OldParentFolderID == "" || moved.OldParentFolderID == moved.ParentFolderID {
		t.Errorf("MovedEvent = %+v, want item %s moved from the Inbox as %s", moved, ids[1], movedTo)
	}
	if deleted == nil || deleted.ItemID != ids[2] {
		t.Errorf("DeletedEvent = %+v, want item %s", deleted, ids[2])
	}
	checkWatermarkChain(t, notes, sub)

	if n, err := c.GetInboxUnread(ctx, ep); err != nil || n != 0 {
		t.Errorf("GetInboxUnread = %d, %v; want 0", n, err)
	}
	_, err = c.GetItems(ctx, ep, ids[1:])
	if mailpush.ErrorCode(err) != mailpush.ENotFound {
		t.Errorf("GetItems of deleted items: %v, want ENotFound", err)
	}
	for op, want := range map[string]int{"Subscribe": 1, "GetFolder": 2, "GetItem": 2, "Unauthorized": 0} {
		if got := f.Requests(op); got != want {
			t.Errorf("Requests(%q) = %d, want %d", op, got, want)
		}
	}
	for _, cb := range f.Callbacks() {
		if cb.Result != "OK" || cb.Status != 200 || cb.Attempt != 1 || cb.Events < 1 {
			t.Errorf("callback %+v, want a first attempt answered OK", cb)
		}
	}
}

// checkWatermarkChain checks that each notification's PreviousWatermark is
// the last watermark of the one before: nothing was missed.
func checkWatermarkChain(t *testing.T, notes []*ews.Notification, sub ews.SubscribeResult) {
	t.Helper()
	last := sub.Watermark
	for i, n := range notes {
		if n.SubscriptionID != sub.SubscriptionID {
			continue
		}
		if n.PreviousWatermark != last {
			t.Errorf("notification %d: PreviousWatermark %q, want %q", i, n.PreviousWatermark, last)
		}
		if n.MoreEvents {
			t.Errorf("notification %d: MoreEvents", i)
		}
		last = n.Events[len(n.Events)-1].Watermark
	}
}

func TestWrongPassword(t *testing.T) {
	f, c, ep := newFake(t, ewsfake.Options{})
	for _, cred := range []mailpush.Credentials{
		{Username: username, Password: "wrong"},
		{Username: "nobody", Password: password},
		{AccessToken: "bearer-is-not-accepted"},
	} {
		ep.Credentials = cred
		_, err := c.GetInboxUnread(context.Background(), ep)
		if !errors.Is(err, ews.ErrUnauthorized) || mailpush.ErrorCode(err) != mailpush.EUnauthorized {
			t.Errorf("%v: error %v, want ErrUnauthorized", cred, err)
		}
		if err != nil && (strings.Contains(err.Error(), password) || strings.Contains(err.Error(), "wrong")) {
			t.Errorf("error %q holds the password", err)
		}
	}
	// The fake offers NTLM beside Basic, so the client tries it after the
	// first refused Basic: wrong password 2 (Basic, then NTLM), unknown user
	// 1 (NTLM: the host is known for NTLM now), bearer 1.
	if got := f.Requests("Unauthorized"); got != 4 {
		t.Errorf("Requests(Unauthorized) = %d, want 4", got)
	}
	// The address works as a login name too.
	ep.Credentials = mailpush.Credentials{Username: strings.ToUpper(address), Password: password}
	if _, err := c.GetInboxUnread(context.Background(), ep); err != nil {
		t.Errorf("login by address: %v", err)
	}
}

func TestUnsubscribeAnswerEndsSubscription(t *testing.T) {
	f, c, ep := newFake(t, ewsfake.Options{TimeScale: 0.001})
	quitter := newListener(t, func(*ews.Notification) ews.SubscriptionStatus { return ews.StatusUnsubscribe })
	stayer := newListener(t, nil)
	ctx := context.Background()
	gone, err := c.Subscribe(ctx, ep, ews.SubscribeRequest{StatusFrequency: 1, URL: quitter.URL()})
	if err != nil {
		t.Fatal(err)
	}
	waitFake(t, f, "the Unsubscribe answer", func(f *ewsfake.Server) bool { return !subscription(f, gone.SubscriptionID).Active })
	if got := subscription(f, gone.SubscriptionID); got.EndReason != ewsfake.EndUnsubscribed {
		t.Errorf("subscription %+v, want ended by Unsubscribe", got)
	}

	kept, err := c.Subscribe(ctx, ep, ews.SubscribeRequest{StatusFrequency: 1440, URL: stayer.URL()})
	if err != nil {
		t.Fatal(err)
	}
	if f.Deliver(address, "hello", "Bob", "bob@example.com") == "" {
		t.Fatal("Deliver found no mailbox")
	}
	stayer.wait("the new mail", func(n []*ews.Notification) bool { return len(events(n, kept.SubscriptionID)) >= 3 })
	if got := len(f.CallbacksFor(gone.SubscriptionID)); got != 1 || quitter.count() != 1 {
		t.Errorf("the ended subscription got %d callbacks (%d notifications), want 1", got, quitter.count())
	}
}

func TestFailingListenerRetriesThenDrop(t *testing.T) {
	// Retries wait 30 s, 60 s, 120 s… while the sum stays within
	// StatusFrequency minutes: 1 minute allows one retry, 3 minutes two.
	for _, tt := range []struct {
		freq, attempts int
	}{{1, 2}, {3, 3}} {
		f, c, ep := newFake(t, ewsfake.Options{TimeScale: 0.001})
		l := newListener(t, func(*ews.Notification) ews.SubscriptionStatus { return "" })
		sub, err := c.Subscribe(context.Background(), ep, ews.SubscribeRequest{StatusFrequency: tt.freq, URL: l.URL()})
		if err != nil {
			t.Fatal(err)
		}
		waitFake(t, f, "the drop", func(f *ewsfake.Server) bool { return !subscription(f, sub.SubscriptionID).Active })
		if got := subscription(f, sub.SubscriptionID).EndReason; got != ewsfake.EndRetriesExhausted {
			t.Errorf("freq %d: EndReason %q, want %q", tt.freq, got, ewsfake.EndRetriesExhausted)
		}
		cbs := f.CallbacksFor(sub.SubscriptionID)
		if len(cbs) != tt.attempts {
			t.Fatalf("freq %d: %d attempts %+v, want %d", tt.freq, len(cbs), cbs, tt.attempts)
		}
		for i, cb := range cbs {
			if cb.Attempt != i+1 || cb.Status != 500 || cb.Result != "error: HTTP 500" || cb.Events != 1 {
				t.Errorf("freq %d: attempt %d = %+v", tt.freq, i+1, cb)
			}
			if i > 0 {
				// Lower bounds only: a timer never fires early.
				if gap, min := cb.At.Sub(cbs[i-1].At), time.Duration(30<<(i-1))*time.Millisecond; gap < min {
					t.Errorf("freq %d: retry %d after %v, want at least %v", tt.freq, i, gap, min)
				}
			}
		}
		f.Close()
	}
}

func TestRetryRedeliversTheSameNotification(t *testing.T) {
	f, c, ep := newFake(t, ewsfake.Options{TimeScale: 0.001})
	var mu sync.Mutex
	fails := 1
	l := newListener(t, func(*ews.Notification) ews.SubscriptionStatus {
		mu.Lock()
		defer mu.Unlock()
		if fails > 0 {
			fails--
			return ""
		}
		return ews.StatusOK
	})
	sub, err := c.Subscribe(context.Background(), ep, ews.SubscribeRequest{StatusFrequency: 1440, URL: l.URL()})
	if err != nil {
		t.Fatal(err)
	}
	notes := l.wait("the retry", func(n []*ews.Notification) bool { return len(n) >= 2 })
	if notes[0].PreviousWatermark != notes[1].PreviousWatermark || notes[1].Events[0].Type != ews.StatusEvent {
		t.Errorf("retry differs: %+v then %+v", notes[0], notes[1])
	}
	// The listener sees a notification before the fake sees its answer.
	waitFake(t, f, "two callbacks", func(f *ewsfake.Server) bool { return len(f.CallbacksFor(sub.SubscriptionID)) >= 2 })
	cbs := f.CallbacksFor(sub.SubscriptionID)
	if len(cbs) != 2 || cbs[0].Result != "error: HTTP 500" || cbs[1].Result != "OK" || cbs[1].Attempt != 2 {
		t.Errorf("callbacks %+v, want a failure then OK on attempt 2", cbs)
	}
	if !subscription(f, sub.SubscriptionID).Active {
		t.Error("subscription ended after a successful retry")
	}
}

func TestStatusEventsWhenIdle(t *testing.T) {
	_, c, ep := newFake(t, ewsfake.Options{TimeScale: 0.001}) // a minute is 60 ms
	l := newListener(t, nil)
	sub, err := c.Subscribe(context.Background(), ep, ews.SubscribeRequest{StatusFrequency: 1, URL: l.URL()})
	if err != nil {
		t.Fatal(err)
	}
	notes := l.wait("four StatusEvents", func(n []*ews.Notification) bool { return len(n) >= 4 })
	for _, n := range notes {
		if len(n.Events) != 1 || n.Events[0].Type != ews.StatusEvent || n.PreviousWatermark != sub.Watermark || n.Events[0].Watermark != sub.Watermark {
			t.Errorf("idle notification %+v, want a StatusEvent at %q", n, sub.Watermark)
		}
	}
}

func TestSubscribeWithWatermarkReplaysMissedEvents(t *testing.T) {
	f, c, ep := newFake(t, ewsfake.Options{TimeScale: 0.001})
	ctx := context.Background()
	before := newListener(t, nil)
	old, err := c.Subscribe(ctx, ep, ews.SubscribeRequest{StatusFrequency: 1440, URL: before.URL()})
	if err != nil {
		t.Fatal(err)
	}
	before.wait("the first StatusEvent", func(n []*ews.Notification) bool { return len(n) >= 1 })
	f.Restart() // Exchange forgot the subscription; mail keeps arriving
	if got := f.Subscriptions(); len(got) != 0 {
		t.Fatalf("Subscriptions after Restart = %+v", got)
	}
	for _, s := range []string{"one", "two"} {
		if f.Deliver(address, s, "Bob", "bob@example.com") == "" {
			t.Fatal("Deliver found no mailbox")
		}
	}

	after := newListener(t, nil)
	sub, err := c.Subscribe(ctx, ep, ews.SubscribeRequest{StatusFrequency: 1440, URL: after.URL(), Watermark: old.Watermark})
	if err != nil {
		t.Fatalf("Subscribe from a watermark: %v", err)
	}
	if sub.Watermark != old.Watermark {
		t.Errorf("Subscribe watermark %q, want the one given %q", sub.Watermark, old.Watermark)
	}
	notes := after.wait("the replay", func(n []*ews.Notification) bool { return len(events(n, sub.SubscriptionID)) >= 6 })
	if got := folderCounts(events(notes, sub.SubscriptionID)); !slices.Equal(got, []int{1, 2}) {
		t.Errorf("replayed UnreadCounts %v, want [1 2]", got)
	}
	checkWatermarkChain(t, notes, sub)
	if before.count() != 1 {
		t.Errorf("the forgotten subscription got %d notifications, want 1", before.count())
	}

	_, err = c.Subscribe(ctx, ep, ews.SubscribeRequest{StatusFrequency: 1, URL: after.URL(), Watermark: "AQAAAGJhA2lZuE6i1N+1rkdEZQeygpQx"})
	var re *ews.ResponseError
	if !errors.As(err, &re) || re.Code != "ErrorInvalidWatermark" {
		t.Errorf("unknown watermark: %v, want ErrorInvalidWatermark", err)
	}
}

func TestFailNext(t *testing.T) {
	f, c, ep := newFake(t, ewsfake.Options{TimeScale: 0.001})
	ctx := context.Background()
	l := newListener(t, nil)
	req := ews.SubscribeRequest{StatusFrequency: 5, URL: l.URL()}

	f.FailNext("Subscribe", "ErrorInvalidWatermark")
	_, err := c.Subscribe(ctx, ep, req)
	var re *ews.ResponseError
	if !errors.As(err, &re) || re.Code != "ErrorInvalidWatermark" || re.Fault || mailpush.ErrorCode(err) != mailpush.EUpstream {
		t.Errorf("injected ErrorInvalidWatermark: %v", err)
	}
	if _, err := c.Subscribe(ctx, ep, req); err != nil {
		t.Errorf("Subscribe after the injected failure: %v", err)
	}

	f.FailNext("GetFolder", "ErrorServerBusy")
	_, err = c.GetInboxUnread(ctx, ep)
	if !errors.As(err, &re) || re.Code != "ErrorServerBusy" || !re.Fault || re.BackOff != 30*time.Millisecond || mailpush.ErrorCode(err) != mailpush.EUnavailable {
		t.Errorf("injected ErrorServerBusy: %v (%+v)", err, re)
	}
	f.FailNextBusy("GetItem", 2*time.Second)
	_, err = c.GetItems(ctx, ep, []string{"x"})
	if !errors.As(err, &re) || re.BackOff != 2*time.Second {
		t.Errorf("injected ErrorServerBusy with back-off: %v", err)
	}
	f.FailNext("GetFolder", "HTTP503")
	_, err = c.GetInboxUnread(ctx, ep)
	if err == nil || !strings.Contains(err.Error(), "not XML (HTTP 503") {
		t.Errorf("injected HTTP 503: %v", err)
	}
	f.FailNext("GetFolder", "HTTP401")
	if _, err = c.GetInboxUnread(ctx, ep); !errors.Is(err, ews.ErrUnauthorized) {
		t.Errorf("injected HTTP 401: %v", err)
	}
	if n, err := c.GetInboxUnread(ctx, ep); err != nil || n != 0 {
		t.Errorf("GetInboxUnread after the failures = %d, %v", n, err)
	}
}

func TestDropSubscription(t *testing.T) {
	f, c, ep := newFake(t, ewsfake.Options{TimeScale: 0.001})
	l := newListener(t, nil)
	other := newListener(t, nil)
	ctx := context.Background()
	sub, err := c.Subscribe(ctx, ep, ews.SubscribeRequest{StatusFrequency: 1440, URL: l.URL()})
	if err != nil {
		t.Fatal(err)
	}
	l.wait("the first StatusEvent", func(n []*ews.Notification) bool { return len(n) >= 1 })
	if err := f.DropSubscription(sub.SubscriptionID); err != nil {
		t.Fatal(err)
	}
	if got := subscription(f, sub.SubscriptionID); got.Active || got.EndReason != ewsfake.EndDropped {
		t.Errorf("after DropSubscription: %+v", got)
	}
	if err := f.DropSubscription("no-such-id"); !errors.Is(err, ewsfake.ErrNotFound) {
		t.Errorf("DropSubscription(unknown) = %v", err)
	}
	witness, err := c.Subscribe(ctx, ep, ews.SubscribeRequest{StatusFrequency: 1440, URL: other.URL()})
	if err != nil {
		t.Fatal(err)
	}
	if f.Deliver(address, "hi", "Bob", "bob@example.com") == "" {
		t.Fatal("Deliver found no mailbox")
	}
	other.wait("the new mail", func(n []*ews.Notification) bool { return len(events(n, witness.SubscriptionID)) >= 3 })
	if l.count() != 1 {
		t.Errorf("the dropped subscription got %d notifications, want 1", l.count())
	}
}

func TestQueueOverflowShowsInPreviousWatermark(t *testing.T) {
	f, c, ep := newFake(t, ewsfake.Options{TimeScale: 0.001, QueueSize: 3})
	release := make(chan struct{})
	var once sync.Once
	l := newListener(t, func(*ews.Notification) ews.SubscriptionStatus {
		<-release // the first answer waits: events pile up meanwhile
		return ews.StatusOK
	})
	sub, err := c.Subscribe(context.Background(), ep, ews.SubscribeRequest{StatusFrequency: 1440, URL: l.URL()})
	if err != nil {
		t.Fatal(err)
	}
	defer once.Do(func() { close(release) })
	l.wait("the first StatusEvent", func(n []*ews.Notification) bool { return len(n) >= 1 })
	for _, s := range []string{"one", "two"} { // 6 events for a queue of 3
		if f.Deliver(address, s, "Bob", "bob@example.com") == "" {
			t.Fatal("Deliver found no mailbox")
		}
	}
	once.Do(func() { close(release) })
	notes := l.wait("the rest", func(n []*ews.Notification) bool { return len(events(n, sub.SubscriptionID)) >= 3 })
	evs := events(notes, sub.SubscriptionID)
	if len(evs) != 3 || evs[0].Type != ews.NewMailEvent || folderCounts(evs)[0] != 2 {
		t.Errorf("events after the overflow: %+v, want the last delivery's three", evs)
	}
	if notes[1].PreviousWatermark == notes[0].Events[0].Watermark {
		t.Error("PreviousWatermark does not reveal the dropped events")
	}
}

func TestCallbackDelay(t *testing.T) {
	f, c, ep := newFake(t, ewsfake.Options{TimeScale: 0.001})
	l := newListener(t, nil)
	f.SetCallbackDelay(50 * time.Millisecond)
	start := time.Now()
	sub, err := c.Subscribe(context.Background(), ep, ews.SubscribeRequest{StatusFrequency: 1440, URL: l.URL()})
	if err != nil {
		t.Fatal(err)
	}
	waitFake(t, f, "the first callback", func(f *ewsfake.Server) bool { return len(f.CallbacksFor(sub.SubscriptionID)) >= 1 })
	cbs := f.CallbacksFor(sub.SubscriptionID)
	if l.count() != 1 || len(cbs) != 1 || cbs[0].At.Sub(start) < 50*time.Millisecond {
		t.Errorf("callbacks %+v, want one at least 50ms after %v", cbs, start)
	}
}

func TestCloseStopsDeliveriesInFlight(t *testing.T) {
	f, c, ep := newFake(t, ewsfake.Options{TimeScale: 0.001})
	stuck := make(chan struct{})
	defer close(stuck)
	l := newListener(t, func(*ews.Notification) ews.SubscriptionStatus {
		<-stuck
		return ews.StatusOK
	})
	if _, err := c.Subscribe(context.Background(), ep, ews.SubscribeRequest{StatusFrequency: 1, URL: l.URL()}); err != nil {
		t.Fatal(err)
	}
	l.wait("a notification in flight", func(n []*ews.Notification) bool { return len(n) >= 1 })
	f.Close() // must not wait for the stuck listener
	f.Close()
	if err := f.WaitFor(context.Background(), func(*ewsfake.Server) bool { return false }); !errors.Is(err, ewsfake.ErrClosed) {
		t.Errorf("WaitFor after Close = %v, want ErrClosed", err)
	}
}
