package pipeline_test

import (
	"context"
	"crypto/x509"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/mailpush/mailpush"
	"github.com/mailpush/mailpush/apns"
	"github.com/mailpush/mailpush/fake/apnsfake"
	"github.com/mailpush/mailpush/fake/fcmfake"
	"github.com/mailpush/mailpush/fcm"
	"github.com/mailpush/mailpush/pipeline"
	"github.com/mailpush/mailpush/sqlite"
)

// faultWorld is the real thing minus the mail server: a SQLite store, the
// pipeline's dispatcher, and the real APNs and FCM clients talking to the
// fakes over loopback TLS. Retries are quick (10 ms base) so that an
// outage of a few dozen answers passes in well under a second.
type faultWorld struct {
	store  *sqlite.Store
	p      *pipeline.Pipeline
	apple  *apnsfake.Server
	google *fcmfake.Server
	tenant *mailpush.Tenant
	mbs    []string
	ios    map[string][]string // mailbox -> APNs tokens
	droid  map[string][]string // mailbox -> FCM tokens
	seq    int64
}

func newFaultWorld(t *testing.T, mailboxes, iosPer, droidPer int) *faultWorld {
	t.Helper()
	w := &faultWorld{ios: map[string][]string{}, droid: map[string][]string{}}
	w.apple = apnsfake.New(apnsfake.Options{RetryAfter: time.Second})
	t.Cleanup(w.apple.Close)
	key, p8, err := apnsfake.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	w.apple.AddKey("TEAM123456", "KEY1234567", &key.PublicKey)
	w.apple.AllowTopic("com.example.mail")
	ac, err := apns.New(apns.Config{ProductionURL: w.apple.URL(), SandboxURL: w.apple.URL(), TeamID: "TEAM123456", KeyID: "KEY1234567",
		PrivateKey: p8, Topic: "com.example.mail", RootCAs: w.apple.CertPool()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ac.Close)
	w.google = fcmfake.New()
	t.Cleanup(w.google.Close)
	creds, err := w.google.NewServiceAccount("faults")
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	for _, c := range w.google.Certificates() {
		pool.AddCert(c)
	}
	fc, err := fcm.New(fcm.Config{ProjectID: "faults", Credentials: creds, Endpoint: w.google.URL(), RootCAs: pool})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(fc.Close)

	store, keys, tenant := openTenantStore(t)
	w.store, w.tenant = store, tenant
	n := 0
	for m := range mailboxes {
		var mbID string
		add := func(platform mailpush.Platform, token string) {
			n++
			mbID = registerDevice(t, w.store, keys, w.tenant, m, platform, token)
		}
		var ios, droid []string
		for range iosPer {
			ios = append(ios, fmt.Sprintf("%064x", n+1))
			add(mailpush.PlatformIOS, ios[len(ios)-1])
		}
		for range droidPer {
			droid = append(droid, fmt.Sprintf("fcm-token_%040d", n+1))
			add(mailpush.PlatformAndroid, droid[len(droid)-1])
		}
		w.mbs = append(w.mbs, mbID)
		w.ios[mbID], w.droid[mbID] = ios, droid
	}
	w.p = pipeline.New(pipeline.Config{Store: w.store, Clock: mailpush.SystemClock{},
		Pushers:      map[mailpush.Platform]mailpush.Pusher{mailpush.PlatformIOS: ac, mailpush.PlatformAndroid: fc},
		PollInterval: 10 * time.Millisecond, RetryBase: 10 * time.Millisecond, RetryMax: 200 * time.Millisecond, MaxAttempts: 100,
		SendTimeout: 5 * time.Second})
	w.p.Start()
	t.Cleanup(func() { w.p.Shutdown(context.Background()) })
	return w
}

// mail sends one new-mail event to every mailbox, with subject "<tag> <mailbox index>".
func (w *faultWorld) mail(t *testing.T, tag string) {
	t.Helper()
	for i, mb := range w.mbs {
		w.seq++
		ev := mailpush.Event{TenantID: w.tenant.ID, MailboxID: mb, Kind: mailpush.EventNewMail, Badge: int(w.seq), Subject: fmt.Sprintf("%s %d", tag, i), Seq: w.seq, At: time.Now()}
		if err := w.p.HandleEvent(context.Background(), ev); err != nil {
			t.Fatal(err)
		}
	}
}

// delivered waits until every iOS device (but those in skip) got each
// tag's push at least once, then checks nothing is left in the outbox and
// returns how many pushes APNs accepted more than once (allowed: at least
// once).
func (w *faultWorld) delivered(t *testing.T, skip map[string]bool, tags ...string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var dups int
	err := w.apple.WaitFor(ctx, func(ps []apnsfake.Push) bool {
		got := map[string]int{}
		for _, p := range ps {
			got[p.Token+"|"+p.AlertBody]++
		}
		dups = 0
		for i, mb := range w.mbs {
			for _, tok := range w.ios[mb] {
				for _, tag := range tags {
					n := got[tok+"|"+fmt.Sprintf("%s %d", tag, i)]
					if n == 0 && !skip[tok] {
						return false
					}
					dups += max(0, n-1)
				}
			}
		}
		return true
	})
	if err != nil {
		t.Fatalf("not every push was delivered: %v", err)
	}
	w.waitEmpty(t)
	if dead, _ := w.store.DeadLetters(context.Background(), 10); len(dead) > 0 {
		t.Errorf("dead letters: %+v", dead)
	}
	return dups
}

func (w *faultWorld) waitEmpty(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		n, err := w.store.OutboxDepth(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("outbox still holds %d pushes", n)
		}
		time.Sleep(5 * time.Millisecond) // polling with a deadline
	}
}

