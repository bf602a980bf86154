package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mailpush/mailpush"
	"github.com/mailpush/mailpush/fake/apnsfake"
	"github.com/mailpush/mailpush/fake/ewsfake"
	"github.com/mailpush/mailpush/postgres/pgtest"
	"github.com/mailpush/mailpush/seal"
)

// balancer is the load balancer in front of a cluster, as Exchange sees it:
// round robin over the nodes, and a node that refuses the connection or
// drops it is skipped for the next one (as nginx's proxy_next_upstream
// error does), so a dead node costs Exchange nothing but a retry inside the
// balancer.
type balancer struct {
	mu     sync.Mutex
	bases  []string
	next   atomic.Uint64
	client http.Client
}

func (b *balancer) set(bases []string) {
	b.mu.Lock()
	b.bases = bases
	b.mu.Unlock()
}

func (b *balancer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b.mu.Lock()
	bases := b.bases
	b.mu.Unlock()
	body, err := io.ReadAll(io.LimitReader(r.Body, 4<<20))
	if err != nil || len(bases) == 0 {
		w.WriteHeader(http.StatusBadGateway)
		return
	}
	start := int(b.next.Add(1) % uint64(len(bases)))
	for i := range bases {
		req, _ := http.NewRequestWithContext(r.Context(), r.Method, bases[(start+i)%len(bases)]+r.URL.RequestURI(), bytes.NewReader(body))
		req.Header = r.Header.Clone()
		resp, err := b.client.Do(req)
		if err != nil {
			continue // the node is down: the next one
		}
		for k, v := range resp.Header {
			w.Header()[k] = v
		}
		w.WriteHeader(resp.StatusCode)
		io.Copy(w, resp.Body)
		resp.Body.Close()
		return
	}
	w.WriteHeader(http.StatusBadGateway)
}

// clusterWorld is three `mailpush serve` processes on one PostgreSQL
// schema, with one keyring, behind a balancer that Exchange calls.
type clusterWorld struct {
	dir, bin string
	exchange *ewsfake.Server
	apple    *apnsfake.Server
	configs  []string
	bases    []string
	procs    []*proc
	token    string // app
	admin    string
}

