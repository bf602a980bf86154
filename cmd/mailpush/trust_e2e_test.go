package main

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/mailpush/mailpush"
	"github.com/mailpush/mailpush/ews"
	"github.com/mailpush/mailpush/fake/apnsfake"
	"github.com/mailpush/mailpush/fake/ewsfake"
)

// TestDeviceSubscribedRegistrationsAreConfined is finding 4 of issue 9: a
// second registration for the same address, POSTing a made-up
// SubscriptionId to its own callback URL, made mailpush answer the genuine
// subscription Unsubscribe, and its forged UnreadCount 999 reached the
// owner's device. Now each device-subscribed registration owns its binding:
// what arrives through one registration's callback URL reaches only that
// registration.
func TestDeviceSubscribedRegistrationsAreConfined(t *testing.T) {
	hw := newHealWorld(t, 0)
	dora := &healUser{address: "dora@example.com", username: `EXAMPLE\dora`, password: "dora's password", device: deviceToken(90)}
	hw.exchange.AddUser(dora.address, dora.username, dora.password)
	register := func(device string) (id, callback string) {
		t.Helper()
		st, reg := hw.call(t, "POST", "/api/v1/registrations", hw.token, map[string]any{
			"device":  map[string]any{"platform": "ios", "token": device},
			"mailbox": map[string]any{"address": dora.address, "source": "ews", "ewsUrl": hw.exchange.URL()},
		})
		if st != 201 || reg["status"] != "pending" {
			t.Fatalf("register = %d %v", st, reg)
		}
		return reg["id"].(string), reg["callbackUrl"].(string)
	}
	// Dora's app subscribes on Exchange with its own callback URL.
	doraID, doraURL := register(dora.device)
	app := &ews.Client{HTTP: hw.exchange.HTTPClient()}
	genuine, err := app.Subscribe(context.Background(), ews.Endpoint{URL: hw.exchange.URL(), Credentials: mailpush.Credentials{Username: dora.username, Password: dora.password}},
		ews.SubscribeRequest{StatusFrequency: 1, URL: doraURL})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "Dora's registration active", func(ctx context.Context) error {
		return hw.exchange.WaitFor(ctx, func(*ewsfake.Server) bool {
			r, err := hw.main.Store.Registration(ctx, hw.tenant, doraID)
			return err == nil && r.Status == mailpush.StatusActive
		})
	})
	hw.exchange.Deliver(dora.address, "Hello Dora", "Bob", "bob@example.com")
	hw.waitBadge(t, dora)
	doraPushes := len(hw.apple.PushesFor(dora.device))

	// Mallory, with the app token only, registers Dora's address and posts
	// to her own callback URL: a made-up subscription, then the genuine
	// subscription's ID, each with a forged unread count.
	mallory := deviceToken(91)
	_, malloryURL := register(mallory)
	if st, answer := postNotification(t, malloryURL, "made-up-subscription", "", false, inboxModified("w1", 999)); st != 200 || !strings.Contains(answer, "OK") {
		t.Fatalf("Mallory's forged notification = %d %s", st, answer)
	}
	if st, answer := postNotification(t, malloryURL, genuine.SubscriptionID, "", false, inboxModified("w2", 998)); st != 200 || !strings.Contains(answer, "Unsubscribe") {
		t.Errorf("Mallory's notification with the genuine subscription ID = %d %s, want Unsubscribe (to her, not to Exchange)", st, answer)
	}
	// Only Mallory's own device sees what she forged.
	waitFor(t, "Mallory's forged badge on her own device", func(ctx context.Context) error {
		return hw.apple.WaitFor(ctx, func(all []apnsfake.Push) bool {
			ps := pushesTo(all, mallory)
			return len(ps) == 1 && ps[0].Badge == 999
		})
	})
	// The genuine subscription is untouched: Dora's next mail is pushed
	// with Exchange's count, and nothing Mallory forged reached her device.
	hw.exchange.Deliver(dora.address, "Second", "Bob", "bob@example.com")
	hw.waitBadge(t, dora)
	if s, ok := hw.exchange.Subscription(genuine.SubscriptionID); !ok || s.EndReason != "" {
		t.Errorf("the genuine subscription ended: %+v", s)
	}
	for _, p := range hw.apple.PushesFor(dora.device) {
		if p.Badge == 999 || p.Badge == 998 {
			t.Errorf("Dora's device got a forged badge: %+v", p)
		}
	}
	if n := len(hw.apple.PushesFor(dora.device)); n != doraPushes+1 {
		t.Errorf("Dora's device got %d pushes after her second mail, want %d", n, doraPushes+1)
	}
	if ps := hw.apple.PushesFor(mallory); len(ps) != 1 {
		t.Errorf("Mallory's device got %d pushes, want only her own forged one: Dora's mail reached her", len(ps))
	}
}

