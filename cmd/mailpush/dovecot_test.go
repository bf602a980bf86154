package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mailpush/mailpush"
	"github.com/mailpush/mailpush/dovecot/dovecottest"
	"github.com/mailpush/mailpush/fake/apnsfake"
)

const dovecotSecret = "s3cret-for-dovecot"

// newDovecotWorld is a world whose tenant "acme" has a Dovecot (user
// "dovecot", the secret in a passwordFile) and whose tenant "plain" has none.
func newDovecotWorld(t testing.TB, logLevel string) (w *world, acme, plain string) {
	t.Helper()
	secret := filepath.Join(t.TempDir(), "dovecot-secret")
	os.WriteFile(secret, []byte(dovecotSecret+"\n"), 0o600)
	w = newWorld(t, logLevel, fmt.Sprintf(`tenants:
  acme:
    dovecot:
      username: dovecot
      passwordFile: %s
      userMapping: address
`, secret))
	// Service mode: the tenant's backend vouches for its users.
	w.addTenant(t, "acme")
	w.addTenant(t, "plain")
	return w, w.addToken(t, "acme", mailpush.ScopeBackend), w.addToken(t, "plain", mailpush.ScopeBackend)
}

func (w *world) registerDovecot(t testing.TB, token, addr, device, content string) (int, map[string]any) {
	t.Helper()
	return w.call(t, "POST", "/api/v1/registrations", token, map[string]any{
		"device":  map[string]any{"platform": "ios", "token": device},
		"mailbox": map[string]any{"address": addr, "source": "dovecot"},
		"content": content,
	})
}

