package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mailpush/mailpush"
	"github.com/mailpush/mailpush/api"
	"github.com/mailpush/mailpush/registrar"
	"github.com/mailpush/mailpush/seal"
	"github.com/mailpush/mailpush/sqlite"
	"github.com/mailpush/mailpush/storetest"
)

const iosToken = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0"

// fakeWatcher records Watch calls; it can be told to fail.
type fakeWatcher struct {
	mu    sync.Mutex
	calls int
	err   error
}

func (f *fakeWatcher) Watch(ctx context.Context, t *mailpush.Tenant, mb *mailpush.Mailbox, reg *mailpush.Registration, creds mailpush.Credentials) (mailpush.WatchResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if f.err != nil {
		return mailpush.WatchResult{}, f.err
	}
	if mb.Mode == mailpush.ModeDeviceSubscribed {
		return mailpush.WatchResult{CallbackURL: "https://push.example.com/ews/notify/x", Status: mailpush.StatusPending}, nil
	}
	return mailpush.WatchResult{Status: mailpush.StatusActive}, nil
}

type env struct {
	url     string
	store   mailpush.Store
	keys    *seal.Keyring
	watcher *fakeWatcher
	token   string // the tenant's app token
	admin   string // its admin token
	backend string // its backend token
	tenant  *mailpush.Tenant
	other   string // another tenant's app token
	srv     *api.Server
}

func (e *env) addToken(t *testing.T, tn *mailpush.Tenant, scope mailpush.Scope) string {
	t.Helper()
	tok, bearer := mailpush.NewToken(tn.ID, scope)
	if err := e.store.CreateToken(context.Background(), tok); err != nil {
		t.Fatal(err)
	}
	return bearer
}

func setup(t *testing.T) *env {
	t.Helper()
	return setupWith(t, nil)
}

// setupWith is setup with an autodiscover locator.
func setupWith(t *testing.T, locator mailpush.EWSLocator) *env {
	t.Helper()
	ctx := context.Background()
	keys := storetest.Keyring(t)
	store, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "api.db"), keys, storetest.NewClock())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	e := &env{store: store, keys: keys, watcher: &fakeWatcher{}}
	mk := func(name string) (*mailpush.Tenant, string) {
		tn := &mailpush.Tenant{Name: name, AllowedHosts: []string{"mail.example.com"}, MaxContent: mailpush.ContentSubject, DeviceSubscribed: true}
		if err := store.CreateTenant(ctx, tn); err != nil {
			t.Fatal(err)
		}
		return tn, e.addToken(t, tn, mailpush.ScopeApp)
	}
	e.tenant, e.token = mk("acme")
	e.admin = e.addToken(t, e.tenant, mailpush.ScopeAdmin)
	e.backend = e.addToken(t, e.tenant, mailpush.ScopeBackend)
	_, e.other = mk("globex")
	log := slog.New(slog.DiscardHandler)
	reg := &registrar.Service{Store: store, Keys: keys, Logger: log, Clock: storetest.NewClock(),
		Watchers: map[mailpush.Source]mailpush.Watcher{mailpush.SourceEWS: e.watcher}, RegistrationTTL: 24 * time.Hour, Autodiscover: locator}
	srv := &api.Server{Store: store, Keys: keys, Registrar: reg, Logger: log}
	e.srv = srv
	mux := http.NewServeMux()
	srv.Routes(mux)
	ts := httptest.NewServer(mux)
	t.Cleanup(ts.Close)
	e.url = ts.URL
	return e
}

func (e *env) do(t *testing.T, method, path, token, contentType string, body io.Reader) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest(method, e.url+path, body)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out
}

