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

	"github.com/jackc/pgx/v5"

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
	stores, keys, _, _ := cluster(t)
	ctx := context.Background()
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

// outboxSink plays the pipeline's acceptance on one node: an unresolved
// event goes to the cluster's outbox, where any node claims it; a resolved
// one (a subscription's first badge) is only counted.
type outboxSink struct {
	store      mailpush.Store
	unresolved chan mailpush.Event
}

func (o *outboxSink) HandleEvent(context.Context, mailpush.Event) error { return nil }

func (o *outboxSink) HandleUnresolvedEvent(ctx context.Context, ev mailpush.Event) error {
	if err := o.store.EnqueueEvents(ctx, []*mailpush.OutboxEvent{{ID: mailpush.NewID(), Event: ev, Unresolved: true, CreatedAt: time.Now()}}); err != nil {
		return err
	}
	o.unresolved <- ev
	return nil
}

// cluster is two nodes (Graph sources) on one PostgreSQL schema.
func cluster(t *testing.T) (stores []*postgres.Store, keys *seal.Keyring, url, schema string) {
	t.Helper()
	url, schema = pgtest.Schema(t)
	keys = storetest.Keyring(t)
	for range 2 {
		s, err := postgres.Open(context.Background(), postgres.Config{URL: url, Schema: schema}, keys, mailpush.SystemClock{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		stores = append(stores, s)
	}
	return stores, keys, url, schema
}

// TestAnotherNodeResolvesWithTheBadge: node A takes Graph's notifications
// and stores their events unresolved; node B, which never saw a
// notification of these mailboxes, claims the events and resolves them
// with the badge and the new message's subject and sender: the address is
// the mailbox's (stored sealed when it was registered, or learned by A from
// the notification's URL for a mailbox registered before addresses were
// kept) and the message's ID is the event's. Neither address nor subject is
// in clear anywhere in the database.
func TestAnotherNodeResolvesWithTheBadge(t *testing.T) {
	stores, keys, url, schema := cluster(t)
	ctx := context.Background()
	fake := graphfake.New(graphfake.Options{})
	t.Cleanup(fake.Close)
	fake.AddApp(clientID, secret, nil)
	const older = "older.mailbox@contoso.example"
	fake.AddUser(user)
	fake.AddUser(older)
	a := newNode(t, fake, stores[0], keys)
	b := newNode(t, fake, stores[1], keys)
	sinkA := &outboxSink{store: stores[0], unresolved: make(chan mailpush.Event, 8)}
	a.src.Sink = sinkA

	tenant := &mailpush.Tenant{Name: "acme", MaxContent: mailpush.ContentSubjectSender}
	if err := stores[0].CreateTenant(ctx, tenant); err != nil {
		t.Fatal(err)
	}
	register := func(address string, device int) *mailpush.Mailbox {
		t.Helper()
		mb := &mailpush.Mailbox{TenantID: tenant.ID, AddressHash: keys.HashAddress(tenant.ID, address), Source: mailpush.SourceGraph, Mode: mailpush.ModeService,
			Badge: mailpush.NoBadge, Status: mailpush.StatusPending, Address: address}
		reg := &mailpush.Registration{Device: mailpush.Device{Platform: mailpush.PlatformIOS, Token: fmt.Sprintf("%064x", device)}, Content: mailpush.ContentSubjectSender,
			Status: mailpush.StatusPending, ExpiresAt: time.Now().Add(time.Hour)}
		stored, err := stores[0].Register(ctx, reg, mb, nil)
		if err != nil {
			t.Fatal(err)
		}
		stored.Address = address
		if _, err := a.src.Watch(ctx, tenant, stored, reg, mailpush.Credentials{}); err != nil {
			t.Fatal(err)
		}
		return stored
	}
	fresh := register(user, 1)
	old := register(older, 2)
	// The second mailbox as if registered before addresses were kept.
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, fmt.Sprintf(`UPDATE %s SET address_sealed = NULL WHERE id = $1`, pgx.Identifier{schema, "mailboxes"}.Sanitize()), old.ID); err != nil {
		t.Fatal(err)
	}
	if m, _ := stores[1].Mailbox(ctx, old.ID); m == nil || m.StoredAddress != "" {
		t.Fatalf("the older mailbox still has an address: %+v", m)
	}

	fake.Deliver(user, "Quarterly figures", "Nestor Wilke", "nestor@contoso.example")
	fake.Deliver(older, "Lunch on Friday", "Megan Bowen", "megan@contoso.example")
	for range 2 {
		select {
		case <-sinkA.unresolved:
		case <-time.After(time.Minute):
			t.Fatal("node A stored no event for a notification")
		}
	}
	claimed, err := stores[1].ClaimEvents(ctx, time.Now(), 10, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][2]string{fresh.ID: {"Quarterly figures", "Nestor Wilke"}, old.ID: {"Lunch on Friday", "Megan Bowen"}}
	for _, oe := range claimed {
		if !oe.Unresolved || oe.Event.Kind != mailpush.EventNewMail {
			t.Fatalf("claimed %+v; want only the two unresolved new-mail events", oe)
		}
		if err := b.src.Resolve(ctx, oe); err != nil {
			t.Fatalf("node B's Resolve: %v", err)
		}
		w, ok := want[oe.Event.MailboxID]
		if !ok {
			t.Fatalf("claimed an event of mailbox %s twice or of another mailbox", oe.Event.MailboxID)
		}
		delete(want, oe.Event.MailboxID)
		if oe.Event.Badge != 1 || oe.Event.Subject != w[0] || oe.Event.Sender != w[1] {
			t.Errorf("node B resolved %+v; want badge 1, subject %q, sender %q", oe.Event, w[0], w[1])
		}
	}
	if len(want) != 0 {
		t.Fatalf("events not claimed by node B: %v", want)
	}
	if m, _ := stores[1].Mailbox(ctx, old.ID); m == nil || m.StoredAddress != older {
		t.Fatalf("the older mailbox did not learn its address from the notification: %+v", m)
	}

	dump := strings.ToLower(pgtest.Dump(t, url, schema))
	for _, secret := range []string{user, older, "contoso", "quarterly figures", "lunch on friday", "nestor", "megan"} {
		if strings.Contains(dump, strings.ToLower(secret)) {
			t.Errorf("the database holds %q in clear", secret)
		}
	}
}

// TestMigrationOnANodeThatNeverSawTheMailbox: an EWS mailbox registered
// on node A (its address stored sealed) is cut over to Graph by node B,
// which has never heard an EWS notification of it (no address book at
// all): the migration finds its address in the store.
func TestMigrationOnANodeThatNeverSawTheMailbox(t *testing.T) {
	stores, keys, _, _ := cluster(t)
	ctx := context.Background()
	fake := graphfake.New(graphfake.Options{})
	t.Cleanup(fake.Close)
	fake.AddApp(clientID, secret, nil)
	fake.AddUser(user)
	b := newNode(t, fake, stores[1], keys)
	tenant := &mailpush.Tenant{Name: "acme", MaxContent: mailpush.ContentSubjectSender}
	if err := stores[0].CreateTenant(ctx, tenant); err != nil {
		t.Fatal(err)
	}
	var regIDs []string
	var ews *mailpush.Mailbox
	for d := range 2 {
		reg := &mailpush.Registration{Device: mailpush.Device{Platform: mailpush.PlatformIOS, Token: fmt.Sprintf("%064x", d+1)}, Content: mailpush.ContentSubjectSender,
			Status: mailpush.StatusActive, ExpiresAt: time.Now().Add(time.Hour)}
		m, err := stores[0].Register(ctx, reg, &mailpush.Mailbox{TenantID: tenant.ID, AddressHash: keys.HashAddress(tenant.ID, user), Source: mailpush.SourceEWS,
			Mode: mailpush.ModeSealed, ServerURL: "https://mail.contoso.example/EWS/Exchange.asmx", SubscriptionID: "ews-1", Badge: 2, Seq: 5,
			Status: mailpush.StatusActive, Address: user}, nil)
		if err != nil {
			t.Fatal(err)
		}
		ews, regIDs = m, append(regIDs, reg.ID)
	}
	if b.src.Addresses != nil {
		t.Fatal("node B has an address book")
	}
	if _, err := b.src.StartMigration(ctx, tenant, mailpush.SourceGraph, false); err != nil {
		t.Fatal(err)
	}
	r, err := b.src.Migration(ctx, tenant, mailpush.SourceGraph, time.Minute)
	if err != nil || r.State != mailpush.MigrationDone {
		t.Fatalf("migration = %+v, %v; want done", r, err)
	}
	if r.Mailboxes != 1 || r.Migrated != 1 || r.MovedRegistrations != 2 || len(r.Stayed) != 0 {
		t.Fatalf("migration on node B = %+v; want the one mailbox moved with its two registrations", r)
	}
	for _, id := range regIDs {
		reg, err := stores[0].Registration(ctx, tenant.ID, id)
		if err != nil {
			t.Fatal(err)
		}
		g, err := stores[0].Mailbox(ctx, reg.MailboxID)
		if err != nil || g.Source != mailpush.SourceGraph || g.StoredAddress != user || g.SubscriptionID == "" {
			t.Errorf("registration %s is on %+v, %v; want a subscribed Graph mailbox keeping the address", id, g, err)
		}
	}
	if m, _ := stores[0].Mailbox(ctx, ews.ID); m.Status != mailpush.StatusInactive {
		t.Errorf("the EWS mailbox is %s, want inactive", m.Status)
	}
}

// TestEncryptionCertificateSharedByTheNodes: the rich-notification
// certificate node A made (and gave Graph) opens on node B, which never
// made one: B finds A's key in the store when a notification names it, and
// B's own subscriptions get the same certificate instead of another.
func TestEncryptionCertificateSharedByTheNodes(t *testing.T) {
	stores, _, _, _ := cluster(t)
	a := &graph.Certs{Store: stores[0], Clock: mailpush.SystemClock{}}
	b := &graph.Certs{Store: stores[1], Clock: mailpush.SystemClock{}}
	if _, ok := b.Key("none"); ok {
		t.Fatal("node B holds a key before any was made")
	}
	idA, certA, err := a.Current()
	if err != nil {
		t.Fatal(err)
	}
	// B read the store a moment ago (the lookup above): the next read
	// waits out its pause, as a stream of unknown IDs would.
	deadline := time.Now().Add(time.Minute)
	for {
		if k, ok := b.Key(idA); ok {
			if ka, _ := a.Key(idA); !k.Equal(ka) {
				t.Fatal("node B's key for A's certificate is another key")
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("node B never found node A's certificate in the store")
		}
		time.Sleep(50 * time.Millisecond) // B's pause between store reads is a second
	}
	idB, certB, err := b.Current()
	if err != nil || idB != idA || certB != certA {
		t.Fatalf("node B's current certificate = %s, %v; want A's %s (one certificate for the cluster)", idB, err, idA)
	}
}
