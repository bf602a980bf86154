package storetest

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/mailpush/mailpush"
)

// testTokens: a tenant holds many tokens of different scopes; a token is
// found by its ID with its tenant and scope; listing is per tenant; a revoked
// token is gone at once, and one tenant cannot revoke another's.
func testTokens(t *testing.T, s mailpush.Store, e *env) {
	ctx := context.Background()
	acme := mustTenant(t, s, "acme")
	globex := mustTenant(t, s, "globex")

	app, _ := mailpush.NewToken(acme.ID, mailpush.ScopeApp)
	admin, _ := mailpush.NewToken(acme.ID, mailpush.ScopeAdmin)
	e.clock.Add(time.Second)
	other, _ := mailpush.NewToken(globex.ID, mailpush.ScopeBackend)
	for _, tok := range []*mailpush.Token{app, admin, other} {
		if err := s.CreateToken(ctx, tok); err != nil {
			t.Fatalf("CreateToken(%s): %v", tok.Scope, err)
		}
		if tok.CreatedAt.IsZero() {
			t.Errorf("CreateToken did not set CreatedAt")
		}
	}
	wantCode(t, "duplicate ID", s.CreateToken(ctx, &mailpush.Token{ID: app.ID, TenantID: acme.ID, Scope: mailpush.ScopeApp, SecretHash: []byte("x")}), mailpush.EConflict)
	orphan, _ := mailpush.NewToken("no-such-tenant", mailpush.ScopeApp)
	wantCode(t, "token of a missing tenant", s.CreateToken(ctx, orphan), mailpush.ENotFound)

	got, err := s.Token(ctx, admin.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.TenantID != acme.ID || got.Scope != mailpush.ScopeAdmin || !bytes.Equal(got.SecretHash, admin.SecretHash) || !got.CreatedAt.Equal(admin.CreatedAt) {
		t.Errorf("Token = %+v, want %+v", got, admin)
	}
	_, err = s.Token(ctx, "nope")
	wantCode(t, "missing token", err, mailpush.ENotFound)

	list, err := s.Tokens(ctx, acme.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 {
		t.Fatalf("Tokens(acme) = %d tokens, want 2", len(list))
	}
	for _, tok := range list {
		if tok.TenantID != acme.ID || (tok.ID != app.ID && tok.ID != admin.ID) {
			t.Errorf("Tokens(acme) holds %+v", tok)
		}
	}

	wantCode(t, "revoke another tenant's token", s.DeleteToken(ctx, globex.ID, app.ID), mailpush.ENotFound)
	if _, err := s.Token(ctx, app.ID); err != nil {
		t.Errorf("a refused revoke removed the token: %v", err)
	}
	if err := s.DeleteToken(ctx, acme.ID, app.ID); err != nil {
		t.Fatal(err)
	}
	_, err = s.Token(ctx, app.ID)
	wantCode(t, "revoked token", err, mailpush.ENotFound)
	wantCode(t, "revoke twice", s.DeleteToken(ctx, acme.ID, app.ID), mailpush.ENotFound)
	if list, _ := s.Tokens(ctx, acme.ID); len(list) != 1 || list[0].ID != admin.ID {
		t.Errorf("after revoke Tokens(acme) = %v", list)
	}
}

// testRegistrationBindingAndCount: a registration keeps its own
// subscription binding (device-subscribed mode), a re-registration of the
// device resets it, and CountRegistrations counts a tenant's live ones.
func testRegistrationBindingAndCount(t *testing.T, s mailpush.Store, e *env) {
	ctx := context.Background()
	tn := mustTenant(t, s, "acme")
	other := mustTenant(t, s, "globex")
	r1, mb := newReg(e, tn.ID, "alice@example.com", "aa01")
	if _, err := s.Register(ctx, r1, mb); err != nil {
		t.Fatal(err)
	}
	r2, mb2 := newReg(e, tn.ID, "bob@example.com", "aa02")
	if _, err := s.Register(ctx, r2, mb2); err != nil {
		t.Fatal(err)
	}
	r3, mb3 := newReg(e, other.ID, "carol@example.com", "aa03")
	if _, err := s.Register(ctx, r3, mb3); err != nil {
		t.Fatal(err)
	}
	if _, err := s.UpdateRegistration(ctx, tn.ID, r1.ID, func(r *mailpush.Registration) error {
		r.SubscriptionID = "sub-of-r1"
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Registration(ctx, tn.ID, r1.ID); got.SubscriptionID != "sub-of-r1" {
		t.Errorf("SubscriptionID = %q after update", got.SubscriptionID)
	}
	if got, _ := s.Registration(ctx, tn.ID, r2.ID); got.SubscriptionID != "" {
		t.Errorf("another registration got the binding: %q", got.SubscriptionID)
	}
	again, mbAgain := newReg(e, tn.ID, "alice@example.com", "aa01")
	if _, err := s.Register(ctx, again, mbAgain); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Registration(ctx, tn.ID, r1.ID); got.SubscriptionID != "" {
		t.Errorf("a re-registration kept the old binding %q", got.SubscriptionID)
	}
	if n, err := s.CountRegistrations(ctx, tn.ID); err != nil || n != 2 {
		t.Errorf("CountRegistrations(acme) = %d, %v; want 2", n, err)
	}
	if _, err := s.UpdateRegistration(ctx, tn.ID, r2.ID, func(r *mailpush.Registration) error {
		r.Status = mailpush.StatusInactive
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if n, _ := s.CountRegistrations(ctx, tn.ID); n != 1 {
		t.Errorf("CountRegistrations(acme) = %d after one became inactive, want 1", n)
	}
	if n, _ := s.CountRegistrations(ctx, other.ID); n != 1 {
		t.Errorf("CountRegistrations(globex) = %d, want 1", n)
	}
}
