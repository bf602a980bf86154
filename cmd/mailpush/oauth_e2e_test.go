package main

import (
	"bytes"
	"context"
	"crypto/x509"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mailpush/mailpush"
	"github.com/mailpush/mailpush/clocktest"
	"github.com/mailpush/mailpush/fake/apnsfake"
	"github.com/mailpush/mailpush/fake/ewsfake"
	"github.com/mailpush/mailpush/seal"
)

const oauthClientID = "11111111-2222-3333-4444-555555555555"

// newOAuthWorld is a world with a fake clock whose tenant acme trusts the
// fake Exchange's OAuth authority.
func newOAuthWorld(t *testing.T) (*world, *clocktest.Clock, string) {
	t.Helper()
	clock := clocktest.New(time.Now())
	w := newWorldWith(t, "debug", worldOptions{
		clock: clock,
		configure: func(c *Config) {
			c.EWS.HealthInterval, c.EWS.HostCheckInterval = 1000*time.Hour, 1000*time.Hour
		},
		extra: func(w *world) (string, []*x509.Certificate) {
			return fmt.Sprintf("tenants:\n  acme:\n    ews:\n      oauthAuthorities: [%q]\n", w.exchange.AuthorityURL()), nil
		},
	})
	return w, clock, w.addTenant(t, "acme")
}

