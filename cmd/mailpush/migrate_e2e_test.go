package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mailpush/mailpush"
	"github.com/mailpush/mailpush/fake/apnsfake"
	"github.com/mailpush/mailpush/fake/ewsfake"
	"github.com/mailpush/mailpush/fake/graphfake"
)

// The EWS to Graph cut-over over real sockets through Main: the fake
// Exchange and the fake Graph show the same Microsoft 365 mailboxes (a mail
// is delivered to both, as Exchange Online shows it through both APIs).

const (
	bobAddress   = "bob.builder@example.com"
	carolAddress = "carol.singer@example.com" // on Exchange only: Graph answers 404
)

type migrateUser struct {
	address, user, pass string
	devices             []string
	regIDs              []string
}

type migrateWorld struct {
	*graphWorld
	admin string
	users []*migrateUser
}

// newMigrateWorld registers EWS (sealed mode) devices for alice (two) and
// bob, and for carol when withCarol, who is not in Graph. timeScale is the
// fake Exchange's (0: the default, a minute in 60 ms).
func newMigrateWorld(t *testing.T, withCarol bool, timeScale float64) *migrateWorld {
	t.Helper()
	mw := &migrateWorld{graphWorld: newGraphWorldWith(t, "debug", "", worldOptions{timeScale: timeScale})}
	mw.admin = mw.addToken(t, "acme", mailpush.ScopeAdmin)
	mw.users = []*migrateUser{
		{address: address, user: username, pass: password, devices: []string{deviceToken(800), deviceToken(801)}},
		{address: bobAddress, user: "EXAMPLE\\bob", pass: "bob's own password 77", devices: []string{deviceToken(802)}},
	}
	if withCarol {
		mw.users = append(mw.users, &migrateUser{address: carolAddress, user: "EXAMPLE\\carol", pass: "carol's password 99", devices: []string{deviceToken(803)}})
	}
	for _, u := range mw.users {
		if u.address != address {
			mw.exchange.AddUser(u.address, u.user, u.pass)
		}
		if u.address != carolAddress {
			mw.graph.AddUser(u.address)
		}
		for _, d := range u.devices {
			st, reg := mw.call(t, "POST", "/api/v1/registrations", mw.app, map[string]any{
				"device":  map[string]any{"platform": "ios", "token": d},
				"mailbox": map[string]any{"address": u.address, "source": "ews", "ewsUrl": mw.exchange.URL(), "sealedCredentials": mw.sealCredentials(t, u.user, u.pass)},
				"content": "subject_sender",
			})
			if st != 201 || reg["status"] != "active" {
				t.Fatalf("EWS registration of %s = %d %v", d, st, reg)
			}
			u.regIDs = append(u.regIDs, reg["id"].(string))
		}
	}
	return mw
}

// migrate runs `mailpush tenant migrate` against the running server.
func (mw *migrateWorld) migrate(t *testing.T, tenant, token string, args ...string) (string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	args = append([]string{"tenant", "migrate", tenant, "--to", "graph", "--server", mw.main.URL()}, args...)
	err := run(context.Background(), args, &out, &errOut, []string{"MAILPUSH_ADMIN_TOKEN=" + token})
	return out.String() + errOut.String(), err
}

// deliver puts a mail in the mailbox as Exchange Online does: visible
// through EWS and through Graph.
func (mw *migrateWorld) deliver(u *migrateUser, subject string) {
	mw.exchange.Deliver(u.address, subject, "Dora Sender", "dora@example.com")
	if u.address != carolAddress {
		mw.graph.Deliver(u.address, subject, "Dora Sender", "dora@example.com")
	}
}

// waitBadge waits for a push to the device with at least badge: the
// mail that made the count reach it was pushed (or a later push counted it).
func (mw *migrateWorld) waitBadge(t *testing.T, device string, badge int) {
	t.Helper()
	waitFor(t, fmt.Sprintf("a push with badge >= %d", badge), func(ctx context.Context) error {
		return mw.apple.WaitFor(ctx, func(all []apnsfake.Push) bool {
			for _, p := range pushesTo(all, device) {
				if p.Badge >= badge {
					return true
				}
			}
			return false
		})
	})
}

