package ews_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/mailpush/mailpush"
	"github.com/mailpush/mailpush/clocktest"
	"github.com/mailpush/mailpush/ews"
	"github.com/mailpush/mailpush/fake/ewsfake"
	"github.com/mailpush/mailpush/postgres"
	"github.com/mailpush/mailpush/postgres/pgtest"
	"github.com/mailpush/mailpush/seal"
)

// oauthNodes is two nodes' EWS clients (each with its own memory) against
// a fake Exchange whose token endpoint rotates refresh tokens and revokes
// the whole grant when a rotated-away one comes back. With shared set,
// both share grants through their own pool on one PostgreSQL schema, as
// two mailpush nodes do; without it, each refreshes alone (the behaviour
// before the grants were shared).
type oauthNodes struct {
	clock   *clocktest.Clock
	fake    *ewsfake.Server
	nodes   [2]*ews.Client
	url     mailpush.Credentials // what the callback URL carries: no access token
	access  string               // the sign-in's access token
	refresh string
}

func newOAuthNodes(t *testing.T, shared bool) *oauthNodes {
	t.Helper()
	w := &oauthNodes{clock: clocktest.New(time.Now())}
	w.fake = ewsfake.New(ewsfake.Options{Clock: w.clock, RevokeOnReuse: true})
	t.Cleanup(w.fake.Close)
	w.fake.AddUser("alice@example.com", "alice", "pw")
	w.fake.Deliver("alice@example.com", "a", "x", "x@example.com")
	var err error
	w.access, w.refresh, err = w.fake.IssueTokens("alice@example.com", "app", 10*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	w.url = mailpush.Credentials{RefreshToken: w.refresh, TokenURL: w.fake.TokenURL(), ClientID: "app"}
	var keys *seal.Keyring
	var dbURL, schema string
	if shared {
		dbURL, schema = pgtest.Schema(t)
		if keys, err = seal.Open(t.TempDir(), time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	for i := range w.nodes {
		w.nodes[i] = &ews.Client{HTTP: w.fake.HTTPClient(), Clock: w.clock}
		if shared {
			st, err := postgres.Open(context.Background(), postgres.Config{URL: dbURL, Schema: schema}, keys, w.clock)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { st.Close() })
			w.nodes[i].Grants = &countingGrants{OAuthGrantStore: st}
		}
	}
	return w
}

// countingGrants counts a node's trips to the shared grants.
type countingGrants struct {
	mailpush.OAuthGrantStore
	mu    sync.Mutex
	calls int
}

func (c *countingGrants) LeaseOAuthGrant(ctx context.Context, seed mailpush.OAuthGrant, holder string, until time.Time, due func(mailpush.OAuthGrant) bool) (mailpush.OAuthGrant, error) {
	c.mu.Lock()
	c.calls++
	c.mu.Unlock()
	return c.OAuthGrantStore.LeaseOAuthGrant(ctx, seed, holder, until, due)
}

func (c *countingGrants) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.calls
}

// race makes each node read the Inbox n times at once, all starting
// together, and returns the errors.
func (w *oauthNodes) race(n int) []error {
	start := make(chan struct{})
	errs := make([]error, 2*n)
	var wg sync.WaitGroup
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			_, errs[i] = w.nodes[i%2].GetInboxUnread(context.Background(), ews.Endpoint{URL: w.fake.URL(), Credentials: w.url})
		}()
	}
	close(start)
	wg.Wait()
	return errs
}

