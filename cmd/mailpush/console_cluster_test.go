package main

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/mailpush/mailpush"
	"github.com/mailpush/mailpush/postgres/pgtest"
)

// TestConsoleOnTwoNodes runs two Mains on one PostgreSQL schema: a console
// session signed in on node 1 is accepted by node 2 (the store holds it,
// by its hash), a gate rule added through node 2 decides node 1's next
// /gate/auth (the broadcast), and signing out on node 1 ends the session
// on node 2. A forged cookie is refused on both.
func TestConsoleOnTwoNodes(t *testing.T) {
	pgURL, schema := pgtest.Schema(t)
	w := newWorldWith(t, "info", worldOptions{
		database:    fmt.Sprintf("database: {driver: postgres, url: %q, schema: %s}", pgURL, schema),
		extraConfig: "nodeId: node-1\ngate:\n  tenant: acme\n  proxy: nginx\n  cacheTtl: 1h\n",
	})
	w.addTenant(t, "acme")
	admin := w.addToken(t, "acme", mailpush.ScopeAdmin)
	cfg, err := LoadConfig(w.configPath, nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg.NodeID = "node-2"
	node2 := NewMain(cfg, w.logs)
	if err := node2.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { node2.Close() })
	ctx := context.Background()
	acme, _ := w.main.Store.TenantByName(ctx, "acme")
	if _, _, err := w.main.GateRegistry.SetDevice(ctx, acme.ID, mailpush.GateDeviceUpdate{DeviceID: "CLUSTERDEV1", User: address, DeviceType: "iPhone", State: mailpush.DeviceCompliant}); err != nil {
		t.Fatal(err)
	}
	base1, base2 := w.main.URL(), node2.URL()
	if st, _ := consoleGateAuth(t, base1, "CLUSTERDEV1"); st != 200 {
		t.Fatalf("node 1 /gate/auth before the rule = %d", st)
	}

	one := newAdminClient(t, base1)
	if st, _ := one.signIn(admin); st != 200 {
		t.Fatal("sign in on node 1 failed")
	}
	// The same browser (the cookie jar ignores ports) on node 2.
	two := &adminClient{t: t, base: base2, http: one.http}
	_, page := two.get("/admin/gate")
	if !strings.Contains(page, "admin of acme") || !strings.Contains(page, `id="add-rule"`) {
		t.Fatalf("node 2 does not accept node 1's session:\n%s", page)
	}
	csrf, version := field(t, csrfField, page), field(t, versionField, page)
	if st, page := two.post("/admin/gate/rules/add", url.Values{"csrf": {csrf}, "version": {version}, "name": {"no-iphones"}, "action": {"deny"}, "deviceTypes": {"iPhone"}}); st != 200 {
		t.Fatalf("add a rule on node 2 = %d:\n%s", st, page)
	}
	if st, reason := consoleGateAuth(t, base2, "CLUSTERDEV1"); st != 403 || reason != "denied by rule no-iphones" {
		t.Errorf("node 2 /gate/auth after its edit = %d %q", st, reason)
	}
	waitFor(t, "node 1 to apply node 2's rule", func(ctx context.Context) error {
		for {
			if st, _ := consoleGateAuth(t, base1, "CLUSTERDEV1"); st == 403 {
				return nil
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(20 * time.Millisecond):
			}
		}
	})

	// A forged cookie is no session on either node.
	for _, base := range []string{base1, base2} {
		forged := newAdminClient(t, base)
		u, _ := url.Parse(base)
		forged.http.Jar.SetCookies(u, []*http.Cookie{{Name: "mailpush_admin", Value: strings.Repeat("A", 43), Path: "/"}})
		if _, page := forged.get("/admin/tenants"); !strings.Contains(page, `name="token"`) {
			t.Errorf("%s accepted a forged cookie", base)
		}
	}
	// Sign out on node 1: node 2 no longer knows the session.
	if st, _ := one.post("/admin/logout", url.Values{"csrf": {csrf}}); st != 200 {
		t.Errorf("sign out = %d", st)
	}
	if _, page := two.get("/admin/tenants"); !strings.Contains(page, `name="token"`) {
		t.Error("node 2 still accepts a session signed out on node 1")
	}
	if st, _ := two.post("/admin/gate/rules/0/remove", url.Values{"csrf": {csrf}, "version": {"2"}}); st != 401 {
		t.Errorf("a change with the signed-out session on node 2 = %d, want 401", st)
	}
}
