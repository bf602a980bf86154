package main

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/mailpush/mailpush/fake/apnsfake"
	"github.com/mailpush/mailpush/fake/ewsfake"
)

// newMailEvent is a NewMailEvent as Exchange words it.
func newMailEvent(wm, itemID string) string {
	return fmt.Sprintf(`<t:NewMailEvent><t:Watermark>%s</t:Watermark><t:TimeStamp>2026-11-22T08:00:00Z</t:TimeStamp><t:ItemId Id="%s" ChangeKey="ck"/><t:ParentFolderId Id="inbox-id"/></t:NewMailEvent>`, wm, itemID)
}

// contentUser registers a sealed-mode user whose device may show subject
// and sender (so a new mail makes mailpush call GetItem too).
func contentUser(t *testing.T, hw *healWorld) *healUser {
	t.Helper()
	u := &healUser{address: "carol@example.com", username: `EXAMPLE\carol`, password: "carol's password", device: deviceToken(300)}
	hw.exchange.AddUser(u.address, u.username, u.password)
	st, reg := hw.call(t, "POST", "/api/v1/registrations", hw.token, map[string]any{
		"device":  map[string]any{"platform": "ios", "token": u.device},
		"mailbox": map[string]any{"address": u.address, "source": "ews", "ewsUrl": hw.exchange.URL(), "sealedCredentials": hw.sealCredentials(t, u.username, u.password)},
		"content": "subject_sender",
	})
	if st != 201 || reg["status"] != "active" {
		t.Fatalf("register = %d %v", st, reg)
	}
	u.regID = reg["id"].(string)
	r, err := hw.main.Store.Registration(context.Background(), hw.tenant, u.regID)
	if err != nil {
		t.Fatal(err)
	}
	u.mailboxID = r.MailboxID
	return u
}

// TestForgedNotificationsCannotStormExchange is finding 7's replay half:
// the holder of a sealed-mode callback URL and its subscription ID posts 20
// copies of one notification, then 20 notifications with fresh watermarks.
// Today's main made a GetFolder and a GetItem with the user's credentials,
// and a push, for each of them. Now a copy of a notification already
// handled (its watermark is the mailbox's last) does nothing but count as a
// sign of life, and the reads Exchange gets are bounded by the per-mailbox
// fetch bucket (ews.fetchBurst 3 here: exactly 3 in all, the clock being
// still); the pushes are bounded by that and push.syncPerHour: 5 in all.
func TestForgedNotificationsCannotStormExchange(t *testing.T) {
	hw := newHealWorldOptions(t, 0, worldOptions{configure: func(c *Config) { c.EWS.FetchBurst, c.EWS.FetchRate = 3, 1 }})
	u := contentUser(t, hw)
	s := hw.speakForExchange(t, u) // the attacker speaks, not Exchange
	item := hw.exchange.Deliver(u.address, "Quarterly numbers", "Bob", "bob@example.com")
	fetches := func() int { return hw.exchange.Requests("GetFolder") + hw.exchange.Requests("GetItem") }
	before, pushesBefore := fetches(), len(pushesTo(hw.apple.Pushes(), u.device))
	prev := hw.mailbox(t, u).Watermark

	for i := range 20 {
		if st, a := postNotification(t, s.URL, s.ID, prev, false, newMailEvent("forged-1", item)); st != 200 || !strings.Contains(a, "OK") {
			t.Fatalf("copy %d answered %d %s", i, st, a)
		}
	}
	// The fetches come after the answers, before the push they complete.
	waitFor(t, "the first copy's push", func(ctx context.Context) error {
		return hw.apple.WaitFor(ctx, func(all []apnsfake.Push) bool { return len(pushesTo(all, u.device)) > pushesBefore })
	})
	if got := fetches() - before; got != 2 {
		t.Errorf("20 copies of one notification made %d GetFolder+GetItem calls, want 2 (the first copy's)", got)
	}

	wm := "forged-1"
	for i := range 20 {
		next := fmt.Sprintf("forged-%d", i+2)
		if st, a := postNotification(t, s.URL, s.ID, wm, false, newMailEvent(next, item)); st != 200 || !strings.Contains(a, "OK") {
			t.Fatalf("forgery %d answered %d %s", i, st, a)
		}
		wm = next
	}
	// The pushes: the first copy's alert, the badge of the forgery that got
	// the bucket's last token, then sync signals, of which a device gets
	// push.syncPerHour (3) an hour; the rest wait, coalesced. The badge
	// push comes after its fetch, and the still clock refills no bucket.
	const want = 1 + 1 + 3
	waitFor(t, fmt.Sprintf("%d pushes", want), func(ctx context.Context) error {
		return hw.apple.WaitFor(ctx, func(all []apnsfake.Push) bool { return len(pushesTo(all, u.device))-pushesBefore >= want })
	})
	if got := fetches() - before; got != 3 {
		t.Errorf("40 forged notifications made %d GetFolder+GetItem calls, want 3 (ews.fetchBurst)", got)
	}
	ps := pushesTo(hw.apple.Pushes(), u.device)[pushesBefore:]
	if len(ps) > want {
		t.Errorf("%d pushes reached the device, want %d", len(ps), want)
	}
	if ps[0].AlertTitle == "" && ps[0].AlertBody == "" {
		t.Errorf("the first push is not the new mail's alert: %+v", ps[0])
	}
	pushes := len(ps)
	t.Logf("40 forged notifications: %d GetFolder+GetItem, %d pushes", fetches()-before, pushes)
}

