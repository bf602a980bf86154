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
		lat = append(lat, waitBadge(b, w.apple, devices[u], want).Sub(start))
	}
	b.StopTimer()
	reportPercentiles(b, lat, "")
}

// waitBadge waits for a push with the badge to the device and returns when
// the fake APNs accepted it.
func waitBadge(b *testing.B, apple *apnsfake.Server, device string, badge int) time.Time {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var at time.Time
	err := apple.WaitFor(ctx, func(ps []apnsfake.Push) bool {
		for j := len(ps) - 1; j >= 0; j-- {
			if ps[j].Token == device && ps[j].Badge == badge {
				at = ps[j].At
				return true
			}
		}
		return false
	})
	if err != nil {
		b.Fatalf("push with badge %d not received: %v", badge, err)
	}
	return at
}

// reportPercentiles reports the median and p99 of lat as <prefix>p50-ms and
// <prefix>p99-ms.
func reportPercentiles(b *testing.B, lat []time.Duration, prefix string) {
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, prefix+"p50-ms")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, prefix+"p99-ms")
}
