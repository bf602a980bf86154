package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/mailpush/mailpush/fake/apnsfake"
	"github.com/mailpush/mailpush/fake/ewsfake"
)

// TestEWSAnswersBeforeFetching: with Exchange's GetFolder and GetItem held
// (Exchange does not answer them until the test releases it), mailpush
// still answers a new-mail notification OK; the fetches it needs wait in
// the pipeline's workers, no push goes out meanwhile, and once Exchange
// answers the device gets the badge, subject and sender.
func TestEWSAnswersBeforeFetching(t *testing.T) {
	hw := newHealWorld(t, 0)
	u := contentUser(t, hw)
	s := hw.speakForExchange(t, u)
	item := hw.exchange.Deliver(u.address, "Quarterly numbers", "Bob", "bob@example.com")
	releaseFolder := hw.exchange.Hold("GetFolder")
	releaseItem := hw.exchange.Hold("GetItem")
	defer releaseFolder()
	defer releaseItem()
	pushes := len(pushesTo(hw.apple.Pushes(), u.device))

	// The notification carries no UnreadCount: its badge must be fetched.
	body := soapNotification(s.ID, hw.mailbox(t, u).Watermark, false, newMailEvent("wm-slow-1", item))
	answered := make(chan string, 1)
	go func() {
		res, err := http.Post(s.URL, "text/xml", strings.NewReader(body))
		if err != nil {
			answered <- err.Error()
			return
		}
		defer res.Body.Close()
		a, _ := io.ReadAll(res.Body)
		answered <- fmt.Sprintf("HTTP %d %s", res.StatusCode, a)
	}()
	var answer string
	waitFor(t, "the answer while Exchange holds GetFolder", func(ctx context.Context) error {
		select {
		case answer = <-answered:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	})
	if !strings.HasPrefix(answer, "HTTP 200 ") || !strings.Contains(answer, "<m:SubscriptionStatus>OK</m:SubscriptionStatus>") {
		t.Fatalf("answer %s, want SubscriptionStatus OK", answer)
	}
	if got := hw.mailbox(t, u).Watermark; got != "wm-slow-1" {
		t.Errorf("watermark %q after the answer, want wm-slow-1", got)
	}
	// The fetch is under way, after the answer, and held.
	waitFor(t, "GetFolder held", func(ctx context.Context) error {
		return hw.exchange.WaitFor(ctx, func(x *ewsfake.Server) bool { return x.Held("GetFolder") == 1 })
	})
	if n := len(pushesTo(hw.apple.Pushes(), u.device)); n != pushes {
		t.Fatalf("%d pushes before Exchange answered the fetch, want %d", n, pushes)
	}
	releaseFolder()
	// GetItem comes after GetFolder (same event): held in turn.
	waitFor(t, "GetItem held", func(ctx context.Context) error {
		return hw.exchange.WaitFor(ctx, func(x *ewsfake.Server) bool { return x.Held("GetItem") == 1 })
	})
	if n := len(pushesTo(hw.apple.Pushes(), u.device)); n != pushes {
		t.Fatalf("%d pushes before Exchange answered GetItem, want %d", n, pushes)
	}
	releaseItem()
	var got apnsfake.Push
	waitFor(t, "the push after Exchange answered", func(ctx context.Context) error {
		return hw.apple.WaitFor(ctx, func(all []apnsfake.Push) bool {
			ps := pushesTo(all, u.device)
			if len(ps) > pushes {
				got = ps[len(ps)-1]
				return true
			}
			return false
		})
	})
	if got.Badge != 1 || !strings.Contains(got.AlertTitle+got.AlertBody, "Quarterly numbers") || !strings.Contains(got.AlertTitle+got.AlertBody, "Bob") {
		t.Errorf("push %+v, want badge 1 with the subject and sender", got)
	}
	if n := hw.exchange.Requests("GetFolder") + hw.exchange.Requests("GetItem"); n < 2 {
		t.Errorf("%d fetches, want GetFolder and GetItem", n)
	}
}
