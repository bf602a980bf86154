package ewsfake_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/mailpush/mailpush"
	"github.com/mailpush/mailpush/ews"
	"github.com/mailpush/mailpush/fake/ewsfake"
)

const (
	address  = "alice@contoso.com"
	username = `CONTOSO\alice`
	password = "Pa55-word"
	waitMax  = 15 * time.Second // generous: the race detector on a busy machine is slow
)

// newFake starts a fake with one user and returns it with a client and the
// user's endpoint.
func newFake(t *testing.T, opts ewsfake.Options) (*ewsfake.Server, *ews.Client, ews.Endpoint) {
	t.Helper()
	f := ewsfake.New(opts)
	t.Cleanup(f.Close)
	f.AddUser(address, username, password)
	return f, &ews.Client{HTTP: f.HTTPClient(), UserAgent: "ewsfake-test"},
		ews.Endpoint{URL: f.URL(), Credentials: mailpush.Credentials{Username: username, Password: password}}
}

// listener is a push listener as mailpush runs one: it parses every
// notification with ews.ParseSendNotification and answers what answer says
// ("" answers HTTP 500).
type listener struct {
	t      *testing.T
	srv    *httptest.Server
	answer func(*ews.Notification) ews.SubscriptionStatus

	mu      sync.Mutex
	notes   []*ews.Notification
	bad     []string
	changed chan struct{}
}

func newListener(t *testing.T, answer func(*ews.Notification) ews.SubscriptionStatus) *listener {
	t.Helper()
	if answer == nil {
		answer = func(*ews.Notification) ews.SubscriptionStatus { return ews.StatusOK }
	}
	l := &listener{t: t, answer: answer, changed: make(chan struct{})}
	l.srv = httptest.NewServer(http.HandlerFunc(l.serve))
	t.Cleanup(l.srv.Close)
	return l
}

func (l *listener) URL() string { return l.srv.URL + "/ews/notify" }

func (l *listener) serve(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, ews.MaxNotificationSize))
	var n *ews.Notification
	if err == nil {
		n, err = ews.ParseSendNotification(body)
	}
	l.mu.Lock()
	switch {
	case err != nil:
		l.bad = append(l.bad, err.Error())
	case r.Header.Get("SOAPAction") != `"http://schemas.microsoft.com/exchange/services/2006/messages/SendNotification"`:
		l.bad = append(l.bad, "SOAPAction "+r.Header.Get("SOAPAction"))
	case r.Method != http.MethodPost || r.Header.Get("Content-Type") != "text/xml; charset=utf-8":
		l.bad = append(l.bad, r.Method+" "+r.Header.Get("Content-Type"))
	default:
		l.notes = append(l.notes, n)
	}
	close(l.changed)
	l.changed = make(chan struct{})
	l.mu.Unlock()
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	status := l.answer(n)
	if status == "" {
		http.Error(w, "listener failing on purpose", http.StatusInternalServerError)
		return
	}
	ews.WriteResult(w, status)
}

// wait returns the notifications once cond holds for them.
func (l *listener) wait(what string, cond func([]*ews.Notification) bool) []*ews.Notification {
	l.t.Helper()
	deadline := time.NewTimer(waitMax)
	defer deadline.Stop()
	for {
		l.mu.Lock()
		notes, bad, ch := append([]*ews.Notification(nil), l.notes...), l.bad, l.changed
		l.mu.Unlock()
		if len(bad) > 0 {
			l.t.Fatalf("listener got bad notifications: %q", bad)
		}
		if cond(notes) {
			return notes
		}
		select {
		case <-ch:
		case <-deadline.C:
			l.t.Fatalf("timed out waiting for %s; got %d notifications: %s", what, len(notes), describe(notes))
		}
	}
}

func (l *listener) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.notes)
}

// describe summarises notifications for failure messages.
func describe(notes []*ews.Notification) string {
	s := ""
	for _, n := range notes {
		s += "\n  ["
		for _, e := range n.Events {
			s += " " + string(e.Type)
			if e.UnreadCount >= 0 {
				s += "(" + strconv.Itoa(e.UnreadCount) + ")"
			}
		}
		s += " ]"
	}
	return s
}

// events flattens the notifications of one subscription, StatusEvents left
// out.
func events(notes []*ews.Notification, subID string) []ews.Event {
	var out []ews.Event
	for _, n := range notes {
		if n.SubscriptionID != subID {
			continue
		}
		for _, e := range n.Events {
			if e.Type != ews.StatusEvent {
				out = append(out, e)
			}
		}
	}
	return out
}

// folderCounts lists the UnreadCounts of the folder ModifiedEvents.
func folderCounts(evs []ews.Event) []int {
	var out []int
	for _, e := range evs {
		if e.Type == ews.ModifiedEvent && e.FolderID != "" {
			out = append(out, e.UnreadCount)
		}
	}
	return out
}

func waitFake(t *testing.T, f *ewsfake.Server, what string, cond func(*ewsfake.Server) bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitMax)
	defer cancel()
	if err := f.WaitFor(ctx, cond); err != nil {
		t.Fatalf("waiting for %s: %v\nsubscriptions %+v\ncallbacks %+v", what, err, f.Subscriptions(), f.Callbacks())
	}
}

func subscription(f *ewsfake.Server, id string) ewsfake.Subscription {
	s, _ := f.Subscription(id)
	return s
}
