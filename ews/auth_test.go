package ews_test

import (
	"context"
	"errors"
	"testing"

	"github.com/mailpush/mailpush"
	"github.com/mailpush/mailpush/ews"
	"github.com/mailpush/mailpush/fake/ewsfake"
)

func TestNTLM(t *testing.T) {
	fake := ewsfake.New(ewsfake.Options{})
	defer fake.Close()
	fake.AddNTLMUser("alice@example.com", `EXAMPLE\alice`, "alice's password")
	fake.AddNTLMUser("bob@example.com", "bob@example.com", "bob's password")
	fake.Deliver("alice@example.com", "a", "x", "x@example.com")
	fake.Deliver("alice@example.com", "b", "x", "x@example.com")
	fake.Deliver("bob@example.com", "c", "x", "x@example.com")
	c := &ews.Client{HTTP: fake.HTTPClient()}
	ctx := context.Background()
	alice := ews.Endpoint{URL: fake.URL(), Credentials: mailpush.Credentials{Username: `EXAMPLE\alice`, Password: "alice's password"}}
	bob := ews.Endpoint{URL: fake.URL(), Credentials: mailpush.Credentials{Username: "bob@example.com", Password: "bob's password"}}
	// Interleaved: an NTLM connection authenticated for one user must never
	// serve the other.
	for range 3 {
		for _, tc := range []struct {
			ep   ews.Endpoint
			want int
		}{{alice, 2}, {bob, 1}} {
			got, err := c.GetInboxUnread(ctx, tc.ep)
			if err != nil || got != tc.want {
				t.Fatalf("GetInboxUnread(%s) = %d, %v; want %d", tc.ep.Credentials.Username, got, err, tc.want)
			}
		}
	}
	if fake.Requests("GetFolder") < 6 {
		t.Errorf("GetFolder requests = %d", fake.Requests("GetFolder"))
	}
	// A wrong password does not ride alice's authenticated connection.
	wrong := alice
	wrong.Credentials.Password = "guess"
	if _, err := c.GetInboxUnread(ctx, wrong); !errors.Is(err, ews.ErrUnauthorized) {
		t.Errorf("wrong password: %v, want ErrUnauthorized", err)
	}
	// Subscribing works over NTLM too.
	if _, err := c.Subscribe(ctx, bob, ews.SubscribeRequest{StatusFrequency: 1, URL: "https://127.0.0.1:1/x"}); err != nil {
		t.Errorf("Subscribe over NTLM: %v", err)
	}
}

func TestImpersonationAndAffinity(t *testing.T) {
	fake := ewsfake.New(ewsfake.Options{})
	defer fake.Close()
	fake.AddUser("alice@example.com", `EXAMPLE\alice`, "alice's password")
	fake.AddNTLMUser("svc-mailpush@example.com", `EXAMPLE\svc-mailpush`, "service secret")
	fake.AddUser("mallory@example.com", `EXAMPLE\mallory`, "mallory's password")
	if err := fake.AllowImpersonation(`EXAMPLE\svc-mailpush`); err != nil {
		t.Fatal(err)
	}
	fake.Deliver("alice@example.com", "a", "x", "x@example.com")
	c := &ews.Client{HTTP: fake.HTTPClient()}
	ctx := context.Background()
	svc := ews.Endpoint{URL: fake.URL(), Credentials: mailpush.Credentials{Username: `EXAMPLE\svc-mailpush`, Password: "service secret"},
		Impersonate: "alice@example.com", Affinity: "mailbox-1"}
	for range 2 {
		if got, err := c.GetInboxUnread(ctx, svc); err != nil || got != 1 {
			t.Fatalf("impersonated GetInboxUnread = %d, %v; want alice's 1", got, err)
		}
	}
	if n := fake.Requests("Impersonated"); n != 2 {
		t.Errorf("impersonated requests = %d, want 2", n)
	}
	if n := fake.Requests("AffinityCookie"); n != 1 {
		t.Errorf("requests carrying the affinity cookie = %d, want 1 (the second)", n)
	}
	// Without the ApplicationImpersonation role: refused.
	m := ews.Endpoint{URL: fake.URL(), Credentials: mailpush.Credentials{Username: `EXAMPLE\mallory`, Password: "mallory's password"}, Impersonate: "alice@example.com"}
	_, err := c.GetInboxUnread(ctx, m)
	var re *ews.ResponseError
	if !errors.As(err, &re) || re.Code != "ErrorImpersonateUserDenied" {
		t.Errorf("impersonation without the role: %v", err)
	}
}