func (w *world) dovecotMailbox(t testing.TB, addr string) *mailpush.Mailbox {
	t.Helper()
	ctx := context.Background()
	tn, err := w.main.Store.TenantByName(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	mb, err := w.main.Store.MailboxByAddress(ctx, tn.ID, w.main.Keys.HashAddress(tn.ID, addr), mailpush.SourceDovecot)
	if err != nil {
		t.Fatal(err)
	}
	return mb
}

func TestDovecotRegistration(t *testing.T) {
	w, acme, plain := newDovecotWorld(t, "info")
	st, reg := w.registerDovecot(t, acme, address, deviceToken(50), "badge")
	if st != 201 || reg["mode"] != "service" || reg["status"] != "active" || reg["callbackUrl"] != nil {
		t.Fatalf("register = %d %v, want 201 service active without callbackUrl", st, reg)
	}
	st, out := w.registerDovecot(t, plain, address, deviceToken(51), "badge")
	if errBody, _ := out["error"].(map[string]any); st != 422 || errBody["code"] != "unsupported" || !strings.Contains(fmt.Sprint(errBody["message"]), "no Dovecot configuration") {
		t.Errorf("tenant without Dovecot: %d %v, want 422 unsupported naming the missing configuration", st, out)
	}
	st, out = w.call(t, "POST", "/api/v1/registrations", acme, map[string]any{
		"device":  map[string]any{"platform": "ios", "token": deviceToken(52)},
		"mailbox": map[string]any{"address": address, "source": "dovecot", "sealedCredentials": w.sealCredentials(t, username, password)},
	})
	if st != 422 || errCode(out) != mailpush.EUnsupported || !strings.Contains(fmt.Sprint(out), "dovecot.imap") {
		t.Errorf("dovecot with sealedCredentials but no IMAP host to check them: %d %v, want 422 naming dovecot.imap", st, out)
	}
}

func TestDovecotNotifyRefusals(t *testing.T) {
	w, acme, _ := newDovecotWorld(t, "info")
	device := deviceToken(60)
	if st, out := w.registerDovecot(t, acme, address, device, "badge"); st != 201 {
		t.Fatalf("register = %d %v", st, out)
	}
	valid := `{"user":"` + address + `","event":"messageNew","folder":"INBOX","imap-uidvalidity":1,"imap-uid":1,"from":"bob@example.com","subject":"Hi","snippet":"x","unseen":1}`
	cases := []struct {
		name, method, user, pass, body string
		status                         int
	}{
		{"no credentials", "PUT", "", "", valid, 401},
		{"wrong password", "PUT", "dovecot", "wrong", valid, 401},
		{"wrong user", "PUT", "other", dovecotSecret, valid, 401},
		{"empty password", "PUT", "dovecot", "", valid, 401},
		{"oversized", "PUT", "dovecot", dovecotSecret, `{"user":"` + strings.Repeat("x", 70_000) + `"}`, 413},
		{"not JSON", "PUT", "dovecot", dovecotSecret, "user=alice", 202},
		{"no user", "POST", "dovecot", dovecotSecret, `{"event":"messageNew","unseen":3}`, 202},
		{"unknown user", "POST", "dovecot", dovecotSecret, `{"user":"nobody@example.com","event":"messageNew","unseen":3}`, 202},
		{"another folder", "PUT", "dovecot", dovecotSecret, `{"user":"` + address + `","event":"messageNew","folder":"Junk","unseen":3}`, 202},
		{"negative unseen", "PUT", "dovecot", dovecotSecret, `{"user":"` + address + `","event":"MessageRead","unseen":-1}`, 202},
		{"change without unseen", "PUT", "dovecot", dovecotSecret, `{"user":"` + address + `","event":"MessageRead"}`, 202},
		{"GET", "GET", "dovecot", dovecotSecret, "", 405},
	}
	before := *w.dovecotMailbox(t, address)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(tc.method, w.main.URL()+"/dovecot/notify", strings.NewReader(tc.body))
			if tc.user != "" {
				req.SetBasicAuth(tc.user, tc.pass)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			msg, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.status || len(strings.TrimSpace(string(msg))) == 0 {
				t.Errorf("status %d %q, want %d with a message", resp.StatusCode, msg, tc.status)
			}
			if tc.status == 401 && resp.Header.Get("WWW-Authenticate") == "" {
				t.Error("401 without WWW-Authenticate")
			}
		})
	}
	after := *w.dovecotMailbox(t, address)
	if after.Seq != before.Seq || after.Badge != before.Badge || !after.LastEventAt.Equal(before.LastEventAt) {
		t.Errorf("refused or ignored notifications changed the mailbox: before %+v after %+v", before, after)
	}
	if n := len(w.apple.Pushes()); n != 0 {
		t.Errorf("%d pushes after refused notifications", n)
	}

	// The same request with the secret goes through.
	req, _ := http.NewRequest("PUT", w.main.URL()+"/dovecot/notify", strings.NewReader(valid))
	req.SetBasicAuth("dovecot", dovecotSecret)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 204 {
		t.Fatalf("valid notification: %d, want 204", resp.StatusCode)
	}
	waitFor(t, "badge 1", func(ctx context.Context) error {
		return w.apple.WaitFor(ctx, func(ps []apnsfake.Push) bool { return len(ps) == 1 && ps[0].Badge == 1 })
	})
	if strings.Contains(w.logs.String(), "error") {
		t.Errorf("ignored notifications made error noise:\n%s", w.logs.String())
	}
}

