package appconfig_test

import (
	"context"
	"reflect"
	"strings"
	"testing"

	"github.com/mailpush/mailpush"
	"github.com/mailpush/mailpush/appconfig"
)

// alice is a directory user; "mobile" is missing on purpose.
var alice = map[string]string{
	"userprincipalname": "alice@corp.example.com",
	"samaccountname":    "alice",
	"mail":              "alice@example.com",
	"displayname":       "Ålice Müller 山田",
	"department":        "R&D",
}

func lookup(attrs map[string]string) func(string) (string, bool) {
	return func(name string) (string, bool) {
		v, ok := attrs[strings.ToLower(name)]
		return v, ok
	}
}

func TestExpand(t *testing.T) {
	opts := appconfig.Options{Attributes: []string{"mobile", "department"}, Vars: map[string]string{"tenant.appToken": "T.secret", "mailpush.url": "https://push.example.com"}}
	cases := []struct {
		value any
		want  any
	}{
		// The seed's SEND_LDAP_ATTRIBUTES value, spaces and case as written there.
		{"userPrincipalName=${user.userprincipalname},sAMAccountNAme=${user.samaccountname}, displayName= ${ user.displayName} ,mail= ${ user.mail}",
			"userPrincipalName=alice@corp.example.com,sAMAccountNAme=alice, displayName= Ålice Müller 山田 ,mail= alice@example.com"},
		{"${USER.MAIL}", "alice@example.com"},
		{"${user.mobile:-none}", "none"},
		{"${ user.mobile :- no phone }", "no phone"},
		{"${user.mobile:-}", ""},
		{"${user.department:-x}", "R&D"},
		{"${mailpush.url}/api/v1", "https://push.example.com/api/v1"},
		{"${Tenant.AppToken}", "T.secret"},
		{"cost: $$5, ${user.samaccountname}$", "cost: $5, alice$"},
		{"plain", "plain"},
		{"", ""},
		{true, true},
		{42, int64(42)},
		{2.5, 2.5},
	}
	for _, tc := range cases {
		tmpl, err := appconfig.Parse(map[string]any{"k": tc.value}, opts)
		if err != nil {
			t.Errorf("Parse(%q): %v", tc.value, err)
			continue
		}
		got, err := tmpl.Expand(lookup(alice))
		if err != nil || len(got) != 1 || got[0].Value != tc.want {
			t.Errorf("Expand(%q) = %v, %v; want %q", tc.value, got, err, tc.want)
		}
	}
}

func TestParseErrorsNameTheKey(t *testing.T) {
	cases := []struct {
		values map[string]any
		say    string
	}{
		{map[string]any{"SEND_LDAP_ATTRIBUTES": "mail=${user.mial}"}, "keys.SEND_LDAP_ATTRIBUTES: unknown macro ${user.mial}"},
		{map[string]any{"token": "${tenant.secret}"}, "keys.token: unknown macro ${tenant.secret}"},
		{map[string]any{"x": "${user.mail"}, "keys.x: unterminated macro"},
		{map[string]any{"x": "${}"}, "keys.x: unknown macro ${}"},
		{map[string]any{"nested": map[string]any{"a": 1}}, "keys.nested: values are strings, numbers or booleans"},
		{map[string]any{"list": []any{"a"}}, "keys.list: values are strings"},
		{map[string]any{"_user": "x"}, "does not start with _"},
		{map[string]any{"big": strings.Repeat("x", appconfig.MaxValueLen+1)}, "keys.big: the value is longer"},
	}
	for _, tc := range cases {
		_, err := appconfig.Parse(tc.values, appconfig.Options{})
		if err == nil || !strings.Contains(err.Error(), tc.say) {
			t.Errorf("Parse(%.60v) = %v, want an error saying %q", tc.values, err, tc.say)
		}
	}
	if _, err := appconfig.Parse(map[string]any{"k": "x"}, appconfig.Options{Attributes: []string{"bad name"}}); err == nil || !strings.Contains(err.Error(), "attributes") {
		t.Errorf("bad attribute name: %v", err)
	}
	// Every bad key is reported at once.
	_, err := appconfig.Parse(map[string]any{"a": "${user.x}", "b": "${user.y}"}, appconfig.Options{})
	if err == nil || !strings.Contains(err.Error(), "keys.a") || !strings.Contains(err.Error(), "keys.b") {
		t.Errorf("two bad keys: %v", err)
	}
}

func TestTemplateAttributes(t *testing.T) {
	tmpl, err := appconfig.Parse(map[string]any{"a": "${user.MAIL} ${user.mobile:-}", "b": "${ user.Mail }", "c": true},
		appconfig.Options{Attributes: []string{"mobile"}})
	if err != nil {
		t.Fatal(err)
	}
	// The canonical spelling, once each: what the directory is asked for.
	if got := tmpl.Attributes(); !reflect.DeepEqual(got, []string{"mail", "mobile"}) {
		t.Errorf("Attributes = %v", got)
	}
}

func TestMissingAttribute(t *testing.T) {
	tmpl, _ := appconfig.Parse(map[string]any{"phone": "${user.mobile}"}, appconfig.Options{Attributes: []string{"mobile"}})
	_, err := tmpl.Expand(lookup(alice))
	if err == nil || !strings.Contains(err.Error(), "no mobile attribute, which key phone needs") || !strings.Contains(err.Error(), "${user.mobile:-") {
		t.Errorf("Expand = %v", err)
	}
	// A value that is not UTF-8 counts as missing.
	_, err = tmpl.Expand(lookup(map[string]string{"mobile": "\xff\xfe"}))
	if err == nil {
		t.Error("a binary value was expanded")
	}
}

