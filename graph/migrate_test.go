package graph_test

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/mailpush/mailpush"
	"github.com/mailpush/mailpush/clocktest"
	"github.com/mailpush/mailpush/fake/graphfake"
	"github.com/mailpush/mailpush/subscription"
)

// addressBook plays the EWS source's memory of addresses.
type addressBook map[string]string

func (b addressBook) KnownAddress(id string) (string, bool) { a, ok := b[id]; return a, ok }

// ewsMailbox stores an EWS mailbox of the fixture's tenant with devices.
func (f *fixture) ewsMailbox(t *testing.T, address string, mode mailpush.Mode, devices ...int) (*mailpush.Mailbox, []string) {
	t.Helper()
	var mb *mailpush.Mailbox
	var ids []string
	for _, d := range devices {
		reg := &mailpush.Registration{Device: mailpush.Device{Platform: mailpush.PlatformIOS, Token: fmt.Sprintf("%064x", d)}, Content: mailpush.ContentSubjectSender, Status: mailpush.StatusActive, ExpiresAt: time.Now().Add(time.Hour)}
		m, err := f.store.Register(context.Background(), reg, &mailpush.Mailbox{TenantID: f.tenant.ID, AddressHash: f.src.Hasher.HashAddress(f.tenant.ID, address),
			Source: mailpush.SourceEWS, Mode: mode, ServerURL: "https://mail.contoso.example/EWS/Exchange.asmx", SubscriptionID: "ews-" + address, Badge: 4, Seq: 17, Status: mailpush.StatusActive}, nil)
		if err != nil {
			t.Fatal(err)
		}
		mb, ids = m, append(ids, reg.ID)
	}
	return mb, ids
}

// runMigration starts a migration and waits for its end.
func (f *fixture) runMigration(t *testing.T, dryRun bool) *mailpush.MigrationReport {
	t.Helper()
	ctx := context.Background()
	if _, err := f.src.StartMigration(ctx, f.tenant, mailpush.SourceGraph, dryRun); err != nil {
		t.Fatal(err)
	}
	r, err := f.src.Migration(ctx, f.tenant, mailpush.SourceGraph, 20*time.Second)
	if err != nil || r.State != mailpush.MigrationDone {
		t.Fatalf("migration = %+v, %v; want done", r, err)
	}
	return r
}

func stayReasons(r *mailpush.MigrationReport) map[string]string {
	out := map[string]string{}
	for _, s := range r.Stayed {
		out[s.MailboxID] = s.Reason
	}
	return out
}

