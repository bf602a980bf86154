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
