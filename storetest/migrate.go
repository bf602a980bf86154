package storetest

import (
	"context"
	"testing"

	"github.com/mailpush/mailpush"
)

// testMigration checks the MigrationStore: listing a tenant's live mailboxes
// of a source, creating the target mailbox once, and moving registrations
// (IDs kept, a device already on the target not doubled, the old mailbox
// inactive, a second move a no-op, nothing across tenants).
func testMigration(t *testing.T, s mailpush.Store, e *env) {
	ctx := context.Background()
	acme, other := mustTenant(t, s, "acme"), mustTenant(t, s, "other")
	var ews []*mailpush.Mailbox
	var regs []*mailpush.Registration
	for i, a := range []string{"alice@example.com", "bob@example.com", "carol@example.com"} {
		r, mb := newReg(e, acme.ID, a, []string{"aa01", "bb01", "cc01"}[i])
		m, err := s.Register(ctx, r, mb, nil)
		if err != nil {
			t.Fatal(err)
		}
		ews, regs = append(ews, m), append(regs, r)
	}
	r2, mb2 := newReg(e, acme.ID, "alice@example.com", "aa02")
	if _, err := s.Register(ctx, r2, mb2, nil); err != nil {
		t.Fatal(err)
	}
	ro, mbo := newReg(e, other.ID, "alice@example.com", "dd01")
	otherMB, err := s.Register(ctx, ro, mbo, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Listing pages by ID, only the tenant's, only the source's.
	var seen []string
	after := ""
	for {
		page, err := s.TenantMailboxes(ctx, acme.ID, mailpush.SourceEWS, after, 2)
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 {
			break
		}
		for _, m := range page {
			if m.TenantID != acme.ID || m.Source != mailpush.SourceEWS {
				t.Errorf("TenantMailboxes listed %+v", m)
			}
			seen = append(seen, m.ID)
		}
		after = page[len(page)-1].ID
	}
	if len(seen) != 3 {
		t.Fatalf("TenantMailboxes listed %d mailboxes, want 3", len(seen))
	}
	if got, err := s.TenantMailboxes(ctx, acme.ID, mailpush.SourceGraph, "", 10); err != nil || len(got) != 0 {
		t.Errorf("graph mailboxes = %v, %v; want none", got, err)
	}
	if _, err := s.TenantMailboxes(ctx, acme.ID, mailpush.SourceEWS, "", 0); err == nil {
		t.Error("TenantMailboxes with limit 0 did not fail")
	}

	// EnsureMailbox creates the Graph mailbox once.
	alice := ews[0]
	want := &mailpush.Mailbox{TenantID: acme.ID, AddressHash: alice.AddressHash, Source: mailpush.SourceGraph, Mode: mailpush.ModeService, Badge: mailpush.NoBadge, Status: mailpush.StatusPending}
	g, err := s.EnsureMailbox(ctx, want)
	if err != nil {
		t.Fatal(err)
	}
	again, err := s.EnsureMailbox(ctx, &mailpush.Mailbox{TenantID: acme.ID, AddressHash: alice.AddressHash, Source: mailpush.SourceGraph, Mode: mailpush.ModeService, Status: mailpush.StatusActive})
	if err != nil || again.ID != g.ID || again.Status != mailpush.StatusPending {
		t.Fatalf("second EnsureMailbox = %+v, %v; want the first one (%s) unchanged", again, err, g.ID)
	}
	// One of alice's devices is on the Graph mailbox already.
	rg, mbg := newReg(e, acme.ID, "alice@example.com", "aa02")
	mbg.Source, mbg.Mode, mbg.ServerURL = mailpush.SourceGraph, mailpush.ModeService, ""
	if _, err := s.Register(ctx, rg, mbg, nil); err != nil {
		t.Fatal(err)
	}

	if _, err := s.MoveRegistrations(ctx, alice.ID, otherMB.ID); mailpush.ErrorCode(err) != mailpush.EInvalid {
		t.Errorf("move to another tenant's mailbox: %v, want invalid", err)
	}
	if _, err := s.MoveRegistrations(ctx, alice.ID, "no-such-mailbox"); mailpush.ErrorCode(err) != mailpush.ENotFound {
		t.Errorf("move to a missing mailbox: %v, want not_found", err)
	}
	if _, err := s.UpdateMailbox(ctx, alice.ID, func(m *mailpush.Mailbox) error { m.Seq = 41; return nil }); err != nil {
		t.Fatal(err)
	}
	n, err := s.MoveRegistrations(ctx, alice.ID, g.ID)
	if err != nil || n != 1 {
		t.Fatalf("MoveRegistrations = %d, %v; want 1 moved (the other device was there already)", n, err)
	}
	moved, err := s.Registration(ctx, acme.ID, regs[0].ID)
	if err != nil || moved.MailboxID != g.ID || moved.Device.Token != "aa01" {
		t.Fatalf("moved registration = %+v, %v; want same ID on %s", moved, err, g.ID)
	}
	if _, err := s.Registration(ctx, acme.ID, r2.ID); mailpush.ErrorCode(err) != mailpush.ENotFound {
		t.Errorf("the device's EWS duplicate: %v, want deleted", err)
	}
	if live, err := s.ActiveRegistrations(ctx, g.ID); err != nil || len(live) != 2 {
		t.Errorf("graph mailbox has %d registrations (%v), want 2", len(live), err)
	}
	if a, err := s.MailboxAudience(ctx, g.ID); err != nil || a.Registrations != 2 {
		t.Errorf("graph mailbox audience = %+v (%v), want 2 registrations", a, err)
	}
	if a, err := s.MailboxAudience(ctx, alice.ID); err != nil || a.Registrations != 0 {
		t.Errorf("old mailbox audience = %+v (%v), want none", a, err)
	}
	if gm, err := s.Mailbox(ctx, g.ID); err != nil || gm.Seq != 41 {
		t.Errorf("graph mailbox seq = %d (%v), want raised to the old mailbox's 41", gm.Seq, err)
	}
	if old, err := s.Mailbox(ctx, alice.ID); err != nil || old.Status != mailpush.StatusInactive {
		t.Errorf("old mailbox = %+v, %v; want inactive", old, err)
	}
	if n, err := s.MoveRegistrations(ctx, alice.ID, g.ID); err != nil || n != 0 {
		t.Errorf("second move = %d, %v; want 0, nil", n, err)
	}
	if c, err := s.CountRegistrations(ctx, acme.ID); err != nil || c != 4 {
		t.Errorf("acme counts %d registrations (%v), want 4", c, err)
	}
	if left, err := s.TenantMailboxes(ctx, acme.ID, mailpush.SourceEWS, "", 10); err != nil || len(left) != 2 {
		t.Errorf("EWS mailboxes left = %d (%v), want 2", len(left), err)
	}
	if o, err := s.ActiveRegistrations(ctx, otherMB.ID); err != nil || len(o) != 1 {
		t.Errorf("the other tenant's mailbox has %d registrations (%v), want 1", len(o), err)
	}
}
