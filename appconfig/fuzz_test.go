package appconfig

import (
	"strings"
	"testing"
)

// FuzzExpand parses any template value and expands it for a user: no
// panic, errors name the key, and a value without "$" comes out unchanged.
func FuzzExpand(f *testing.F) {
	for _, s := range []string{
		"userPrincipalName=${user.userprincipalname},sAMAccountNAme=${user.samaccountname}, displayName= ${ user.displayName} ,mail= ${ user.mail}",
		"${user.mobile:-none}", "${ user.MAIL }", "$$${user.mail}$", "${", "${user.", "${tenant.appToken}", "}{$", "plain",
	} {
		f.Add(s, "Ålice")
	}
	f.Fuzz(func(t *testing.T, value, attr string) {
		tmpl, err := Parse(map[string]any{"k": value}, Options{Attributes: []string{"mobile"}, Vars: map[string]string{"tenant.appToken": "T"}})
		if err != nil {
			if !strings.HasPrefix(err.Error(), "keys.k: ") {
				t.Fatalf("error does not name the key: %v", err)
			}
			return
		}
		got, err := tmpl.Expand(func(name string) (string, bool) { return attr, name != "mobile" })
		if err != nil {
			var missing *MissingError
			if !strings.Contains(err.Error(), "key k") && !asMissing(err, &missing) {
				t.Fatalf("error does not name the key: %v", err)
			}
			return
		}
		if len(got) != 1 || got[0].Key != "k" {
			t.Fatalf("Expand = %v", got)
		}
		if !strings.Contains(value, "$") && got[0].Value != value {
			t.Fatalf("a value without macros changed: %q → %q", value, got[0].Value)
		}
	})
}

func asMissing(err error, m **MissingError) bool {
	e, ok := err.(*MissingError)
	*m = e
	return ok
}
