package storetest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"testing"
	"time"

	"github.com/mailpush/mailpush"
)

// testConsoleSessions: a session is found by its hash while it is alive,
// each use moves its last use, the idle and the absolute timeout end it
// (and delete it), sign-out deletes it, and its display is not stored in
// clear.
func testConsoleSessions(t *testing.T, s mailpush.Store, e *env) {
	ctx := context.Background()
	const idle, maxAge = 30 * time.Minute, 12 * time.Hour
	touch := func(h []byte) (*mailpush.ConsoleSession, error) {
		now := e.clock.Now()
		return s.TouchConsoleSession(ctx, h, now, now.Add(-idle), now.Add(-maxAge))
	}
	create := func(cookie, display string) []byte {
		t.Helper()
		h := sha256.Sum256([]byte(cookie))
		now := e.clock.Now()
		cs := &mailpush.ConsoleSession{IDHash: h[:], Actor: "oidc:abc", Display: display, TenantID: "", TokenID: "tok1", CreatedAt: now, LastSeen: now}
		if err := s.CreateConsoleSession(ctx, cs, now.Add(-idle), now.Add(-maxAge)); err != nil {
			t.Fatal(err)
		}
		return h[:]
	}
	a := create("cookie-a", "ops@example.com")
	got, err := touch(a)
	if err != nil || got.Actor != "oidc:abc" || got.Display != "ops@example.com" || got.TokenID != "tok1" || !got.CreatedAt.Equal(e.clock.Now()) || !bytes.Equal(got.IDHash, a) {
		t.Fatalf("TouchConsoleSession = %+v, %v", got, err)
	}
	other := sha256.Sum256([]byte("forged"))
	_, err = touch(other[:])
	wantCode(t, "a session never created", err, mailpush.ENotFound)

	// Used every 29 minutes it stays; 31 idle minutes end it.
	for range 3 {
		e.clock.Add(29 * time.Minute)
		if _, err := touch(a); err != nil {
			t.Fatalf("a session used every 29 minutes ended: %v", err)
		}
	}
	e.clock.Add(31 * time.Minute)
	_, err = touch(a)
	wantCode(t, "an idle session", err, mailpush.ENotFound)
	e.clock.Add(-31 * time.Minute) // deleted, not just refused: back in time it is still gone
	_, err = touch(a)
	wantCode(t, "an idle session, once refused", err, mailpush.ENotFound)
	e.clock.Add(31 * time.Minute)

	// Kept busy, it still ends after maxAge.
	b := create("cookie-b", "")
	for range int(maxAge / (20 * time.Minute)) {
		e.clock.Add(20 * time.Minute)
		touch(b)
	}
	e.clock.Add(20 * time.Minute)
	_, err = touch(b)
	wantCode(t, "a session past the absolute timeout", err, mailpush.ENotFound)

	// Sign-out deletes; deleting twice is no error.
	c := create("cookie-c", "")
	if err := s.DeleteConsoleSession(ctx, c); err != nil {
		t.Fatal(err)
	}
	_, err = touch(c)
	wantCode(t, "a signed-out session", err, mailpush.ENotFound)
	if err := s.DeleteConsoleSession(ctx, c); err != nil {
		t.Errorf("deleting a deleted session: %v", err)
	}
}
