package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mailpush/mailpush"
	"github.com/mailpush/mailpush/clocktest"
	"github.com/mailpush/mailpush/ews"
	"github.com/mailpush/mailpush/fake/apnsfake"
	"github.com/mailpush/mailpush/fake/ewsfake"
	"github.com/mailpush/mailpush/subscription"
)

// healWorld is a world with a fake clock and a few sealed-mode users.
type healWorld struct {
	*world
	clock  *clocktest.Clock
	driven time.Duration // the time drive moved the clock
	token  string
	tenant string
	users  []*healUser
}

type healUser struct {
	address, username, password string
	device, regID, mailboxID    string
}

func newHealWorld(t *testing.T, users int) *healWorld {
	t.Helper()
	return newHealWorldConfig(t, users, "")
}

func newHealWorldConfig(t *testing.T, users int, extraConfig string) *healWorld {
	t.Helper()
	return newHealWorldOptions(t, users, worldOptions{extraConfig: extraConfig})
}

// newHealWorldOptions is newHealWorld with world options (its clock is set).
func newHealWorldOptions(t *testing.T, users int, o worldOptions) *healWorld {
	t.Helper()
	clock := clocktest.New(time.Now()) // APNs tokens and sealed values keep real timestamps
	o.clock = clock
	// The background sweeps stay out of the way: the tests sweep themselves.
	configure := o.configure
	o.configure = func(c *Config) {
		c.EWS.HealthInterval, c.EWS.HostCheckInterval = 1000*time.Hour, 1000*time.Hour
		if configure != nil {
			configure(c)
		}
	}
	hw := &healWorld{world: newWorldWith(t, "debug", o), clock: clock}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("server logs:\n%s", hw.logs.String())
		}
	})
	hw.token = hw.addTenant(t, "acme")
	tn, err := hw.main.Store.TenantByName(context.Background(), "acme")
	if err != nil {
		t.Fatal(err)
	}
	hw.tenant = tn.ID
	for i := range users {
		u := &healUser{address: fmt.Sprintf("user%d@example.com", i), username: fmt.Sprintf("EXAMPLE\\user%d", i),
			password: fmt.Sprintf("secret password %d", i), device: deviceToken(100 + i)}
		hw.exchange.AddUser(u.address, u.username, u.password)
		hw.register(t, u)
		hw.users = append(hw.users, u)
	}
	return hw
}

func (hw *healWorld) register(t *testing.T, u *healUser) {
	t.Helper()
	st, reg := hw.call(t, "POST", "/api/v1/registrations", hw.token, map[string]any{
		"device":  map[string]any{"platform": "ios", "token": u.device},
		"mailbox": map[string]any{"address": u.address, "source": "ews", "ewsUrl": hw.exchange.URL(), "sealedCredentials": hw.sealCredentials(t, u.username, u.password)},
	})
	if st != 201 || reg["status"] != "active" {
		t.Fatalf("register %s = %d %v", u.address, st, reg)
	}
	u.regID = reg["id"].(string)
	r, err := hw.main.Store.Registration(context.Background(), hw.tenant, u.regID)
	if err != nil {
		t.Fatal(err)
	}
	u.mailboxID = r.MailboxID
}

func (hw *healWorld) mailbox(t *testing.T, u *healUser) *mailpush.Mailbox {
	t.Helper()
	mb, err := hw.main.Store.Mailbox(context.Background(), u.mailboxID)
	if err != nil {
		t.Fatal(err)
	}
	return mb
}

// activeSub returns the user's active subscription on the fake Exchange.
func (hw *healWorld) activeSub(u *healUser) (ewsfake.Subscription, bool) {
	for _, s := range hw.exchange.Subscriptions() {
		if s.Address == u.address && s.Active {
			return s, true
		}
	}
	return ewsfake.Subscription{}, false
}

// speakForExchange lets the test speak for Exchange from now on: it waits
// for Exchange's first notification of the user's subscription (its status
// event) to be answered, then holds every later delivery, and returns the
// subscription. Arriving after the test's own notifications, that first one
// would move the stored watermark and make them look like missed events (a
// badge recomputed from the mailbox; seen as flakes under load).
func (hw *healWorld) speakForExchange(t *testing.T, u *healUser) ewsfake.Subscription {
	t.Helper()
	s, ok := hw.activeSub(u)
	if !ok {
		t.Fatal("no active subscription")
	}
	waitFor(t, "the subscription's first notification", func(ctx context.Context) error {
		return hw.exchange.WaitFor(ctx, func(x *ewsfake.Server) bool { return len(x.CallbacksFor(s.ID)) > 0 })
	})
	hw.exchange.SetCallbackDelay(time.Hour)
	return s
}

// waitBadge waits until the device's last push carries the mailbox's unread
// count on the fake Exchange.
func (hw *healWorld) waitBadge(t *testing.T, u *healUser) {
	t.Helper()
	want := hw.exchange.Unread(u.address)
	waitFor(t, fmt.Sprintf("badge %d for %s", want, u.address), func(ctx context.Context) error {
		return hw.apple.WaitFor(ctx, func(all []apnsfake.Push) bool {
			ps := pushesTo(all, u.device)
			return len(ps) > 0 && ps[len(ps)-1].Badge == want
		})
	})
}

