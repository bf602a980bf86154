package main

import (
	"bytes"
	"context"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mailpush/mailpush"
	"github.com/mailpush/mailpush/clocktest"
	"github.com/mailpush/mailpush/ews"
	"github.com/mailpush/mailpush/fake/ewsfake"
	"github.com/mailpush/mailpush/postgres/pgtest"
)

// fanOut is a balancer that hands every request to every node at once and
// answers with the first node's OK (or the first answer): each
// notification of a mailbox then reaches two nodes together, as when
// Exchange's retry of a slow delivery lands on another node, or two
// notifications of one mailbox land on two nodes in the same moment.
type fanOut struct {
	mu     sync.Mutex
	bases  []string
	client http.Client
}

func (f *fanOut) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	bases := f.bases
	f.mu.Unlock()
	body, err := io.ReadAll(io.LimitReader(r.Body, 4<<20))
	if err != nil || len(bases) == 0 {
		w.WriteHeader(http.StatusBadGateway)
		return
	}
	type answer struct {
		status int
		header http.Header
		body   []byte
	}
	answers := make([]answer, len(bases))
	var wg sync.WaitGroup
	for i, base := range bases {
		wg.Add(1)
		go func() {
			defer wg.Done()
			answers[i].status = http.StatusBadGateway
			req, _ := http.NewRequestWithContext(r.Context(), r.Method, base+r.URL.RequestURI(), bytes.NewReader(body))
			req.Header = r.Header.Clone()
			resp, err := f.client.Do(req)
			if err != nil {
				return
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			answers[i] = answer{resp.StatusCode, resp.Header, b}
		}()
	}
	wg.Wait()
	best := answers[0]
	for _, a := range answers {
		if a.status == http.StatusOK {
			best = a
			break
		}
	}
	for k, v := range best.header {
		w.Header()[k] = v
	}
	w.WriteHeader(best.status)
	w.Write(best.body)
}