// TestMigrationMovesEWSMailboxes is the cut-over in the source's own
// package: a mailbox Graph knows moves (subscription first, then the
// registrations with their IDs, then a badge from unreadItemCount); one
// Graph does not know, one whose address is not in memory and a
// device-subscribed one stay, each with its reason; the dry run before
// changes nothing and writes nothing; a second run does nothing twice.
func TestMigrationMovesEWSMailboxes(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	f.fake.Deliver(user, "Before", "Nestor", "nestor@contoso.example")
	moving, movingRegs := f.ewsMailbox(t, user, mailpush.ModeSealed, 1, 2)
	unknown, _ := f.ewsMailbox(t, "ghost@contoso.example", mailpush.ModeSealed, 3)
	silent, _ := f.ewsMailbox(t, "quiet@contoso.example", mailpush.ModeService, 4)
	devSub, _ := f.ewsMailbox(t, "self@contoso.example", mailpush.ModeDeviceSubscribed, 5)
	f.src.Addresses = addressBook{moving.ID: user, unknown.ID: "ghost@contoso.example"}

	dry := f.runMigration(t, true)
	if dry.Mailboxes != 4 || dry.Registrations != 5 || dry.Migrated != 1 || dry.MovedRegistrations != 2 || dry.GraphReads != 2 || dry.GraphWrites != 0 {
		t.Errorf("dry run = %+v", dry)
	}
	want := map[string]string{unknown.ID: mailpush.StayNotInTarget, silent.ID: mailpush.StayAddressUnknown, devSub.ID: mailpush.StayDeviceSubscribed}
	if got := stayReasons(dry); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("dry run stays = %v, want %v", got, want)
	}
	if n := f.fake.Requests("create"); n != 0 {
		t.Fatalf("dry run created %d subscriptions", n)
	}
	if r, _ := f.store.Registration(ctx, f.tenant.ID, movingRegs[0]); r.MailboxID != moving.ID {
		t.Fatal("dry run moved a registration")
	}
	if len(f.sink.all()) != 0 {
		t.Fatalf("dry run pushed: %+v", f.sink.all())
	}

	r := f.runMigration(t, false)
	if r.Migrated != 1 || r.MovedRegistrations != 2 || r.GraphWrites != 1 || len(r.Stayed) != 3 {
		t.Errorf("migration = %+v", r)
	}
	if got := stayReasons(r); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("stays = %v, want %v", got, want)
	}
	for _, s := range r.Stayed {
		if strings.Contains(s.Detail+s.AddressID, "@") || len(s.AddressID) != 12 {
			t.Errorf("a stay names an address or lacks its keyed ID: %+v", s)
		}
	}
	subs := f.fake.Subscriptions()
	if len(subs) != 1 {
		t.Fatalf("%d Graph subscriptions, want 1", len(subs))
	}
	g, err := f.store.MailboxBySubscription(ctx, subs[0].ID)
	if err != nil || g.Source != mailpush.SourceGraph || g.Status != mailpush.StatusActive || g.Seq < 17 {
		t.Fatalf("Graph mailbox = %+v, %v; want active graph, sequence after the EWS one's 17", g, err)
	}
	for _, id := range movingRegs {
		if reg, err := f.store.Registration(ctx, f.tenant.ID, id); err != nil || reg.MailboxID != g.ID {
			t.Errorf("registration %s = %+v, %v; want it on the Graph mailbox", id, reg, err)
		}
	}
	if old, _ := f.store.Mailbox(ctx, moving.ID); old.Status != mailpush.StatusInactive {
		t.Errorf("the EWS mailbox is %s, want inactive (its next notification is answered Unsubscribe)", old.Status)
	}
	evs := f.sink.all()
	if len(evs) != 1 || evs[0].MailboxID != g.ID || evs[0].Badge != 1 {
		t.Errorf("events = %+v, want one badge push of 1 for the Graph mailbox", evs)
	}
	for _, id := range []string{unknown.ID, silent.ID, devSub.ID} {
		if m, _ := f.store.Mailbox(ctx, id); m.Status != mailpush.StatusActive || m.Source != mailpush.SourceEWS {
			t.Errorf("staying mailbox %s = %+v", id, m)
		}
	}

	// The address arrives (the next EWS notification) and Graph learns the
	// user: a second run moves only those.
	f.fake.AddUser("quiet@contoso.example")
	f.src.Addresses.(addressBook)[silent.ID] = "quiet@contoso.example"
	again := f.runMigration(t, false)
	if again.Mailboxes != 3 || again.Migrated != 1 || again.GraphWrites != 1 || len(again.Stayed) != 2 {
		t.Errorf("second run = %+v", again)
	}
	if n := f.fake.Requests("create"); n != 2 {
		t.Errorf("%d creations after two runs, want 2 (nothing twice)", n)
	}
	if strings.Contains(f.logText(), "ghost@") || strings.Contains(f.logText(), user) {
		t.Error("the logs name an address")
	}
}