// waitHeard waits until Exchange has reached each user's mailbox at or
// after the clock's current time (a status event at least).
func (hw *healWorld) waitHeard(t *testing.T, users ...*healUser) {
	t.Helper()
	hw.waitHeardSince(t, hw.clock.Now(), users...)
}

// waitHeardSince waits until Exchange has reached each user's mailbox at or
// after since (a status event that fell due while the clock moved).
func (hw *healWorld) waitHeardSince(t *testing.T, since time.Time, users ...*healUser) {
	t.Helper()
	since = since.Truncate(time.Millisecond) // the store keeps milliseconds
	waitFor(t, "status events", func(ctx context.Context) error {
		return hw.exchange.WaitFor(ctx, func(*ewsfake.Server) bool {
			for _, u := range users {
				if hw.mailbox(t, u).LastEventAt.Before(since) {
					return false
				}
			}
			return true
		})
	})
}

// silence moves the clock past 2×StatusFrequency (1 minute in these tests).
func (hw *healWorld) silence() { hw.clock.Advance(2*time.Minute + time.Second) }

// healed reports whether every user's mailbox is bound to an active
// subscription on Exchange.
func (hw *healWorld) healed(t *testing.T) bool {
	for _, u := range hw.users {
		if !hw.userHealed(t, u) {
			return false
		}
	}
	return true
}

func (hw *healWorld) userHealed(t *testing.T, u *healUser) bool {
	id := hw.mailbox(t, u).SubscriptionID
	s, ok := hw.exchange.Subscription(id)
	return id != "" && ok && s.Active && s.Address == u.address
}

func (hw *healWorld) check(t *testing.T) subscription.CheckResult {
	t.Helper()
	return hw.drive(t, hw.main.EWSEngine.Check)
}

// drive runs a sweep while moving the clock through the timers that fall due
// within a second (the engine's pacing, a host's back-off), one at a time,
// never further: the fake Exchange's timers and the background sweeps stay
// where they are. The time it moved is added to hw.driven.
func (hw *healWorld) drive(t *testing.T, sweep func(context.Context) (subscription.CheckResult, error)) subscription.CheckResult {
	t.Helper()
	type result struct {
		res subscription.CheckResult
		err error
	}
	done := make(chan result, 1)
	go func() {
		res, err := sweep(context.Background())
		done <- result{res, err}
	}()
	start := hw.clock.Now()
	defer func() { hw.driven += hw.clock.Now().Sub(start) }()
	deadline := time.After(time.Minute)
	for {
		select {
		case r := <-done:
			if r.err != nil {
				t.Fatalf("sweep: %v", r.err)
			}
			return r.res
		case <-deadline:
			t.Fatal("the sweep did not end within a minute")
		case <-time.After(time.Millisecond): // polling: the sweep may be between timers
			hw.clock.AdvanceNext(time.Second)
		}
	}
}

// healUntil lets Exchange's silence show (the clock passes 2×StatusFrequency;
// the live users send a status event meanwhile) and runs Check until every
// user is healed; it returns the sums of the Checks. Looping makes the test
// immune to a notification that was in flight when the fault struck.
func (hw *healWorld) healUntil(t *testing.T, live ...*healUser) subscription.CheckResult {
	t.Helper()
	var sum subscription.CheckResult
	for range 20 {
		hw.silence()
		// Those healthy now send a status event before the Check, so that
		// only the broken ones look silent.
		heard := slices.Clone(live)
		for _, u := range hw.users {
			if !slices.Contains(heard, u) && hw.userHealed(t, u) {
				heard = append(heard, u)
			}
		}
		hw.waitHeard(t, heard...)
		res := hw.check(t)
		sum.Stale += res.Stale
		sum.Resubscribed += res.Resubscribed
		sum.AskedDevices += res.AskedDevices
		sum.Failed += res.Failed
		if hw.healed(t) {
			return sum
		}
	}
	t.Fatalf("not healed after 20 checks (%+v)", sum)
	return sum
}

func TestHealDroppedSubscription(t *testing.T) {
	hw := newHealWorld(t, 3)
	for _, u := range hw.users {
		hw.exchange.Deliver(u.address, "Hello", "Bob", "bob@example.com")
		hw.waitBadge(t, u)
	}
	dead, _ := hw.activeSub(hw.users[0])
	if err := hw.exchange.DropSubscription(dead.ID); err != nil {
		t.Fatal(err)
	}
	// Mail that arrives while nobody listens.
	hw.exchange.Deliver(hw.users[0].address, "While dropped 1", "Bob", "bob@example.com")
	hw.exchange.Deliver(hw.users[0].address, "While dropped 2", "Bob", "bob@example.com")

	subscribes := hw.exchange.Requests("Subscribe")
	res := hw.healUntil(t, hw.users[1:]...)
	if res.Stale != 1 || res.Resubscribed != 1 || res.AskedDevices != 0 || res.Failed != 0 {
		t.Fatalf("Check = %+v, want exactly the dropped subscription resubscribed", res)
	}
	if got := hw.exchange.Requests("Subscribe") - subscribes; got != 1 {
		t.Errorf("%d Subscribe requests, want 1", got)
	}
	// Resubscribed from the watermark: Exchange replays the two messages and
	// the badge follows.
	hw.waitBadge(t, hw.users[0])
	if !hw.healed(t) {
		t.Fatalf("not healed: %+v", hw.exchange.Subscriptions())
	}
	if n := len(hw.exchange.Subscriptions()); n != 4 {
		t.Errorf("%d subscriptions on Exchange, want 4 (3 live, 1 dropped)", n)
	}
}

