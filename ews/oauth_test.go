package ews_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/mailpush/mailpush"
	"github.com/mailpush/mailpush/clocktest"
	"github.com/mailpush/mailpush/ews"
	"github.com/mailpush/mailpush/fake/ewsfake"
)

// TestOAuthRefresh: the client refreshes before expiry (by its clock),
// after a 401, follows the rotation, and reports a revoked grant as
// ErrRefresh and ErrUnauthorized without the tokens in the message.
func TestOAuthRefresh(t *testing.T) {
	clock := clocktest.New(time.Now())
	fake := ewsfake.New(ewsfake.Options{Clock: clock})
	defer fake.Close()
	fake.AddUser("alice@example.com", "alice", "pw")
	fake.Deliver("alice@example.com", "a", "x", "x@example.com")
	access, refresh, err := fake.IssueTokens("alice@example.com", "app", 10*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	c := &ews.Client{HTTP: fake.HTTPClient(), Clock: clock}
	ctx := context.Background()
	cred := mailpush.Credentials{AccessToken: access, RefreshToken: refresh, TokenURL: fake.TokenURL(), ClientID: "app", ExpiresAt: clock.Now().Add(10 * time.Minute).Unix()}
	ep := ews.Endpoint{URL: fake.URL(), Credentials: cred}
	if n, err := c.GetInboxUnread(ctx, ep); err != nil || n != 1 || fake.Requests("token") != 0 {
		t.Fatalf("fresh token: %d %v, %d refreshes", n, err, fake.Requests("token"))
	}
	clock.Advance(9*time.Minute + 30*time.Second) // within a minute of expiry
	if n, err := c.GetInboxUnread(ctx, ep); err != nil || n != 1 || fake.Requests("token") != 1 {
		t.Fatalf("before expiry: %d %v, %d refreshes", n, err, fake.Requests("token"))
	}
	cur := c.Current(cred)
	if cur.RefreshToken == refresh || cur.AccessToken == access {
		t.Fatal("the rotation is not kept")
	}
	// Unknown expiry, token withdrawn by the server: a 401 refreshes once.
	withdrawn := cred
	withdrawn.ExpiresAt = 0
	withdrawn.AccessToken = "eyJ0eXAi.unknown"
	a2, r2, _ := fake.IssueTokens("alice@example.com", "app", time.Hour)
	_ = a2
	withdrawn.RefreshToken = r2
	if n, err := c.GetInboxUnread(ctx, ews.Endpoint{URL: fake.URL(), Credentials: withdrawn}); err != nil || n != 1 || fake.Requests("token") != 2 {
		t.Fatalf("after a 401: %d %v, %d refreshes", n, err, fake.Requests("token"))
	}
	// Revoked.
	fake.RevokeTokens("alice@example.com")
	clock.Advance(time.Hour)
	_, err = c.GetInboxUnread(ctx, ep)
	if !errors.Is(err, ews.ErrRefresh) || !errors.Is(err, ews.ErrUnauthorized) || mailpush.ErrorCode(err) != mailpush.ECredentials {
		t.Fatalf("revoked: %v", err)
	}
	for _, s := range []string{refresh, cur.RefreshToken, r2} {
		if strings.Contains(err.Error(), s) || strings.Contains(mailpush.ErrorMessage(err), s) {
			t.Fatal("the error carries a token")
		}
	}
	if !strings.Contains(mailpush.ErrorMessage(err), "invalid_grant") {
		t.Errorf("message %q does not say what the endpoint answered", mailpush.ErrorMessage(err))
	}
}

func TestAllowedTokenURL(t *testing.T) {
	auth := []string{"https://login.example.com/contoso/"}
	for u, want := range map[string]bool{
		"https://login.example.com/contoso/oauth2/v2.0/token":      true,
		"https://LOGIN.example.com/contoso/oauth2/token":           true,
		"https://login.example.com/contosoevil/oauth2/token":       false,
		"https://login.example.com/other/oauth2/token":             false,
		"https://login.example.com/contoso/../other/oauth2/token":  false,
		"http://login.example.com/contoso/oauth2/token":            false,
		"https://user:pw@login.example.com/contoso/oauth2/token":   false,
		"https://login.example.com.evil.net/contoso/oauth2/token":  false,
		"https://login.example.com:8443/contoso/oauth2/v2.0/token": false,
	} {
		if got := ews.AllowedTokenURL(u, auth); got != want {
			t.Errorf("AllowedTokenURL(%s) = %v, want %v", u, got, want)
		}
	}
	if ews.AllowedTokenURL("https://login.example.com/contoso/t", nil) {
		t.Error("no authority configured allows a token URL")
	}
}