// TestOAuthTwoNodesOneRefresh: two nodes (two Mains) on one PostgreSQL
// schema, every notification reaching both at once, a token endpoint that
// rotates refresh tokens and revokes the grant when a rotated-away one is
// used again. Each time the access token expires, both nodes meet the
// expiry together: exactly one refresh reaches the token endpoint, one
// node subscribes again with the rotated refresh token, both nodes send
// the new access token, pushes go on, the grant survives and no device is
// asked to check in. No token is in the database in clear.
func TestOAuthTwoNodesOneRefresh(t *testing.T) {
	dbURL, schema := pgtest.Schema(t)
	clock := clocktest.New(time.Now())
	fan := &fanOut{}
	fanServer := httptest.NewServer(fan)
	t.Cleanup(fanServer.Close)
	configure := func(c *Config) {
		c.EWS.HealthInterval, c.EWS.HostCheckInterval = 1000*time.Hour, 1000*time.Hour
	}
	w := newWorldWith(t, "debug", worldOptions{
		clock:     clock,
		database:  fmt.Sprintf("database: {driver: postgres, url: %q, schema: %s}", dbURL, schema),
		exchange:  func(o *ewsfake.Options) { o.RevokeOnReuse = true },
		configure: configure,
		extra: func(w *world) (string, []*x509.Certificate) {
			return fmt.Sprintf("publicUrl: %s\ntenants:\n  acme:\n    ews:\n      oauthAuthorities: [%q]\n", fanServer.URL, w.exchange.AuthorityURL()), nil
		},
	})
	token := w.addTenant(t, "acme")
	// The second node: the same configuration (database, key directory,
	// publicUrl), its own port and memory.
	c, err := LoadConfig(w.configPath, nil)
	if err != nil {
		t.Fatal(err)
	}
	configure(&c)
	logs2 := &syncBuffer{}
	node2 := NewMain(c, logs2)
	node2.Clock = clock
	if err := node2.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		node2.Close()
		if t.Failed() {
			t.Logf("node 2 logs:\n%s", logs2.String())
		}
	})
	nodes := []*Main{w.main, node2}
	fan.mu.Lock()
	fan.bases = []string{w.main.URL(), node2.URL()}
	fan.mu.Unlock()

	device := deviceToken(9)
	reg, _, refresh := w.registerOAuth(t, clock, token, device)
	deliverAndWait := w.deliverer(t, device, "Shared grant")
	// Before the expiry: node 2 uses the access token node 1 was given.
	deliverAndWait()
	if n := w.exchange.Requests("token"); n != 0 {
		t.Fatalf("%d refreshes while the access token was fresh", n)
	}
	signIn := mailpush.Credentials{RefreshToken: refresh, TokenURL: w.exchange.TokenURL(), ClientID: oauthClientID}
	rotatedLogs := func() int {
		return strings.Count(w.logs.String(), "refresh token rotated: subscribed") + strings.Count(logs2.String(), "refresh token rotated: subscribed")
	}
	url := activeSubURL(t, w.exchange)
	for round := 1; round <= 2; round++ {
		url = w.expireAndRotate(t, clock, deliverAndWait, url, round)
		if n, reuse := w.exchange.Requests("token"), w.exchange.Requests("token-reuse"); n != round || reuse != 0 {
			t.Fatalf("round %d: %d refreshes (want %d), %d reused refresh tokens", round, n, round, reuse)
		}
		if n := rotatedLogs(); n != round {
			t.Fatalf("round %d: %d resubscriptions for a rotation, want one per rotation", round, n)
		}
		// Both nodes send the one refresh's access token, whichever
		// refresh token they are handed: the new URL's, or the sign-in's
		// (an old URL's last notifications).
		tok, err := w.main.Keys.OpenCallback(url[strings.LastIndex(url, ews.CallbackPath)+len(ews.CallbackPath):])
		if err != nil {
			t.Fatal(err)
		}
		for _, creds := range []mailpush.Credentials{tok.Credentials, signIn} {
			for i, m := range nodes {
				if _, err := m.EWS.Client.GetInboxUnread(context.Background(), ews.Endpoint{URL: w.exchange.URL(), Credentials: creds, Mailbox: address}); err != nil {
					t.Fatalf("round %d: node %d cannot read the Inbox: %v", round, i+1, err)
				}
				cur := m.EWS.Client.Current(creds)
				if gen, ok := w.exchange.AccessTokenGeneration(cur.AccessToken); !ok || gen != round {
					t.Fatalf("round %d: node %d sent an access token of generation %d (known %v), want %d", round, i+1, gen, ok, round)
				}
			}
		}
		if n := w.exchange.Requests("token"); n != round {
			t.Fatalf("round %d: reading the Inbox from both nodes refreshed again (%d refreshes)", round, n)
		}
	}
	deliverAndWait()
	if n := w.exchange.Requests("Unauthorized"); n != 0 {
		t.Errorf("Exchange refused %d requests (a stale access token was sent)", n)
	}
	r, err := w.main.Store.Registration(context.Background(), regIDTenant(t, w), reg["id"].(string))
	if err != nil || r.Status != mailpush.StatusActive {
		t.Fatalf("registration: %v %v, want active", r, err)
	}
	for i, l := range []string{w.logs.String(), logs2.String()} {
		if strings.Contains(l, "check in") {
			t.Errorf("node %d asked the devices to check in", i+1)
		}
	}

	// Privacy: the shared grant is in the database, no token in clear.
	w.main.Close()
	node2.Close()
	dump := dumpSchema(t, dbURL, schema)
	if !strings.Contains(dump, `"lease_holder"`) || !strings.Contains(dump, `"superseded_at"`) {
		t.Fatal("no shared grant (oauth_grants, oauth_grant_tokens) in the database")
	}
	for _, s := range []string{"eyJ0eXAi.", "0.AR8A"} {
		if strings.Contains(dump, s) {
			t.Errorf("the database holds %q in clear", s)
		}
	}
	for _, l := range []string{w.logs.String(), logs2.String()} {
		if strings.Contains(l, "eyJ0eXAi.") || strings.Contains(l, "0.AR8A") {
			t.Error("a log holds a token")
		}
	}
}
