package main

import (
	"bytes"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/mailpush/mailpush/fake/graphfake"
)

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// BenchmarkGraphAck measures how fast mailpush answers Graph's notification
// POSTs through Main over loopback, open loop: MAILPUSH_BENCH_GRAPH_RATE
// notifications per second (default 10,000) in POSTs of
// MAILPUSH_BENCH_GRAPH_BATCH (default 10) for MAILPUSH_BENCH_GRAPH_SECONDS
// (default 10), spread over MAILPUSH_BENCH_GRAPH_MAILBOXES subscriptions
// (default 200). Every POST is checked (clientState, subscription) and its
// changes stored as a durable event before the 202; the fetches run after,
// in the pipeline. Reports the answer latency percentiles seen by the
// sender, the answers over Graph's 2.9 s, and the rate achieved.
func BenchmarkGraphAck(b *testing.B) {
	rate := envInt("MAILPUSH_BENCH_GRAPH_RATE", 10_000)
	batch := envInt("MAILPUSH_BENCH_GRAPH_BATCH", 10)
	seconds := envInt("MAILPUSH_BENCH_GRAPH_SECONDS", 10)
	mailboxes := envInt("MAILPUSH_BENCH_GRAPH_MAILBOXES", 200)
	gw := newGraphWorldLevel(b, "warn")
	for i := range mailboxes {
		addr := fmt.Sprintf("user%04d@contoso.example", i)
		gw.graph.AddUser(addr)
		st, _ := gw.call(b, "POST", "/api/v1/registrations", gw.backend, map[string]any{
			"device":  map[string]any{"platform": "ios", "token": deviceToken(10_000 + i)},
			"mailbox": map[string]any{"address": addr, "source": "graph"},
		})
		if st != 201 {
			b.Fatalf("register %s = %d", addr, st)
		}
	}
	subs := gw.graph.Subscriptions()
	bodies := make([][]byte, len(subs))
	for i, s := range subs {
		var buf bytes.Buffer
		buf.WriteString(`{"value":[`)
		for k := range batch {
			if k > 0 {
				buf.WriteByte(',')
			}
			fmt.Fprintf(&buf, `{"subscriptionId":%q,"clientState":%q,"changeType":"created","resource":"Users/u/Messages/m%d","resourceData":{"id":"m%d"}}`, s.ID, s.ClientState, k, k)
		}
		buf.WriteString(`]}`)
		bodies[i] = buf.Bytes()
	}
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256}}
	posts := rate / batch * seconds
	interval := time.Second / time.Duration(rate/batch)
	b.ResetTimer()
	for range b.N {
		var mu sync.Mutex
		took := make([]time.Duration, 0, posts)
		failed := 0
		var wg sync.WaitGroup
		start := time.Now()
		for i := range posts {
			// Open loop: each POST leaves at its time, whatever the answers.
			if d := time.Until(start.Add(time.Duration(i) * interval)); d > 0 {
				time.Sleep(d)
			}
			s, body := subs[i%len(subs)], bodies[i%len(subs)]
			wg.Go(func() {
				t0 := time.Now()
				res, err := client.Post(s.NotificationURL, "application/json", bytes.NewReader(body))
				d := time.Since(t0)
				mu.Lock()
				defer mu.Unlock()
				took = append(took, d)
				if err != nil {
					failed++
					return
				}
				res.Body.Close()
				if res.StatusCode != http.StatusAccepted {
					failed++
				}
			})
		}
		wg.Wait()
		elapsed := time.Since(start)
		slices.Sort(took)
		pct := func(p float64) float64 { return float64(took[int(p*float64(len(took)-1))].Microseconds()) / 1000 }
		slow := 0
		for _, d := range took {
			if d > graphfake.SlowAnswer-100*time.Millisecond {
				slow++
			}
		}
		b.ReportMetric(pct(0.50), "p50_ms")
		b.ReportMetric(pct(0.99), "p99_ms")
		b.ReportMetric(pct(0.999), "p99.9_ms")
		b.ReportMetric(float64(slow), "slow_answers")
		b.ReportMetric(float64(failed), "failed")
		b.ReportMetric(float64(posts*batch)/elapsed.Seconds(), "notifications/s")
	}
}