// TestOAuthRefreshSharedByNodes: two nodes meet an expired access token
// at the same moment, several requests each. One refresh reaches the
// token endpoint; both nodes then send its access token; no rotated-away
// refresh token is ever sent again, so the grant survives, refresh after
// refresh. Only the node that refreshed is told to carry the new refresh
// token to a new callback URL.
func TestOAuthRefreshSharedByNodes(t *testing.T) {
	w := newOAuthNodes(t, true)
	ctx := context.Background()
	// Registered on node 0 with the sign-in's live access token: node 1's
	// first notification uses it too, without a refresh.
	reg := w.url
	reg.AccessToken, reg.ExpiresAt = w.access, w.clock.Now().Add(10*time.Minute).Unix()
	if _, err := w.nodes[0].Fresh(ctx, reg); err != nil {
		t.Fatal(err)
	}
	if cur, err := w.nodes[1].Fresh(ctx, w.url); err != nil || cur.AccessToken != w.access || w.fake.Requests("token") != 0 {
		t.Fatalf("node 1 before expiry: %v, same access token %v, %d refreshes", err, cur.AccessToken == w.access, w.fake.Requests("token"))
	}
	for round := 1; round <= 3; round++ {
		w.clock.Advance(11 * time.Minute)
		for i, err := range w.race(4) {
			if err != nil {
				t.Fatalf("round %d: request %d (node %d): %v", round, i, i%2, err)
			}
		}
		if n, reuse := w.fake.Requests("token"), w.fake.Requests("token-reuse"); n != round || reuse != 0 {
			t.Fatalf("round %d: %d refreshes (want %d), %d reused refresh tokens", round, n, round, reuse)
		}
		cur0, mine0 := w.nodes[0].Rotated(w.url)
		cur1, mine1 := w.nodes[1].Rotated(w.url)
		if cur0.AccessToken != cur1.AccessToken || cur0.RefreshToken != cur1.RefreshToken {
			t.Fatalf("round %d: the nodes hold different tokens", round)
		}
		if gen, ok := w.fake.AccessTokenGeneration(cur0.AccessToken); !ok || gen != round {
			t.Fatalf("round %d: the nodes send an access token of generation %d (known %v), want %d", round, gen, ok, round)
		}
		if mine0 == mine1 {
			t.Fatalf("round %d: node 0 rotated %v, node 1 rotated %v: exactly one must carry the new refresh token", round, mine0, mine1)
		}
		if w.fake.Requests("Unauthorized") != 0 {
			t.Fatalf("round %d: Exchange refused %d requests", round, w.fake.Requests("Unauthorized"))
		}
		// While the access token is fresh, memory answers: no trip to
		// the store, however many requests.
		before := [2]int{w.nodes[0].Grants.(*countingGrants).count(), w.nodes[1].Grants.(*countingGrants).count()}
		for _, err := range w.race(8) {
			if err != nil {
				t.Fatal(err)
			}
		}
		for i := range w.nodes {
			if n := w.nodes[i].Grants.(*countingGrants).count(); n != before[i] {
				t.Fatalf("round %d: node %d went to the store %d times with a fresh access token", round, i, n-before[i])
			}
		}
	}
}

// TestOAuthRefreshPerNodeLosesTheGrant is the same race without the
// shared grants (each node's memory only, as before): both nodes refresh
// with the same refresh token, the provider sees it come back and revokes
// the grant — what TestOAuthRefreshSharedByNodes proves no longer happens.
func TestOAuthRefreshPerNodeLosesTheGrant(t *testing.T) {
	w := newOAuthNodes(t, false)
	w.clock.Advance(11 * time.Minute)
	refused := 0
	for _, err := range w.race(1) {
		if errors.Is(err, ews.ErrRefresh) && errors.Is(err, ews.ErrUnauthorized) {
			refused++
		}
	}
	if w.fake.Requests("token") < 2 || w.fake.Requests("token-reuse") != 1 {
		t.Fatalf("%d refreshes, %d reused: the nodes did not both refresh", w.fake.Requests("token"), w.fake.Requests("token-reuse"))
	}
	if refused == 0 {
		// The second refresh is refused; the first node's request too
		// when it reached Exchange after the revocation (its retry after
		// the 401 refreshes with a revoked token).
		t.Fatal("no node was refused")
	}
	// The reuse revoked the grant: the node whose refresh won holds tokens
	// that no longer work either.
	w.clock.Advance(11 * time.Minute)
	for i, err := range w.race(1) {
		if !errors.Is(err, ews.ErrUnauthorized) {
			t.Errorf("node %d after the revocation: %v, want the grant refused", i, err)
		}
	}
}