// ewsSub is the user's newest EWS subscription on the fake Exchange
// (each sealed registration subscribes anew; the older ones were answered
// Unsubscribe).
func (mw *migrateWorld) ewsSub(t *testing.T, u *migrateUser) ewsfake.Subscription {
	t.Helper()
	var found *ewsfake.Subscription
	for _, s := range mw.exchange.Subscriptions() {
		if strings.EqualFold(s.Address, u.address) {
			found = &s
		}
	}
	if found == nil {
		t.Fatal("no EWS subscription for a user")
	}
	return *found
}

// storeState is what the store holds for the tenant's registrations and
// live mailboxes (a dry run must leave it as it was).
func (mw *migrateWorld) storeState(t *testing.T) string {
	t.Helper()
	ctx := context.Background()
	st := mw.main.Store
	tn, err := st.TenantByName(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, src := range []mailpush.Source{mailpush.SourceEWS, mailpush.SourceGraph} {
		mbs, err := st.TenantMailboxes(ctx, tn.ID, src, "", 100)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range mbs {
			fmt.Fprintf(&b, "mailbox %s %s %s %s %s %q %d\n", m.ID, m.Source, m.Mode, m.Status, m.SubscriptionID, m.Watermark, m.Badge)
		}
	}
	for _, u := range mw.users {
		for _, id := range u.regIDs {
			r, err := st.Registration(ctx, tn.ID, id)
			if err != nil {
				t.Fatal(err)
			}
			fmt.Fprintf(&b, "registration %s %s %s %s\n", r.ID, r.MailboxID, r.Status, r.Content)
		}
	}
	return b.String()
}

// TestMigrateToGraphWithMailFlowing: a dry run changes nothing and writes
// nothing to Graph; the migration moves alice and bob while mail arrives,
// with no mail unpushed; EWS answers Unsubscribe only once the Graph
// subscription is live; carol (unknown to Graph) stays on EWS and the
// command says so and fails; a second run does nothing twice.
func TestMigrateToGraphWithMailFlowing(t *testing.T) {
	mw := newMigrateWorld(t, true, 0)
	alice, bob, carol := mw.users[0], mw.users[1], mw.users[2]

	// Dry run.
	before := mw.storeState(t)
	out, err := mw.migrate(t, "acme", mw.admin, "--dry-run")
	if err == nil || !strings.Contains(err.Error(), "1 of 3 mailboxes would stay on EWS") {
		t.Fatalf("dry run: err = %v, want 1 of 3 would stay\n%s", err, out)
	}
	for _, want := range []string{"dry run: nothing was changed", "3 EWS mailboxes with 4 registrations", "would migrate 2 mailboxes (would move 3 registrations)", "not_in_graph", "3 user lookups, 0 subscription writes"} {
		if !strings.Contains(out, want) {
			t.Errorf("dry run output lacks %q:\n%s", want, out)
		}
	}
	if after := mw.storeState(t); after != before {
		t.Errorf("the dry run changed the store:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	for _, op := range []string{"create", "renew", "delete"} {
		if n := mw.graph.Requests(op); n != 0 {
			t.Errorf("dry run: %d %s requests on Graph, want none", n, op)
		}
	}
	if n := mw.graph.Requests("user"); n != 3 {
		t.Errorf("dry run: %d user lookups, want 3", n)
	}

	// The migration, held at Graph's subscription creation.
	aliceEWS := mw.ewsSub(t, alice)
	release := mw.graph.Hold("create")
	defer release()
	type result struct {
		out string
		err error
	}
	done := make(chan result, 1)
	go func() {
		out, err := mw.migrate(t, "acme", mw.admin)
		done <- result{out, err}
	}()
	waitFor(t, "a held subscription creation", func(ctx context.Context) error {
		return mw.graph.WaitFor(ctx, func(s *graphfake.Server) bool { return s.Held("create") >= 1 })
	})
	// Graph's subscription is not live: EWS keeps pushing and answering OK.
	mw.deliver(alice, "During the cut-over 1")
	for _, d := range alice.devices {
		mw.waitBadge(t, d, 1)
	}
	seen := len(mw.exchange.CallbacksFor(aliceEWS.ID))
	waitFor(t, "more EWS notifications while Graph is held", func(ctx context.Context) error {
		return mw.exchange.WaitFor(ctx, func(s *ewsfake.Server) bool { return len(s.CallbacksFor(aliceEWS.ID)) >= seen+2 })
	})
	for _, cb := range mw.exchange.CallbacksFor(aliceEWS.ID) {
		if cb.Result != "OK" {
			t.Fatalf("EWS answered %q before the Graph subscription was live: %+v", cb.Result, cb)
		}
	}
	if mw.graph.Requests("create") < 1 || len(mw.graph.Subscriptions()) != 0 {
		t.Fatalf("held: %d creations asked, %d made; want some asked, none made", mw.graph.Requests("create"), len(mw.graph.Subscriptions()))
	}
	releasedAt := time.Now()
	release()
	// A mail racing the switch: at least one push counts it.
	mw.deliver(alice, "During the cut-over 2")
	for _, d := range alice.devices {
		mw.waitBadge(t, d, 2)
	}
	res := <-done
	if res.err == nil || !strings.Contains(res.err.Error(), "1 of 3 mailboxes stay on EWS") {
		t.Fatalf("migrate: err = %v, want carol to stay\n%s", res.err, res.out)
	}
	for _, want := range []string{"migrated 2 mailboxes (moved 3 registrations); 1 stay on EWS", "2 subscriptions created", "not_in_graph"} {
		if !strings.Contains(res.out, want) {
			t.Errorf("migrate output lacks %q:\n%s", want, res.out)
		}
	}
	if strings.Contains(strings.ToLower(res.out), "carol") {
		t.Errorf("the report names carol's address:\n%s", res.out)
	}

	// Alice's EWS subscription ends with Unsubscribe, answered only after
	// the Graph subscription was live.
	waitFor(t, "Unsubscribe for alice's EWS subscription", func(ctx context.Context) error {
		return mw.exchange.WaitFor(ctx, func(s *ewsfake.Server) bool {
			sub, _ := s.Subscription(aliceEWS.ID)
			return !sub.Active && sub.EndReason == ewsfake.EndUnsubscribed
		})
	})
	for _, cb := range mw.exchange.CallbacksFor(aliceEWS.ID) {
		if cb.Result == "Unsubscribe" && cb.At.Before(releasedAt) {
			t.Errorf("Unsubscribe answered at %v, before Graph's subscription was released at %v", cb.At, releasedAt)
		}
	}
	subs := mw.graph.Subscriptions()
	if len(subs) != 2 || mw.graph.Requests("create") != 2 {
		t.Fatalf("Graph has %d subscriptions after %d creations, want 2 and 2: %+v", len(subs), mw.graph.Requests("create"), subs)
	}

	// After the cut-over: mail comes through Graph, with its subject, to
	// the same registrations (same IDs).
	mw.deliver(alice, "After the cut-over")
	mw.deliver(bob, "Hello Bob")
	for _, d := range alice.devices {
		mw.waitPush(t, d, 3, "After the cut-over", "Dora Sender")
	}
	mw.waitPush(t, bob.devices[0], 1, "Hello Bob", "Dora Sender")
	for _, u := range []*migrateUser{alice, bob} {
		for _, id := range u.regIDs {
			if st, reg := mw.call(t, "GET", "/api/v1/registrations/"+id, mw.app, nil); st != 200 || reg["status"] != "active" {
				t.Errorf("registration %s after the move = %d %v", id, st, reg)
			}
		}
	}
	// An app that still checks in with its EWS credentials stays on Graph.
	st, reg := mw.call(t, "POST", "/api/v1/registrations/"+alice.regIDs[0]+"/checkin", mw.app, map[string]any{
		"mailbox": map[string]any{"address": alice.address, "sealedCredentials": mw.sealCredentials(t, alice.user, alice.pass)}})
	if st != 200 || reg["status"] != "active" || reg["mode"] != "service" {
		t.Errorf("EWS-style check-in after the move = %d %v, want 200 active service", st, reg)
	}
	if n := mw.graph.Requests("create"); n != 2 {
		t.Errorf("the check-in made a subscription: %d creations, want 2", n)
	}

	// Carol stays on EWS and keeps her pushes.
	if sub := mw.ewsSub(t, carol); !sub.Active {
		t.Errorf("carol's EWS subscription ended: %+v", sub)
	}
	mw.deliver(carol, "Still on Exchange")
	mw.waitPush(t, carol.devices[0], 1, "Still on Exchange", "Dora Sender")

	// Duplicates are allowed (at least once), and counted here.
	for _, d := range alice.devices {
		ps := pushesTo(mw.apple.Pushes(), d)
		t.Logf("device …%s: %d pushes for 3 mails, badges %v", d[len(d)-6:], len(ps), badges(ps))
	}

	// A second run moves nothing twice.
	out, err = mw.migrate(t, "acme", mw.admin)
	if err == nil || !strings.Contains(out, "1 EWS mailboxes with 1 registrations; migrated 0 mailboxes") || !strings.Contains(out, "0 subscriptions created") {
		t.Errorf("second run: err = %v\n%s", err, out)
	}
	if n := mw.graph.Requests("create"); n != 2 {
		t.Errorf("%d subscriptions created after the second run, want still 2", n)
	}

	// Privacy: no address in the logs or the database.
	mw.main.Close()
	logs := strings.ToLower(mw.logs.String())
	if !strings.Contains(logs, "mailbox moved from ews to graph") {
		t.Fatalf("the logs do not show the migration:\n%s", logs)
	}
	files, _ := filepath.Glob(filepath.Join(mw.dir, "data", "*"))
	for _, a := range []string{address, bobAddress, carolAddress} {
		if strings.Contains(logs, strings.ToLower(a)) {
			t.Errorf("logs contain the address %s", a)
		}
		for _, f := range files {
			if b, err := os.ReadFile(f); err == nil && bytes.Contains(bytes.ToLower(b), []byte(strings.ToLower(a))) {
				t.Errorf("%s contains the address %s", filepath.Base(f), a)
			}
		}
	}
}

// TestMigrateResumesAfterRestart: a run that stops half-way (Graph fails
// one creation), a restart (the addresses in memory are gone until each
// EWS subscription's next notification), and a second run that finishes
// the rest without doing anything twice.
func TestMigrateResumesAfterRestart(t *testing.T) {
	// Exchange's minute is 3 s here: it keeps retrying a notification that
	// finds mailpush down for a StatusFrequency, which must outlast the
	// restart even on a loaded machine.
	mw := newMigrateWorld(t, false, 0.05)
	mw.graph.FailNext("create", 503, 0)
	out, err := mw.migrate(t, "acme", mw.admin)
	if err == nil || !strings.Contains(out, "migrated 1 mailboxes") || !strings.Contains(out, "failed") {
		t.Fatalf("first run: err = %v, want one failed creation\n%s", err, out)
	}
	if subs := mw.graph.Subscriptions(); len(subs) != 1 {
		t.Fatalf("%d Graph subscriptions after the first run, want 1", len(subs))
	}
	var left *migrateUser
	for _, u := range mw.users {
		if !strings.Contains(fmt.Sprint(mw.graph.Subscriptions()), "users/"+u.address) {
			left = u
		}
	}
	if left == nil {
		t.Fatal("no user left on EWS after the failed creation")
	}

	// The server restarts: what it knew of addresses is gone.
	addr := mw.main.listener.Addr().String()
	cfg := mw.main.Config
	if err := mw.main.Close(); err != nil {
		t.Fatal(err)
	}
	restartedAt := time.Now()
	cfg.Listen = addr
	mw.main = NewMain(cfg, mw.logs)
	if err := mw.main.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mw.main.Close() })
	// The user's next EWS notification brings the address back.
	sub := mw.ewsSub(t, left)
	waitFor(t, "an EWS notification after the restart", func(ctx context.Context) error {
		return mw.exchange.WaitFor(ctx, func(s *ewsfake.Server) bool {
			for _, cb := range s.CallbacksFor(sub.ID) {
				if cb.At.After(restartedAt) && cb.Result == "OK" {
					return true
				}
			}
			return false
		})
	})
	out, err = mw.migrate(t, "acme", mw.admin)
	if err != nil {
		t.Fatalf("second run: %v\n%s", err, out)
	}
	n := len(left.devices)
	if !strings.Contains(out, fmt.Sprintf("1 EWS mailboxes with %d registrations; migrated 1 mailboxes (moved %d registrations); 0 stay on EWS", n, n)) {
		t.Errorf("second run output:\n%s", out)
	}
	if subs := mw.graph.Subscriptions(); len(subs) != 2 || mw.graph.Requests("create") != 3 {
		t.Errorf("Graph: %d subscriptions after %d creations (one refused), want 2 and 3", len(subs), mw.graph.Requests("create"))
	}
	mw.deliver(left, "After the restart")
	mw.waitPush(t, left.devices[0], 1, "After the restart", "Dora Sender")
	// A third run finds nothing left.
	if out, err := mw.migrate(t, "acme", mw.admin); err != nil || !strings.Contains(out, "0 EWS mailboxes") {
		t.Errorf("third run: %v\n%s", err, out)
	}
}

