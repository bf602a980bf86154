package main

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/mailpush/mailpush/fake/apnsfake"
)

// BenchmarkEndToEndLatency measures, over b.N new-mail events, the time from
// the fake Exchange's Deliver (which POSTs the SendNotification at once) to
// the fake APNs accepting the badge push: mailpush's webhook, store, GetFolder
// round trip to Exchange, pipeline and APNs client, all over loopback. Events
// are sent one at a time, so the figure is latency, not queueing. Run:
//
//	go test -run XXX -bench EndToEndLatency -benchtime 1000x ./cmd/mailpush
func BenchmarkEndToEndLatency(b *testing.B) {
	w := newWorld(b, "warn")
	token := w.addTenant(b, "acme")
	const users = 20
	devices := make([]string, users)
	for u := range users {
		addr := fmt.Sprintf("user%d@example.com", u)
		w.exchange.AddUser(addr, fmt.Sprintf("user%d", u), password)
		devices[u] = deviceToken(1000 + u)
		st, out := w.call(b, "POST", "/api/v1/registrations", token, map[string]any{
			"device":  map[string]any{"platform": "ios", "token": devices[u]},
			"mailbox": map[string]any{"address": addr, "source": "ews", "ewsUrl": w.exchange.URL(), "sealedCredentials": w.sealCredentials(b, fmt.Sprintf("user%d", u), password)},
		})
		if st != 201 {
			b.Fatalf("register %d: %d %v", u, st, out)
		}
	}
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := range b.N {
		u := i % users
		want := i/users + 1 // this user's unread count after the delivery
		start := time.Now()
		w.exchange.Deliver(fmt.Sprintf("user%d@example.com", u), "subject", "Sender", "s@example.com")
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		var at time.Time
		err := w.apple.WaitFor(ctx, func(ps []apnsfake.Push) bool {
			for j := len(ps) - 1; j >= 0; j-- {
				if ps[j].Token == devices[u] && ps[j].Badge == want {
					at = ps[j].At
					return true
				}
			}
			return false
		})
		cancel()
		if err != nil {
			b.Fatalf("event %d: push with badge %d not received: %v", i, want, err)
		}
		lat = append(lat, at.Sub(start))
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
}
