package storetest

import (
	"bytes"
	"context"
	"reflect"
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

	both, joined := s.(mailpush.TokenTenantReader)
	if joined {
		// The one-read path of every API request answers as Token and
		// Tenant do.
		acme.AllowedHosts = []string{"mail.acme.example", "*.acme.example"}
		if err := s.UpdateTenant(ctx, acme); err != nil {
			t.Fatal(err)
		}
		tok, tn, err := both.TokenAndTenant(ctx, admin.ID)
		if err != nil {
			t.Fatal(err)
		}
		wantTok, _ := s.Token(ctx, admin.ID)
		wantTn, _ := s.Tenant(ctx, acme.ID)
		if !reflect.DeepEqual(tok, wantTok) || !reflect.DeepEqual(tn, wantTn) {
			t.Errorf("TokenAndTenant = %+v, %+v; want %+v, %+v", tok, tn, wantTok, wantTn)
		}
		_, _, err = both.TokenAndTenant(ctx, "nope")
		wantCode(t, "TokenAndTenant of a missing token", err, mailpush.ENotFound)
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
	if joined {
		_, _, err = both.TokenAndTenant(ctx, app.ID)
		wantCode(t, "TokenAndTenant of a revoked token", err, mailpush.ENotFound)
	}
	wantCode(t, "revoke twice", s.DeleteToken(ctx, acme.ID, app.ID), mailpush.ENotFound)
	if list, _ := s.Tokens(ctx, acme.ID); len(list) != 1 || list[0].ID != admin.ID {
		t.Errorf("after revoke Tokens(acme) = %v", list)
	}
}

// testCountRegistrations: CountRegistrations counts a tenant's live
// (active or pending) registrations, for its quota.
func testCountRegistrations(t *testing.T, s mailpush.Store, e *env) {
	ctx := context.Background()
	tn := mustTenant(t, s, "acme")
	other := mustTenant(t, s, "globex")
	var regs []*mailpush.Registration
	for i, c := range []struct{ tenant, address, token string }{
		{tn.ID, "alice@example.com", "aa01"}, {tn.ID, "alice@example.com", "aa02"}, {tn.ID, "bob@example.com", "aa03"}, {other.ID, "carol@example.com", "aa04"},
	} {
		r, mb := newReg(e, c.tenant, c.address, c.token)
		if _, err := s.Register(ctx, r, mb, nil); err != nil {
			t.Fatalf("register %d: %v", i, err)
		}
		regs = append(regs, r)
	}
	again, mb := newReg(e, tn.ID, "alice@example.com", "aa01") // a replacement
	if _, err := s.Register(ctx, again, mb, nil); err != nil {
		t.Fatal(err)
	}
	if n, err := s.CountRegistrations(ctx, tn.ID); err != nil || n != 3 {
		t.Errorf("CountRegistrations(acme) = %d, %v; want 3", n, err)
	}
	if _, err := s.UpdateRegistration(ctx, tn.ID, regs[2].ID, func(r *mailpush.Registration) error {
		r.Status = mailpush.StatusInactive
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if n, _ := s.CountRegistrations(ctx, tn.ID); n != 2 {
		t.Errorf("CountRegistrations(acme) = %d after one became inactive, want 2", n)
	}
	if n, _ := s.CountRegistrations(ctx, other.ID); n != 1 {
		t.Errorf("CountRegistrations(globex) = %d, want 1", n)
	}
	if _, err := s.UpdateRegistration(ctx, tn.ID, regs[2].ID, func(r *mailpush.Registration) error {
		r.Status = mailpush.StatusPending // revived by a check-in
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteRegistration(ctx, tn.ID, regs[0].ID); err != nil {
		t.Fatal(err)
	}
	if n, _ := s.CountRegistrations(ctx, tn.ID); n != 2 {
		t.Errorf("CountRegistrations(acme) = %d after a revival and a delete, want 2", n)
	}
}