func TestHealAfterExchangeRestart(t *testing.T) {
	hw := newHealWorld(t, 3)
	var items []string
	for _, u := range hw.users {
		items = append(items, hw.exchange.Deliver(u.address, "Hello", "Bob", "bob@example.com"))
		hw.waitBadge(t, u)
	}
	hw.exchange.Restart()
	hw.exchange.Deliver(hw.users[1].address, "During restart", "Bob", "bob@example.com")
	hw.exchange.MarkRead(hw.users[2].address, items[2], true)

	res := hw.healUntil(t)
	if res.Stale != 3 || res.Resubscribed != 3 {
		t.Fatalf("Check = %+v, want 3 resubscribed", res)
	}
	for _, u := range hw.users {
		hw.waitBadge(t, u)
	}
	if !hw.healed(t) {
		t.Fatalf("not healed: %+v", hw.exchange.Subscriptions())
	}
	// Every mailbox works as before.
	for _, u := range hw.users {
		hw.exchange.Deliver(u.address, "After", "Bob", "bob@example.com")
		hw.waitBadge(t, u)
	}
}

func TestHealInvalidWatermark(t *testing.T) {
	hw := newHealWorld(t, 1)
	u := hw.users[0]
	hw.exchange.Deliver(u.address, "Hello", "Bob", "bob@example.com")
	hw.waitBadge(t, u)
	hw.exchange.Restart()
	hw.exchange.Deliver(u.address, "Lost", "Bob", "bob@example.com")
	hw.exchange.FailNext("Subscribe", "ErrorInvalidWatermark")
	getFolders, subscribes := hw.exchange.Requests("GetFolder"), hw.exchange.Requests("Subscribe")

	if res := hw.healUntil(t); res.Resubscribed != 1 {
		t.Fatalf("Check = %+v", res)
	}
	if got := hw.exchange.Requests("Subscribe") - subscribes; got != 2 {
		t.Errorf("%d Subscribe requests, want 2 (refused watermark, then fresh)", got)
	}
	if hw.exchange.Requests("GetFolder") == getFolders {
		t.Error("no GetFolder after a fresh subscription: the badge was not recomputed")
	}
	hw.waitBadge(t, u) // 2, from GetFolder: the replay was impossible
	if !hw.healed(t) {
		t.Fatal("not healed")
	}
}

func TestHealServerBusy(t *testing.T) {
	hw := newHealWorld(t, 2)
	hw.exchange.Restart()
	const backOff = 300 * time.Millisecond
	hw.exchange.FailNextBusy("Subscribe", backOff)
	subscribes := hw.exchange.Requests("Subscribe")

	res := hw.healUntil(t)
	took := hw.driven // the clock moved only through the sweeps' timers
	if res.Resubscribed != 2 {
		t.Fatalf("Check = %+v", res)
	}
	if got := hw.exchange.Requests("Subscribe") - subscribes; got != 3 {
		t.Errorf("%d Subscribe requests, want 3 (one refused busy)", got)
	}
	// Correctness, not speed: the refused request was retried only after
	// the host's BackOffMilliseconds.
	if took < backOff {
		t.Errorf("Check returned after %v: BackOffMilliseconds %v not obeyed", took, backOff)
	}
	if !hw.healed(t) {
		t.Fatal("not healed")
	}
}

func TestHealDelayedCallbacks(t *testing.T) {
	hw := newHealWorld(t, 1)
	u := hw.users[0]
	old, _ := hw.activeSub(u)
	// Exchange is slow: notifications come late, the subscription looks dead.
	hw.exchange.SetCallbackDelay(400 * time.Millisecond)
	waitFor(t, "resubscription", func(ctx context.Context) error {
		for ctx.Err() == nil {
			hw.silence()
			if res := hw.check(t); res.Resubscribed > 0 {
				return nil
			}
		}
		return ctx.Err()
	})
	hw.exchange.SetCallbackDelay(0)
	// The late subscription's next notification is answered Unsubscribe;
	// the new one carries on.
	waitFor(t, "the old subscription to end", func(ctx context.Context) error {
		return hw.exchange.WaitFor(ctx, func(s *ewsfake.Server) bool {
			sub, _ := s.Subscription(old.ID)
			return !sub.Active && sub.EndReason == ewsfake.EndUnsubscribed
		})
	})
	hw.exchange.Deliver(u.address, "Hello", "Bob", "bob@example.com")
	hw.waitBadge(t, u)
	if !hw.healed(t) {
		t.Fatal("not healed")
	}
}

