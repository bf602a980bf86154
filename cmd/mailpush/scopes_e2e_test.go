package main

import (
	"bytes"
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/mailpush/mailpush"
)

// TestAppTokenCannotAdministerTheGate is finding 5 of issue 9: the tenant
// token that ships inside every app turned a blocked device compliant with
// PUT /api/v1/gate/devices/{id}, and could delete or block anyone's device.
// Now the gate's registry needs an admin token: the app token gets 403
// insufficient_scope on every gate route, and the device stays as the MDM
// left it.
func TestAppTokenCannotAdministerTheGate(t *testing.T) {
	w, app, admin := newGateWorld(t, "nginx")
	if st, body := w.call(t, "PUT", "/api/v1/gate/devices/ApplBAD0002", admin, map[string]string{"user": "mallory@example.com", "state": "blocked"}); st != 200 {
		t.Fatalf("admin PUT = %d %v", st, body)
	}
	backend := w.addToken(t, "acme", mailpush.ScopeBackend)
	for _, tok := range []struct{ name, token string }{{"app", app}, {"backend", backend}} {
		for _, tc := range []struct {
			method, path string
			body         any
		}{
			{"PUT", "/api/v1/gate/devices/ApplBAD0002", map[string]string{"state": "compliant"}},
			{"PUT", "/api/v1/gate/devices/ApplOTHER01", map[string]string{"state": "blocked"}},
			{"DELETE", "/api/v1/gate/devices/ApplBAD0002", nil},
			{"GET", "/api/v1/gate/devices/ApplBAD0002", nil},
		} {
			st, body := w.call(t, tc.method, tc.path, tok.token, tc.body)
			if st != http.StatusForbidden || errCode(body) != mailpush.EScope {
				t.Errorf("%s token %s %s = %d %v, want 403 %s", tok.name, tc.method, tc.path, st, body, mailpush.EScope)
			}
		}
		req, _ := http.NewRequest("POST", w.main.URL()+"/api/v1/gate/import", strings.NewReader("deviceId,state\nApplBAD0002,compliant\n"))
		req.Header.Set("Authorization", "Bearer "+tok.token)
		req.Header.Set("Content-Type", "text/csv")
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusForbidden {
			t.Errorf("%s token import = %d, want 403", tok.name, res.StatusCode)
		}
	}
	if st, body := w.call(t, "GET", "/api/v1/gate/devices/ApplBAD0002", admin, nil); st != 200 || body["state"] != "blocked" {
		t.Errorf("after the app token's attempts the device is %d %v, want still blocked", st, body)
	}
	if st, _ := w.call(t, "GET", "/api/v1/gate/devices/ApplOTHER01", admin, nil); st != 404 {
		t.Errorf("the app token's PUT created a device: GET = %d", st)
	}
	// The admin token, in turn, cannot create registrations: it is not a
	// device's credential.
	st, body := w.call(t, "POST", "/api/v1/registrations", admin, map[string]any{
		"device":  map[string]string{"platform": "ios", "token": deviceToken(3)},
		"mailbox": map[string]string{"address": "a@example.com", "source": "ews", "ewsUrl": "https://mail.example.com/EWS/Exchange.asmx"}})
	if st != http.StatusForbidden || errCode(body) != mailpush.EScope {
		t.Errorf("admin token registration = %d %v, want 403 %s", st, body, mailpush.EScope)
	}
}

// TestTokenCommands runs token add, list and revoke against a running
// server: list never shows a secret, and a revoked token is refused on the
// very next request (no cache outlives a revoke).
func TestTokenCommands(t *testing.T) {
	w, app, admin := newGateWorld(t, "nginx")
	cli := func(args ...string) (string, error) {
		var out, errOut bytes.Buffer
		err := run(context.Background(), append(args, "--config", w.configPath), &out, &errOut, nil)
		return out.String() + errOut.String(), err
	}
	out, err := cli("token", "list", "--tenant", "acme")
	if err != nil {
		t.Fatal(err)
	}
	appID, appSecret, _ := mailpush.SplitToken(app)
	adminID, adminSecret, _ := mailpush.SplitToken(admin)
	for _, want := range []string{"ID", "SCOPE", "CREATED", appID + "  ", adminID + "  ", "app", "admin"} {
		if !strings.Contains(out, want) {
			t.Errorf("token list lacks %q:\n%s", want, out)
		}
	}
	for _, secret := range []string{appSecret, adminSecret} {
		if strings.Contains(out, secret) {
			t.Errorf("token list shows a secret:\n%s", out)
		}
	}
	for _, bad := range [][]string{
		{"token", "add", "--tenant", "acme", "--scope", "root"},
		{"token", "add", "--tenant", "acme"},
		{"token", "add", "--scope", "app"},
		{"token", "list", "--tenant", "acme", "--scope", "app"},
		{"token", "revoke", "--tenant", "acme"},
		{"token", "frob", "--tenant", "acme"},
	} {
		if _, err := cli(bad...); err == nil {
			t.Errorf("%v succeeded", bad)
		} else if _, ok := err.(usageError); !ok {
			t.Errorf("%v: %v is not a usage error", bad, err)
		}
	}
	if _, err := cli("token", "add", "--tenant", "nosuch", "--scope", "app"); err == nil || mailpush.ErrorCode(err) != mailpush.ENotFound {
		t.Errorf("token add for a missing tenant: %v", err)
	}
	if _, err := cli("token", "revoke", "nosuchtoken", "--tenant", "acme"); mailpush.ErrorCode(err) != mailpush.ENotFound {
		t.Errorf("revoke of a missing token: %v", err)
	}

	if st, _ := w.call(t, "GET", "/api/v1/gate/devices/nosuch", admin, nil); st != 404 {
		t.Fatalf("admin token before revoke: %d", st)
	}
	if _, err := cli("token", "revoke", adminID, "--tenant", "acme"); err != nil {
		t.Fatal(err)
	}
	if st, body := w.call(t, "GET", "/api/v1/gate/devices/nosuch", admin, nil); st != 401 || errCode(body) != mailpush.EUnauthorized {
		t.Errorf("revoked admin token = %d %v, want 401 at once", st, body)
	}
	// A token with the right ID and a wrong secret is refused too.
	if st, _ := w.call(t, "POST", "/api/v1/registrations/x/checkin", appID+".wrong", nil); st != 401 {
		t.Errorf("wrong secret = %d, want 401", st)
	}
	// Another admin token works; the app token is untouched by the revoke.
	admin2 := w.addToken(t, "acme", mailpush.ScopeAdmin)
	if st, _ := w.call(t, "GET", "/api/v1/gate/devices/nosuch", admin2, nil); st != 404 {
		t.Errorf("new admin token: %d, want 404", st)
	}
	if st, _ := w.call(t, "GET", "/api/v1/registrations/nosuch", app, nil); st != 404 {
		t.Errorf("app token after another token's revoke: %d, want 404", st)
	}
}

func errCode(body map[string]any) string {
	e, _ := body["error"].(map[string]any)
	c, _ := e["code"].(string)
	return c
}
