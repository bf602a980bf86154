package main

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/mailpush/mailpush"
	"github.com/mailpush/mailpush/seal"
)

// BenchmarkResubscribeAfterRestart measures how long the mailboxes (10,000,
// or MAILPUSH_BENCH_MAILBOXES) take to come back after the fake Exchange
// restarts and forgets every subscription, in real time and with the
// default concurrency limits and host rule: StatusFrequency 5 minutes (the
// default; MAILPUSH_BENCH_STATUS_FREQUENCY changes it), a health check
// every 5 s. Run it with -benchtime=1x. It
// resubscribeRate can be changed with MAILPUSH_BENCH_RATE. It
// reports, from the restart: when the first resubscription reached
// Exchange (detection: 2×StatusFrequency after the last status event, plus
// up to one health interval), when all were made, and the resubscription
// time between the two.
func BenchmarkResubscribeAfterRestart(b *testing.B) {
	n := 10_000
	if v, err := strconv.Atoi(os.Getenv("MAILPUSH_BENCH_MAILBOXES")); err == nil && v > 0 {
		n = v
	}
	rate := 0 // the default, 100 per second
	if v, err := strconv.Atoi(os.Getenv("MAILPUSH_BENCH_RATE")); err == nil && v > 0 {
		rate = v
	}
	// MAILPUSH_BENCH_STATUS_FREQUENCY sets ews.statusFrequency (default:
	// the configuration's default, 5). MAILPUSH_BENCH_SPREAD=1 spreads the
	// registrations over one StatusFrequency, so that the status events are
	// spread as on a server whose mailboxes subscribed at different times;
	// without it they come in one burst, and the restart falls right after
	// every status event (the host rule's worst case).
	freq := 0
	if v, err := strconv.Atoi(os.Getenv("MAILPUSH_BENCH_STATUS_FREQUENCY")); err == nil && v > 0 {
		freq = v
	}
	spread := os.Getenv("MAILPUSH_BENCH_SPREAD") == "1"
	w := newWorldWith(b, "warn", worldOptions{timeScale: 1, configure: func(c *Config) {
		c.EWS.HealthInterval = 5 * time.Second
		c.EWS.ResubscribeRate = rate
		if freq > 0 {
			c.EWS.StatusFrequency = freq
		} else {
			c.EWS.StatusFrequency = DefaultConfig().EWS.StatusFrequency
		}
		freq = c.EWS.StatusFrequency
	}})
	token := w.addTenant(b, "acme")
	st, key := w.call(b, "GET", "/api/v1/key", "", nil)
	if st != 200 {
		b.Fatal(st)
	}
	pub, _ := b64url(key["publicKey"].(string))
	start := time.Now()
	var wg sync.WaitGroup
	jobs := make(chan int)
	errs := make(chan error, 16)
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				addr, user, pass := fmt.Sprintf("load%05d@example.com", i), fmt.Sprintf(`EXAMPLE\load%05d`, i), fmt.Sprintf("password %d", i)
				w.exchange.AddUser(addr, user, pass)
				sealed, err := seal.SealCredentials(key["keyId"].(string), pub, mailpush.Credentials{Username: user, Password: pass})
				if err != nil {
					errs <- err
					return
				}
				st, reg := w.call(b, "POST", "/api/v1/registrations", token, map[string]any{
					"device":  map[string]any{"platform": "ios", "token": deviceToken(100_000 + i)},
					"mailbox": map[string]any{"address": addr, "source": "ews", "ewsUrl": w.exchange.URL(), "sealedCredentials": sealed},
				})
				if st != 201 {
					errs <- fmt.Errorf("register %d: %d %v", i, st, reg)
					return
				}
			}
		}()
	}
	var pace *time.Ticker
	if spread {
		pace = time.NewTicker(time.Duration(freq) * time.Minute / time.Duration(n))
		defer pace.Stop()
	}
	for i := range n {
		if pace != nil {
			<-pace.C
		}
		select {
		case jobs <- i:
		case err := <-errs:
			b.Fatal(err)
		}
	}
	close(jobs)
	wg.Wait()
	b.Logf("%d mailboxes registered and subscribed in %v", n, time.Since(start).Round(time.Millisecond))

	b.ResetTimer()
	for range b.N {
		before := w.exchange.Requests("Subscribe")
		t0 := time.Now()
		w.exchange.Restart()
		var first time.Duration
		tick := time.NewTicker(100 * time.Millisecond)
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
		for {
			select {
			case <-tick.C:
			case <-ctx.Done():
				b.Fatalf("not all resubscribed: %d Subscribe requests", w.exchange.Requests("Subscribe")-before)
			}
			if first == 0 && w.exchange.Requests("Subscribe") > before {
				first = time.Since(t0)
			}
			active := 0
			for _, s := range w.exchange.Subscriptions() {
				if s.Active {
					active++
				}
			}
			if active >= n {
				break
			}
		}
		cancel()
		tick.Stop()
		all := time.Since(t0)
		b.ReportMetric(first.Seconds(), "s-detect")
		b.ReportMetric(all.Seconds(), "s-all-back")
		b.ReportMetric((all - first).Seconds(), "s-resubscribe")
		b.ReportMetric(float64(w.exchange.MaxConcurrent("Subscribe")), "max-concurrent-subscribes")
		b.Logf("%d mailboxes: first resubscription %v after the restart, all back after %v (resubscription %v); %d Subscribe requests; at most %d at once",
			n, first.Round(time.Millisecond), all.Round(time.Millisecond), (all - first).Round(time.Millisecond),
			w.exchange.Requests("Subscribe")-before, w.exchange.MaxConcurrent("Subscribe"))
	}
}