// restartMain stops mailpush and starts it again on the same address and
// data: the credentials it kept in memory are gone.
func (hw *healWorld) restartMain(t *testing.T) {
	t.Helper()
	addr := hw.main.listener.Addr().String()
	cfg := hw.main.Config
	if err := hw.main.Close(); err != nil {
		t.Fatal(err)
	}
	cfg.Listen = addr
	hw.main = NewMain(cfg, hw.logs)
	hw.main.Clock = hw.clock
	if err := hw.main.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { hw.main.Close() })
}

func TestHealWithoutCredentialsAsksTheDevice(t *testing.T) {
	hw := newHealWorld(t, 1)
	u := hw.users[0]
	hw.exchange.Deliver(u.address, "Hello", "Bob", "bob@example.com")
	hw.waitBadge(t, u)
	// Exchange forgets first, then mailpush restarts: a status event that
	// reached the new process would hand it the credentials again.
	hw.exchange.Restart()
	hw.restartMain(t)

	hw.silence()
	if res := hw.check(t); res.AskedDevices != 1 || res.Resubscribed != 0 {
		t.Fatalf("Check = %+v, want the device asked to check in", res)
	}
	waitFor(t, "a background push", func(ctx context.Context) error {
		return hw.apple.WaitFor(ctx, func(all []apnsfake.Push) bool {
			ps := pushesTo(all, u.device)
			return len(ps) > 0 && ps[len(ps)-1].ContentAvailable && ps[len(ps)-1].PushType == "background" && ps[len(ps)-1].Badge == -1
		})
	})
	if st, reg := hw.call(t, "GET", "/api/v1/registrations/"+u.regID, hw.token, nil); st != 200 || reg["status"] != "pending" {
		t.Fatalf("registration = %d %v, want pending", st, reg)
	}
	// A pending device is not woken again and again.
	pushes := len(hw.apple.PushesFor(u.device))
	hw.silence()
	hw.check(t)
	if n := len(hw.apple.PushesFor(u.device)); n != pushes {
		t.Errorf("%d pushes after a second Check, want %d", n, pushes)
	}

	// The app checks in with fresh sealed credentials: subscribed again.
	st, reg := hw.call(t, "POST", "/api/v1/registrations/"+u.regID+"/checkin", hw.token, map[string]any{
		"mailbox": map[string]any{"address": u.address, "sealedCredentials": hw.sealCredentials(t, u.username, u.password)}})
	if st != 200 || reg["status"] != "active" {
		t.Fatalf("checkin = %d %v", st, reg)
	}
	hw.exchange.Deliver(u.address, "After", "Bob", "bob@example.com")
	hw.waitBadge(t, u)
	if !hw.healed(t) {
		t.Fatal("not healed")
	}
}

func TestDeviceSubscribedMode(t *testing.T) {
	hw := newHealWorld(t, 0)
	u := &healUser{address: "dora@example.com", username: "EXAMPLE\\dora", password: "dora's password", device: deviceToken(7)}
	hw.exchange.AddUser(u.address, u.username, u.password)
	st, reg := hw.call(t, "POST", "/api/v1/registrations", hw.token, map[string]any{
		"device":  map[string]any{"platform": "ios", "token": u.device},
		"mailbox": map[string]any{"address": u.address, "source": "ews", "ewsUrl": hw.exchange.URL()},
	})
	if st != 201 || reg["mode"] != "device-subscribed" || reg["status"] != "pending" || reg["callbackUrl"] == nil {
		t.Fatalf("register = %d %v", st, reg)
	}
	u.regID = reg["id"].(string)
	r, _ := hw.main.Store.Registration(context.Background(), hw.tenant, u.regID)
	u.mailboxID = r.MailboxID
	hw.users = append(hw.users, u)

	// The app subscribes on Exchange itself, with its own credentials.
	app := &ews.Client{HTTP: hw.exchange.HTTPClient()}
	ep := ews.Endpoint{URL: hw.exchange.URL(), Credentials: mailpush.Credentials{Username: u.username, Password: u.password}}
	subscribe := func(callback string) {
		t.Helper()
		if _, err := app.Subscribe(context.Background(), ep, ews.SubscribeRequest{StatusFrequency: 1, URL: callback}); err != nil {
			t.Fatalf("app Subscribe: %v", err)
		}
	}
	subscribe(reg["callbackUrl"].(string))
	waitActive := func() {
		t.Helper()
		waitFor(t, "the subscription to bind", func(ctx context.Context) error {
			return hw.exchange.WaitFor(ctx, func(*ewsfake.Server) bool {
				r, err := hw.main.Store.Registration(ctx, hw.tenant, u.regID)
				return err == nil && r.Status == mailpush.StatusActive
			})
		})
	}
	waitActive()
	getFolders := hw.exchange.Requests("GetFolder")
	hw.exchange.Deliver(u.address, "Hello", "Bob", "bob@example.com")
	hw.waitBadge(t, u) // from the Inbox ModifiedEvent's UnreadCount
	if hw.exchange.Requests("GetFolder") != getFolders {
		t.Error("mailpush touched the mailbox in device-subscribed mode")
	}

	// The subscription dies: the device is asked to subscribe again.
	s, _ := hw.activeSub(u)
	hw.exchange.DropSubscription(s.ID)
	hw.silence()
	if res := hw.check(t); res.AskedDevices != 1 {
		t.Fatalf("Check = %+v", res)
	}
	if st, reg := hw.call(t, "GET", "/api/v1/registrations/"+u.regID, hw.token, nil); st != 200 || reg["status"] != "pending" {
		t.Fatalf("registration = %d %v, want pending", st, reg)
	}
	ps := hw.apple.PushesFor(u.device)
	waitFor(t, "a background push", func(ctx context.Context) error {
		return hw.apple.WaitFor(ctx, func(all []apnsfake.Push) bool {
			ps = pushesTo(all, u.device)
			return len(ps) > 0 && ps[len(ps)-1].ContentAvailable
		})
	})
	st, reg = hw.call(t, "POST", "/api/v1/registrations/"+u.regID+"/checkin", hw.token, nil)
	if st != 200 || reg["callbackUrl"] == nil {
		t.Fatalf("checkin = %d %v", st, reg)
	}
	subscribe(reg["callbackUrl"].(string))
	waitActive()
	hw.exchange.Deliver(u.address, "Again", "Bob", "bob@example.com")
	hw.waitBadge(t, u)

	// The last device goes away: the subscription ends at its next notification.
	if st, _ := hw.call(t, "DELETE", "/api/v1/registrations/"+u.regID, hw.token, nil); st != 204 {
		t.Fatalf("delete = %d", st)
	}
	s, _ = hw.activeSub(u)
	hw.exchange.Deliver(u.address, "After delete", "Bob", "bob@example.com")
	waitFor(t, "Unsubscribe", func(ctx context.Context) error {
		return hw.exchange.WaitFor(ctx, func(srv *ewsfake.Server) bool {
			sub, _ := srv.Subscription(s.ID)
			return sub.EndReason == ewsfake.EndUnsubscribed
		})
	})
}

