package main

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/mailpush/mailpush/fake/apnsfake"
)

// BenchmarkGraphEventToPush measures, through Main over loopback, the time
// from a message delivered on the fake Graph (which posts the notification
// at once) to its push arriving at the fake APNs: acknowledgement, durable
// event, the resolver's unreadItemCount and message fetches, fan-out and
// delivery. MAILPUSH_BENCH_GRAPH_MESSAGES messages (default 200), one at a
// time. Reports median and p99.
func BenchmarkGraphEventToPush(b *testing.B) {
	n := envInt("MAILPUSH_BENCH_GRAPH_MESSAGES", 200)
	gw := newGraphWorldLevel(b, "warn")
	device := deviceToken(900)
	if st, reg := gw.register(b, gw.app, device, gw.userToken(nil)); st != 201 {
		b.Fatalf("register = %d %v", st, reg)
	}
	b.ResetTimer()
	for range b.N {
		took := make([]time.Duration, 0, n)
		for i := range n {
			before := len(gw.apple.PushesFor(device))
			start := time.Now()
			gw.graph.Deliver(graphUser, fmt.Sprintf("Message %d", i), "Bench", "bench@contoso.example")
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			err := gw.apple.WaitFor(ctx, func(all []apnsfake.Push) bool { return len(pushesTo(all, device)) > before })
			cancel()
			if err != nil {
				b.Fatalf("push %d: %v", i, err)
			}
			took = append(took, time.Since(start))
		}
		slices.Sort(took)
		b.ReportMetric(float64(took[len(took)/2].Microseconds())/1000, "p50_ms")
		b.ReportMetric(float64(took[len(took)*99/100].Microseconds())/1000, "p99_ms")
	}
}
