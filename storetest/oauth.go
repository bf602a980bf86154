package storetest

import (
	"bytes"
	"context"
	"sync"
	"testing"
	"time"

	"github.com/mailpush/mailpush"
)

// testOAuthGrants: a grant is created from the first refresh token seen,
// found again through every refresh token it held, refreshed under one
// lease at a time (a second holder, concurrent or later, is kept out until
// the lease ends or runs out; a holder whose lease ran out cannot save),
// and goes when deleted, idle, or (its old refresh tokens) long superseded.
func testOAuthGrants(t *testing.T, s mailpush.Store, e *env) {
	ctx := context.Background()
	const url, client = "https://login.example.com/contoso/oauth2/v2.0/token", "app-1"
	seed := func(refresh string) mailpush.OAuthGrant {
		return mailpush.OAuthGrant{TokenURL: url, ClientID: client, RefreshToken: refresh}
	}
	always := func(mailpush.OAuthGrant) bool { return true }
	noAccess := func(g mailpush.OAuthGrant) bool { return g.AccessToken == "" }
	until := func() time.Time { return e.clock.Now().Add(time.Minute) }
	lease := func(what string, sd mailpush.OAuthGrant, holder string, due func(mailpush.OAuthGrant) bool) mailpush.OAuthGrant {
		t.Helper()
		g, err := s.LeaseOAuthGrant(ctx, sd, holder, until(), due)
		if err != nil {
			t.Fatalf("%s: LeaseOAuthGrant: %v", what, err)
		}
		return g
	}

	// The first node to need a refresh creates the grant and leases it.
	g := lease("new grant", seed("rt-0"), "holder-a", always)
	if !g.Leased || g.Version != 1 || g.RefreshToken != "rt-0" || g.AccessToken != "" || len(g.Key) == 0 {
		t.Fatalf("new grant = %+v", g)
	}
	// Another holder finds it leased: the grant as stored, no lease.
	if b := lease("leased by another", seed("rt-0"), "holder-b", always); b.Leased || b.Version != 1 || !bytes.Equal(b.Key, g.Key) {
		t.Fatalf("a second holder got %+v while holder-a leases it", b)
	}
	// Only the holder saves.
	next := g
	next.AccessToken, next.RefreshToken, next.ExpiresAt = "at-1", "rt-1", e.clock.Now().Add(time.Hour).Unix()
	_, err := s.SaveOAuthGrant(ctx, next, "holder-b")
	wantCode(t, "save by a holder without the lease", err, mailpush.EConflict)
	saved, err := s.SaveOAuthGrant(ctx, next, "holder-a")
	if err != nil || saved.Version != 2 || saved.Leased {
		t.Fatalf("SaveOAuthGrant = %+v, %v", saved, err)
	}
	_, err = s.SaveOAuthGrant(ctx, next, "holder-a")
	wantCode(t, "a second save of one lease", err, mailpush.EConflict)

	// The old refresh token (a callback URL that still carries it) and the
	// new one find the same grant with the newest tokens; not due, no lease.
	for _, rt := range []string{"rt-0", "rt-1"} {
		got := lease("found by "+rt, seed(rt), "holder-c", noAccess)
		if got.Leased || got.Version != 2 || got.AccessToken != "at-1" || got.RefreshToken != "rt-1" || got.ExpiresAt != next.ExpiresAt || !bytes.Equal(got.Key, g.Key) {
			t.Fatalf("grant found by %s = %+v", rt, got)
		}
	}
	// Another client or token endpoint is another grant.
	other := seed("rt-1")
	other.ClientID = "app-2"
	if got := lease("another client", other, "holder-c", noAccess); bytes.Equal(got.Key, g.Key) || got.Version != 1 || got.AccessToken != "" {
		t.Fatalf("another client's grant = %+v", got)
	}

	// A lease that runs out lets another holder in; the first cannot save.
	a := lease("lease a", seed("rt-1"), "holder-a", always)
	if !a.Leased {
		t.Fatal("no lease on a free grant")
	}
	e.clock.Add(time.Minute + time.Second)
	b := lease("lease b after a's ran out", seed("rt-1"), "holder-b", always)
	if !b.Leased || b.Version != 2 {
		t.Fatalf("after the lease ran out: %+v", b)
	}
	a.RefreshToken = "rt-a"
	_, err = s.SaveOAuthGrant(ctx, a, "holder-a")
	wantCode(t, "save after the lease ran out", err, mailpush.EConflict)
	// A release (the endpoint was down) frees it at once.
	if err := s.ReleaseOAuthGrant(ctx, b, "holder-b"); err != nil {
		t.Fatal(err)
	}
	if c := lease("lease after a release", seed("rt-1"), "holder-c", always); !c.Leased || c.RefreshToken != "rt-1" {
		t.Fatalf("after a release: %+v", c)
	}
	if err := s.ReleaseOAuthGrant(ctx, b, "holder-b"); err != nil {
		t.Errorf("releasing a lease not held: %v", err)
	}

	// Many holders at once on a new grant: exactly one lease.
	var mu sync.Mutex
	leased := 0
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got, err := s.LeaseOAuthGrant(ctx, seed("rt-race"), "racer-"+string(rune('a'+i)), until(), always)
			if err != nil {
				t.Errorf("concurrent lease: %v", err)
				return
			}
			if got.Leased {
				mu.Lock()
				leased++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if leased != 1 {
		t.Fatalf("%d concurrent holders got the lease, want 1", leased)
	}

	// Deleted (refused by the provider): its refresh tokens name nothing.
	if err := s.DeleteOAuthGrant(ctx, g); err != nil {
		t.Fatal(err)
	}
	if got := lease("after delete", seed("rt-1"), "holder-d", noAccess); bytes.Equal(got.Key, g.Key) || got.Version != 1 || got.AccessToken != "" {
		t.Fatalf("a deleted grant is still found: %+v", got)
	}

	// Superseded refresh tokens go a while after (but the first, whose
	// keyed hash is the grant's key); idle grants go.
	h := lease("grant h", seed("h-0"), "holder-h", always)
	for _, rt := range []string{"h-1", "h-2"} {
		h.AccessToken, h.RefreshToken = "at-"+rt, rt
		if h, err = s.SaveOAuthGrant(ctx, h, "holder-h"); err != nil {
			t.Fatal(err)
		}
		h = lease("grant h again", seed(rt), "holder-h", always)
	}
	if err := s.ReleaseOAuthGrant(ctx, h, "holder-h"); err != nil {
		t.Fatal(err)
	}
	e.clock.Add(time.Hour)
	lease("h used", seed("h-2"), "holder-h", noAccess)
	now := e.clock.Now()
	if n, err := s.DeleteIdleOAuthGrants(ctx, now.Add(-30*time.Minute), now.Add(-30*time.Minute), 100); err != nil || n == 0 {
		t.Fatalf("DeleteIdleOAuthGrants = %d, %v; the grants idle for an hour should go", n, err)
	}
	for _, rt := range []string{"h-2", "h-0"} {
		if got := lease("h by "+rt, seed(rt), "holder-h", noAccess); got.AccessToken != "at-h-2" || !bytes.Equal(got.Key, h.Key) {
			t.Fatalf("h by %s: %+v", rt, got)
		}
	}
	if got := lease("h by its superseded token", seed("h-1"), "holder-h", noAccess); bytes.Equal(got.Key, h.Key) || got.AccessToken != "" {
		t.Fatalf("a refresh token superseded an hour ago still names the grant: %+v", got)
	}
	e.clock.Add(2 * time.Hour)
	now = e.clock.Now()
	if n, err := s.DeleteIdleOAuthGrants(ctx, now.Add(-time.Hour), now.Add(-time.Hour), 100); err != nil || n < 2 {
		t.Fatalf("DeleteIdleOAuthGrants = %d, %v; want h and the new grant of h-1 gone", n, err)
	}
	if got := lease("h after it idled", seed("h-2"), "holder-h", noAccess); bytes.Equal(got.Key, h.Key) || got.AccessToken != "" {
		t.Fatalf("an idle grant stayed: %+v", got)
	}

	// What the stores write is bound to the grant's key: sealed tokens
	// moved to another grant's row do not open there.
	codec := mailpush.StoreCodec{Cipher: e.keys}
	mine := mailpush.OAuthGrant{Key: []byte("grant-key-a"), AccessToken: "at-secret", RefreshToken: "rt-secret", ExpiresAt: 42}
	sealed, err := codec.SealOAuth(mine)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(sealed, []byte("secret")) {
		t.Fatal("sealed tokens hold a token in clear")
	}
	back := mailpush.OAuthGrant{Key: mine.Key}
	if err := codec.OpenOAuth(&back, sealed); err != nil || back.AccessToken != "at-secret" || back.RefreshToken != "rt-secret" || back.ExpiresAt != 42 {
		t.Fatalf("OpenOAuth = %+v, %v", back, err)
	}
	swapped := mailpush.OAuthGrant{Key: []byte("grant-key-b")}
	if err := codec.OpenOAuth(&swapped, sealed); err == nil || swapped.RefreshToken != "" {
		t.Fatalf("grant a's sealed tokens opened as grant b's: %+v", swapped)
	}
}
