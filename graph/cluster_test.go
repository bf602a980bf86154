package graph_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/mailpush/mailpush"
	"github.com/mailpush/mailpush/fake/graphfake"
	"github.com/mailpush/mailpush/graph"
	"github.com/mailpush/mailpush/postgres"
	"github.com/mailpush/mailpush/postgres/pgtest"
	"github.com/mailpush/mailpush/seal"
	"github.com/mailpush/mailpush/storetest"
	"github.com/mailpush/mailpush/subscription"
)

// node is one mailpush node's Graph source: its own memory, its own HTTP
// listener, the cluster's store.
type node struct {
	src  *graph.Source
	sink *sink
	url  string
}

func newNode(t *testing.T, fake *graphfake.Server, store mailpush.Store, keys *seal.Keyring) *node {
	t.Helper()
	n := &node{sink: &sink{ch: make(chan struct{}, 1)}}
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	n.src = &graph.Source{Store: store, Sealer: keys, Hasher: keys, Sink: n.sink,
		Apps:   map[string]*graph.App{"acme": {TenantID: fake.TenantID(), ClientID: clientID, ClientSecret: secret, Authority: fake.Authority(), BaseURL: fake.GraphURL()}},
		HTTP:   fake.HTTPClient(),
		Logger: logger, Clock: mailpush.SystemClock{}}
	n.sink.src = n.src
	t.Cleanup(n.sink.wg.Wait)
	n.src.Engine = &subscription.Engine{Store: store, Source: mailpush.SourceGraph, Healer: n.src, Logger: logger, Clock: mailpush.SystemClock{}, DueAfter: n.src.RenewAfter(), MaxPerAccount: 4}
	mux := http.NewServeMux()
	mux.Handle("POST "+graph.NotifyPath+"{token}", n.src)
	mux.Handle("POST "+graph.LifecyclePath+"{token}", n.src)
	ts := httptest.NewServer(mux)
	t.Cleanup(ts.Close)
	n.url = ts.URL
	n.src.PublicURL = ts.URL
	n.src.Run(context.Background())
	t.Cleanup(n.src.Close)
	return n
}

// TestCreationSeenFromAnotherNode: two nodes on one PostgreSQL; node A
// creates a mailbox's subscription, and the balancer sends Graph's
// requests to node B (A's notification URLs point at B). B answers Graph's
// validation requests, and the new subscription's first notification,
// which Graph sends before it answers A's creation, is taken by B (202, a
// new-mail event with the right badge), not ignored as an unknown
// subscription: the creating state is in the store, not in A's memory.
func TestCreationSeenFromAnotherNode(t *testing.T) {
	url, schema := pgtest.Schema(t)
	keys := storetest.Keyring(t)
	ctx := context.Background()
	var stores []*postgres.Store
	for range 2 {
		s, err := postgres.Open(ctx, postgres.Config{URL: url, Schema: schema}, keys, mailpush.SystemClock{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		stores = append(stores, s)
	}
	var fake *graphfake.Server
	first := make(chan string, 1)
	fake = graphfake.New(graphfake.Options{BeforeAnswer: func(sub graphfake.Subscription) {
		select {
		case first <- sub.ID: // mail arrives while the creation is under way
			fake.Deliver(user, "Before the answer", "Bob", "bob@contoso.example")
		default:
		}
	}})
	t.Cleanup(fake.Close)
	fake.AddApp(clientID, secret, nil)
	fake.AddUser(user)
	a := newNode(t, fake, stores[0], keys)
	b := newNode(t, fake, stores[1], keys)
	a.src.PublicURL = b.url // the balancer picked B for Graph's requests

	tenant := &mailpush.Tenant{Name: "acme", MaxContent: mailpush.ContentSubjectSender}
	if err := stores[0].CreateTenant(ctx, tenant); err != nil {
		t.Fatal(err)
	}
	mb := &mailpush.Mailbox{TenantID: tenant.ID, AddressHash: keys.HashAddress(tenant.ID, user), Source: mailpush.SourceGraph, Mode: mailpush.ModeService, Badge: mailpush.NoBadge, Status: mailpush.StatusPending}
	reg := &mailpush.Registration{Device: mailpush.Device{Platform: mailpush.PlatformIOS, Token: fmt.Sprintf("%064x", 1)}, Content: mailpush.ContentSubjectSender, Status: mailpush.StatusPending, ExpiresAt: time.Now().Add(time.Hour)}
	stored, err := stores[0].Register(ctx, reg, mb, nil)
	if err != nil {
		t.Fatal(err)
	}
	stored.Address = user
	if _, err := a.src.Watch(ctx, tenant, stored, reg, mailpush.Credentials{}); err != nil {
		t.Fatalf("node A's creation, validated through node B: %v", err)
	}
	subID := <-first
	var notes []graphfake.Delivery
	for _, d := range fake.Deliveries() {
		if !d.Lifecycle {
			notes = append(notes, d)
		}
	}
	if len(notes) != 1 || notes[0].Status != http.StatusAccepted {
		t.Fatalf("the first notification's deliveries = %+v, want one answered 202", notes)
	}
	// Node B stored it (and resolved it: the address is in its URL token).
	deadline := time.After(time.Minute)
	for len(b.sink.all()) == 0 {
		select {
		case <-b.sink.ch:
		case <-deadline:
			t.Fatal("node B handed on no event for the first notification")
		}
	}
	ev := b.sink.all()[0]
	if ev.Kind != mailpush.EventNewMail || ev.Badge != 1 || ev.MailboxID != stored.ID {
		t.Fatalf("node B's event = %+v, want new mail with badge 1 for the mailbox", ev)
	}
	// The creation's end is stored: the mailbox names the subscription and
	// no node answers validations for it any more.
	got, err := stores[1].Mailbox(ctx, stored.ID)
	if err != nil || got.SubscriptionID != subID || got.Status != mailpush.StatusActive {
		t.Fatalf("mailbox after the creation = %+v, %v; want subscription %s, active", got, err, subID)
	}
	path := strings.TrimPrefix(fake.Subscriptions()[0].NotificationURL, b.url)
	for _, n := range []*node{a, b} {
		res, err := http.Post(n.url+path+"?validationToken=late", "text/plain", nil)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusForbidden {
			t.Errorf("a validation after the creation ended = %d, want 403", res.StatusCode)
		}
	}
}
