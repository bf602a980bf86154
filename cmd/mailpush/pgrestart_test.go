package main

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mailpush/mailpush"
	"github.com/mailpush/mailpush/fake/apnsfake"
	"github.com/mailpush/mailpush/fake/ewsfake"
	"github.com/mailpush/mailpush/postgres/pgtest"
	"github.com/mailpush/mailpush/seal"
)

// TestPostgresRestartUnderLoad restarts PostgreSQL under load. A built
// mailpush serves five EWS mailboxes of three devices each from a private
// PostgreSQL server (never the machine's shared one) while mail keeps
// arriving. PostgreSQL stops (fast shutdown) for a while: /readyz answers 503
// naming the database, and every notification Exchange sends meanwhile is
// refused, so that Exchange retries it (no OK is given for what was not
// stored). PostgreSQL starts again and, with no operator action, /readyz is
// 200 again, the subscriptions live on, and every device ends with the
// right badge: the number of mails its mailbox received.
func TestPostgresRestartUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs a private PostgreSQL")
	}
	const mailboxes, devicesPer = 5, 3
	pg := pgtest.Private(t)
	dir := t.TempDir()
	bin := filepath.Join(dir, "mailpush")
	if out, err := exec.Command(filepath.Join(runtime.GOROOT(), "bin", "go"), "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	exchange, apple := newFakes(t)
	var addrs []string
	for m := range mailboxes {
		a := fmt.Sprintf("user%d@example.com", m)
		exchange.AddUser(a, fmt.Sprintf(`EXAMPLE\user%d`, m), password)
		addrs = append(addrs, a)
	}
	listen := "127.0.0.1:" + freePort(t)
	base := "http://" + listen
	config := writeConfig(t, dir, exchange, apple, listen, "info", `push:
  retryBase: 50ms
  retryMax: 500ms
  maxAttempts: 100000
  lease: 3s
`)
	useDatabase(t, config, fmt.Sprintf("database: {driver: postgres, url: %q}", pg.URL))
	// Exchange retries a refused notification for StatusFrequency minutes
	// (1,440, EWS's maximum: 86 s at this time scale, retries 30 ms, 60 ms,
	// … apart, the last 61 s after the first), far longer than the outage;
	// the subscriptions must outlive it. (720, 43 s, left a loaded
	// machine's outage too close to the last retry, at 31 s.)
	b, _ := os.ReadFile(config)
	os.WriteFile(config, []byte(strings.Replace(string(b), "statusFrequency: 1\n", "statusFrequency: 1440\n", 1)), 0o600)

	var out, errOut strings.Builder
	if err := run(context.Background(), []string{"tenant", "add", "acme", "--config", config, "--allow-host", hostOf(exchange.URL()), "--max-content", "subject_sender"}, &out, &errOut, nil); err != nil {
		t.Fatalf("tenant add: %v (%s)", err, errOut.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	token := lines[len(lines)-1]
	p := startBinary(t, bin, config)
	defer func() {
		if t.Failed() {
			t.Logf("mailpush logs:\n%s", p.logs.String())
		}
	}()

	_, key := apiCall(t, base, "GET", "/api/v1/key", "", nil)
	pub, err := b64url(key["publicKey"].(string))
	if err != nil {
		t.Fatal(err)
	}
	devices := map[string][]string{} // address → device tokens
	for m, a := range addrs {
		sealed, err := seal.SealCredentials(key["keyId"].(string), pub, mailpush.Credentials{Username: fmt.Sprintf(`EXAMPLE\user%d`, m), Password: password})
		if err != nil {
			t.Fatal(err)
		}
		for d := range devicesPer {
			dev := deviceToken(m*devicesPer + d)
			st, reg := apiCall(t, base, "POST", "/api/v1/registrations", token, map[string]any{
				"device":  map[string]any{"platform": "ios", "token": dev},
				"mailbox": map[string]any{"address": a, "source": "ews", "ewsUrl": exchange.URL(), "sealedCredentials": sealed},
			})
			if st != 201 || reg["status"] != "active" {
				t.Fatalf("register = %d %v", st, reg)
			}
			devices[a] = append(devices[a], dev)
		}
	}
	subs := exchange.Subscriptions()
	if len(subs) < mailboxes {
		t.Fatalf("%d subscriptions for %d mailboxes", len(subs), mailboxes)
	}

	load := startMailLoad(exchange, addrs)
	defer load.stop()

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := apple.WaitFor(ctx, func(ps []apnsfake.Push) bool { return len(ps) >= 3*mailboxes*devicesPer }); err != nil {
		t.Fatalf("no pushes under load before the outage: %v", err)
	}

	// The outage.
	pg.Stop()
	before := len(exchange.Callbacks())
	reason := waitReady(t, ctx, base, http.StatusServiceUnavailable)
	if !strings.Contains(reason, "database") {
		t.Fatalf("/readyz while PostgreSQL is down says %q: it should name the database", reason)
	}
	// Every subscription has a notification refused while the database is
	// down (mail keeps coming), and none is acknowledged OK after its first
	// refusal: Exchange keeps what it could not hand over.
	// The outage lasts until Exchange has had six notifications of every
	// subscription refused (its back-off makes that about two seconds).
	const refusals = 6
	refused := func(cbs []ewsfake.Callback) map[string]int {
		r := map[string]int{}
		for _, cb := range cbs {
			if cb.Status != 0 && cb.Status != http.StatusOK {
				r[cb.SubscriptionID]++
			}
		}
		return r
	}
	enough := func(cbs []ewsfake.Callback) bool {
		r := refused(cbs)
		n := 0
		for _, c := range r {
			if c >= refusals {
				n++
			}
		}
		return n >= mailboxes
	}
	down := time.Now()
	if err := exchange.WaitFor(ctx, func(s *ewsfake.Server) bool { return enough(s.Callbacks()[before:]) }); err != nil {
		t.Fatalf("notifications refused during the outage: %v (want %d for each of %d subscriptions): %v", refused(exchange.Callbacks()[before:]), refusals, mailboxes, err)
	}
	if code, body := readyz(t, base); code != http.StatusServiceUnavailable {
		t.Fatalf("/readyz = %d %s while PostgreSQL is still down", code, body)
	}
	during := exchange.Callbacks()[before:]
	failed := map[string]bool{}
	var refusedN int
	for _, cb := range during {
		if cb.Status != 0 && cb.Status != http.StatusOK {
			failed[cb.SubscriptionID] = true
			refusedN++
			continue
		}
		if failed[cb.SubscriptionID] && cb.Result == "OK" {
			t.Fatalf("a notification was acknowledged OK while PostgreSQL was down: %+v", cb)
		}
	}
	t.Logf("outage of %v: %d notifications refused (503) across %d subscriptions; mail sent so far %v", time.Since(down).Round(time.Millisecond), refusedN, len(failed), load.sent())

	// PostgreSQL comes back; nobody touches mailpush. The recovery has a
	// deadline of its own, whatever the load made the phases before it take;
	// Exchange's next retry comes up to the outage's length after it.
	pg.Start()
	ctx, cancel = context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	waitReady(t, ctx, base, http.StatusOK)
	// Some more mail after the recovery, then the load stops.
	n := len(apple.Pushes())
	if err := apple.WaitFor(ctx, func(ps []apnsfake.Push) bool { return len(ps) >= n+mailboxes*devicesPer }); err != nil {
		t.Fatalf("no pushes after PostgreSQL came back: %v", err)
	}
	load.stop()

	// Every device ends with its mailbox's unread count: every mail
	// Exchange was told OK for (and every one it retried) reached it.
	sent := load.sent()
	want := map[string]int{}
	for a, devs := range devices {
		for _, d := range devs {
			want[d] = sent[a]
		}
	}
	lastBadge := func(ps []apnsfake.Push) map[string]int {
		last := map[string]int{}
		for _, p := range ps {
			last[p.Token] = p.Badge
		}
		return last
	}
	err = apple.WaitFor(ctx, func(ps []apnsfake.Push) bool {
		last := lastBadge(ps)
		for d, w := range want {
			if last[d] != w {
				return false
			}
		}
		return true
	})
	if err != nil {
		last := lastBadge(apple.Pushes())
		for d, w := range want {
			if last[d] != w {
				t.Errorf("device %s…: last badge %d, want %d", d[:8], last[d], w)
			}
		}
		t.Fatalf("the devices did not reach their badges: %v", err)
	}
	// No operator action, and each mailbox's subscription lived through it
	// (the older ones were replaced when its later devices registered).
	current := map[string]ewsfake.Subscription{}
	for _, s := range exchange.Subscriptions() { // oldest first
		current[s.Address] = s
	}
	for _, a := range addrs {
		if s := current[a]; !s.Active {
			t.Errorf("the subscription of %s ended: %q", a, s.EndReason)
		}
	}
	t.Logf("after the restart every one of %d devices has its badge; mail sent %v; %d pushes in all", len(want), sent, len(apple.Pushes()))
}

// readyz returns /readyz's status and error message (or status word).
func readyz(t *testing.T, base string) (int, string) {
	t.Helper()
	resp, err := http.Get(base + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		Status string `json:"status"`
		Error  struct {
			Code, Message string
		} `json:"error"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatalf("/readyz body: %v", err)
	}
	if body.Error.Message != "" {
		return resp.StatusCode, body.Error.Message
	}
	return resp.StatusCode, body.Status
}

// waitReady polls /readyz until it answers status and returns its message.
func waitReady(t *testing.T, ctx context.Context, base string, status int) string {
	t.Helper()
	for {
		code, msg := readyz(t, base)
		if code == status {
			return msg
		}
		select {
		case <-ctx.Done():
			t.Fatalf("/readyz never answered %d (last %d %q)", status, code, msg)
		case <-time.After(50 * time.Millisecond): // polling with a deadline
		}
	}
}

// TestPostgresRestartUnderLoadThreeNodes is the restart with a cluster:
// three `mailpush serve` processes on one private PostgreSQL, behind a
// balancer that Exchange calls, registrations spread over the nodes, mail
// arriving all along. PostgreSQL stops: every node's /readyz answers 503
// naming the database, and every notification Exchange sends meanwhile is
// refused (none is acknowledged OK after its subscription's first refusal).
// PostgreSQL starts again and, with no operator action, every node is ready
// again (its pool, its broadcast listener and its heartbeat reconnected),
// the subscriptions live on, and every device ends with the badge of every
// mail its mailbox received. Pushes delivered twice (at least once allows
// them) are counted and reported.
func TestPostgresRestartUnderLoadThreeNodes(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary, runs three servers and a private PostgreSQL")
	}
	const nodes, mailboxes, devicesPer = 3, 6, 2
	pg := pgtest.Private(t)
	// Exchange's minutes are 600 ms here; it retries a refused notification
	// for StatusFrequency minutes (720: 7 min 12 s), far longer than the
	// outage. (72, 43 s, was too short: on a loaded machine the outage took
	// 38 s, past Exchange's last retry, and the subscriptions ended.)
	w := newClusterWorld(t, nodes, fmt.Sprintf("database: {driver: postgres, url: %q}", pg.URL), func(cfg string) string {
		return strings.Replace(cfg, "statusFrequency: 1\n", "statusFrequency: 720\n", 1)
	})
	var addrs []string
	for m := range mailboxes {
		a := fmt.Sprintf("user%d@example.com", m)
		w.exchange.AddUser(a, fmt.Sprintf(`EXAMPLE\user%d`, m), password)
		addrs = append(addrs, a)
		for d := range devicesPer {
			w.register(t, (m+d)%nodes, a, fmt.Sprintf(`EXAMPLE\user%d`, m), password, m*devicesPer+d)
		}
	}

	load := startMailLoad(w.exchange, addrs)
	defer load.stop()

	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	if err := w.apple.WaitFor(ctx, func(ps []apnsfake.Push) bool { return len(ps) >= 3*mailboxes*devicesPer }); err != nil {
		t.Fatalf("no pushes under load before the outage: %v", err)
	}

	// The outage: every node says why it is not ready.
	pg.Stop()
	before := len(w.exchange.Callbacks())
	down := time.Now()
	for n, base := range w.bases {
		if reason := waitReady(t, ctx, base, http.StatusServiceUnavailable); !strings.Contains(reason, "database") {
			t.Fatalf("node %d /readyz while PostgreSQL is down says %q: it should name the database", n, reason)
		}
	}
	// Every subscription has notifications refused (six each) while the
	// database is down.
	const refusals = 6
	refused := func(cbs []ewsfake.Callback) map[string]int {
		r := map[string]int{}
		for _, cb := range cbs {
			if cb.Status != 0 && cb.Status != http.StatusOK {
				r[cb.SubscriptionID]++
			}
		}
		return r
	}
	if err := w.exchange.WaitFor(ctx, func(s *ewsfake.Server) bool {
		n := 0
		for _, c := range refused(s.Callbacks()[before:]) {
			if c >= refusals {
				n++
			}
		}
		return n >= mailboxes
	}); err != nil {
		t.Fatalf("notifications refused during the outage: %v (want %d for each of %d subscriptions): %v", refused(w.exchange.Callbacks()[before:]), refusals, mailboxes, err)
	}
	for n, base := range w.bases {
		if code, body := readyz(t, base); code != http.StatusServiceUnavailable {
			t.Fatalf("node %d /readyz = %d %s while PostgreSQL is still down", n, code, body)
		}
	}
	failed := map[string]bool{}
	refusedN := 0
	for _, cb := range w.exchange.Callbacks()[before:] {
		if cb.Status != 0 && cb.Status != http.StatusOK {
			failed[cb.SubscriptionID] = true
			refusedN++
			continue
		}
		if failed[cb.SubscriptionID] && cb.Result == "OK" {
			t.Fatalf("a notification was acknowledged OK while PostgreSQL was down: %+v", cb)
		}
	}
	t.Logf("outage of %v: %d notifications refused across %d subscriptions, through %d nodes", time.Since(down).Round(time.Millisecond), refusedN, len(failed), nodes)

	// PostgreSQL comes back; nobody touches mailpush. The recovery has a
	// deadline of its own, whatever the load made the phases before it take;
	// Exchange's next retry comes up to the outage's length after it.
	pg.Start()
	ctx, cancel = context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	up := time.Now()
	for _, base := range w.bases {
		waitReady(t, ctx, base, http.StatusOK)
	}
	t.Logf("every node ready again %v after PostgreSQL started", time.Since(up).Round(time.Millisecond))
	n := len(w.apple.Pushes())
	if err := w.apple.WaitFor(ctx, func(ps []apnsfake.Push) bool { return len(ps) >= n+mailboxes*devicesPer }); err != nil {
		t.Fatalf("no pushes after PostgreSQL came back: %v", err)
	}
	load.stop()

	// Every device ends with its mailbox's unread count.
	sent := load.sent()
	want := map[string]int{}
	for m := range mailboxes {
		for d := range devicesPer {
			want[deviceToken(m*devicesPer+d)] = sent[addrs[m]]
		}
	}
	last := map[string]int{}
	err := w.apple.WaitFor(ctx, func(ps []apnsfake.Push) bool {
		clear(last)
		for _, p := range ps {
			last[p.Token] = p.Badge
		}
		for d, n := range want {
			if last[d] != n {
				return false
			}
		}
		return true
	})
	if err != nil {
		for d, n := range want {
			if last[d] != n {
				t.Errorf("device %s…: last badge %d, want %d", d[:8], last[d], n)
			}
		}
		t.Fatalf("the devices did not reach their badges: %v", err)
	}
	// At least once: the same push (apns-id) delivered twice, and a badge
	// a device was sent more than once, counted and reported.
	ps := w.apple.Pushes()
	sameID, sameBadge := map[string]int{}, map[string]int{}
	for _, p := range ps {
		sameID[p.Token+"/"+p.ID]++
		sameBadge[fmt.Sprint(p.Token, "/", p.Badge)]++
	}
	twice, repeated := 0, 0
	for _, c := range sameID {
		twice += c - 1
	}
	for _, c := range sameBadge {
		repeated += c - 1
	}
	current := map[string]ewsfake.Subscription{}
	for _, s := range w.exchange.Subscriptions() { // oldest first
		current[s.Address] = s
	}
	for _, a := range addrs {
		if s := current[a]; !s.Active {
			t.Errorf("the subscription of %s ended: %q", a, s.EndReason)
		}
	}
	t.Logf("after the restart every one of %d devices has its badge; mail sent %v; %d pushes, %d of them the same push a second time, %d a badge the device already had (at least once)", len(want), sent, len(ps), twice, repeated)
}

// mailLoad delivers a mail every 20 ms, round robin over the addresses,
// until stopped, and counts what it sent to each address.
type mailLoad struct {
	mu     sync.Mutex
	counts map[string]int
	stop   func() // ends the load and waits for its last mail; safe to call twice
}

func startMailLoad(exchange *ewsfake.Server, addrs []string) *mailLoad {
	l := &mailLoad{counts: map[string]int{}}
	quit, done := make(chan struct{}), make(chan struct{})
	l.stop = sync.OnceFunc(func() { close(quit); <-done })
	go func() {
		defer close(done)
		for i := 0; ; i++ {
			select {
			case <-quit:
				return
			case <-time.After(20 * time.Millisecond): // the load's pace, not a wait
			}
			a := addrs[i%len(addrs)]
			exchange.Deliver(a, fmt.Sprintf("Report %d", i), "Bob Sender", "bob@example.com")
			l.mu.Lock()
			l.counts[a]++
			l.mu.Unlock()
		}
	}()
	return l
}

// sent is a copy of the mails sent so far, by address.
func (l *mailLoad) sent() map[string]int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return maps.Clone(l.counts)
}