func TestForeignTenantSubscriptionIgnored(t *testing.T) {
	hw := newHealWorld(t, 1)
	other := hw.addTenant(t, "globex")
	hw.exchange.AddUser("eve@example.com", "EXAMPLE\\eve", "eve's password")
	st, _ := hw.call(t, "POST", "/api/v1/registrations", other, map[string]any{
		"device":  map[string]any{"platform": "ios", "token": deviceToken(9)},
		"mailbox": map[string]any{"address": "eve@example.com", "source": "ews", "ewsUrl": hw.exchange.URL(), "sealedCredentials": hw.sealCredentials(t, "EXAMPLE\\eve", "eve's password")},
	})
	if st != 201 {
		t.Fatalf("register = %d", st)
	}
	mine, _ := hw.activeSub(hw.users[0])
	var theirs ewsfake.Subscription
	for _, s := range hw.exchange.Subscriptions() {
		if s.Address == "eve@example.com" {
			theirs = s
		}
	}
	before := hw.mailboxes(t)
	// Tenant acme's callback URL, tenant globex's subscription ID.
	status, answer := postNotification(t, mine.URL, theirs.ID, "w", false,
		`<t:NewMailEvent><t:Watermark>w2</t:Watermark><t:TimeStamp>2026-11-22T08:00:00Z</t:TimeStamp><t:ItemId Id="x"/><t:ParentFolderId Id="y"/></t:NewMailEvent>`)
	if status != 200 || !strings.Contains(answer, "Unsubscribe") {
		t.Errorf("answer = %d %s, want 200 Unsubscribe", status, answer)
	}
	if after := hw.mailboxes(t); after != before {
		t.Errorf("state changed:\nbefore %s\nafter  %s", before, after)
	}
	if !strings.Contains(hw.logs.String(), "belongs to another tenant") {
		t.Error("no log line names the foreign subscription")
	}
}

// pushesTo filters pushes by device token (apnsfake.WaitFor holds the
// fake's lock: its predicate must not call back into it).
func pushesTo(all []apnsfake.Push, device string) []apnsfake.Push {
	var out []apnsfake.Push
	for _, p := range all {
		if p.Token == device {
			out = append(out, p)
		}
	}
	return out
}

