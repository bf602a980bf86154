package main

import (
	"context"
	"fmt"
	neturl "net/url"
	"strings"
	"testing"

	"github.com/mailpush/mailpush/fake/apnsfake"
	"github.com/mailpush/mailpush/fake/ewsfake"
	"github.com/mailpush/mailpush/postgres/pgtest"
)

// TestEndToEndOnPostgres runs the sealed-mode flow through Main with the
// PostgreSQL store on the real server: the tenant command and the server
// share it, badges follow mail and reads, a delete ends the subscription,
// and no secret is in any table in clear.
func TestEndToEndOnPostgres(t *testing.T) {
	url, schema := pgtest.Schema(t)
	// A password in the URL (the server trusts loopback, so any will do)
	// must never reach a log line: messages name the database without it.
	const dbPassword = "db-password-never-logged"
	u, err := neturl.Parse(url)
	if err != nil {
		t.Fatal(err)
	}
	u.User = neturl.UserPassword("root", dbPassword)
	w := newWorldWith(t, "debug", worldOptions{database: fmt.Sprintf("database: {driver: postgres, url: %q, schema: %s}", u.String(), schema)})
	token := w.addTenant(t, "acme")
	device := deviceToken(7)
	st, reg := w.call(t, "POST", "/api/v1/registrations", token, map[string]any{
		"device":  map[string]any{"platform": "ios", "token": device, "environment": "production"},
		"mailbox": map[string]any{"address": address, "source": "ews", "ewsUrl": w.exchange.URL(), "sealedCredentials": w.sealCredentials(t, username, password)},
		"content": "subject_sender",
	})
	if st != 201 || reg["status"] != "active" {
		t.Fatalf("register = %d %v", st, reg)
	}
	var items []string
	for i := 1; i <= 3; i++ {
		items = append(items, w.exchange.Deliver(address, fmt.Sprintf("Board minutes %d", i), "Carol Sender", "carol@example.com"))
		want := i
		waitFor(t, fmt.Sprintf("push %d", want), func(ctx context.Context) error {
			return w.apple.WaitFor(ctx, func(ps []apnsfake.Push) bool { return len(ps) >= want })
		})
	}
	w.exchange.MarkRead(address, items[0], true)
	waitFor(t, "badge after a read", func(ctx context.Context) error {
		return w.apple.WaitFor(ctx, func(ps []apnsfake.Push) bool { return len(ps) >= 4 })
	})
	if got := badges(w.apple.PushesFor(device)); fmt.Sprint(got) != "[1 2 3 2]" {
		t.Fatalf("badges = %v, want [1 2 3 2]", got)
	}
	if st, _ := w.call(t, "DELETE", "/api/v1/registrations/"+reg["id"].(string), token, nil); st != 204 {
		t.Fatalf("delete = %d", st)
	}
	w.exchange.Deliver(address, "After delete", "Carol Sender", "carol@example.com")
	waitFor(t, "Unsubscribe answer", func(ctx context.Context) error {
		return w.exchange.WaitFor(ctx, func(s *ewsfake.Server) bool {
			cbs := s.Callbacks()
			return len(cbs) > 0 && cbs[len(cbs)-1].Result == "Unsubscribe"
		})
	})
	w.main.Close()
	if logs := w.logs.String(); !strings.Contains(logs, "postgres://127.0.0.1") || strings.Contains(logs, dbPassword) {
		t.Errorf("the logs should name the database without its password: %v", strings.Contains(logs, dbPassword))
	}

	// Privacy: every row of every table, text and bytea alike, holds no
	// password, user name, address, device token, subject or sender.
	dump := pgtest.Dump(t, url, schema)
	if !strings.Contains(dump, "acme") {
		t.Fatalf("the dump holds no tenant: %q", dump)
	}
	for _, s := range []string{password, "alice", address, device, "Board minutes", "Carol", "carol@"} {
		if strings.Contains(strings.ToLower(dump), strings.ToLower(s)) {
			t.Errorf("the database holds %q in clear", s)
		}
	}
}
