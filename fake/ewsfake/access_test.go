package ewsfake_test

import (
	"context"
	"errors"
	"testing"

	"github.com/mailpush/mailpush"
	"github.com/mailpush/mailpush/ews"
	"github.com/mailpush/mailpush/fake/ewsfake"
)

// TestMailboxAccess: naming a mailbox's Inbox (t:Mailbox/t:EmailAddress)
// works for its owner and its delegates; anyone else gets what Exchange
// answers: ErrorAccessDenied for another's mailbox, ErrorNonExistentMailbox
// for an address without one.
func TestMailboxAccess(t *testing.T) {
	f, c, alice := newFake(t, ewsfake.Options{TimeScale: 0.001})
	f.AddUser("bob@contoso.com", `CONTOSO\bob`, "bob-pw")
	f.AddUser("carol@contoso.com", `CONTOSO\carol`, "carol-pw")
	if err := f.AddDelegate(address, "carol@contoso.com"); err != nil {
		t.Fatal(err)
	}
	f.Deliver(address, "Hi", "Dan", "dan@contoso.com")
	bob := ews.Endpoint{URL: f.URL(), Credentials: mailpush.Credentials{Username: `CONTOSO\bob`, Password: "bob-pw"}}
	carol := ews.Endpoint{URL: f.URL(), Credentials: mailpush.Credentials{Username: `CONTOSO\carol`, Password: "carol-pw"}}
	l := newListener(t, nil)
	ctx := context.Background()
	for _, tc := range []struct {
		name    string
		ep      ews.Endpoint
		mailbox string
		code    string // "" means allowed
	}{
		{"owner, own address", alice, address, ""},
		{"owner, no address", alice, "", ""},
		{"delegate", carol, address, ""},
		{"another user", bob, address, "ErrorAccessDenied"},
		{"no such mailbox", bob, "nobody@contoso.com", "ErrorNonExistentMailbox"},
	} {
		ep := tc.ep
		ep.Mailbox = tc.mailbox
		unread, err := c.GetInboxUnread(ctx, ep)
		_, serr := c.Subscribe(ctx, ep, ews.SubscribeRequest{StatusFrequency: 1, URL: l.srv.URL})
		for op, err := range map[string]error{"GetFolder": err, "Subscribe": serr} {
			var re *ews.ResponseError
			switch {
			case tc.code == "" && err != nil:
				t.Errorf("%s: %s: %v", tc.name, op, err)
			case tc.code != "" && (!errors.As(err, &re) || re.Code != tc.code):
				t.Errorf("%s: %s: %v, want %s", tc.name, op, err, tc.code)
			}
		}
		if tc.code == "" && tc.mailbox == address && unread != 1 {
			t.Errorf("%s: unread %d, want alice's 1", tc.name, unread)
		}
	}
}