// TestDovecotEndToEnd runs a real Dovecot with the configuration of
// docs/dovecot.md: swaks delivers over LMTP, the OX driver reports the new
// mail, an IMAP client reads and deletes mail and the Lua driver reports the
// new unread count; the fake APNs sees every badge.
func TestDovecotEndToEnd(t *testing.T) {
	dovecottest.Require(t)
	w, acme, _ := newDovecotWorld(t, "debug")
	dc := dovecottest.Start(t, dovecottest.Options{PushURL: w.main.URL(), Password: dovecotSecret})
	const imapPassword = "imap-pass-1234"
	dc.AddUser(t, address, imapPassword)
	dc.AddUser(t, "bob@example.com", imapPassword) // no push METADATA
	dc.EnablePush(t, address, address)

	badgeDev, alertDev := deviceToken(70), deviceToken(71)
	for dev, content := range map[string]string{badgeDev: "badge", alertDev: "subject_sender"} {
		if st, out := w.registerDovecot(t, acme, address, dev, content); st != 201 || out["mode"] != "service" {
			t.Fatalf("register = %d %v", st, out)
		}
	}
	waitPushes := func(what string, n int) {
		t.Helper()
		waitFor(t, what, func(ctx context.Context) error {
			return w.apple.WaitFor(ctx, func(ps []apnsfake.Push) bool { return len(ps) >= n })
		})
	}

	dc.Swaks(t, "carol@example.com", "bob@example.com", "Not pushed")
	for i := 1; i <= 3; i++ {
		dc.Swaks(t, "Bob Sender <bob.sender@example.com>", address, fmt.Sprintf("Quarterly report %d", i))
		waitPushes(fmt.Sprintf("delivery %d", i), 2*i)
	}
	if got := badges(w.apple.PushesFor(badgeDev)); fmt.Sprint(got) != "[1 2 3]" {
		t.Fatalf("badges = %v, want [1 2 3]", got)
	}
	for i, p := range w.apple.PushesFor(badgeDev) {
		if p.AlertTitle != "" || p.AlertBody != "" {
			t.Errorf("badge-only push %d carries content: %+v", i, p)
		}
	}
	alerts := w.apple.PushesFor(alertDev)
	if len(alerts) != 3 || alerts[2].AlertBody != "Quarterly report 3" || alerts[2].AlertTitle != "Bob Sender" || alerts[2].Badge != 3 {
		t.Fatalf("subject_sender pushes = %+v, want the subject, the sender's name and badge 3", alerts)
	}

	// Another client reads, flags and deletes: the badge follows.
	imap, err := dovecottest.DialIMAP(dc.IMAPAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer imap.Close()
	if err := imap.Login(address, imapPassword); err != nil {
		t.Fatal(err)
	}
	if _, err := imap.Cmd("SELECT INBOX"); err != nil {
		t.Fatal(err)
	}
	// step runs IMAP commands and waits until both devices got one more push.
	step := func(what string, want string, cmds ...string) {
		t.Helper()
		nb, na := len(w.apple.PushesFor(badgeDev)), len(w.apple.PushesFor(alertDev))
		for _, c := range cmds {
			if _, err := imap.Cmd("%s", c); err != nil {
				t.Fatal(err)
			}
		}
		waitFor(t, what, func(ctx context.Context) error {
			return w.apple.WaitFor(ctx, func(ps []apnsfake.Push) bool {
				count := map[string]int{}
				for _, p := range ps {
					count[p.Token]++
				}
				return count[badgeDev] > nb && count[alertDev] > na
			})
		})
		if got := badges(w.apple.PushesFor(badgeDev)); fmt.Sprint(got) != want {
			t.Fatalf("after %s: badges = %v, want %s", what, got, want)
		}
	}
	step("a read", "[1 2 3 2]", "STORE 1 +FLAGS (\\Seen)")
	// \Flagged leaves the unread count alone: no push; marking unread does.
	step("flag and mark unread", "[1 2 3 2 3]", "STORE 2 +FLAGS (\\Flagged)", "STORE 1 -FLAGS (\\Seen)")
	step("delete and expunge", "[1 2 3 2 3 2]", "STORE 3 +FLAGS (\\Deleted)", "EXPUNGE")
	step("read all", "[1 2 3 2 3 2 0]", "STORE 1:* +FLAGS (\\Seen)")
	if last := w.apple.PushesFor(alertDev); last[len(last)-1].Badge != 0 || last[len(last)-1].AlertBody != "" {
		t.Errorf("subject_sender device after reads: %+v, want a badge 0 push without content", last[len(last)-1])
	}
	if strings.Contains(dc.Log(), "Error") {
		t.Errorf("Dovecot logged errors:\n%s", dc.Log())
	}

	// Privacy: the address and subjects never reach mailpush's logs or files.
	w.main.Close()
	logs := w.logs.String()
	if !strings.Contains(logs, "registration created") {
		t.Fatalf("captured logs look empty:\n%s", logs)
	}
	for _, s := range []string{address, "alice.wonder", "Quarterly report", "Bob Sender", dovecotSecret} {
		if strings.Contains(logs, s) {
			t.Errorf("logs contain %q", s)
		}
		files, _ := filepath.Glob(filepath.Join(w.dir, "data", "*"))
		for _, f := range files {
			if b, err := os.ReadFile(f); err == nil && strings.Contains(string(b), s) {
				t.Errorf("%s contains %q", filepath.Base(f), s)
			}
		}
	}
}