// directory is a mailpush.Directory in memory.
type directory struct {
	entries map[string]mailpush.DirectoryEntry
	err     error
	asked   []string
}

func (d *directory) Lookup(_ context.Context, value string) (mailpush.DirectoryEntry, error) {
	d.asked = append(d.asked, value)
	if d.err != nil {
		return mailpush.DirectoryEntry{}, d.err
	}
	e, ok := d.entries[value]
	if !ok {
		return e, mailpush.Errorf(mailpush.ENotFound, "no directory entry matches")
	}
	return e, nil
}

func TestService(t *testing.T) {
	tmpl, err := appconfig.Parse(map[string]any{"user": "${user.userPrincipalName}", "pushEnabled": true, "phone": "${user.mobile:-none}"},
		appconfig.Options{Attributes: []string{"mobile"}})
	if err != nil {
		t.Fatal(err)
	}
	dir := &directory{entries: map[string]mailpush.DirectoryEntry{"alice": {DN: "uid=alice", Attributes: map[string][][]byte{"userPrincipalName": {[]byte("alice@corp.example.com")}}}}}
	s := &appconfig.Service{Tenants: map[string]appconfig.Tenant{"acme": {Template: tmpl, Directory: dir}}}
	acme := &mailpush.Tenant{Name: "acme"}
	got, err := s.AppConfig(context.Background(), acme, "alice")
	want := []mailpush.AppConfigValue{{Key: "phone", Value: "none"}, {Key: "pushEnabled", Value: true}, {Key: "user", Value: "alice@corp.example.com"}}
	if err != nil || !reflect.DeepEqual(got.Values, want) {
		t.Errorf("AppConfig = %v, %v", got, err)
	}
	for _, tc := range []struct {
		tenant, user string
		err          error
		code, say    string
	}{
		{"acme", "nobody", nil, mailpush.ENotFound, "no such user"},
		{"acme", "", nil, mailpush.EInvalid, "1 to 256"},
		{"acme", strings.Repeat("a", 300), nil, mailpush.EInvalid, "1 to 256"},
		{"acme", "a\x00b", nil, mailpush.EInvalid, ""},
		{"other", "alice", nil, mailpush.EUnsupported, "tenants.other.appConfig"},
		{"acme", "alice", mailpush.WrapError(mailpush.EUnavailable, "directory unavailable", context.DeadlineExceeded), mailpush.EUnavailable, "did not answer in time"},
		{"acme", "twin", mailpush.Errorf(mailpush.EConflict, "more than one"), mailpush.EConflict, "userPrincipalName"},
	} {
		dir.err, dir.asked = tc.err, nil
		_, err := s.AppConfig(context.Background(), &mailpush.Tenant{Name: tc.tenant}, tc.user)
		if mailpush.ErrorCode(err) != tc.code || !strings.Contains(mailpush.ErrorMessage(err), tc.say) {
			t.Errorf("%s/%q = %v, want %s saying %q", tc.tenant, tc.user, err, tc.code, tc.say)
		}
		if tc.code == mailpush.EInvalid && len(dir.asked) > 0 {
			t.Errorf("%q reached the directory", tc.user)
		}
	}
}

// BenchmarkExpand is the expander alone (no directory): the seed's
// SEND_LDAP_ATTRIBUTES value and four other keys. Run:
//
//	go test -run XXX -bench Expand ./appconfig
func BenchmarkExpand(b *testing.B) {
	tmpl, err := appconfig.Parse(map[string]any{
		"SEND_LDAP_ATTRIBUTES": "userPrincipalName=${user.userprincipalname},sAMAccountNAme=${user.samaccountname}, displayName= ${ user.displayName} ,mail= ${ user.mail}",
		"user":                 "${user.userPrincipalName}", "phone": "${user.mobile:-none}", "pushEnabled": true, "url": "https://push.example.com/api/v1",
	}, appconfig.Options{Attributes: []string{"mobile"}})
	if err != nil {
		b.Fatal(err)
	}
	get := lookup(alice)
	for b.Loop() {
		if _, err := tmpl.Expand(get); err != nil {
			b.Fatal(err)
		}
	}
}

func TestServiceMissingAttribute(t *testing.T) {
	tmpl, err := appconfig.Parse(map[string]any{"phone": "${user.mobile}"}, appconfig.Options{Attributes: []string{"mobile"}})
	if err != nil {
		t.Fatal(err)
	}
	dir := &directory{entries: map[string]mailpush.DirectoryEntry{"bob": {DN: "uid=bob", Attributes: map[string][][]byte{"mail": {[]byte("bob@example.com")}}}}}
	s := &appconfig.Service{Tenants: map[string]appconfig.Tenant{"acme": {Template: tmpl, Directory: dir}}}
	_, err = s.AppConfig(context.Background(), &mailpush.Tenant{Name: "acme"}, "bob")
	if mailpush.ErrorCode(err) != mailpush.EUnsupported || !strings.Contains(mailpush.ErrorMessage(err), "no mobile attribute, which key phone needs") {
		t.Errorf("AppConfig = %v, want unsupported naming the key and the attribute", err)
	}
}
