package storetest

import (
	"context"
	"testing"

	"github.com/mailpush/mailpush"
)

// testMailboxAddress: a mailbox keeps its address (sealed, bound to its ID),
// set from the registration's Address when the mailbox is created, so that
// work no request brings it to (a Graph event resolved on another node, the
// cut-over) finds it; reading a mailbox never sets Address. A mailbox
// created without one learns it in an update; an update that does not
// know it (or clears it in memory) keeps it. EnsureMailbox keeps it too.
func testMailboxAddress(t *testing.T, s mailpush.Store, e *env) {
	ctx := context.Background()
	tn := mustTenant(t, s, "acme")
	r, mb := newReg(e, tn.ID, "alice@example.com", "aa01")
	mb.Address = "alice@example.com"
	m, err := s.Register(ctx, r, mb, nil)
	if err != nil {
		t.Fatal(err)
	}
	got, err := s.Mailbox(ctx, m.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.StoredAddress != "alice@example.com" || got.Address != "" {
		t.Fatalf("Mailbox after Register with an address: StoredAddress %q, Address %q; want the address kept, Address empty", got.StoredAddress, got.Address)
	}
	// A second registration of the mailbox without the address keeps it.
	r2, mb2 := newReg(e, tn.ID, "alice@example.com", "aa02")
	if _, err := s.Register(ctx, r2, mb2, nil); err != nil {
		t.Fatal(err)
	}
	// Updates that do not touch it, or clear it in memory, keep it.
	if _, err := s.UpdateMailbox(ctx, m.ID, func(m *mailpush.Mailbox) error { m.Seq++; return nil }); err != nil {
		t.Fatal(err)
	}
	if _, err := s.UpdateMailbox(ctx, m.ID, func(m *mailpush.Mailbox) error { m.StoredAddress = ""; return nil }); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.MailboxByAddress(ctx, tn.ID, mb.AddressHash, mailpush.SourceEWS); got == nil || got.StoredAddress != "alice@example.com" {
		t.Fatalf("MailboxByAddress after updates = %+v; want the address kept", got)
	}

	// Created without it (a mailbox of before), learned in an update.
	r3, mb3 := newReg(e, tn.ID, "bob@example.com", "bb01")
	m3, err := s.Register(ctx, r3, mb3, nil)
	if err != nil {
		t.Fatal(err)
	}
	if m3.StoredAddress != "" {
		t.Fatalf("Register without an address: StoredAddress %q", m3.StoredAddress)
	}
	if _, err := s.UpdateMailbox(ctx, m3.ID, func(m *mailpush.Mailbox) error { m.StoredAddress = "bob@example.com"; return nil }); err != nil {
		t.Fatal(err)
	}
	page, err := s.TenantMailboxes(ctx, tn.ID, mailpush.SourceEWS, "", 10)
	if err != nil {
		t.Fatal(err)
	}
	found := map[string]string{}
	for _, p := range page {
		found[p.ID] = p.StoredAddress
	}
	if found[m.ID] != "alice@example.com" || found[m3.ID] != "bob@example.com" {
		t.Fatalf("TenantMailboxes' addresses = %v; want alice's and bob's", found)
	}

	// An event's Record learns it too (one write with the event).
	r4, mb4 := newReg(e, tn.ID, "carol@example.com", "cc01")
	m4, err := s.Register(ctx, r4, mb4, nil)
	if err != nil {
		t.Fatal(err)
	}
	ev := eventFor(r4, mailpush.EventChanged, 1, 0)
	ev.Record = func(m *mailpush.Mailbox) bool {
		m.Seq++
		if m.StoredAddress == "" {
			m.StoredAddress = "carol@example.com"
		}
		return true
	}
	enqueueEvents(t, s, ev)
	if got, _ := s.Mailbox(ctx, m4.ID); got == nil || got.StoredAddress != "carol@example.com" {
		t.Fatalf("Mailbox after an event's Record set the address = %+v", got)
	}

	// EnsureMailbox (the cut-over's) keeps the address it is given.
	g, err := s.EnsureMailbox(ctx, &mailpush.Mailbox{TenantID: tn.ID, AddressHash: mb.AddressHash, Source: mailpush.SourceGraph,
		Mode: mailpush.ModeService, Badge: mailpush.NoBadge, Status: mailpush.StatusPending, Address: "alice@example.com"})
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Mailbox(ctx, g.ID); got == nil || got.StoredAddress != "alice@example.com" {
		t.Fatalf("Mailbox made by EnsureMailbox = %+v; want its address kept", got)
	}
}

// testOutboxEventsRef: an event's Ref (what its resolver fetches) comes
// back with the claim, sealed at rest with its content.
func testOutboxEventsRef(t *testing.T, s mailpush.Store, e *env) {
	regs := outboxFixture(t, s, e, 1)
	ev := eventFor(regs[0], mailpush.EventNewMail, mailpush.NoBadge, 1)
	ev.Unresolved = true
	ev.Event.Ref = "AAMkAGI2TG93AAA="
	enqueueEvents(t, s, ev)
	got := claimEvents(t, s, e, 10)
	if len(got) != 1 || got[0].Event.Ref != "AAMkAGI2TG93AAA=" || !got[0].Unresolved {
		t.Fatalf("claimed %+v; want the one unresolved event with its Ref", got)
	}
}