// TestRetiredKey is finding 7's key half, over real sockets. After `keys
// rotate` and `keys retire OLD` (run as commands while the server runs), a
// notification to a callback URL sealed with the old key is answered
// Unsubscribe and changes nothing; the mailboxes whose credentials the
// server holds in memory are resubscribed with the current key at the
// engine's next sweep, and their next mail is pushed. Credentials sealed to
// the old key are refused with a message that says the key is retired.
// (A mailbox whose credentials are not in memory:
// TestRetiredKeyWithoutCredentialsInMemory.)
func TestRetiredKey(t *testing.T) {
	hw := newHealWorld(t, 2)
	ctx := context.Background()
	oldSealed := hw.sealCredentials(t, hw.users[0].username, hw.users[0].password)
	oldKey, _, _ := strings.Cut(oldSealed, ".")
	oldURLs := map[string]string{}
	for _, u := range hw.users {
		s, ok := hw.activeSub(u)
		if !ok || !strings.Contains(s.URL, "/ews/notify/"+oldKey+".") {
			t.Fatalf("%s: subscription %+v, want one sealed with key %s", u.address, s, oldKey)
		}
		oldURLs[u.address] = s.URL
	}

	keys := func(args ...string) string {
		t.Helper()
		var out, errOut bytes.Buffer
		if err := run(ctx, append(append([]string{"keys"}, args...), "--config", hw.configPath), &out, &errOut, nil); err != nil {
			t.Fatalf("keys %v: %v (%s)", args, err, errOut.String())
		}
		return out.String()
	}
	var errOut bytes.Buffer
	if err := run(ctx, []string{"keys", "retire", oldKey, "--config", hw.configPath}, &bytes.Buffer{}, &errOut, nil); err == nil || !strings.Contains(err.Error(), "is current") {
		t.Errorf("retiring the current key: %v", err)
	}
	keys("rotate")
	keys("retire", oldKey)
	if list := keys("list"); !strings.Contains(list, oldKey) || !strings.Contains(list, "retired") {
		t.Errorf("keys list:\n%s", list)
	}
	if err := hw.main.reloadKeys(ctx); err != nil { // what the server does every keyReloadInterval
		t.Fatal(err)
	}
	newKey, _ := hw.main.Keys.PublicKey()
	if newKey == oldKey {
		t.Fatal("the server did not pick up the rotation")
	}

	// A notification through an old URL: Unsubscribe, nothing else.
	seq := hw.mailbox(t, hw.users[0]).Seq
	st, answer := postNotification(t, oldURLs[hw.users[0].address], "whatever", "", false, newMailEvent("x", "y"))
	if st != 200 || !strings.Contains(answer, "Unsubscribe") {
		t.Errorf("old URL answered %d %s, want Unsubscribe", st, answer)
	}
	if got := hw.mailbox(t, hw.users[0]).Seq; got != seq {
		t.Errorf("the mailbox's sequence moved from %d to %d", seq, got)
	}

	// The engine's next sweep resubscribes them with the current key.
	res := hw.check(t)
	if res.Resubscribed != len(hw.users) {
		t.Errorf("sweep = %+v, want %d resubscriptions", res, len(hw.users))
	}
	for _, u := range hw.users {
		fresh := 0
		for _, s := range hw.exchange.Subscriptions() {
			if s.Address == u.address && s.Active && strings.Contains(s.URL, "/ews/notify/"+newKey+".") {
				fresh++
			}
		}
		if fresh != 1 {
			t.Fatalf("%s after the sweep: %d active subscriptions sealed with %s, want 1", u.address, fresh, newKey)
		}
		hw.exchange.Deliver(u.address, "After the retirement", "Bob", "bob@example.com")
		hw.waitBadge(t, u)
	}

	// Credentials sealed to the retired key are refused, saying why.
	st2, body := hw.call(t, "POST", "/api/v1/registrations", hw.token, map[string]any{
		"device":  map[string]any{"platform": "ios", "token": hw.users[0].device},
		"mailbox": map[string]any{"address": hw.users[0].address, "source": "ews", "ewsUrl": hw.exchange.URL(), "sealedCredentials": oldSealed},
	})
	e, _ := body["error"].(map[string]any)
	if st2 != http.StatusBadRequest || e["code"] != "invalid_sealed_value" || !strings.Contains(fmt.Sprint(e["message"]), "retired") {
		t.Errorf("registration with credentials sealed to the retired key = %d %v", st2, body)
	}
}

