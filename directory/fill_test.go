package directory

import (
	"errors"
	"strings"
	"testing"

	"github.com/go-ldap/ldap/v3"
)

// TestFillEscapes: whatever the value, the filled filter parses to the
// template's shape with the value as the exact assertion value.
func TestFillEscapes(t *testing.T) {
	for _, v := range []string{"alice@example.com", "*", "*)(uid=*", `a\b`, "\x00", "(", ")", "a*b(c)d\\e\x00f", "Ålice", "{user}{user}", "{value}", "{address}x"} {
		f, err := ldap.CompileFilter(fill("(mail={value})", v))
		if err != nil {
			t.Errorf("fill(%q) does not parse: %v", v, err)
			continue
		}
		if f.Tag != ldap.FilterEqualityMatch || len(f.Children) != 2 {
			t.Errorf("fill(%q) changed the filter's shape: tag %d", v, f.Tag)
			continue
		}
		if got := string(f.Children[1].Data.Bytes()); got != v {
			t.Errorf("fill(%q) asserts %q", v, got)
		}
	}
}

// TestFillOnePass: a value that reads like a placeholder stays itself in
// every placeholder of the template.
func TestFillOnePass(t *testing.T) {
	for _, v := range []string{"{user}{user}", "{value}", "{address}x"} {
		f, err := ldap.CompileFilter(fill("(|(mail={value})(uid={user})(cn={address}))", v))
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range f.Children {
			if got := string(c.Children[1].Data.Bytes()); got != v {
				t.Errorf("fill(%q) asserts %q", v, got)
			}
		}
	}
}

// TestUnavailableCarriesNoDiagnostic: a server's diagnostic message may
// quote the filter; the error that callers log keeps the result code only.
func TestUnavailableCarriesNoDiagnostic(t *testing.T) {
	err := unavailable(ldap.NewError(ldap.LDAPResultOther, errors.New("bad filter (mail=alice@example.com)")))
	if strings.Contains(err.Error(), "alice") || !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "LDAP result 80") {
		t.Errorf("unavailable(…) = %v", err)
	}
}
