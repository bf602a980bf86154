package main

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mailpush/mailpush/fake/ewsfake"
)

// BenchmarkEWSAck measures how long mailpush takes to answer Exchange's
// SendNotification POSTs through Main over loopback while Exchange is slow:
// the fake Exchange answers every GetFolder and GetItem after
// MAILPUSH_BENCH_EWS_FETCH_MS (default 200). MAILPUSH_BENCH_EWS_MAILBOXES
// sealed-mode mailboxes (default 50) whose devices may show subject and
// sender each get MAILPUSH_BENCH_EWS_PER_MAILBOX notifications (default 20),
// one at a time per subscription as Exchange sends them, paced every
// MAILPUSH_BENCH_EWS_INTERVAL_MS (default 100; a notification waits for the
// previous answer). Each carries a NewMailEvent and no UnreadCount, so its
// event needs a GetFolder and a GetItem. Reports the answer latency
// percentiles seen by the sender and the notifications answered per
// second. Before and after acknowledge-before-fetch: see
// docs/PERFORMANCE.md.
func BenchmarkEWSAck(b *testing.B) {
	fetch := time.Duration(envInt("MAILPUSH_BENCH_EWS_FETCH_MS", 200)) * time.Millisecond
	mailboxes := envInt("MAILPUSH_BENCH_EWS_MAILBOXES", 50)
	per := envInt("MAILPUSH_BENCH_EWS_PER_MAILBOX", 20)
	interval := time.Duration(envInt("MAILPUSH_BENCH_EWS_INTERVAL_MS", 100)) * time.Millisecond
	w := newWorldWith(b, "warn", worldOptions{configure: func(c *Config) {
		// Every notification may fetch: the per-mailbox fetch limit would
		// otherwise spare the slow Exchange most of them.
		c.EWS.FetchRate, c.EWS.FetchBurst = 1_000_000, 1_000_000
	}})
	token := w.addTenant(b, "acme")
	type target struct{ url, sub, item string }
	targets := make([]target, mailboxes)
	for i := range mailboxes {
		addr, user := fmt.Sprintf("bench%d@example.com", i), fmt.Sprintf("bench%d", i)
		w.exchange.AddUser(addr, user, password)
		st, out := w.call(b, "POST", "/api/v1/registrations", token, map[string]any{
			"device":  map[string]any{"platform": "ios", "token": deviceToken(5000 + i)},
			"mailbox": map[string]any{"address": addr, "source": "ews", "ewsUrl": w.exchange.URL(), "sealedCredentials": w.sealCredentials(b, user, password)},
			"content": "subject_sender",
		})
		if st != 201 {
			b.Fatalf("register %d: %d %v", i, st, out)
		}
	}
	// Exchange's own first notification (a StatusEvent) of each
	// subscription is answered before the benchmark speaks for Exchange.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err := w.exchange.WaitFor(ctx, func(x *ewsfake.Server) bool {
		for _, s := range x.Subscriptions() {
			if len(x.CallbacksFor(s.ID)) == 0 {
				return false
			}
		}
		return true
	})
	if err != nil {
		b.Fatal(err)
	}
	w.exchange.SetCallbackDelay(time.Hour)
	for i, s := range w.exchange.Subscriptions() {
		targets[i] = target{url: s.URL, sub: s.ID, item: w.exchange.Deliver(s.Address, "Quarterly numbers", "Bob", "bob@example.com")}
	}
	w.exchange.SetLatency("GetFolder", fetch)
	w.exchange.SetLatency("GetItem", fetch)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: mailboxes}}
	b.ResetTimer()
	for n := range b.N {
		var mu sync.Mutex
		took := make([]time.Duration, 0, mailboxes*per)
		failed := 0
		var wg sync.WaitGroup
		start := time.Now()
		for i, tg := range targets {
			wg.Go(func() {
				prev := ""
				for k := range per {
					if d := time.Until(start.Add(time.Duration(k) * interval)); d > 0 {
						time.Sleep(d)
					}
					wm := fmt.Sprintf("bench-%d-%d-%d", n, i, k)
					body := soapNotification(tg.sub, prev, false, newMailEvent(wm, tg.item))
					t0 := time.Now()
					res, err := client.Post(tg.url, "text/xml", strings.NewReader(body))
					d := time.Since(t0)
					ok := err == nil && res.StatusCode == http.StatusOK
					if err == nil {
						res.Body.Close()
					}
					mu.Lock()
					took = append(took, d)
					if !ok {
						failed++
					}
					mu.Unlock()
					prev = wm
				}
			})
		}
		wg.Wait()
		elapsed := time.Since(start)
		slices.Sort(took)
		pct := func(p float64) float64 { return float64(took[int(p*float64(len(took)-1))].Microseconds()) / 1000 }
		b.ReportMetric(pct(0.50), "p50_ms")
		b.ReportMetric(pct(0.99), "p99_ms")
		b.ReportMetric(pct(0.999), "p99.9_ms")
		b.ReportMetric(float64(failed), "failed")
		b.ReportMetric(float64(len(took))/elapsed.Seconds(), "notifications/s")
	}
	// Exchange recovers: the fetches still queued in the pipeline (after
	// acknowledge-before-fetch) end fast, and the world shuts down in time.
	b.StopTimer()
	w.exchange.SetLatency("GetFolder", 0)
	w.exchange.SetLatency("GetItem", 0)
}

// soapNotification is a SendNotification as Exchange posts it.
func soapNotification(subscriptionID, prevWM string, more bool, events string) string {
	return `<?xml version="1.0"?><soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/" xmlns:m="http://schemas.microsoft.com/exchange/services/2006/messages" xmlns:t="http://schemas.microsoft.com/exchange/services/2006/types"><soap:Body><m:SendNotification><m:ResponseMessages><m:SendNotificationResponseMessage ResponseClass="Success"><m:ResponseCode>NoError</m:ResponseCode><m:Notification><t:SubscriptionId>` +
		subscriptionID + `</t:SubscriptionId><t:PreviousWatermark>` + prevWM + `</t:PreviousWatermark><t:MoreEvents>` + fmt.Sprint(more) + `</t:MoreEvents>` + events +
		`</m:Notification></m:SendNotificationResponseMessage></m:ResponseMessages></m:SendNotification></soap:Body></soap:Envelope>`
}