// TestCallbackURLExpires: callback tokens carry their issue time, and a URL
// older than ews.callbackMaxAge is answered Unsubscribe and changes
// nothing; the engine then resubscribes the mailbox with a fresh URL, whose
// mail is pushed again.
func TestCallbackURLExpires(t *testing.T) {
	hw := newHealWorldOptions(t, 1, worldOptions{configure: func(c *Config) { c.EWS.CallbackMaxAge = time.Hour }})
	u := hw.users[0]
	old, ok := hw.activeSub(u)
	if !ok {
		t.Fatal("no active subscription")
	}
	hw.clock.Advance(2 * time.Hour)
	seq := hw.mailbox(t, u).Seq
	if st, a := postNotification(t, old.URL, old.ID, hw.mailbox(t, u).Watermark, false, inboxModified("late", 5)); st != 200 || !strings.Contains(a, "Unsubscribe") {
		t.Fatalf("expired URL answered %d %s, want Unsubscribe", st, a)
	}
	if got := hw.mailbox(t, u).Seq; got != seq {
		t.Errorf("the expired URL moved the mailbox's sequence from %d to %d", seq, got)
	}
	if res := hw.check(t); res.Resubscribed != 1 {
		t.Fatalf("sweep = %+v, want the mailbox resubscribed", res)
	}
	var fresh []string
	for _, s := range hw.exchange.Subscriptions() {
		if s.Address == u.address && s.Active && s.URL != old.URL {
			fresh = append(fresh, s.URL)
		}
	}
	if len(fresh) != 1 {
		t.Fatalf("%d new active subscriptions, want 1", len(fresh))
	}
	hw.exchange.Deliver(u.address, "Fresh", "Bob", "bob@example.com")
	hw.waitBadge(t, u)
}

