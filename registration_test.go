package mailpush_test

import (
	"net/url"
	"strings"
	"testing"

	"github.com/mailpush/mailpush"
)

func TestHostAllowed(t *testing.T) {
	tn := &mailpush.Tenant{AllowedHosts: []string{"mail.example.com", "ews.example.com:8443", "*.corp.example", "*.lab.example:444", "192.0.2.7", "[2001:db8::1]:443"}}
	cases := []struct {
		host string
		want bool
	}{
		{"mail.example.com", true},
		{"MAIL.example.com.", true},
		{"mail.example.com:443", true},
		{"mail.example.com:22", false}, // finding 1: the port was ignored
		{"mail.example.com:8443", false},
		{"ews.example.com:8443", true},
		{"ews.example.com", false},
		{"ews.example.com:443", false},
		{"a.corp.example", true},
		{"a.b.corp.example:443", true},
		{"corp.example", false},
		{"a.corp.example:8443", false},
		{"x.lab.example:444", true},
		{"x.lab.example", false},
		{"192.0.2.7", true},
		{"192.0.2.7:443", true},
		{"192.0.2.7:80", false},
		{"[2001:db8::1]:443", true},
		{"[2001:db8::1]", true},
		{"evil.example", false},
		{"mail.example.com.evil.example", false},
		{"", false},
		{":443", false},
		{"mail.example.com:0", false},
		{"mail.example.com:65536", false},
		{"mail.example.com:0443", false},
		{"mail.example.com:x", false},
	}
	for _, tc := range cases {
		if got := tn.HostAllowed(tc.host); got != tc.want {
			t.Errorf("HostAllowed(%q) = %v, want %v", tc.host, got, tc.want)
		}
	}
}

func TestURLAllowed(t *testing.T) {
	tn := &mailpush.Tenant{AllowedHosts: []string{"mail.example.com", "legacy.example.com:80"}}
	cases := []struct {
		url  string
		want bool
	}{
		{"https://mail.example.com/EWS/Exchange.asmx", true},
		{"https://mail.example.com:443/EWS/Exchange.asmx", true},
		{"https://mail.example.com:22/EWS/Exchange.asmx", false},
		{"http://mail.example.com/EWS/Exchange.asmx", false}, // port 80 is not listed
		{"http://legacy.example.com/EWS/Exchange.asmx", true},
		{"https://legacy.example.com/EWS/Exchange.asmx", false},
		{"ftp://mail.example.com/", false},
	}
	for _, tc := range cases {
		u, err := url.Parse(tc.url)
		if err != nil {
			t.Fatal(err)
		}
		if got := tn.URLAllowed(u); got != tc.want {
			t.Errorf("URLAllowed(%s) = %v, want %v", tc.url, got, tc.want)
		}
	}
}

func TestValidAllowedHost(t *testing.T) {
	for _, ok := range []string{"mail.example.com", "mail.example.com:8443", "*.example.com", "*.example.com:444", "192.0.2.1", "[2001:db8::1]:443"} {
		if err := mailpush.ValidAllowedHost(ok); err != nil {
			t.Errorf("ValidAllowedHost(%q) = %v, want nil", ok, err)
		}
	}
	for _, bad := range []string{"", "https://mail.example.com", "mail.example.com/EWS", "mail.example.com:0", "mail.example.com:99999", "mail.*.com", "*", "*.", "user@mail.example.com", "mail.example.com:"} {
		err := mailpush.ValidAllowedHost(bad)
		if mailpush.ErrorCode(err) != mailpush.EInvalid || mailpush.ErrorMessage(err) == "" {
			t.Errorf("ValidAllowedHost(%q) = %v, want an invalid_request error", bad, err)
		}
	}
}

// FuzzHostAllowed: hosts come from apps' URLs. Whatever the input, a host
// is allowed only with the port its entry names (443 when none).
func FuzzHostAllowed(f *testing.F) {
	for _, s := range []string{"mail.example.com", "mail.example.com:22", "[::1]:443", "a.corp.example:443", "MAIL.EXAMPLE.COM.", ":", "[", "mail.example.com:0443"} {
		f.Add(s)
	}
	tn := &mailpush.Tenant{AllowedHosts: []string{"mail.example.com", "*.corp.example:8443"}}
	f.Fuzz(func(t *testing.T, host string) {
		if !tn.HostAllowed(host) {
			return
		}
		u, err := url.Parse("https://" + host + "/")
		if err != nil || u.Host != host {
			return // not a URL authority: nothing more to check
		}
		port := u.Port()
		if port == "" {
			port = "443"
		}
		if want := map[bool]string{true: "8443", false: "443"}[strings.HasSuffix(strings.ToLower(strings.TrimSuffix(u.Hostname(), ".")), ".corp.example")]; port != want {
			t.Errorf("HostAllowed(%q) with port %s", host, port)
		}
	})
}