func (e *env) sealed(t *testing.T) string {
	kid, pub := e.keys.PublicKey()
	s, err := seal.SealCredentials(kid, pub, mailpush.Credentials{Username: "alice", Password: "pw"})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func regBody(token, ewsURL, sealed string) string {
	b, _ := json.Marshal(map[string]any{
		"device":  map[string]any{"platform": "ios", "token": token},
		"mailbox": map[string]any{"address": "alice@example.com", "source": "ews", "ewsUrl": ewsURL, "sealedCredentials": sealed},
		"content": "subject_sender",
	})
	return string(b)
}

func errCode(out map[string]any) string {
	e, _ := out["error"].(map[string]any)
	c, _ := e["code"].(string)
	return c
}

func TestAliveAndKey(t *testing.T) {
	e := setup(t)
	st, out := e.do(t, "GET", "/api/v1/alive", "", "", nil)
	if st != 200 || out["status"] != "ok" || out["version"] != mailpush.Version {
		t.Errorf("alive = %d %v", st, out)
	}
	st, out = e.do(t, "GET", "/api/v1/key", "", "", nil)
	kid, _ := e.keys.PublicKey()
	if st != 200 || out["keyId"] != kid || out["kem"] != "DHKEM(X25519, HKDF-SHA256)" || out["aead"] != "AES-128-GCM" || len(out["publicKey"].(string)) != 43 {
		t.Errorf("key = %d %v", st, out)
	}
}

func TestRegistrationLifecycle(t *testing.T) {
	e := setup(t)
	st, out := e.do(t, "POST", "/api/v1/registrations", e.token, "application/json", strings.NewReader(regBody(iosToken, "https://mail.example.com/EWS/Exchange.asmx", e.sealed(t))))
	if st != 201 || out["mode"] != "sealed" || out["status"] != "active" || out["content"] != "subject" || out["callbackUrl"] != nil {
		t.Fatalf("create = %d %v", st, out)
	}
	id := out["id"].(string)
	if st, out := e.do(t, "GET", "/api/v1/registrations/"+id, e.other, "", nil); st != 404 || errCode(out) != "not_found" {
		t.Errorf("other tenant reads: %d %v", st, out)
	}
	newToken := strings.Repeat("ab", 32)
	st, out = e.do(t, "POST", "/api/v1/registrations/"+id+"/checkin", e.token, "application/json", strings.NewReader(`{"device":{"token":"`+newToken+`"}}`))
	if st != 200 || out["id"] != id {
		t.Fatalf("checkin = %d %v", st, out)
	}
	reg, _ := e.store.Registration(context.Background(), e.tenant.ID, id)
	if reg.Device.Token != newToken {
		t.Errorf("checkin did not rotate the token: %s", reg.Device.Token)
	}
	if st, _ := e.do(t, "POST", "/api/v1/registrations/"+id+"/checkin", e.token, "", nil); st != 200 {
		t.Errorf("checkin without body = %d", st)
	}
	if st, _ := e.do(t, "DELETE", "/api/v1/registrations/"+id, e.other, "", nil); st != 404 {
		t.Errorf("other tenant deletes = %d", st)
	}
	if st, _ := e.do(t, "DELETE", "/api/v1/registrations/"+id, e.token, "", nil); st != 204 {
		t.Errorf("delete = %d", st)
	}
	if st, _ := e.do(t, "DELETE", "/api/v1/registrations/"+id, e.token, "", nil); st != 404 {
		t.Errorf("delete twice = %d", st)
	}
}

func TestDeviceSubscribedMode(t *testing.T) {
	e := setup(t)
	st, out := e.do(t, "POST", "/api/v1/registrations", e.token, "", strings.NewReader(regBody(iosToken, "https://mail.example.com/EWS/Exchange.asmx", "")))
	if st != 201 || out["mode"] != "device-subscribed" || out["status"] != "pending" || out["callbackUrl"] == nil {
		t.Fatalf("create = %d %v", st, out)
	}
}

// TestBadInputChangesNothing sends every kind of bad request and checks the
// precise status and code, that no watcher was called and that the store
// holds no registration afterwards.
func TestBadInputChangesNothing(t *testing.T) {
	e := setup(t)
	good := regBody(iosToken, "https://mail.example.com/EWS/Exchange.asmx", e.sealed(t))
	tampered := []byte(e.sealed(t))
	tampered[len(tampered)-2] ^= 1
	other := storetest.Keyring(t)
	okid, opub := other.PublicKey()
	foreign, _ := seal.SealCredentials(okid, opub, mailpush.Credentials{Username: "a", Password: "b"})
	big := `{"device":{"platform":"ios","token":"` + strings.Repeat("a", api.MaxBodySize) + `"}}`
	cases := []struct {
		name, token, ctype, body string
		status                   int
		code                     string
	}{
		{"no token", "", "", good, 401, "unauthorized"},
		{"wrong token", e.tenant.ID + ".wrong", "", good, 401, "unauthorized"},
		{"unknown tenant", "nobody.secret-acme", "", good, 401, "unauthorized"},
		{"malformed token", "garbage", "", good, 401, "unauthorized"},
		{"not json", e.token, "", `{"device":`, 400, "invalid_request"},
		{"syntax error", e.token, "", `{"device" 1}`, 400, "invalid_request"},
		{"empty body", e.token, "", ``, 400, "invalid_request"},
		{"trailing data", e.token, "", good + `{}`, 400, "invalid_request"},
		{"unknown field", e.token, "", `{"device":{"platform":"ios","token":"` + iosToken + `","color":"red"}}`, 400, "invalid_request"},
		{"wrong type", e.token, "", `{"device":{"platform":7}}`, 400, "invalid_request"},
		{"oversized", e.token, "", big, 413, "request_too_large"},
		{"xml content type", e.token, "text/xml", good, 415, "unsupported_media_type"},
		{"short apns token", e.token, "", regBody("abcd", "https://mail.example.com/EWS", ""), 400, "invalid_request"},
		{"non-hex apns token", e.token, "", regBody(strings.Repeat("zz", 32), "https://mail.example.com/EWS", ""), 400, "invalid_request"},
		{"host not allowed", e.token, "", regBody(iosToken, "https://evil.example.net/EWS/Exchange.asmx", e.sealed(t)), 403, "forbidden"},
		{"http ews", e.token, "", regBody(iosToken, "http://mail.example.com/EWS/Exchange.asmx", e.sealed(t)), 400, "invalid_request"},
		{"user info in url", e.token, "", regBody(iosToken, "https://x:y@mail.example.com/EWS", e.sealed(t)), 400, "invalid_request"},
		{"tampered sealed", e.token, "", regBody(iosToken, "https://mail.example.com/EWS", string(tampered)), 400, "invalid_sealed_value"},
		{"foreign key", e.token, "", regBody(iosToken, "https://mail.example.com/EWS", foreign), 400, "invalid_sealed_value"},
		{"bad address", e.token, "", strings.Replace(good, "alice@example.com", "Alice <alice@example.com>", 1), 400, "invalid_request"},
		{"bad source", e.token, "", strings.Replace(good, `"ews"`, `"imap"`, 1), 400, "invalid_request"},
		{"source not enabled", e.token, "", `{"device":{"platform":"ios","token":"` + iosToken + `"},"mailbox":{"address":"a@b.example","source":"graph"}}`, 422, "unsupported"},
		{"bad content", e.token, "", strings.Replace(good, "subject_sender", "everything", 1), 400, "invalid_request"},
		{"bad content key", e.token, "", `{"device":{"platform":"ios","token":"` + iosToken + `","contentKey":"short"},"mailbox":{"address":"a@b.example","source":"ews","ewsUrl":"https://mail.example.com/x"}}`, 400, "invalid_request"},
		{"android bad token", e.token, "", `{"device":{"platform":"android","token":"has spaces in it and is long enough to pass length"},"mailbox":{"address":"a@b.example","source":"ews","ewsUrl":"https://mail.example.com/x"}}`, 400, "invalid_request"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			st, out := e.do(t, "POST", "/api/v1/registrations", tc.token, tc.ctype, strings.NewReader(tc.body))
			if st != tc.status || errCode(out) != tc.code {
				t.Errorf("got %d %v, want %d %s", st, out, tc.status, tc.code)
			}
			if msg, _ := out["error"].(map[string]any)["message"].(string); msg == "" {
				t.Error("error without a message")
			}
		})
	}
	if e.watcher.calls != 0 {
		t.Errorf("watcher called %d times for refused requests", e.watcher.calls)
	}
	// A failing mail server: refused, and the registration is taken back.
	e.watcher.err = mailpush.Errorf(mailpush.ECredentials, "Exchange refused the sealed credentials")
	st, out := e.do(t, "POST", "/api/v1/registrations", e.token, "", strings.NewReader(good))
	if st != 422 || errCode(out) != "credentials_refused" {
		t.Errorf("refused credentials: %d %v", st, out)
	}
	mb, err := e.store.MailboxBySubscription(context.Background(), "")
	if err == nil {
		t.Errorf("unexpected mailbox %v", mb)
	}
	// Nothing registered: a fresh good registration gets a new mailbox with one device.
	e.watcher.err = nil
	st, out = e.do(t, "POST", "/api/v1/registrations", e.token, "", strings.NewReader(good))
	if st != 201 {
		t.Fatalf("good request after bad ones: %d %v", st, out)
	}
	reg, _ := e.store.Registration(context.Background(), e.tenant.ID, out["id"].(string))
	regs, _ := e.store.ActiveRegistrations(context.Background(), reg.MailboxID)
	if len(regs) != 1 {
		t.Errorf("mailbox has %d registrations, want 1", len(regs))
	}
}