// TestEWSLimitConfig: the fetch limit and the callback age are validated
// with the key named.
func TestEWSLimitConfig(t *testing.T) {
	for _, tc := range []struct{ env, say string }{
		{"MAILPUSH_EWS_FETCH_RATE=0", "config key ews.fetchRate"},
		{"MAILPUSH_EWS_FETCH_BURST=-1", "config key ews.fetchRate"},
		{"MAILPUSH_EWS_CALLBACK_MAX_AGE=5m", "config key ews.callbackMaxAge"},
	} {
		if _, err := LoadConfig("", []string{tc.env}); err == nil || !strings.Contains(err.Error(), tc.say) {
			t.Errorf("%s: %v, want an error naming %s", tc.env, err, tc.say)
		}
	}
	c, err := LoadConfig("", nil)
	if err != nil || c.EWS.FetchRate != 20 || c.EWS.FetchBurst != 10 || c.EWS.CallbackMaxAge != 90*24*time.Hour {
		t.Errorf("defaults: %+v, %v", c.EWS, err)
	}
}

// TestRetiredKeyWithoutCredentialsInMemory: the server restarts after `keys
// retire`, so it holds no credentials for a mailbox whose callback URL was
// sealed with the retired key. Exchange's next notification through that
// URL is answered Unsubscribe (Exchange ends the subscription); once the
// mailbox has been silent for 2×StatusFrequency its device is asked to
// check in, and its check-in with credentials sealed to the current key
// subscribes it again with a URL sealed with the current key.
func TestRetiredKeyWithoutCredentialsInMemory(t *testing.T) {
	hw := newHealWorld(t, 1)
	ctx := context.Background()
	u := hw.users[0]
	old, ok := hw.activeSub(u)
	if !ok {
		t.Fatal("no active subscription")
	}
	oldKey, _, _ := strings.Cut(strings.TrimPrefix(old.URL[strings.Index(old.URL, "/ews/notify/"):], "/ews/notify/"), ".")
	for _, args := range [][]string{{"keys", "rotate"}, {"keys", "retire", oldKey}} {
		var out, errOut bytes.Buffer
		if err := run(ctx, append(args, "--config", hw.configPath), &out, &errOut, nil); err != nil {
			t.Fatalf("%v: %v (%s)", args, err, errOut.String())
		}
	}
	hw.restartMain(t)
	newKey, _ := hw.main.Keys.PublicKey()

	hw.silence() // Exchange's next status event goes to the old URL
	waitFor(t, "Exchange told to unsubscribe the old URL", func(ctx context.Context) error {
		return hw.exchange.WaitFor(ctx, func(*ewsfake.Server) bool {
			s, _ := hw.exchange.Subscription(old.ID)
			return !s.Active && s.EndReason == ewsfake.EndUnsubscribed
		})
	})
	if res := hw.check(t); res.AskedDevices != 1 || res.Resubscribed != 0 {
		t.Fatalf("Check = %+v, want the device asked to check in", res)
	}
	if st, reg := hw.call(t, "GET", "/api/v1/registrations/"+u.regID, hw.token, nil); st != 200 || reg["status"] != "pending" {
		t.Fatalf("registration = %d %v, want pending", st, reg)
	}
	st, reg := hw.call(t, "POST", "/api/v1/registrations/"+u.regID+"/checkin", hw.token, map[string]any{
		"mailbox": map[string]any{"address": u.address, "sealedCredentials": hw.sealCredentials(t, u.username, u.password)}})
	if st != 200 || reg["status"] != "active" {
		t.Fatalf("checkin = %d %v", st, reg)
	}
	s, ok := hw.activeSub(u)
	if !ok || !strings.Contains(s.URL, "/ews/notify/"+newKey+".") {
		t.Fatalf("after the check-in: %+v, want a subscription sealed with %s", s, newKey)
	}
	hw.exchange.Deliver(u.address, "After", "Bob", "bob@example.com")
	hw.waitBadge(t, u)
}
