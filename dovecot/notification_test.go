package dovecot

import (
	"errors"
	"os"
	"strings"
	"testing"
)

// oxPayload is what Dovecot 2.3.19's OX driver sent in the end-to-end test
// (event spelled "messageNew").
const oxPayload = `{"user":"alice@example.com","event":"messageNew","folder":"INBOX","imap-uidvalidity":1795335580,"imap-uid":1,"from":"Bob Sender <bob@example.com>","subject":"Hello there","snippet":"hi","unseen":1}`

// luaPayload is what conf/mailpush.lua sends.
const luaPayload = `{"user":"alice@example.com","folder":"INBOX","event":"MessageRead","unseen":0}`

func TestParseNotification(t *testing.T) {
	n, err := ParseNotification([]byte(oxPayload))
	if err != nil {
		t.Fatal(err)
	}
	if n.User != "alice@example.com" || !n.IsNewMail() || !n.InInbox() || n.UID != 1 || n.UIDValidity != 1795335580 ||
		n.Subject != "Hello there" || n.Sender() != "Bob Sender" || n.Unseen == nil || *n.Unseen != 1 {
		t.Errorf("OX payload = %+v", n)
	}
	n, err = ParseNotification([]byte(luaPayload))
	if err != nil {
		t.Fatal(err)
	}
	if n.IsNewMail() || !n.InInbox() || *n.Unseen != 0 || n.Sender() != "" {
		t.Errorf("Lua payload = %+v", n)
	}

	for _, tc := range []struct{ name, body string }{
		{"empty", ""},
		{"not JSON", "user=alice"},
		{"array", `[{"user":"a"}]`},
		{"no user", `{"event":"messageNew","unseen":1}`},
		{"blank user", `{"user":"  ","unseen":1}`},
		{"user not a string", `{"user":7}`},
		{"negative unseen", `{"user":"a","unseen":-1}`},
		{"huge unseen", `{"user":"a","unseen":4294967296}`},
		{"fractional unseen", `{"user":"a","unseen":1.5}`},
		{"two values", `{"user":"a"}{"user":"b"}`},
		{"oversized", `{"user":"` + strings.Repeat("a", MaxNotificationSize) + `"}`},
	} {
		if _, err := ParseNotification([]byte(tc.body)); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: err = %v, want ErrMalformed", tc.name, err)
		}
	}
}

func TestNotificationAccessors(t *testing.T) {
	for _, tc := range []struct {
		folder string
		inbox  bool
	}{{"", true}, {"INBOX", true}, {"inbox", true}, {"Junk", false}, {"INBOX/Sub", false}} {
		if got := (&Notification{Folder: tc.folder}).InInbox(); got != tc.inbox {
			t.Errorf("InInbox(%q) = %v", tc.folder, got)
		}
	}
	for _, tc := range []struct{ from, want string }{
		{"bob@example.com", "bob@example.com"},
		{"Bob <bob@example.com>", "Bob"},
		{`"Sender, Bob" <bob@example.com>`, "Sender, Bob"},
		{"not an address", "not an address"},
		{"", ""},
	} {
		if got := (&Notification{From: tc.from}).Sender(); got != tc.want {
			t.Errorf("Sender(%q) = %q, want %q", tc.from, got, tc.want)
		}
	}
}

func TestTenantAddress(t *testing.T) {
	for _, tc := range []struct {
		mapping      UserMapping
		domain, user string
		want         string
	}{
		{MapAddress, "", "alice@example.com", "alice@example.com"},
		{MapAddress, "", "alice", ""},
		{MapAddress, "example.com", "alice", "alice@example.com"},
		{MapAddress, "example.com", " alice@other.org ", "alice@other.org"},
		{MapLogin, "example.com", "alice", "alice@example.com"},
		{MapLogin, "example.com", "alice@example.com", ""},
		{MapLogin, "", "alice", ""},
		{MapAddress, "", "", ""},
		{MapAddress, "", strings.Repeat("a", 321) + "@x", ""},
	} {
		tn := Tenant{UserMapping: tc.mapping, Domain: tc.domain}
		if got := tn.Address(tc.user); got != tc.want {
			t.Errorf("%s/%q: Address(%q) = %q, want %q", tc.mapping, tc.domain, tc.user, got, tc.want)
		}
	}
}

func TestNewRefusesBadTenants(t *testing.T) {
	ok := Tenant{Name: "acme", Username: "dovecot", Password: "p", UserMapping: MapAddress}
	if _, err := New(Config{Tenants: []Tenant{ok}}); err != nil {
		t.Fatal(err)
	}
	for name, tn := range map[string]Tenant{
		"no name":          {Username: "u", Password: "p", UserMapping: MapAddress},
		"no password":      {Name: "x", Username: "u", UserMapping: MapAddress},
		"colon in user":    {Name: "x", Username: "u:v", Password: "p", UserMapping: MapAddress},
		"same username":    {Name: "x", Username: "dovecot", Password: "q", UserMapping: MapAddress},
		"bad mapping":      {Name: "x", Username: "u", Password: "p", UserMapping: "uid"},
		"login, no domain": {Name: "x", Username: "u", Password: "p", UserMapping: MapLogin},
	} {
		if _, err := New(Config{Tenants: []Tenant{ok, tn}}); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// The docs show the very configuration the end-to-end test runs.
func TestDocsShowTheTestedConfiguration(t *testing.T) {
	doc, err := os.ReadFile("../docs/dovecot.md")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(doc), ConfigSnippet) {
		t.Error("docs/dovecot.md does not contain dovecot/conf/90-mailpush.conf verbatim")
	}
	if !strings.Contains(string(doc), "dovecot/conf/mailpush.lua") {
		t.Error("docs/dovecot.md does not point to dovecot/conf/mailpush.lua")
	}
}

func FuzzParseNotification(f *testing.F) {
	for _, s := range []string{oxPayload, luaPayload, `{"user":"a"}`, `{"user":"a","unseen":-1}`, "", "null", `{"user":"\u0000"}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		n, err := ParseNotification(body)
		if err != nil {
			if !errors.Is(err, ErrMalformed) || n != nil {
				t.Fatalf("error %v with %v", err, n)
			}
			return
		}
		if strings.TrimSpace(n.User) == "" || (n.Unseen != nil && (*n.Unseen < 0 || *n.Unseen > maxUnseen)) {
			t.Fatalf("accepted %+v", n)
		}
		n.Sender()
		n.InInbox()
		n.IsNewMail()
	})
}