func TestCheckinBadInput(t *testing.T) {
	e := setup(t)
	_, out := e.do(t, "POST", "/api/v1/registrations", e.token, "", strings.NewReader(regBody(iosToken, "https://mail.example.com/EWS", e.sealed(t))))
	id := out["id"].(string)
	for name, body := range map[string]string{
		"bad token":     `{"device":{"token":"xyz"}}`,
		"bad sealed":    `{"mailbox":{"sealedCredentials":"nope"}}`,
		"unknown field": `{"devices":{}}`,
	} {
		st, out := e.do(t, "POST", "/api/v1/registrations/"+id+"/checkin", e.token, "", bytes.NewBufferString(body))
		if st != 400 {
			t.Errorf("%s: %d %v", name, st, out)
		}
	}
	if reg, _ := e.store.Registration(context.Background(), e.tenant.ID, id); reg.Device.Token != iosToken {
		t.Errorf("refused check-in changed the token to %s", reg.Device.Token)
	}
	if st, _ := e.do(t, "POST", "/api/v1/registrations/nope/checkin", e.token, "", nil); st != 404 {
		t.Errorf("unknown id: %d", st)
	}
}

// TestRefusedReRegistrationRestoresThePrevious checks that a device that
// registers again and is refused by the mail server keeps the registration
// it had, as it was.
func TestRefusedReRegistrationRestoresThePrevious(t *testing.T) {
	e := setup(t)
	body := regBody(iosToken, "https://mail.example.com/EWS/Exchange.asmx", e.sealed(t))
	st, out := e.do(t, "POST", "/api/v1/registrations", e.token, "", strings.NewReader(body))
	if st != 201 {
		t.Fatalf("register = %d %v", st, out)
	}
	id := out["id"].(string)
	before, _ := e.store.Registration(context.Background(), e.tenant.ID, id)
	e.watcher.err = mailpush.Errorf(mailpush.ECredentials, "Exchange refused the sealed credentials")
	again := strings.Replace(body, `"subject_sender"`, `"badge"`, 1)
	if st, out := e.do(t, "POST", "/api/v1/registrations", e.token, "", strings.NewReader(again)); st != 422 {
		t.Fatalf("refused re-registration = %d %v", st, out)
	}
	after, err := e.store.Registration(context.Background(), e.tenant.ID, id)
	if err != nil {
		t.Fatalf("the device's registration was lost: %v", err)
	}
	if after.Status != before.Status || after.Content != before.Content || !after.ExpiresAt.Equal(before.ExpiresAt) || after.Device.Token != before.Device.Token {
		t.Errorf("registration changed by a refused request:\nbefore %+v\nafter  %+v", before, after)
	}
}