func TestServiceMode(t *testing.T) {
	const svcPassword = "service account secret 42"
	pwFile := filepath.Join(t.TempDir(), "svc-password")
	os.WriteFile(pwFile, []byte(svcPassword+"\n"), 0o600)
	hw := newHealWorldConfig(t, 0, fmt.Sprintf(`tenants:
  acme:
    ews:
      serviceAccount:
        username: EXAMPLE\svc-mailpush
        passwordFile: %s
`, pwFile))
	hw.exchange.AddNTLMUser("svc-mailpush@example.com", `EXAMPLE\svc-mailpush`, svcPassword)
	if err := hw.exchange.AllowImpersonation(`EXAMPLE\svc-mailpush`); err != nil {
		t.Fatal(err)
	}
	u := &healUser{address: "carol@example.com", username: `EXAMPLE\carol`, password: "carol's own password", device: deviceToken(11)}
	hw.exchange.AddUser(u.address, u.username, u.password)
	// No sealed credentials: the tenant's service account subscribes, for
	// the tenant's backend (an app token alone gets 403).
	backend := hw.addToken(t, "acme", mailpush.ScopeBackend)
	if st, body := hw.call(t, "POST", "/api/v1/registrations", hw.token, map[string]any{
		"device":  map[string]any{"platform": "ios", "token": u.device},
		"mailbox": map[string]any{"address": u.address, "source": "ews", "ewsUrl": hw.exchange.URL()},
	}); st != 403 || errCode(body) != mailpush.EScope {
		t.Fatalf("service-mode register with the app token = %d %v, want 403 %s", st, body, mailpush.EScope)
	}
	st, reg := hw.call(t, "POST", "/api/v1/registrations", backend, map[string]any{
		"device":  map[string]any{"platform": "ios", "token": u.device},
		"mailbox": map[string]any{"address": u.address, "source": "ews", "ewsUrl": hw.exchange.URL()},
	})
	if st != 201 || reg["mode"] != "service" || reg["status"] != "active" || reg["callbackUrl"] != nil {
		t.Fatalf("register = %d %v, want mode service, active", st, reg)
	}
	u.regID = reg["id"].(string)
	r, _ := hw.main.Store.Registration(context.Background(), hw.tenant, u.regID)
	u.mailboxID = r.MailboxID
	hw.users = append(hw.users, u)
	if s, ok := hw.activeSub(u); !ok || hw.mailbox(t, u).SubscriptionID != s.ID {
		t.Fatalf("no subscription on carol's mailbox: %+v", hw.exchange.Subscriptions())
	}
	if hw.exchange.Requests("Impersonated") == 0 {
		t.Error("the subscription was not made by impersonation")
	}
	hw.exchange.Deliver(u.address, "Hello", "Bob", "bob@example.com")
	hw.waitBadge(t, u)

	// Exchange restarts: the service account resubscribes on its own.
	hw.exchange.Restart()
	hw.exchange.Deliver(u.address, "During restart", "Bob", "bob@example.com")
	if res := hw.healUntil(t); res.Resubscribed != 1 {
		t.Fatalf("heal = %+v", res)
	}
	hw.waitBadge(t, u)
	if hw.exchange.Requests("AffinityCookie") == 0 {
		t.Error("no request carried the server-affinity cookie")
	}
	// A second device of the same mailbox joins the service subscription.
	st, reg = hw.call(t, "POST", "/api/v1/registrations", backend, map[string]any{
		"device":  map[string]any{"platform": "ios", "token": deviceToken(12)},
		"mailbox": map[string]any{"address": u.address, "source": "ews", "ewsUrl": hw.exchange.URL()},
	})
	if st != 201 || reg["mode"] != "service" || reg["status"] != "active" {
		t.Fatalf("second device = %d %v", st, reg)
	}
	// A check-in naming another mailbox's address is refused.
	if st, _ := hw.call(t, "POST", "/api/v1/registrations/"+u.regID+"/checkin", hw.token, map[string]any{
		"mailbox": map[string]any{"address": "mallory@example.com"}}); st != 400 {
		t.Errorf("check-in with a foreign address = %d, want 400", st)
	}
	if strings.Contains(hw.logs.String(), svcPassword) {
		t.Error("the service account's password is in the logs")
	}
}

func TestHealSurvivesBadAnswers(t *testing.T) {
	hw := newHealWorld(t, 1)
	hw.exchange.Restart()
	hw.exchange.FailNext("Subscribe", "HTTP500")                  // a plain-text page, not XML
	hw.exchange.FailNext("Subscribe", "ErrorInternalServerError") // an EWS error message
	res := hw.healUntil(t)
	if res.Failed != 2 || res.Resubscribed != 1 {
		t.Fatalf("heal = %+v, want 2 failures then a resubscription", res)
	}
	logs := hw.logs.String()
	for _, want := range []string{"the answer is not XML", "ErrorInternalServerError"} {
		if !strings.Contains(logs, want) {
			t.Errorf("no log line says %q", want)
		}
	}
	hw.exchange.Deliver(hw.users[0].address, "After", "Bob", "bob@example.com")
	hw.waitBadge(t, hw.users[0])
}

// notify posts a hand-made SendNotification to the user's callback URL.
func (hw *healWorld) notify(t *testing.T, u *healUser, prevWM string, more bool, events string) string {
	t.Helper()
	s, ok := hw.activeSub(u)
	if !ok {
		t.Fatal("no active subscription")
	}
	status, answer := postNotification(t, s.URL, s.ID, prevWM, more, events)
	if status != 200 {
		t.Fatalf("notification answered %d %s", status, answer)
	}
	return answer
}