// TestMigrationRefusals: only to graph, only a tenant with a Graph app, a
// run in progress with the other dry-run setting is a conflict, and an
// address in memory that is not the mailbox's is not used.
func TestMigrationRefusals(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	if _, err := f.src.StartMigration(ctx, f.tenant, mailpush.SourceEWS, false); mailpush.ErrorCode(err) != mailpush.EInvalid {
		t.Errorf("to ews: %v, want invalid", err)
	}
	other := &mailpush.Tenant{ID: "t2", Name: "no-graph"}
	if _, err := f.src.StartMigration(ctx, other, mailpush.SourceGraph, false); mailpush.ErrorCode(err) != mailpush.EUnsupported {
		t.Errorf("tenant without an app: %v, want unsupported", err)
	}
	if _, err := f.src.Migration(ctx, f.tenant, mailpush.SourceGraph, 0); mailpush.ErrorCode(err) != mailpush.ENotFound {
		t.Errorf("no migration yet: %v, want not found", err)
	}
	good, _ := f.ewsMailbox(t, user, mailpush.ModeSealed, 1)
	bad, _ := f.ewsMailbox(t, "mismatch@contoso.example", mailpush.ModeSealed, 2)
	f.src.Addresses = addressBook{good.ID: user, bad.ID: "someone.else@contoso.example"}
	release := f.fake.Hold("user")
	defer release()
	if _, err := f.src.StartMigration(ctx, f.tenant, mailpush.SourceGraph, true); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if err := f.fake.WaitFor(wctx, func(s *graphfake.Server) bool { return s.Held("user") >= 1 }); err != nil {
		t.Fatal(err)
	}
	if _, err := f.src.StartMigration(ctx, f.tenant, mailpush.SourceGraph, false); mailpush.ErrorCode(err) != mailpush.EConflict {
		t.Errorf("a run beside a dry run: %v, want conflict", err)
	}
	if r, err := f.src.StartMigration(ctx, f.tenant, mailpush.SourceGraph, true); err != nil || r.State != mailpush.MigrationRunning {
		t.Errorf("the same dry run again: %+v, %v; want the running one", r, err)
	}
	release()
	r, err := f.src.Migration(ctx, f.tenant, mailpush.SourceGraph, 20*time.Second)
	if err != nil || r.State != mailpush.MigrationDone || r.Migrated != 1 || r.GraphReads != 1 || fmt.Sprint(stayReasons(r)) != fmt.Sprint(map[string]string{bad.ID: mailpush.StayFailed}) {
		t.Errorf("dry run = %+v, %v; want the mismatched address to stay, unread", r, err)
	}
	// A lookup that fails is reported by status and code only: Graph's
	// message and the request URL may name the address.
	f.fake.FailNext("user", 500, 0)
	r = f.runMigration(t, true)
	if got := stayReasons(r); got[good.ID] != mailpush.StayFailed || !strings.Contains(fmt.Sprint(r.Stayed), "user lookup: Graph answered HTTP 500") || strings.Contains(fmt.Sprint(r.Stayed), "@") {
		t.Errorf("failed lookup: %+v", r.Stayed)
	}
}

// TestMigrationIsPacedByTheEngine: the cut-over's subscription creations
// take the Graph engine's start slots (Rate per second, on its clock), the
// ones renewals take: three mailboxes at Rate 1 are created one per
// second of the engine's clock, never in a burst.
func TestMigrationIsPacedByTheEngine(t *testing.T) {
	f := newFixture(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	clk := clocktest.New(time.Now())
	f.src.Engine = &subscription.Engine{Store: f.store, Source: mailpush.SourceGraph, Healer: f.src, Logger: slog.New(slog.DiscardHandler),
		Clock: clk, DueAfter: f.src.RenewAfter(), Rate: 1, MaxPerAccount: 4}
	book := addressBook{}
	for i, a := range []string{"p1@contoso.example", "p2@contoso.example", "p3@contoso.example"} {
		f.fake.AddUser(a)
		mb, _ := f.ewsMailbox(t, a, mailpush.ModeSealed, 10+i)
		book[mb.ID] = a
	}
	f.src.Addresses = book
	if _, err := f.src.StartMigration(ctx, f.tenant, mailpush.SourceGraph, false); err != nil {
		t.Fatal(err)
	}
	for want := 1; want <= 3; want++ {
		if err := f.fake.WaitFor(ctx, func(s *graphfake.Server) bool { return len(s.Subscriptions()) >= want }); err != nil {
			t.Fatalf("creation %d: %v", want, err)
		}
		if want == 3 {
			break
		}
		// The others wait for their slots on the engine's clock.
		if err := clk.WaitPending(ctx, 3-want); err != nil {
			t.Fatal(err)
		}
		if n := len(f.fake.Subscriptions()); n != want {
			t.Fatalf("%d subscriptions before the clock moved, want %d", n, want)
		}
		clk.Advance(1250 * time.Millisecond) // the longest spacing at Rate 1
	}
	r, err := f.src.Migration(ctx, f.tenant, mailpush.SourceGraph, 20*time.Second)
	if err != nil || r.Migrated != 3 || r.GraphWrites != 3 {
		t.Fatalf("migration = %+v, %v", r, err)
	}
}
