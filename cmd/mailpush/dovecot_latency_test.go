package main

import (
	"fmt"
	"testing"
	"time"

	"github.com/mailpush/mailpush/dovecot/dovecottest"
)

// BenchmarkDovecotLatency measures, over b.N deliveries through a real
// Dovecot, the time from the start of the LMTP session to the fake APNs
// accepting the badge push: Dovecot's LMTP delivery, its OX driver's HTTP
// post, mailpush's handler, store, pipeline and APNs client, all over
// loopback. Messages are delivered one at a time, so the figure is latency,
// not queueing. lmtp-p50-ms and lmtp-p99-ms are the LMTP session alone. Run:
//
//	go test -run XXX -bench DovecotLatency -benchtime 300x ./cmd/mailpush
func BenchmarkDovecotLatency(b *testing.B) {
	dovecottest.Require(b)
	w, acme, _ := newDovecotWorld(b, "warn")
	dc := dovecottest.Start(b, dovecottest.Options{PushURL: w.main.URL(), Password: dovecotSecret})
	const users = 10
	devices := make([]string, users)
	for u := range users {
		dc.AddUser(b, fmt.Sprintf("user%d@example.com", u), "pw")
	}
	for u := range users {
		addr := fmt.Sprintf("user%d@example.com", u)
		dc.EnablePush(b, addr, addr)
		devices[u] = deviceToken(2000 + u)
		if st, out := w.registerDovecot(b, acme, addr, devices[u], "badge"); st != 201 {
			b.Fatalf("register %d: %d %v", u, st, out)
		}
	}
	lat := make([]time.Duration, 0, b.N)
	lmtp := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := range b.N {
		u := i % users
		want := i/users + 1 // this user's unread count after the delivery
		start := time.Now()
		if err := dovecottest.Deliver(dc.LMTPAddr, "sender@example.com", fmt.Sprintf("user%d@example.com", u), "subject"); err != nil {
			b.Fatal(err)
		}
		lmtp = append(lmtp, time.Since(start))
		lat = append(lat, waitBadge(b, w.apple, devices[u], want).Sub(start))
	}
	b.StopTimer()
	reportPercentiles(b, lat, "")
	reportPercentiles(b, lmtp, "lmtp-")
}