// postNotification posts a SendNotification, as Exchange words it, to a
// callback URL and returns the answer.
func postNotification(t *testing.T, callback, subscriptionID, prevWM string, more bool, events string) (int, string) {
	t.Helper()
	resp, err := http.Post(callback, "text/xml", strings.NewReader(soapNotification(subscriptionID, prevWM, more, events)))
	if err != nil {
		t.Fatal(err)
	}
	answer, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp.StatusCode, string(answer)
}

func inboxModified(wm string, unread int) string {
	return fmt.Sprintf(`<t:ModifiedEvent><t:Watermark>%s</t:Watermark><t:TimeStamp>2026-11-22T08:00:00Z</t:TimeStamp><t:FolderId Id="inbox-id"/><t:ParentFolderId Id="root"/><t:UnreadCount>%d</t:UnreadCount></t:ModifiedEvent>`, wm, unread)
}

func TestMissedEventsRecomputeTheBadge(t *testing.T) {
	hw := newHealWorld(t, 1)
	u := hw.users[0]
	hw.speakForExchange(t, u)
	hw.exchange.Deliver(u.address, "Hello", "Bob", "bob@example.com")
	hw.exchange.Deliver(u.address, "Hello again", "Bob", "bob@example.com")
	getFolders := hw.exchange.Requests("GetFolder")
	// A status event whose PreviousWatermark is not the one stored: events
	// were lost; the badge is fetched again.
	if a := hw.notify(t, u, "AAAAAAAAAAAAAAAAAAAAAA==", false, `<t:StatusEvent><t:Watermark>wm-x</t:Watermark></t:StatusEvent>`); !strings.Contains(a, "OK") {
		t.Fatalf("answer %s", a)
	}
	hw.waitBadge(t, u) // 2, fetched after the answer
	if hw.exchange.Requests("GetFolder") == getFolders {
		t.Error("no GetFolder after missed events")
	}
}

func TestMoreEventsPushOnce(t *testing.T) {
	hw := newHealWorld(t, 1)
	u := hw.users[0]
	hw.speakForExchange(t, u)
	wm := hw.mailbox(t, u).Watermark
	pushes := len(hw.apple.PushesFor(u.device))
	hw.notify(t, u, wm, true, inboxModified("wm-1", 5))
	if n := len(hw.apple.PushesFor(u.device)); n != pushes {
		t.Fatalf("a push went out for a batch with MoreEvents (%d pushes, had %d)", n, pushes)
	}
	if got := hw.mailbox(t, u).Watermark; got != "wm-1" {
		t.Errorf("watermark after the first batch = %q, want wm-1", got)
	}
	hw.notify(t, u, "wm-1", false, inboxModified("wm-2", 6))
	waitForExplained(t, "one push with badge 6", func(ctx context.Context) error {
		return hw.apple.WaitFor(ctx, func(all []apnsfake.Push) bool {
			ps := pushesTo(all, u.device)
			return len(ps) == pushes+1 && ps[len(ps)-1].Badge == 6
		})
	}, func() string {
		return fmt.Sprintf(" (%d pushes before the batches)%s", pushes, describePushes(hw.apple.PushesFor(u.device)))
	})
}