// sealCreds seals any credentials the way the app does.
func (w *world) sealCreds(t testing.TB, c mailpush.Credentials) string {
	t.Helper()
	st, key := w.call(t, "GET", "/api/v1/key", "", nil)
	if st != 200 {
		t.Fatalf("GET /api/v1/key = %d", st)
	}
	pub, err := b64url(key["publicKey"].(string))
	if err != nil {
		t.Fatal(err)
	}
	s, err := seal.SealCredentials(key["keyId"].(string), pub, c)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestEndToEndOAuthRefresh: a sealed OAuth identity outlives its access
// token. mailpush refreshes it, follows the provider's refresh-token
// rotation with a new callback URL, keeps pushing, and asks the device to
// check in once the grant is revoked. No token reaches disk or logs.
func TestEndToEndOAuthRefresh(t *testing.T) {
	w, clock, token := newOAuthWorld(t)
	device := deviceToken(7)
	reg, access, refresh := w.registerOAuth(t, clock, token, device)
	regID := reg["id"].(string)
	if n := w.exchange.Requests("token"); n != 0 {
		t.Fatalf("%d refreshes while the access token was fresh", n)
	}
	firstURL := activeSubURL(t, w.exchange)
	if strings.Contains(firstURL, refresh) || strings.Contains(firstURL, access) {
		t.Fatal("callback URL carries a token in clear")
	}

	deliverAndWait := w.deliverer(t, device, "Token test")
	deliverAndWait()

	// Two access-token lifetimes later: each expiry means a refresh, each
	// refresh rotates the refresh token, each rotation a new callback URL.
	url := firstURL
	for round := 1; round <= 2; round++ {
		url = w.expireAndRotate(t, clock, deliverAndWait, url, round)
	}
	deliverAndWait()
	if n := w.exchange.Requests("token"); n != 2 {
		t.Errorf("%d refreshes, want 2 (one per expiry)", n)
	}

	// The grant is revoked: at the next expiry the refresh is refused, the
	// device is asked to check in and the registration goes pending.
	w.exchange.RevokeTokens(address)
	clock.Advance(11 * time.Minute)
	before := len(w.apple.PushesFor(device))
	w.exchange.Deliver(address, "After revocation", "Bob Sender", "bob@example.com")
	waitFor(t, "the registration pending", func(ctx context.Context) error {
		for ctx.Err() == nil {
			r, err := w.main.Store.Registration(ctx, regIDTenant(t, w), regID)
			if err == nil && r.Status == mailpush.StatusPending {
				return nil
			}
			time.Sleep(10 * time.Millisecond) // polling with a deadline (the store has no waiter)
		}
		return ctx.Err()
	})
	waitFor(t, "a check-in push", func(ctx context.Context) error {
		return w.apple.WaitFor(ctx, func(ps []apnsfake.Push) bool {
			n := 0
			for _, p := range ps {
				if p.Token == device {
					n++
				}
			}
			return n > before
		})
	})
	for _, p := range w.apple.PushesFor(device)[before:] {
		if strings.Contains(string(p.Payload), "After revocation") {
			t.Errorf("a push shows mail after the revocation: %s", p.Payload)
		}
	}
	// The notification that met the refused refresh is answered Unsubscribe.
	waitFor(t, "no active subscription after the refused refresh", func(ctx context.Context) error {
		return w.exchange.WaitFor(ctx, func(s *ewsfake.Server) bool { return countActive(s) == 0 })
	})

	// Privacy: no token (every fake token has a fixed prefix) in the
	// database files or the logs.
	w.main.Close()
	secrets := []string{"eyJ0eXAi.", "0.AR8A", address}
	files, _ := filepath.Glob(filepath.Join(w.dir, "data", "*"))
	files2, _ := filepath.Glob(filepath.Join(w.dir, "data", "keys", "*"))
	for _, f := range append(files, files2...) {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, s := range secrets {
			if bytes.Contains(b, []byte(s)) {
				t.Errorf("%s contains %q in clear", filepath.Base(f), s)
			}
		}
	}
	logs := w.logs.String()
	if !strings.Contains(logs, "refresh token rotated") || !strings.Contains(logs, "OAuth refresh refused") {
		t.Fatalf("logs lack the rotation and the refusal:\n%s", logs)
	}
	for _, s := range secrets {
		if strings.Contains(logs, s) {
			t.Errorf("logs contain %q", s)
		}
	}
}

// registerOAuth registers device for the test address in sealed mode with
// a new sign-in (an access token valid for 10 minutes) and returns the
// registration and the sign-in's tokens.
func (w *world) registerOAuth(t *testing.T, clock mailpush.Clock, token, device string) (reg map[string]any, access, refresh string) {
	t.Helper()
	access, refresh, err := w.exchange.IssueTokens(address, oauthClientID, 10*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	st, reg := w.call(t, "POST", "/api/v1/registrations", token, map[string]any{
		"device": map[string]any{"platform": "ios", "token": device, "environment": "production"},
		"mailbox": map[string]any{"address": address, "source": "ews", "ewsUrl": w.exchange.URL(), "sealedCredentials": w.sealCreds(t, mailpush.Credentials{
			AccessToken: access, RefreshToken: refresh, TokenURL: w.exchange.TokenURL(), ClientID: oauthClientID,
			ExpiresAt: clock.Now().Add(10 * time.Minute).Unix(),
		})},
		"content": "subject",
	})
	if st != 201 || reg["mode"] != "sealed" || reg["status"] != "active" {
		t.Fatalf("register = %d %v", st, reg)
	}
	return reg, access, refresh
}

// deliverer returns a function that delivers one more mail to the test
// address and waits for device's push with the Inbox's new unread count.
func (w *world) deliverer(t *testing.T, device, subject string) func() {
	unread := 0
	return func() {
		t.Helper()
		unread++
		i := unread
		w.exchange.Deliver(address, fmt.Sprintf("%s %d", subject, i), "Bob Sender", "bob@example.com")
		waitFor(t, fmt.Sprintf("push %d", i), func(ctx context.Context) error {
			return w.apple.WaitFor(ctx, func(ps []apnsfake.Push) bool {
				for _, p := range ps {
					if p.Token == device && p.Badge == i {
						return true
					}
				}
				return false
			})
		})
	}
}

// expireAndRotate lets the access token expire (a round's refresh
// rotates the refresh token), has mail delivered, waits for the new
// subscription whose URL carries the new refresh token, and for the old
// one (at url) to end: its next notification is answered Unsubscribe, so
// only the new URL, with the live refresh token, stays. It returns the
// new URL.
func (w *world) expireAndRotate(t *testing.T, clock *clocktest.Clock, deliver func(), url string, round int) string {
	t.Helper()
	clock.Advance(11 * time.Minute)
	deliver()
	waitFor(t, fmt.Sprintf("rotation %d: a new subscription", round), func(ctx context.Context) error {
		return w.exchange.WaitFor(ctx, func(s *ewsfake.Server) bool {
			u, ok := activeURL(s)
			return ok && u != url && s.Requests("token") >= round
		})
	})
	next, _ := activeURL(w.exchange)
	deliver()
	waitFor(t, fmt.Sprintf("rotation %d: the old subscription ended", round), func(ctx context.Context) error {
		return w.exchange.WaitFor(ctx, func(s *ewsfake.Server) bool { return countActive(s) == 1 })
	})
	return next
}

func regIDTenant(t *testing.T, w *world) string {
	t.Helper()
	tn, err := w.main.Store.TenantByName(context.Background(), "acme")
	if err != nil {
		t.Fatal(err)
	}
	return tn.ID
}

// activeURL is the newest active subscription's callback URL.
func activeURL(s *ewsfake.Server) (string, bool) {
	subs := s.Subscriptions()
	for i := len(subs) - 1; i >= 0; i-- {
		if subs[i].Active {
			return subs[i].URL, true
		}
	}
	return "", false
}

func activeSubURL(t *testing.T, s *ewsfake.Server) string {
	t.Helper()
	u, ok := activeURL(s)
	if !ok {
		t.Fatalf("no active subscription: %+v", s.Subscriptions())
	}
	return u
}

func countActive(s *ewsfake.Server) int {
	n := 0
	for _, sub := range s.Subscriptions() {
		if sub.Active {
			n++
		}
	}
	return n
}

// TestOAuthRegistrationRefusals: bad OAuth credentials get a precise 4xx
// at registration, store nothing, and a token endpoint outside the
// tenant's authority is never called.
func TestOAuthRegistrationRefusals(t *testing.T) {
	w, clock, token := newOAuthWorld(t)
	expired := clock.Now().Add(-time.Minute).Unix()
	cases := []struct {
		name   string
		creds  func() mailpush.Credentials
		answer func()
		status int
		code   string
		calls  int // token endpoint requests
	}{
		{name: "token endpoint outside the authority", status: 403, code: "forbidden", creds: func() mailpush.Credentials {
			_, r, _ := w.exchange.IssueTokens(address, oauthClientID, time.Minute)
			return mailpush.Credentials{RefreshToken: r, TokenURL: "https://login.evil.example/oauth2/v2.0/token", ClientID: oauthClientID}
		}},
		{name: "token endpoint beside the authority's path", status: 403, code: "forbidden", creds: func() mailpush.Credentials {
			_, r, _ := w.exchange.IssueTokens(address, oauthClientID, time.Minute)
			return mailpush.Credentials{RefreshToken: r, TokenURL: strings.Replace(w.exchange.TokenURL(), "/oauth/tenant/", "/oauth/other/", 1), ClientID: oauthClientID}
		}},
		{name: "refresh token without client ID", status: 400, code: "invalid_sealed_value", creds: func() mailpush.Credentials {
			return mailpush.Credentials{RefreshToken: "0.AR8Aabc", TokenURL: w.exchange.TokenURL()}
		}},
		{name: "plain http token endpoint", status: 400, code: "invalid_sealed_value", creds: func() mailpush.Credentials {
			return mailpush.Credentials{RefreshToken: "0.AR8Aabc", TokenURL: "http://127.0.0.1/token", ClientID: oauthClientID}
		}},
		{name: "revoked refresh token", status: 422, code: "credentials_refused", calls: 1, creds: func() mailpush.Credentials {
			a, r, _ := w.exchange.IssueTokens(address, oauthClientID, time.Minute)
			w.exchange.RevokeTokens(address)
			return mailpush.Credentials{AccessToken: a, ExpiresAt: expired, RefreshToken: r, TokenURL: w.exchange.TokenURL(), ClientID: oauthClientID}
		}},
		{name: "malformed refresh answer", status: 422, code: "credentials_refused", calls: 1, answer: func() { w.exchange.SetTokenAnswer(200, `{"access_token": "eyJ0eXAi.x", `) }, creds: func() mailpush.Credentials {
			_, r, _ := w.exchange.IssueTokens(address, oauthClientID, time.Minute)
			return mailpush.Credentials{RefreshToken: r, TokenURL: w.exchange.TokenURL(), ClientID: oauthClientID}
		}},
		{name: "oversized refresh answer", status: 422, code: "credentials_refused", calls: 1, answer: func() {
			w.exchange.SetTokenAnswer(200, `{"token_type":"Bearer","access_token":"`+strings.Repeat("A", 2<<20)+`","expires_in":3600}`)
		}, creds: func() mailpush.Credentials {
			_, r, _ := w.exchange.IssueTokens(address, oauthClientID, time.Minute)
			return mailpush.Credentials{RefreshToken: r, TokenURL: w.exchange.TokenURL(), ClientID: oauthClientID}
		}},
		{name: "access token too long for the answer's cap", status: 422, code: "credentials_refused", calls: 1, answer: func() {
			w.exchange.SetTokenAnswer(200, `{"token_type":"Bearer","access_token":"`+strings.Repeat("A", 9<<10)+`","expires_in":3600}`)
		}, creds: func() mailpush.Credentials {
			_, r, _ := w.exchange.IssueTokens(address, oauthClientID, time.Minute)
			return mailpush.Credentials{RefreshToken: r, TokenURL: w.exchange.TokenURL(), ClientID: oauthClientID}
		}},
	}
	for i, tc := range cases {
		creds := tc.creds()
		if tc.answer != nil {
			tc.answer()
		}
		calls := w.exchange.Requests("token")
		st, body := w.call(t, "POST", "/api/v1/registrations", token, map[string]any{
			"device":  map[string]any{"platform": "ios", "token": deviceToken(200 + i), "environment": "production"},
			"mailbox": map[string]any{"address": address, "source": "ews", "ewsUrl": w.exchange.URL(), "sealedCredentials": w.sealCreds(t, creds)},
		})
		errObj, _ := body["error"].(map[string]any)
		code, _ := errObj["code"].(string)
		if code == "" {
			code, _ = body["code"].(string)
		}
		if st != tc.status || code != tc.code {
			t.Errorf("%s: %d %v, want %d %s", tc.name, st, body, tc.status, tc.code)
		}
		if n := w.exchange.Requests("token") - calls; n != tc.calls {
			t.Errorf("%s: %d token endpoint requests, want %d", tc.name, n, tc.calls)
		}
		if subs := w.exchange.Subscriptions(); len(subs) != 0 {
			t.Errorf("%s: subscriptions made: %+v", tc.name, subs)
		}
		tn := regIDTenant(t, w)
		if n, err := w.main.Store.CountRegistrations(context.Background(), tn); err != nil || n != 0 {
			t.Errorf("%s: %d registrations stored (%v)", tc.name, n, err)
		}
	}
	if strings.Contains(w.logs.String(), "eyJ0eXAi") || strings.Contains(w.logs.String(), "0.AR8A") {
		t.Error("logs contain a token")
	}
}

// TestOAuthHeal: a subscription that died while the access token expired
// is made again by the engine with a refreshed token (the new URL carries
// the rotated refresh token); once the grant is revoked, healing asks the
// device to check in instead.
func TestOAuthHeal(t *testing.T) {
	w, clock, token := newOAuthWorld(t)
	hw := &healWorld{world: w, clock: clock}
	access, refresh, err := w.exchange.IssueTokens(address, oauthClientID, 10*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	device := deviceToken(8)
	st, reg := w.call(t, "POST", "/api/v1/registrations", token, map[string]any{
		"device": map[string]any{"platform": "ios", "token": device, "environment": "production"},
		"mailbox": map[string]any{"address": address, "source": "ews", "ewsUrl": w.exchange.URL(), "sealedCredentials": w.sealCreds(t, mailpush.Credentials{
			AccessToken: access, RefreshToken: refresh, TokenURL: w.exchange.TokenURL(), ClientID: oauthClientID,
			ExpiresAt: clock.Now().Add(10 * time.Minute).Unix(),
		})},
	})
	if st != 201 || reg["status"] != "active" {
		t.Fatalf("register = %d %v", st, reg)
	}
	first := activeSubURL(t, w.exchange)
	drop := func() {
		t.Helper()
		for _, s := range w.exchange.Subscriptions() {
			if s.Active {
				if err := w.exchange.DropSubscription(s.ID); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	drop()
	clock.Advance(11 * time.Minute) // silent for 2×StatusFrequency, and the access token expired
	if res := hw.check(t); res.Resubscribed != 1 {
		t.Fatalf("check = %+v, want one resubscription", res)
	}
	if n := w.exchange.Requests("token"); n != 1 {
		t.Fatalf("%d refreshes, want 1", n)
	}
	if u := activeSubURL(t, w.exchange); u == first {
		t.Fatal("the healed subscription uses the old URL (with the rotated-away refresh token)")
	}
	w.exchange.Deliver(address, "After healing", "Bob Sender", "bob@example.com")
	waitFor(t, "a push after healing", func(ctx context.Context) error {
		return w.apple.WaitFor(ctx, func(ps []apnsfake.Push) bool {
			for _, p := range ps {
				if p.Token == device && p.Badge == 1 {
					return true
				}
			}
			return false
		})
	})

	w.exchange.RevokeTokens(address)
	drop()
	clock.Advance(11 * time.Minute)
	if res := hw.check(t); res.AskedDevices != 1 {
		t.Fatalf("check after revocation = %+v, want the device asked", res)
	}
	r, err := w.main.Store.Registration(context.Background(), regIDTenant(t, w), reg["id"].(string))
	if err != nil || r.Status != mailpush.StatusPending {
		t.Fatalf("registration after revocation: %v %v, want pending", r, err)
	}
	if countActive(w.exchange) != 0 {
		t.Error("a subscription was made with a revoked grant")
	}
}
