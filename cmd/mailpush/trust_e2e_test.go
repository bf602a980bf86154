package main

import (
	"context"
	"strings"
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
