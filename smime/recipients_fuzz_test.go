package smime

import (
	"net/mail"
	"strings"
	"testing"
)

// FuzzRecipients: an accepted recipient is a bare address of at most 254
// bytes without control characters; anything else is refused, never
// passed on to the directory.
func FuzzRecipients(f *testing.F) {
	for _, s := range []string{"alice@example.com", "Alice <alice@example.com>", "*)(uid=*@x", "a\x00@b.c", "\"a b\"@example.com", "a@[127.0.0.1]", ""} {
		f.Add(s, "bob@example.com")
	}
	f.Fuzz(func(t *testing.T, a, b string) {
		got, err := checkRecipients([]string{a, b}, 10)
		if err != nil {
			return
		}
		for _, r := range got {
			p, perr := mail.ParseAddress(r)
			if len(r) > MaxAddressLen || strings.ContainsAny(r, "\x00\r\n\t") || perr != nil || p.Address != r {
				t.Fatalf("accepted %q", r)
			}
		}
		if len(got) == 0 || len(got) > 2 {
			t.Fatalf("%d distinct recipients from 2", len(got))
		}
	})
}