// TestMigrateRefusals: only an admin token of the tenant starts a
// migration; an unknown tenant, a tenant without Graph, --to other than
// graph and malformed requests are refused precisely, and nothing changes
// in the store or on Graph.
func TestMigrateRefusals(t *testing.T) {
	mw := newMigrateWorld(t, false, 0)
	before := mw.storeState(t)
	mw.addTenant(t, "plain")
	plainAdmin := mw.addToken(t, "plain", mailpush.ScopeAdmin)

	for _, tc := range []struct {
		name, token string
		body        any
		status      int
		want        string
	}{
		{"app token", mw.app, map[string]any{"to": "graph"}, 403, "insufficient_scope"},
		{"backend token", mw.backend, map[string]any{"to": "graph"}, 403, "insufficient_scope"},
		{"no token", "", map[string]any{"to": "graph"}, 401, "unauthorized"},
		{"to ews", mw.admin, map[string]any{"to": "ews"}, 400, `to must be graph`},
		{"no to", mw.admin, map[string]any{}, 400, `to must be graph`},
		{"another tenant's name", mw.admin, map[string]any{"tenant": "plain", "to": "graph"}, 404, `tenant "plain" not found`},
		{"unknown field", mw.admin, map[string]any{"to": "graph", "force": true}, 400, "unknown field"},
		{"dryRun not a boolean", mw.admin, map[string]any{"to": "graph", "dryRun": "yes"}, 400, "dryRun"},
		{"tenant without Graph", plainAdmin, map[string]any{"to": "graph"}, 422, "tenants.plain.graph"},
	} {
		st, body := mw.call(t, "POST", "/api/v1/migrations", tc.token, tc.body)
		if st != tc.status || !strings.Contains(fmt.Sprint(body), tc.want) {
			t.Errorf("%s: %d %v, want %d with %q", tc.name, st, body, tc.status, tc.want)
		}
	}
	for _, tc := range []struct {
		name, path, token string
		status            int
	}{
		{"app token reads", "/api/v1/migrations/graph", mw.app, 403},
		{"none yet", "/api/v1/migrations/graph", mw.admin, 404},
		{"to ews", "/api/v1/migrations/ews", mw.admin, 400},
		{"bad wait", "/api/v1/migrations/graph?wait=forever", mw.admin, 400},
		{"long wait", "/api/v1/migrations/graph?wait=3600", mw.admin, 400},
	} {
		if st, body := mw.call(t, "GET", tc.path, tc.token, nil); st != tc.status {
			t.Errorf("%s: %d %v, want %d", tc.name, st, body, tc.status)
		}
	}

	// The CLI says the same.
	for _, tc := range []struct {
		name, tenant, token string
		args                []string
		want                string
	}{
		{"app token", "acme", mw.app, nil, "insufficient_scope"},
		{"unknown tenant", "nosuch", mw.admin, nil, `tenant "nosuch" not found`},
		{"tenant without Graph", "plain", plainAdmin, nil, "tenants.plain.graph"},
		{"to ews", "acme", mw.admin, []string{"--to", "ews"}, "--to must be graph"},
	} {
		out, err := mw.migrate(t, tc.tenant, tc.token, tc.args...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("CLI %s: err = %v, want %q\n%s", tc.name, err, tc.want, out)
		}
	}
	var out, errOut bytes.Buffer
	err := run(context.Background(), []string{"tenant", "migrate", "acme", "--to", "graph", "--server", mw.main.URL()}, &out, &errOut, nil)
	if err == nil || !strings.Contains(err.Error(), "admin-scope token") {
		t.Errorf("CLI without a token: %v", err)
	}

	if after := mw.storeState(t); after != before {
		t.Errorf("refused requests changed the store:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	for _, op := range []string{"create", "renew", "delete", "user"} {
		if n := mw.graph.Requests(op); n != 0 {
			t.Errorf("%d %s requests on Graph after refusals, want none", n, op)
		}
	}
	if len(mw.graph.Subscriptions()) != 0 {
		t.Errorf("Graph subscriptions after refusals: %+v", mw.graph.Subscriptions())
	}
}