// TestSealedCredentialsAreBoundToTheAddress is finding 3 of issue 9: Bob's
// sealed credentials registered with mailbox.address = Alice's were active,
// ended Alice's subscription and showed Bob's mail on Alice's device. Now
// every request names the address's own Inbox, so Exchange itself refuses
// credentials that cannot open it: 403 mailbox_access_denied, and nothing
// changes for Alice. A delegate of Alice's mailbox may, as Exchange allows.
func TestSealedCredentialsAreBoundToTheAddress(t *testing.T) {
	hw := newHealWorld(t, 1)
	alice := hw.users[0]
	hw.exchange.AddUser("bob@example.com", `EXAMPLE\bob`, "bob's password")
	hw.exchange.AddUser("carol@example.com", `EXAMPLE\carol`, "carol's password")
	if err := hw.exchange.AddDelegate(alice.address, "carol@example.com"); err != nil {
		t.Fatal(err)
	}
	sub, ok := hw.activeSub(alice)
	if !ok {
		t.Fatal("Alice has no subscription")
	}
	before := hw.mailbox(t, alice)
	bobDevice := deviceToken(95)
	for _, address := range []string{alice.address, "nobody@example.com"} {
		st, body := hw.call(t, "POST", "/api/v1/registrations", hw.token, map[string]any{
			"device":  map[string]any{"platform": "ios", "token": bobDevice},
			"mailbox": map[string]any{"address": address, "source": "ews", "ewsUrl": hw.exchange.URL(), "sealedCredentials": hw.sealCredentials(t, `EXAMPLE\bob`, "bob's password")},
			"content": "subject_sender",
		})
		if st != 403 || errCode(body) != mailpush.EMailboxDenied {
			t.Errorf("Bob's credentials for %s: %d %v, want 403 %s", address, st, body, mailpush.EMailboxDenied)
		}
	}
	if after := hw.mailbox(t, alice); after.SubscriptionID != before.SubscriptionID || after.Status != mailpush.StatusActive || after.Mode != mailpush.ModeSealed {
		t.Errorf("the refused registration changed Alice's mailbox: %+v", after)
	}
	if s, _ := hw.exchange.Subscription(sub.ID); s.EndReason != "" {
		t.Errorf("Alice's subscription ended: %s", s.EndReason)
	}
	hw.exchange.Deliver("bob@example.com", "IT Helpdesk: your password expired", "IT", "it@example.com")
	hw.exchange.Deliver(alice.address, "For Alice", "Dan", "dan@example.com")
	hw.waitBadge(t, alice)
	if ps := hw.apple.PushesFor(bobDevice); len(ps) != 0 {
		t.Errorf("Bob's device got %d pushes", len(ps))
	}
	// Carol, Alice's delegate, may watch Alice's Inbox.
	carolDevice := deviceToken(96)
	st, body := hw.call(t, "POST", "/api/v1/registrations", hw.token, map[string]any{
		"device":  map[string]any{"platform": "ios", "token": carolDevice},
		"mailbox": map[string]any{"address": alice.address, "source": "ews", "ewsUrl": hw.exchange.URL(), "sealedCredentials": hw.sealCredentials(t, `EXAMPLE\carol`, "carol's password")},
	})
	if st != 201 || body["status"] != "active" {
		t.Fatalf("Alice's delegate registers: %d %v, want 201 active", st, body)
	}
	hw.exchange.Deliver(alice.address, "For Alice and her delegate", "Dan", "dan@example.com")
	want := hw.exchange.Unread(alice.address)
	waitFor(t, "the delegate's push with Alice's count", func(ctx context.Context) error {
		return hw.apple.WaitFor(ctx, func(all []apnsfake.Push) bool {
			ps := pushesTo(all, carolDevice)
			return len(ps) > 0 && ps[len(ps)-1].Badge == want
		})
	})
}

// TestCredentialsGoOnlyToTheRequestsEWSURL is finding 2 of issue 9: a
// device-subscribed registration for the victim's address stored an
// ewsUrl on an allowed host with another port; the victim's sealed
// registration then sent the password there and got 502. Now credentials
// go only to the ewsUrl of the same request: the other URL is never
// contacted, and the victim is active on the real Exchange.
func TestCredentialsGoOnlyToTheRequestsEWSURL(t *testing.T) {
	hw := newHealWorld(t, 0)
	var conns atomic.Int64
	attacker := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "attacker", http.StatusBadGateway)
	}))
	attacker.Config.ConnState = func(c net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	attacker.StartTLS()
	t.Cleanup(attacker.Close)
	// The admin allowed both host:ports (say, two Exchange front ends).
	var out, errOut bytes.Buffer
	if err := run(context.Background(), []string{"tenant", "set", "acme", "--config", hw.configPath,
		"--allow-host", hostOf(hw.exchange.URL()), "--allow-host", hostOf(attacker.URL)}, &out, &errOut, nil); err != nil {
		t.Fatalf("tenant set: %v %s", err, errOut.String())
	}
	victim := &healUser{address: "victim@example.com", username: `EXAMPLE\victim`, password: "victim's password", device: deviceToken(97)}
	hw.exchange.AddUser(victim.address, victim.username, victim.password)
	st, body := hw.call(t, "POST", "/api/v1/registrations", hw.token, map[string]any{
		"device":  map[string]any{"platform": "ios", "token": deviceToken(98)},
		"mailbox": map[string]any{"address": victim.address, "source": "ews", "ewsUrl": attacker.URL + "/EWS/Exchange.asmx"},
	})
	if st != 201 || body["mode"] != "device-subscribed" {
		t.Fatalf("attacker's registration = %d %v", st, body)
	}
	hw.register(t, victim) // sealed, with the right ewsUrl: 201 active
	hw.users = append(hw.users, victim)
	if n := conns.Load(); n != 0 {
		t.Errorf("the other URL got %d connections: the victim's credentials went there", n)
	}
	if mb := hw.mailbox(t, victim); mb.ServerURL != hw.exchange.URL() {
		t.Errorf("the victim's mailbox is watched at %q, want %q", mb.ServerURL, hw.exchange.URL())
	}
	hw.exchange.Deliver(victim.address, "Hello", "Bob", "bob@example.com")
	hw.waitBadge(t, victim)
}
