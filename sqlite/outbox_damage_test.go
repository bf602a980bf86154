package sqlite_test

import (
	"context"
	"database/sql"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mailpush/mailpush"
	"github.com/mailpush/mailpush/sqlite"
	"github.com/mailpush/mailpush/storetest"
)

// TestDamagedOutboxRowIsBuried damages one queued push on disk and checks
// that claims go on: the damaged push becomes a dead letter, the others are
// claimed as usual.
func TestDamagedOutboxRowIsBuried(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "m.db")
	keys := storetest.Keyring(t)
	clock := storetest.NewClock()
	s, err := sqlite.Open(ctx, path, keys, clock)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	tn := &mailpush.Tenant{Name: "acme", MaxContent: mailpush.ContentSubjectSender}
	if err := s.CreateTenant(ctx, tn); err != nil {
		t.Fatal(err)
	}
	var pushes []*mailpush.Push
	for i, tok := range []string{strings.Repeat("a1", 32), strings.Repeat("b2", 32)} {
		reg := &mailpush.Registration{Device: mailpush.Device{Platform: mailpush.PlatformIOS, Token: tok, Environment: mailpush.EnvProduction},
			Content: mailpush.ContentSubject, Status: mailpush.StatusActive, ExpiresAt: clock.Now().Add(time.Hour)}
		mb := &mailpush.Mailbox{TenantID: tn.ID, AddressHash: keys.HashAddress(tn.ID, strings.Repeat("x", i+1)+"@example.com"),
			Source: mailpush.SourceEWS, Mode: mailpush.ModeSealed, Status: mailpush.StatusActive, Badge: mailpush.NoBadge}
		if _, err := s.Register(ctx, reg, mb, nil); err != nil {
			t.Fatal(err)
		}
		pushes = append(pushes, &mailpush.Push{ID: "push-" + tok[:2], TenantID: tn.ID, RegistrationID: reg.ID, MailboxID: reg.MailboxID,
			Kind: mailpush.PushAlert, Subject: "subject", Badge: 1, Seq: 1, CreatedAt: clock.Now()})
	}
	if err := s.EnqueuePushes(ctx, pushes); err != nil {
		t.Fatal(err)
	}
	raw, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	res, err := raw.Exec(`UPDATE outbox SET content = x'00112233445566778899aabbccddeeff0011223344' WHERE push_id = ?`, "push-a1")
	if n, _ := res.RowsAffected(); err != nil || n != 1 {
		t.Fatalf("damaging the row: %v (%d rows)", err, n)
	}

	got, err := s.ClaimPushes(ctx, clock.Now(), 10, time.Minute)
	if err != nil {
		t.Fatalf("a damaged row stopped the claim: %v", err)
	}
	if len(got) != 1 || got[0].Push.ID != "push-b2" || got[0].Push.Subject != "subject" {
		t.Fatalf("claimed %+v, want only push-b2", got)
	}
	dead, err := s.DeadLetters(ctx, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(dead) != 1 || dead[0].PushID != "push-a1" || !strings.Contains(dead[0].Reason, "cannot be opened") {
		t.Fatalf("dead letters = %+v, want push-a1 with a reason", dead)
	}
	if n, _ := s.OutboxDepth(ctx); n != 1 {
		t.Errorf("OutboxDepth = %d, want 1 (the damaged row left the outbox)", n)
	}
}
