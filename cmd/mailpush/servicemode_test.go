package main

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/mailpush/mailpush"
	"github.com/mailpush/mailpush/dovecot/dovecottest"
	"github.com/mailpush/mailpush/fake/apnsfake"
)

// TestServiceModeNeedsAProof is finding 6 of issue 9: with a tenant's
// Dovecot block, any holder of the app token registered any address and was
// active at once (an attacker's device received another user's subject and
// sender). Now service mode needs the tenant's backend token, or the user's
// own IMAP password, sealed by the app and checked by an IMAP LOGIN on the
// tenant's real Dovecot, then forgotten. Mallory, holding the app token and
// her own IMAP password, gets 403 for Alice's address and nothing of her
// mail; Alice, with her own password, gets her pushes.
func TestServiceModeNeedsAProof(t *testing.T) {
	dovecottest.Require(t)
	// Dovecot must know mailpush's URL and mailpush Dovecot's IMAP port:
	// a forwarder breaks the circle.
	var target atomic.Pointer[url.URL]
	fwd := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		httputil.NewSingleHostReverseProxy(target.Load()).ServeHTTP(w, r)
	}))
	t.Cleanup(fwd.Close)
	dc := dovecottest.Start(t, dovecottest.Options{PushURL: fwd.URL, Password: dovecotSecret})
	const alice, alicePass = "alice@example.com", "alice's IMAP password 1"
	const mallory, malloryPass = "mallory@example.com", "mallory's IMAP password 2"
	dc.AddUser(t, alice, alicePass)
	dc.AddUser(t, mallory, malloryPass)
	dc.EnablePush(t, alice, alice)

	secret := filepath.Join(t.TempDir(), "dovecot-secret")
	os.WriteFile(secret, []byte(dovecotSecret+"\n"), 0o600)
	w := newWorld(t, "debug", fmt.Sprintf(`tenants:
  acme:
    dovecot:
      username: dovecot
      passwordFile: %s
      imap: {address: %s, tls: none}
`, secret, dc.IMAPAddr))
	u, _ := url.Parse(w.main.URL())
	target.Store(u)
	app := w.addTenant(t, "acme")

	register := func(device, address string, creds *mailpush.Credentials) (int, map[string]any) {
		t.Helper()
		mb := map[string]any{"address": address, "source": "dovecot"}
		if creds != nil {
			mb["sealedCredentials"] = w.sealCredentials(t, creds.Username, creds.Password)
		}
		return w.call(t, "POST", "/api/v1/registrations", app, map[string]any{
			"device": map[string]any{"platform": "ios", "token": device}, "mailbox": mb, "content": "subject_sender"})
	}
	malloryDev, aliceDev := deviceToken(80), deviceToken(81)
	for _, tc := range []struct {
		name   string
		creds  *mailpush.Credentials
		status int
		code   string
	}{
		{"the app token alone", nil, 403, mailpush.EScope},
		{"Mallory's own password", &mailpush.Credentials{Username: mallory, Password: malloryPass}, 403, mailpush.EMailboxDenied},
		{"a guessed password", &mailpush.Credentials{Username: alice, Password: "guess"}, 422, mailpush.ECredentials},
	} {
		if st, body := register(malloryDev, alice, tc.creds); st != tc.status || errCode(body) != tc.code {
			t.Errorf("Mallory registers Alice's address with %s: %d %v, want %d %s", tc.name, st, body, tc.status, tc.code)
		}
	}
	tn, err := w.main.Store.TenantByName(context.Background(), "acme")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.main.Store.MailboxByAddress(context.Background(), tn.ID, w.main.Keys.HashAddress(tn.ID, alice), mailpush.SourceDovecot); mailpush.ErrorCode(err) != mailpush.ENotFound {
		t.Errorf("a refused registration left a mailbox: %v", err)
	}

	// Alice proves herself with her own password: active at once.
	if st, body := register(aliceDev, alice, &mailpush.Credentials{Username: alice, Password: alicePass}); st != 201 || body["mode"] != "service" || body["status"] != "active" {
		t.Fatalf("Alice registers with her IMAP password: %d %v, want 201 service active", st, body)
	}
	// Mallory still cannot join Alice's mailbox.
	if st, body := register(malloryDev, alice, nil); st != 403 {
		t.Errorf("Mallory joins Alice's watched mailbox: %d %v, want 403", st, body)
	}
	dc.Swaks(t, "Carol <carol@example.com>", alice, "Salary review")
	waitFor(t, "Alice's push", func(ctx context.Context) error {
		return w.apple.WaitFor(ctx, func(ps []apnsfake.Push) bool { return len(ps) >= 1 })
	})
	if ps := w.apple.PushesFor(aliceDev); len(ps) != 1 || ps[0].AlertBody != "Salary review" {
		t.Errorf("Alice's pushes = %+v, want the one alert", ps)
	}
	if ps := w.apple.PushesFor(malloryDev); len(ps) != 0 {
		t.Errorf("Mallory's device got %d pushes of Alice's mail", len(ps))
	}
	// The password was a proof only: nowhere in logs or files.
	w.main.Close()
	files, _ := filepath.Glob(filepath.Join(w.dir, "data", "*"))
	for _, secret := range []string{alicePass, malloryPass} {
		if strings.Contains(w.logs.String(), secret) {
			t.Errorf("the log holds a password")
		}
		for _, f := range files {
			if b, _ := os.ReadFile(f); strings.Contains(string(b), secret) {
				t.Errorf("%s holds a password", filepath.Base(f))
			}
		}
	}
}