// TestAPNsErrorsThenRecovery: APNs answers 500, then 503, then 429 (with
// Retry-After) for a while; every push is delivered once it recovers.
func TestAPNsErrorsThenRecovery(t *testing.T) {
	w := newFaultWorld(t, 5, 4, 0)
	for i, f := range []struct {
		status   int
		reason   string
		failures int
	}{
		// 500 has no Retry-After: 50 failures for 20 pushes, so retries
		// fail too. 503 and 429 carry Retry-After: 1 (which the pipeline
		// honours): one failure per push keeps the test short.
		{http.StatusInternalServerError, apnsfake.ReasonInternalServerError, 50},
		{http.StatusServiceUnavailable, apnsfake.ReasonServiceUnavailable, 20},
		{http.StatusTooManyRequests, apnsfake.ReasonTooManyRequests, 20},
	} {
		tag := fmt.Sprintf("outage-%d", f.status)
		before := w.apple.Requests()
		w.apple.FailNext(f.failures, f.status, f.reason)
		w.mail(t, tag)
		if dups := w.delivered(t, nil, tag); dups != 0 {
			// An error answer means APNs did not take the push: no
			// duplicate is possible here.
			t.Errorf("round %d: %d duplicates", i, dups)
		}
		if got := w.apple.Requests() - before; got < f.failures+20 {
			t.Errorf("round %d (%d): %d requests, want the %d failures and then the 20 pushes", i, f.status, got, f.failures)
		}
	}
}

// TestAPNsUnregisteredToken: a 410 for one token deactivates that device;
// the other devices of the mailbox are served, then and later.
func TestAPNsUnregisteredToken(t *testing.T) {
	w := newFaultWorld(t, 2, 3, 0)
	gone := w.ios[w.mbs[0]][1]
	w.apple.SetTokenUnregistered(gone, time.Now().Add(time.Minute))
	w.mail(t, "first")
	w.delivered(t, map[string]bool{gone: true}, "first")
	regs, err := w.store.ActiveRegistrations(context.Background(), w.mbs[0])
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range regs {
		if r.Device.Token == gone && r.Status != mailpush.StatusInactive {
			t.Fatalf("registration of the unregistered token is %s, want inactive", r.Status)
		}
	}
	requests := w.apple.Requests()
	w.mail(t, "second")
	w.delivered(t, map[string]bool{gone: true}, "second")
	if n := len(w.apple.PushesFor(gone)); n != 0 {
		t.Errorf("the unregistered token got %d pushes", n)
	}
	if got := w.apple.Requests() - requests; got != 5 {
		t.Errorf("second round: %d requests, want 5 (the dead device is no longer pushed)", got)
	}
}

// TestAPNsConnectionResetAndGoAway: connections reset by TCP and closed by
// a GOAWAY in the middle of streams; the client reconnects, everything is
// delivered, duplicates only as at-least-once allows.
func TestAPNsConnectionResetAndGoAway(t *testing.T) {
	w := newFaultWorld(t, 5, 4, 0)
	w.mail(t, "warm") // a connection exists before the faults
	w.delivered(t, nil, "warm")
	conns := w.apple.Connections()
	if conns != 1 {
		t.Errorf("connections after the first round = %d, want 1", conns)
	}

	w.apple.ResetNext(3)
	w.mail(t, "reset")
	dups := w.delivered(t, nil, "reset")
	if w.apple.Connections() <= conns {
		t.Errorf("connections = %d, was %d: the reset connection was not replaced", w.apple.Connections(), conns)
	}
	conns = w.apple.Connections()

	w.apple.GoAwayNext(3)
	w.mail(t, "goaway")
	dups += w.delivered(t, nil, "goaway")
	if w.apple.Connections() <= conns {
		t.Errorf("connections = %d, was %d: the connection closed by GOAWAY was not replaced", w.apple.Connections(), conns)
	}
	// The faulted requests got no answer and were not accepted; the
	// other streams on those connections may have been accepted just
	// before the connection went, and then are sent again.
	t.Logf("duplicates after resets and GOAWAYs: %d of %d pushes", dups, 40)
}

// TestFCMTokenEndpointDown: while Google's OAuth token endpoint is down, no
// Android push can go; they wait, and are all delivered once it is up.
func TestFCMTokenEndpointDown(t *testing.T) {
	w := newFaultWorld(t, 3, 0, 2)
	w.google.SetTokenEndpointDown(true)
	w.mail(t, "down")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for w.google.TokenRequests() < 3 { // several attempts failed on the token
		select {
		case <-ctx.Done():
			t.Fatalf("token endpoint asked %d times", w.google.TokenRequests())
		case <-time.After(5 * time.Millisecond):
		}
	}
	if n := len(w.google.Messages()); n != 0 {
		t.Fatalf("%d messages sent without a token", n)
	}
	w.google.SetTokenEndpointDown(false)
	err := w.google.WaitFor(ctx, func(ms []fcmfake.Message) bool {
		got := map[string]bool{}
		for _, m := range ms {
			got[m.Token] = true
		}
		for _, mb := range w.mbs {
			for _, tok := range w.droid[mb] {
				if !got[tok] {
					return false
				}
			}
		}
		return true
	})
	if err != nil {
		t.Fatalf("not every Android push was delivered after the token endpoint came back: %v", err)
	}
	w.waitEmpty(t)
	for _, m := range w.google.Messages() {
		if !strings.HasPrefix(m.Token, "fcm-token_") {
			t.Errorf("unexpected message %+v", m)
		}
	}
}