// TestScopes: each route admits only its scopes; a token of another scope
// gets 403 insufficient_scope, a wrong, unknown or revoked one 401.
func TestScopes(t *testing.T) {
	e := setup(t)
	reg := regBody(iosToken, "https://mail.example.com/EWS/Exchange.asmx", "")
	for _, tc := range []struct {
		name, method, path, token, body string
		status                          int
		code                            string
	}{
		{"app registers", "POST", "/api/v1/registrations", e.token, reg, 201, ""},
		{"backend registers", "POST", "/api/v1/registrations", e.backend, reg, 201, ""},
		{"admin cannot register", "POST", "/api/v1/registrations", e.admin, reg, 403, mailpush.EScope},
		{"app cannot read the gate", "GET", "/api/v1/gate/devices/d1", e.token, "", 403, mailpush.EScope},
		{"backend cannot write the gate", "PUT", "/api/v1/gate/devices/d1", e.backend, `{"state":"compliant"}`, 403, mailpush.EScope},
		{"app cannot delete from the gate", "DELETE", "/api/v1/gate/devices/d1", e.token, "", 403, mailpush.EScope},
		{"admin passes the scope check", "GET", "/api/v1/gate/devices/d1", e.admin, "", 422, mailpush.EUnsupported}, // no gate in this server
		{"unknown token id", "GET", "/api/v1/registrations/x", "nosuch.secret", "", 401, mailpush.EUnauthorized},
		{"wrong secret", "GET", "/api/v1/registrations/x", strings.Split(e.token, ".")[0] + ".wrong", "", 401, mailpush.EUnauthorized},
		{"no secret", "GET", "/api/v1/registrations/x", strings.Split(e.token, ".")[0], "", 401, mailpush.EUnauthorized},
	} {
		var body io.Reader
		if tc.body != "" {
			body = strings.NewReader(tc.body)
		}
		st, out := e.do(t, tc.method, tc.path, tc.token, "", body)
		if st != tc.status || (tc.code != "" && out["error"].(map[string]any)["code"] != tc.code) {
			t.Errorf("%s: %d %v, want %d %s", tc.name, st, out, tc.status, tc.code)
		}
	}
	id, _, _ := mailpush.SplitToken(e.token)
	if err := e.store.DeleteToken(context.Background(), e.tenant.ID, id); err != nil {
		t.Fatal(err)
	}
	if st, _ := e.do(t, "POST", "/api/v1/registrations", e.token, "", strings.NewReader(reg)); st != 401 {
		t.Errorf("revoked token = %d, want 401 at once", st)
	}
}

