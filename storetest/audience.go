package storetest

import (
	"context"
	"fmt"
	"testing"

	"github.com/mailpush/mailpush"
)

// testMailboxAudience: how many active or pending registrations, and
// whether one may show content, without loading them.
func testMailboxAudience(t *testing.T, s mailpush.Store, e *env) {
	ctx := context.Background()
	regs := outboxFixture(t, s, e, 3)
	a, err := s.MailboxAudience(ctx, regs[0].MailboxID)
	if err != nil || a.Registrations != 3 || a.WantsContent {
		t.Fatalf("MailboxAudience = %+v, %v; want 3 registrations, no content", a, err)
	}
	if _, err := s.UpdateRegistration(ctx, regs[0].TenantID, regs[0].ID, func(r *mailpush.Registration) error {
		r.Content, r.Status = mailpush.ContentSubject, mailpush.StatusPending
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.UpdateRegistration(ctx, regs[1].TenantID, regs[1].ID, func(r *mailpush.Registration) error {
		r.Status = mailpush.StatusInactive
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if a, err := s.MailboxAudience(ctx, regs[0].MailboxID); err != nil || a.Registrations != 2 || !a.WantsContent {
		t.Errorf("MailboxAudience = %+v, %v; want 2 registrations (active and pending), content wanted", a, err)
	}
	// Deleting the one that may show content, then setting another one's
	// content back and forth.
	if err := s.DeleteRegistration(ctx, regs[0].TenantID, regs[0].ID); err != nil {
		t.Fatal(err)
	}
	if a, err := s.MailboxAudience(ctx, regs[2].MailboxID); err != nil || a.Registrations != 1 || a.WantsContent {
		t.Errorf("after a delete: MailboxAudience = %+v, %v; want 1 registration, no content", a, err)
	}
	for _, c := range []mailpush.ContentMode{mailpush.ContentSubjectSender, mailpush.ContentBadge} {
		if _, err := s.UpdateRegistration(ctx, regs[2].TenantID, regs[2].ID, func(r *mailpush.Registration) error {
			r.Content = c
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		if a, err := s.MailboxAudience(ctx, regs[2].MailboxID); err != nil || a.Registrations != 1 || a.WantsContent != (c != mailpush.ContentBadge) {
			t.Errorf("content %s: MailboxAudience = %+v, %v", c, a, err)
		}
	}
	if a, err := s.MailboxAudience(ctx, "no-such-mailbox"); err != nil || a.Registrations != 0 {
		t.Errorf("MailboxAudience of nothing = %+v, %v", a, err)
	}
}

// testCountRegistrationsFollowsChanges: the tenant's live count follows
// deletions and every status change, whichever way (a store may keep it
// as a counter instead of counting).
func testCountRegistrationsFollowsChanges(t *testing.T, s mailpush.Store, e *env) {
	ctx := context.Background()
	regs := outboxFixture(t, s, e, 4) // active
	tenantID := regs[0].TenantID
	count := func(want int, when string) {
		t.Helper()
		if n, err := s.CountRegistrations(ctx, tenantID); err != nil || n != want {
			t.Errorf("%s: CountRegistrations = %d, %v; want %d", when, n, err, want)
		}
	}
	count(4, "four active")
	set := func(r *mailpush.Registration, st mailpush.Status) {
		t.Helper()
		if _, err := s.UpdateRegistration(ctx, tenantID, r.ID, func(r *mailpush.Registration) error {
			r.Status = st
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	set(regs[0], mailpush.StatusPending)
	count(4, "one pending")
	set(regs[0], mailpush.StatusInactive)
	count(3, "one inactive")
	set(regs[0], mailpush.StatusInactive)
	count(3, "inactive again")
	set(regs[0], mailpush.StatusActive)
	count(4, "active again")
	if err := s.DeleteRegistration(ctx, tenantID, regs[1].ID); err != nil {
		t.Fatal(err)
	}
	count(3, "one deleted")
	set(regs[2], mailpush.StatusInactive)
	if err := s.DeleteRegistration(ctx, tenantID, regs[2].ID); err != nil {
		t.Fatal(err)
	}
	count(2, "an inactive one deleted")
}

// testRegisterCheck: Register's check sees, inside the write, the mailbox
// (nil when new), its audience, the device's previous registration of any
// status and the tenant's live count; its refusal writes nothing and comes
// back as it is.
func testRegisterCheck(t *testing.T, s mailpush.Store, e *env) {
	ctx := context.Background()
	tn := mustTenant(t, s, "acme")
	var got []mailpush.Join
	record := func(j mailpush.Join) error { got = append(got, j); return nil }

	r1, mb := newReg(e, tn.ID, "alice@example.com", fmt.Sprintf("%064x", 1))
	if _, err := s.Register(ctx, r1, mb, record); err != nil {
		t.Fatal(err)
	}
	if j := got[0]; j.Mailbox != nil || j.Previous != nil || j.Audience.Registrations != 0 || j.TenantRegistrations != 0 {
		t.Errorf("first registration of a new mailbox: check saw %+v; want no mailbox, no previous, counts 0", j)
	}
	r2, mb2 := newReg(e, tn.ID, "alice@example.com", fmt.Sprintf("%064x", 2))
	r2.Content = mailpush.ContentSubject
	if _, err := s.Register(ctx, r2, mb2, record); err != nil {
		t.Fatal(err)
	}
	if j := got[1]; j.Mailbox == nil || j.Mailbox.ID != r1.MailboxID || j.Previous != nil || j.Audience.Registrations != 1 || j.TenantRegistrations != 1 {
		t.Errorf("second device: check saw %+v; want mailbox %s, no previous, 1 registration in the mailbox and the tenant", j, r1.MailboxID)
	}

	// The same device again: its registration is the previous one, token opened.
	if _, err := s.UpdateRegistration(ctx, tn.ID, r1.ID, func(r *mailpush.Registration) error {
		r.Status = mailpush.StatusInactive
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	again, mb3 := newReg(e, tn.ID, "alice@example.com", fmt.Sprintf("%064x", 1))
	if _, err := s.Register(ctx, again, mb3, record); err != nil {
		t.Fatal(err)
	}
	j := got[2]
	if j.Previous == nil || j.Previous.ID != r1.ID || j.Previous.Status != mailpush.StatusInactive || j.Previous.Device.Token != r1.Device.Token {
		t.Errorf("same device: previous = %+v; want %s, inactive, its token", j.Previous, r1.ID)
	}
	if j.Audience.Registrations != 1 || !j.Audience.WantsContent || j.TenantRegistrations != 1 {
		t.Errorf("same device: audience %+v, tenant %d; want 1 live wanting content, tenant 1", j.Audience, j.TenantRegistrations)
	}
	if again.ID != r1.ID {
		t.Errorf("replacement got ID %s; want %s kept", again.ID, r1.ID)
	}

	// The same token in another mailbox is another device's registration.
	other, mbOther := newReg(e, tn.ID, "bob@example.com", fmt.Sprintf("%064x", 1))
	if _, err := s.Register(ctx, other, mbOther, record); err != nil {
		t.Fatal(err)
	}
	if j := got[3]; j.Mailbox != nil || j.Previous != nil || j.TenantRegistrations != 2 {
		t.Errorf("same token, another mailbox: check saw %+v; want a new mailbox, no previous, tenant 2", j)
	}
	if other.ID == r1.ID {
		t.Errorf("same token in another mailbox took registration %s", r1.ID)
	}

	// A refusal writes nothing, neither a new mailbox nor a replacement.
	refusal := mailpush.Errorf(mailpush.EQuota, "no")
	refuse := func(mailpush.Join) error { return refusal }
	r4, mb4 := newReg(e, tn.ID, "carol@example.com", fmt.Sprintf("%064x", 4))
	if _, err := s.Register(ctx, r4, mb4, refuse); err != refusal {
		t.Errorf("refused: err = %v; want the check's own error", err)
	}
	if _, err := s.MailboxByAddress(ctx, tn.ID, mb4.AddressHash, mb4.Source); mailpush.ErrorCode(err) != mailpush.ENotFound {
		t.Errorf("refused registration's mailbox: err = %v; want not found (nothing written)", err)
	}
	r5, mb5 := newReg(e, tn.ID, "alice@example.com", fmt.Sprintf("%064x", 2))
	r5.Content, r5.Status = mailpush.ContentBadge, mailpush.StatusActive
	if _, err := s.Register(ctx, r5, mb5, refuse); err != refusal {
		t.Errorf("refused replacement: err = %v; want the check's own error", err)
	}
	if r, err := s.Registration(ctx, tn.ID, r2.ID); err != nil || r.Content != mailpush.ContentSubject || r.Status != r2.Status {
		t.Errorf("after a refused replacement: %+v, %v; want it unchanged", r, err)
	}
	if n, err := s.CountRegistrations(ctx, tn.ID); err != nil || n != 3 {
		t.Errorf("CountRegistrations = %d, %v; want 3", n, err)
	}
}