// newClusterWorld starts the nodes on the database block pg; edits change
// the configuration file's text before the nodes start.
func newClusterWorld(t *testing.T, nodes int, pg string, edits ...func(string) string) *clusterWorld {
	t.Helper()
	w := &clusterWorld{dir: t.TempDir()}
	w.bin = buildMailpush(t)
	// Exchange's minutes are 10 ms here: status events every 0.6 s, retries after 0.3 s.
	w.exchange, w.apple = newFakesScaled(t, 0.01)
	lb := &balancer{}
	lbServer := httptest.NewServer(lb)
	t.Cleanup(lbServer.Close)

	var listens []string
	for range nodes {
		listens = append(listens, "127.0.0.1:"+freePort(t))
	}
	base := writeConfig(t, w.dir, w.exchange, w.apple, listens[0], "info", fmt.Sprintf(`publicUrl: %s
gate:
  tenant: acme
  proxy: nginx
  cacheTtl: 1h
push:
  retryBase: 50ms
  retryMax: 500ms
  maxAttempts: 100000
  lease: 2s
`, lbServer.URL))
	useDatabase(t, base, pg)
	b, err := os.ReadFile(base)
	if err != nil {
		t.Fatal(err)
	}
	text := string(b)
	for _, edit := range edits {
		text = edit(text)
	}
	for i, l := range listens {
		cfg := strings.Replace(text, "listen: "+listens[0], "listen: "+l, 1) + fmt.Sprintf("nodeId: node-%d\n", i)
		path := filepath.Join(w.dir, fmt.Sprintf("node-%d.yaml", i))
		if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		w.configs = append(w.configs, path)
		w.bases = append(w.bases, "http://"+l)
	}
	var out, errOut bytes.Buffer
	if err := run(context.Background(), []string{"tenant", "add", "acme", "--config", w.configs[0], "--allow-host", hostOf(w.exchange.URL()), "--max-content", "subject_sender"}, &out, &errOut, nil); err != nil {
		t.Fatalf("tenant add: %v (%s)", err, errOut.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	w.token = lines[len(lines)-1]
	out.Reset()
	if err := run(context.Background(), []string{"token", "add", "--tenant", "acme", "--scope", "admin", "--config", w.configs[0]}, &out, &errOut, nil); err != nil {
		t.Fatalf("token add: %v (%s)", err, errOut.String())
	}
	lines = strings.Split(strings.TrimSpace(out.String()), "\n")
	w.admin = lines[len(lines)-1]
	for _, c := range w.configs {
		w.procs = append(w.procs, startBinary(t, w.bin, c))
	}
	lb.set(w.bases)
	t.Cleanup(func() {
		if t.Failed() {
			for i, p := range w.procs {
				t.Logf("node %d logs:\n%s", i, p.logs.String())
			}
		}
	})
	return w
}

// register registers device d of a mailbox through node n, with sealed credentials.
func (w *clusterWorld) register(t *testing.T, n int, addr, user, pass string, d int) {
	t.Helper()
	_, key := apiCall(t, w.bases[n], "GET", "/api/v1/key", "", nil)
	pub, err := b64url(key["publicKey"].(string))
	if err != nil {
		t.Fatal(err)
	}
	sealed, err := seal.SealCredentials(key["keyId"].(string), pub, mailpush.Credentials{Username: user, Password: pass})
	if err != nil {
		t.Fatal(err)
	}
	st, reg := apiCall(t, w.bases[n], "POST", "/api/v1/registrations", w.token, map[string]any{
		"device":  map[string]any{"platform": "ios", "token": deviceToken(d)},
		"mailbox": map[string]any{"address": addr, "source": "ews", "ewsUrl": w.exchange.URL(), "sealedCredentials": sealed},
		"content": "subject_sender",
	})
	if st != 201 || reg["status"] != "active" {
		t.Fatalf("register %s device %d on node %d = %d %v", addr, d, n, st, reg)
	}
}

// TestClusterSurvivesAKilledNode: three nodes on one PostgreSQL, Exchange
// calling them through a balancer, mail arriving all along; one node is
// killed with SIGKILL in the middle, while APNs is refusing pushes so that
// every node holds leased events and queued retries. Every device ends with
// the badge of every mail its mailbox received (an event acknowledged by the
// dead node and still in its lease is sent by another node once the lease
// runs out); pushes sent twice are counted and reported (at least once
// allows them); the surviving nodes keep answering.
func TestClusterSurvivesAKilledNode(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs three servers")
	}
	url, schema := pgtest.Schema(t)
	w := newClusterWorld(t, 3, fmt.Sprintf("database: {driver: postgres, url: %q, schema: %s}", url, schema))

	const mailboxes, devices, rounds = 12, 3, 4
	addr := func(m int) string { return fmt.Sprintf("user%02d@example.com", m) }
	for m := range mailboxes {
		w.exchange.AddUser(addr(m), fmt.Sprintf("EXAMPLE\\user%02d", m), fmt.Sprintf("secret %d", m))
		for d := range devices {
			w.register(t, (m+d)%3, addr(m), fmt.Sprintf("EXAMPLE\\user%02d", m), fmt.Sprintf("secret %d", m), m*devices+d)
		}
	}
	deliver := func(round int) {
		for m := range mailboxes {
			w.exchange.Deliver(addr(m), fmt.Sprintf("cluster mail %d", round), "Dana Sender", "dana@example.com")
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	deliver(0)
	if err := w.apple.WaitFor(ctx, func(ps []apnsfake.Push) bool { return len(ps) >= mailboxes*devices }); err != nil {
		t.Fatalf("the first round did not arrive: %v", err)
	}
	// APNs refuses the next pushes: they wait in the outbox as retries
	// while more mail arrives, and node 1 dies holding some of them.
	w.apple.FailNext(2*mailboxes*devices, http.StatusServiceUnavailable, apnsfake.ReasonServiceUnavailable)
	deliver(1)
	for w.apple.Requests() < mailboxes*devices*3/2 {
		if ctx.Err() != nil {
			t.Fatalf("the pushes of round 1 were not tried: %d requests", w.apple.Requests())
		}
		time.Sleep(10 * time.Millisecond) // polling the fake, bounded by ctx
	}
	go deliver(2)
	w.procs[1].kill()
	t.Logf("node 1 killed after %d push requests", w.apple.Requests())
	deliver(3)

	// Every device ends with its mailbox's unread count: all rounds.
	last := map[string]int{}
	err := w.apple.WaitFor(ctx, func(ps []apnsfake.Push) bool {
		clear(last)
		for _, p := range ps {
			if p.Badge > last[p.Token] {
				last[p.Token] = p.Badge
			}
		}
		for d := range mailboxes * devices {
			if last[deviceToken(d)] != rounds {
				return false
			}
		}
		return true
	})
	if err != nil {
		short := 0
		for d := range mailboxes * devices {
			if last[deviceToken(d)] != rounds {
				short++
			}
		}
		t.Fatalf("%d of %d devices never got badge %d after the kill: %v", short, mailboxes*devices, rounds, err)
	}
	// The same push (apns-id) delivered twice is allowed by at least once:
	// report how often it happened.
	seen := map[string]int{}
	for _, p := range w.apple.Pushes() {
		seen[p.Token+p.ID]++
	}
	twice := 0
	for _, n := range seen {
		twice += n - 1
	}
	t.Logf("%d pushes delivered, %d of them a second time (at least once), %d push requests", len(w.apple.Pushes()), twice, w.apple.Requests())

	// The gate keeps answering on the survivors, and a registry change made
	// on one node reaches the other at once (broadcast), although each node
	// caches answers for an hour here.
	w.gateDevice(t, 0, "compliant")
	if code := w.gateAuth(t, 2); code != http.StatusOK {
		t.Fatalf("node 2 gate for a compliant device = %d", code)
	}
	w.gateDevice(t, 0, "blocked")
	// The broadcast is asynchronous: node 2 hears it within moments, far
	// sooner than the hour its cached answer would otherwise live.
	deadline := time.Now().Add(10 * time.Second)
	for w.gateAuth(t, 2) != http.StatusForbidden {
		if time.Now().After(deadline) {
			t.Fatal("node 2 still allows the device 10 s after node 0 blocked it: the change did not reach it")
		}
		time.Sleep(20 * time.Millisecond) // polling, bounded by the deadline
	}

	// The survivors keep answering, and report themselves ready.
	for _, n := range []int{0, 2} {
		resp, err := http.Get(w.bases[n] + "/readyz")
		if err != nil || resp.StatusCode != 200 {
			t.Errorf("node %d /readyz: %v %v", n, resp, err)
		}
		if resp != nil {
			resp.Body.Close()
		}
	}
	// Metrics are labelled by node.
	resp, err := http.Get(w.bases[2] + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	var body bytes.Buffer
	body.ReadFrom(resp.Body)
	resp.Body.Close()
	if !strings.Contains(body.String(), `node="node-2"`) {
		t.Errorf("node 2's metrics carry no node label")
	}
}

// gateDevice sets the gate registry's state of device CLUSTERDEV1 (user
// alice@example.com) through node n.
func (w *clusterWorld) gateDevice(t *testing.T, n int, state string) {
	t.Helper()
	if st, body := apiCall(t, w.bases[n], "PUT", "/api/v1/gate/devices/CLUSTERDEV1", w.admin, map[string]string{"user": "alice@example.com", "state": state}); st != 200 {
		t.Fatalf("PUT gate device on node %d = %d %v", n, st, body)
	}
}

// gateAuth asks node n's /gate/auth as nginx would for CLUSTERDEV1.
func (w *clusterWorld) gateAuth(t *testing.T, n int) int {
	t.Helper()
	req, _ := http.NewRequest("GET", w.bases[n]+"/gate/auth", nil)
	req.Header.Set("X-Original-URI", "/Microsoft-Server-ActiveSync?Cmd=Sync&User=alice@example.com&DeviceId=CLUSTERDEV1&DeviceType=iPhone")
	req.Header.Set("X-Original-Method", "POST")
	req.Header.Set("MS-ASProtocolVersion", "16.1")
	req.Header.Set("User-Agent", "Apple-iPhone/1")
	req.Header.Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte("alice@example.com:pw")))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}