// TestReadyzSaysWhy checks that /readyz answers 503 in the JSON error
// envelope with the failing check's own reason, without its cause (which
// may name hosts and users), and 200 once the check passes again.
func TestReadyzSaysWhy(t *testing.T) {
	e := setup(t)
	var fail error
	var mu sync.Mutex
	e.srv.Ready = func(ctx context.Context) error {
		mu.Lock()
		defer mu.Unlock()
		return fail
	}
	set := func(err error) { mu.Lock(); fail = err; mu.Unlock() }
	set(mailpush.WrapError(mailpush.EUnavailable, "the database does not answer", errors.New("dial tcp db.internal.example:5432 user=mailpush: connection refused")))
	st, body := e.do(t, "GET", "/readyz", "", "", nil)
	errObj, _ := body["error"].(map[string]any)
	if st != http.StatusServiceUnavailable || errObj["code"] != mailpush.EUnavailable || errObj["message"] != "not ready: the database does not answer" {
		t.Fatalf("/readyz = %d %v", st, body)
	}
	// A check failing without a reason of its own still names the database.
	set(errors.New("db.internal.example: timeout"))
	st, body = e.do(t, "GET", "/readyz", "", "", nil)
	if msg := body["error"].(map[string]any)["message"]; st != 503 || msg != "not ready: the database does not answer" {
		t.Fatalf("/readyz = %d %v", st, body)
	}
	set(nil)
	if st, body = e.do(t, "GET", "/readyz", "", "", nil); st != 200 || body["status"] != "ready" {
		t.Fatalf("/readyz = %d %v", st, body)
	}
}