// TestDeviceSubscribedNeedsItsOwnSubscription checks what the tenant token
// alone cannot do: a registration without credentials may not join or
// replace a mailbox watched with a user's sealed credentials, and a second
// device-subscribed device gets nothing until its own subscription reaches
// its own callback URL.
func TestDeviceSubscribedNeedsItsOwnSubscription(t *testing.T) {
	hw := newHealWorld(t, 1)
	alice := hw.users[0] // sealed mode
	before := hw.mailbox(t, alice)
	st, body := hw.call(t, "POST", "/api/v1/registrations", hw.token, map[string]any{
		"device":  map[string]any{"platform": "ios", "token": deviceToken(66)},
		"mailbox": map[string]any{"address": alice.address, "source": "ews", "ewsUrl": hw.exchange.URL()},
	})
	if st != 409 || !strings.Contains(fmt.Sprint(body), "sealed credentials") {
		t.Fatalf("device-subscribed registration for a sealed mailbox = %d %v, want 409", st, body)
	}
	if after := hw.mailbox(t, alice); after.Mode != mailpush.ModeSealed || after.SubscriptionID != before.SubscriptionID || after.Status != mailpush.StatusActive {
		t.Fatalf("refused registration changed the mailbox: %+v", after)
	}
	hw.exchange.Deliver(alice.address, "Still watched", "Bob", "bob@example.com")
	hw.waitBadge(t, alice)
	if ps := hw.apple.PushesFor(deviceToken(66)); len(ps) != 0 {
		t.Fatalf("the refused device got pushes: %+v", ps)
	}

	// Two devices of one user in device-subscribed mode.
	dora := &healUser{address: "dora@example.com", username: "EXAMPLE\\dora", password: "dora's password", device: deviceToken(70)}
	hw.exchange.AddUser(dora.address, dora.username, dora.password)
	app := &ews.Client{HTTP: hw.exchange.HTTPClient()}
	ep := ews.Endpoint{URL: hw.exchange.URL(), Credentials: mailpush.Credentials{Username: dora.username, Password: dora.password}}
	register := func(device string) (id, callback string) {
		t.Helper()
		st, reg := hw.call(t, "POST", "/api/v1/registrations", hw.token, map[string]any{
			"device":  map[string]any{"platform": "ios", "token": device},
			"mailbox": map[string]any{"address": dora.address, "source": "ews", "ewsUrl": hw.exchange.URL()},
		})
		if st != 201 || reg["status"] != "pending" || reg["callbackUrl"] == nil {
			t.Fatalf("register %s = %d %v, want 201 pending with a callbackUrl", device[:8], st, reg)
		}
		return reg["id"].(string), reg["callbackUrl"].(string)
	}
	status := func(id string) mailpush.Status {
		r, err := hw.main.Store.Registration(context.Background(), hw.tenant, id)
		if err != nil {
			t.Fatal(err)
		}
		return r.Status
	}
	waitActive := func(id string) {
		t.Helper()
		waitFor(t, "registration "+id+" active", func(ctx context.Context) error {
			return hw.exchange.WaitFor(ctx, func(*ewsfake.Server) bool { return status(id) == mailpush.StatusActive })
		})
	}
	idA, urlA := register(dora.device)
	r, _ := hw.main.Store.Registration(context.Background(), hw.tenant, idA)
	dora.regID, dora.mailboxID = idA, r.MailboxID
	subA, err := app.Subscribe(context.Background(), ep, ews.SubscribeRequest{StatusFrequency: 1, URL: urlA})
	if err != nil {
		t.Fatal(err)
	}
	waitActive(idA)

	deviceB := deviceToken(71)
	idB, urlB := register(deviceB)
	hw.exchange.Deliver(dora.address, "First", "Bob", "bob@example.com")
	hw.waitBadge(t, dora)
	if got := status(idB); got != mailpush.StatusPending {
		t.Fatalf("device B without its own subscription is %s, want pending", got)
	}
	if ps := hw.apple.PushesFor(deviceB); len(ps) != 0 {
		t.Fatalf("device B got pushes before it subscribed: %+v", ps)
	}

	// B subscribes through its own URL: it becomes active. Each
	// device-subscribed registration owns its subscription (its mailbox is
	// its own): B's does not replace A's, and each device gets the pushes of
	// its own subscription.
	if _, err := app.Subscribe(context.Background(), ep, ews.SubscribeRequest{StatusFrequency: 1, URL: urlB}); err != nil {
		t.Fatal(err)
	}
	waitActive(idB)
	if got := status(idA); got != mailpush.StatusActive {
		t.Errorf("device A is %s after B subscribed, want active", got)
	}
	hw.exchange.Deliver(dora.address, "Second", "Bob", "bob@example.com")
	want := hw.exchange.Unread(dora.address)
	waitFor(t, "both devices' badge", func(ctx context.Context) error {
		return hw.apple.WaitFor(ctx, func(all []apnsfake.Push) bool {
			a, b := pushesTo(all, dora.device), pushesTo(all, deviceB)
			return len(a) > 0 && a[len(a)-1].Badge == want && len(b) > 0 && b[len(b)-1].Badge == want
		})
	})
	if s, _ := hw.exchange.Subscription(subA.SubscriptionID); s.EndReason != "" {
		t.Errorf("A's subscription ended (%s) when B subscribed", s.EndReason)
	}
}

// TestUnprovenRegistrationStaysPending: a device-subscribed registration
// made for an address before its owner registers with sealed credentials
// never subscribed on Exchange, so neither the owner's subscription nor a
// check-in without credentials may make it active.
func TestUnprovenRegistrationStaysPending(t *testing.T) {
	hw := newHealWorld(t, 0)
	victim := &healUser{address: "victim@example.com", username: "EXAMPLE\\victim", password: "victim's password", device: deviceToken(80)}
	hw.exchange.AddUser(victim.address, victim.username, victim.password)
	intruder := deviceToken(81)
	st, reg := hw.call(t, "POST", "/api/v1/registrations", hw.token, map[string]any{
		"device":  map[string]any{"platform": "ios", "token": intruder},
		"mailbox": map[string]any{"address": victim.address, "source": "ews", "ewsUrl": hw.exchange.URL()},
		"content": "subject_sender",
	})
	if st != 201 || reg["status"] != "pending" {
		t.Fatalf("intruder's registration = %d %v", st, reg)
	}
	intruderID := reg["id"].(string)
	hw.register(t, victim) // sealed credentials: the mailbox becomes sealed and active
	hw.users = append(hw.users, victim)
	if st, reg := hw.call(t, "POST", "/api/v1/registrations/"+intruderID+"/checkin", hw.token, nil); st != 200 || reg["status"] != "pending" {
		t.Fatalf("intruder's plain check-in = %d %v, want it still pending", st, reg)
	}
	hw.exchange.Deliver(victim.address, "Confidential merger", "CEO", "ceo@example.com")
	hw.waitBadge(t, victim)
	if ps := hw.apple.PushesFor(intruder); len(ps) != 0 {
		t.Fatalf("the unproven device got pushes: %+v", ps)
	}
}
