package main

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/mailpush/mailpush"
	"github.com/mailpush/mailpush/fake/ewsfake"
)

// earlySubscribe runs call (a registration or a check-in that subscribes
// at Exchange) while Exchange holds its Subscribe answer back and sends the
// new subscription's notifications first: its first status event, then a
// NewMail. Every one of them must be answered OK (an Unsubscribe would end
// the very subscription the call is making, and pushes would silently
// stop); once the answer is released the call succeeds with the
// registration active, the new subscription is the mailbox's only one, and
// the next mail reaches the device.
func earlySubscribe(t *testing.T, w *world, device string, unread *int, call func() (int, map[string]any)) {
	t.Helper()
	old := map[string]bool{}
	for _, s := range w.exchange.Subscriptions() {
		old[s.ID] = true
	}
	release := w.exchange.Hold(ewsfake.SubscribeAnswer)
	defer release()
	type answer struct {
		st   int
		body map[string]any
	}
	done := make(chan answer, 1)
	go func() {
		st, body := call()
		done <- answer{st, body}
	}()
	var sub string
	waitFor(t, "the new subscription's first notification before the Subscribe answer", func(ctx context.Context) error {
		return w.exchange.WaitFor(ctx, func(s *ewsfake.Server) bool {
			for _, x := range s.Subscriptions() {
				if !old[x.ID] && len(s.CallbacksFor(x.ID)) > 0 {
					sub = x.ID
					return true
				}
			}
			return false
		})
	})
	*unread++
	w.exchange.Deliver(address, fmt.Sprintf("Early %d", *unread), "Bob Sender", "bob@example.com")
	waitFor(t, "the new subscription's NewMail before the Subscribe answer", func(ctx context.Context) error {
		return w.exchange.WaitFor(ctx, func(s *ewsfake.Server) bool {
			cbs := s.CallbacksFor(sub)
			return len(cbs) >= 2 || cbs[len(cbs)-1].Result != "OK"
		})
	})
	if n := w.exchange.Held(ewsfake.SubscribeAnswer); n != 1 {
		t.Fatalf("%d Subscribe answers held, want 1: the notifications did not come first", n)
	}
	for _, cb := range w.exchange.CallbacksFor(sub) {
		if cb.Result != "OK" {
			t.Fatalf("the new subscription's notification (%d events, attempt %d) was answered %q before Subscribe returned", cb.Events, cb.Attempt, cb.Result)
		}
	}
	release()
	a := <-done
	if a.st/100 != 2 || a.body["status"] != "active" {
		t.Fatalf("call = %d %v", a.st, a.body)
	}
	if s, ok := w.exchange.Subscription(sub); !ok || !s.Active || countActive(w.exchange) != 1 {
		t.Fatalf("after the call: new subscription %+v (found %v), %d active", s, ok, countActive(w.exchange))
	}
	*unread++
	w.deliverAndWaitPush(t, device, fmt.Sprintf("After %d", *unread), *unread)
	for _, cb := range w.exchange.CallbacksFor(sub) {
		if cb.Result != "OK" {
			t.Fatalf("the new subscription's notification was answered %q", cb.Result)
		}
	}
}

// TestEarlyNotificationOfANewSubscription: Exchange may deliver a new
// subscription's first notifications before its Subscribe answer reaches
// mailpush, while the mailbox is unbound and its registration pending.
// They are answered OK, both at the first registration and at the
// check-in of a registration that went pending (its client identity was
// lost in a restart), so the subscription the call makes survives.
func TestEarlyNotificationOfANewSubscription(t *testing.T) {
	w, clock, token, cert := newCBAWorld(t, ewsfake.ClientCertOptions{})
	device := deviceToken(16)
	unread := 0
	var regID string
	earlySubscribe(t, w, device, &unread, func() (int, map[string]any) {
		st, reg := w.call(t, "POST", "/api/v1/registrations", token, map[string]any{
			"device":  map[string]any{"platform": "ios", "token": device, "environment": "production"},
			"mailbox": map[string]any{"address": address, "source": "ews", "ewsUrl": w.exchange.URL(), "sealedCredentials": w.sealCreds(t, identityCreds(t, cert, false))},
			"content": "subject",
		})
		if id, ok := reg["id"].(string); ok {
			regID = id
		}
		return st, reg
	})

	// A restart loses the identity: the next status event makes mailpush
	// ask the device to check in and ends the old subscription.
	w.restart(t)
	clock.Advance(time.Minute)
	w.waitStatus(t, regID, mailpush.StatusPending)
	waitFor(t, "the old subscription answered Unsubscribe", func(ctx context.Context) error {
		return w.exchange.WaitFor(ctx, func(s *ewsfake.Server) bool { return countActive(s) == 0 })
	})
	earlySubscribe(t, w, device, &unread, func() (int, map[string]any) {
		return w.call(t, "POST", "/api/v1/registrations/"+regID+"/checkin", token, map[string]any{
			"mailbox": map[string]any{"address": address, "sealedCredentials": w.sealCreds(t, identityCreds(t, cert, true))}})
	})
	if logs := w.logs.String(); strings.Contains(logs, "unsubscribing: no active or pending registration") {
		t.Errorf("a notification was refused for a pending registration:\n%s", logs)
	}
}

// TestEarlyNotificationAfterRefusedRefresh: the same at the check-in of a
// registration that went pending because its OAuth refresh was refused
// (the grant was revoked): the device checks in with a new grant, and the
// new subscription's early notifications are answered OK.
func TestEarlyNotificationAfterRefusedRefresh(t *testing.T) {
	w, clock, token := newOAuthWorld(t)
	oauthCreds := func() mailpush.Credentials {
		access, refresh, err := w.exchange.IssueTokens(address, oauthClientID, 10*time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		return mailpush.Credentials{AccessToken: access, RefreshToken: refresh, TokenURL: w.exchange.TokenURL(), ClientID: oauthClientID,
			ExpiresAt: clock.Now().Add(10 * time.Minute).Unix()}
	}
	device := deviceToken(17)
	st, reg := w.call(t, "POST", "/api/v1/registrations", token, map[string]any{
		"device":  map[string]any{"platform": "ios", "token": device, "environment": "production"},
		"mailbox": map[string]any{"address": address, "source": "ews", "ewsUrl": w.exchange.URL(), "sealedCredentials": w.sealCreds(t, oauthCreds())},
		"content": "subject",
	})
	if st != 201 || reg["status"] != "active" {
		t.Fatalf("register = %d %v", st, reg)
	}
	regID := reg["id"].(string)

	// The grant is revoked: at the next expiry the refresh is refused and
	// the registration goes pending; the old subscription ends.
	w.exchange.RevokeTokens(address)
	clock.Advance(11 * time.Minute)
	unread := 1
	w.exchange.Deliver(address, "After revocation", "Bob Sender", "bob@example.com")
	w.waitStatus(t, regID, mailpush.StatusPending)
	waitFor(t, "no active subscription after the refused refresh", func(ctx context.Context) error {
		return w.exchange.WaitFor(ctx, func(s *ewsfake.Server) bool { return countActive(s) == 0 })
	})
	earlySubscribe(t, w, device, &unread, func() (int, map[string]any) {
		return w.call(t, "POST", "/api/v1/registrations/"+regID+"/checkin", token, map[string]any{
			"mailbox": map[string]any{"address": address, "sealedCredentials": w.sealCreds(t, oauthCreds())}})
	})
}
