package api_test

import (
	"context"
	"strings"
	"sync"
	"testing"

	"github.com/mailpush/mailpush"
)

// locator answers LocateEWS with a fixed URL or error and records the calls.
type locator struct {
	mu    sync.Mutex
	url   string
	err   error
	asked []string
}

func (l *locator) LocateEWS(_ context.Context, t *mailpush.Tenant, address string, _ mailpush.Credentials) (string, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.asked = append(l.asked, t.Name+" "+address)
	return l.url, l.err
}

func TestRegistrationAutodiscovers(t *testing.T) {
	cases := []struct {
		name   string
		loc    *locator
		status int
		code   string
	}{
		{"found", &locator{url: "https://mail.example.com/EWS/Exchange.asmx"}, 201, ""},
		{"found on a host the tenant does not allow", &locator{url: "https://evil.example/EWS/Exchange.asmx"}, 403, mailpush.EForbidden},
		{"not found", &locator{err: mailpush.Errorf(mailpush.EUnsupported, "autodiscover found no EWS URL for this address; send mailbox.ewsUrl")}, 422, mailpush.EUnsupported},
		{"redirect loop", &locator{err: mailpush.Errorf(mailpush.EUpstream, "autodiscover redirects in a loop; send mailbox.ewsUrl")}, 502, mailpush.EUpstream},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := setupWith(t, tc.loc)
			st, out := e.do(t, "POST", "/api/v1/registrations", e.token, "application/json", strings.NewReader(regBody(iosToken, "", e.sealed(t))))
			if st != tc.status || errCode(out) != tc.code {
				t.Fatalf("register = %d %v, want %d %q", st, out, tc.status, tc.code)
			}
			if len(tc.loc.asked) != 1 || tc.loc.asked[0] != "acme alice@example.com" {
				t.Errorf("locator asked %v", tc.loc.asked)
			}
			if wantCalls := map[bool]int{true: 1, false: 0}[st == 201]; e.watcher.calls != wantCalls {
				t.Errorf("watcher called %d times, want %d (a refusal changes nothing)", e.watcher.calls, wantCalls)
			}
		})
	}
	e := setup(t) // no locator: ewsUrl is required
	st, out := e.do(t, "POST", "/api/v1/registrations", e.token, "application/json", strings.NewReader(regBody(iosToken, "", e.sealed(t))))
	if st != 422 || !strings.Contains(out["error"].(map[string]any)["message"].(string), "ewsUrl") {
		t.Errorf("without autodiscover = %d %v", st, out)
	}
}
