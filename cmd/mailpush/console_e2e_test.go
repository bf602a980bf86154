package main

import (
	"context"
	"crypto/x509"
	"fmt"
	"html"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/mailpush/mailpush"
	"github.com/mailpush/mailpush/clocktest"
	"github.com/mailpush/mailpush/fake/oidcfake"
)

// adminClient is a browser-like HTTP client of the console: a cookie jar,
// redirects followed.
type adminClient struct {
	t    testing.TB
	base string
	http *http.Client
}

func newAdminClient(t testing.TB, base string) *adminClient {
	jar, _ := cookiejar.New(nil)
	return &adminClient{t: t, base: base, http: &http.Client{Jar: jar, Timeout: 30 * time.Second}}
}

func (a *adminClient) get(path string) (int, string) {
	a.t.Helper()
	resp, err := a.http.Get(a.base + path)
	if err != nil {
		a.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func (a *adminClient) post(path string, form url.Values) (int, string) {
	a.t.Helper()
	req, _ := http.NewRequest("POST", a.base+path, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := a.http.Do(req)
	if err != nil {
		a.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

var (
	loginField = regexp.MustCompile(`name="login" value="([^"]+)"`)
	csrfField  = regexp.MustCompile(`name="csrf" value="([^"]+)"`)
)

func field(t testing.TB, re *regexp.Regexp, page string) string {
	t.Helper()
	m := re.FindStringSubmatch(page)
	if m == nil {
		t.Fatalf("no %s in page:\n%s", re, page)
	}
	return html.UnescapeString(m[1])
}

// signIn signs in with a token and returns the status and page.
func (a *adminClient) signIn(token string) (int, string) {
	a.t.Helper()
	_, page := a.get("/admin/login")
	return a.post("/admin/login", url.Values{"login": {field(a.t, loginField, page)}, "token": {token}})
}

func (a *adminClient) csrf() string {
	a.t.Helper()
	_, page := a.get("/admin/tenants")
	return field(a.t, csrfField, page)
}

// TestConsoleTokenSignInAndRefusals plays the attacker against the console:
// wrong and non-admin tokens, forms without or with a wrong CSRF token or
// from another origin, forged and expired session cookies, a tenant admin
// reaching for another tenant, and a script in the search box.
func TestConsoleTokenSignInAndRefusals(t *testing.T) {
	clock := clocktest.New(time.Now())
	w := newWorldWith(t, "info", worldOptions{clock: clock})
	app := w.addTenant(t, "acme")
	admin := w.addToken(t, "acme", mailpush.ScopeAdmin)
	w.addTenant(t, "globex")
	globexAdmin := w.addToken(t, "globex", mailpush.ScopeAdmin)
	base := w.main.URL()

	// Not signed in: every page leads to the sign-in page; a change is refused.
	anon := newAdminClient(t, base)
	if st, page := anon.get("/admin/tenants"); st != 200 || !strings.Contains(page, `name="token"`) {
		t.Fatalf("anonymous /admin/tenants = %d, want the sign-in page", st)
	}
	if st, page := anon.post("/admin/tenants/x", url.Values{"maxContent": {"subject_sender"}}); st != 401 || !strings.Contains(page, "not_signed_in") {
		t.Errorf("anonymous change = %d", st)
	}
	// Wrong token, app token, malformed token, missing login CSRF.
	for _, tc := range []struct{ token, want string }{
		{"nope", "malformed"}, {"abc.def", "not valid"}, {app, "scope app"},
	} {
		c := newAdminClient(t, base)
		if st, page := c.signIn(tc.token); st < 400 || !strings.Contains(page, tc.want) {
			t.Errorf("sign in with %q = %d, want a refusal saying %q", tc.token, st, tc.want)
		}
		if st, _ := c.get("/admin/tenants"); st != 200 {
			t.Fatal(st)
		}
	}
	if st, page := anon.post("/admin/login", url.Values{"token": {admin}}); st != 403 || !strings.Contains(page, "csrf") {
		t.Errorf("sign-in without the login token = %d", st)
	}

	// A tenant admin sees and changes its own tenant only.
	acme := newAdminClient(t, base)
	if st, page := acme.signIn(admin); st != 200 || !strings.Contains(page, "Signed in") {
		t.Fatalf("sign in = %d %s", st, page)
	}
	_, page := acme.get("/admin/tenants")
	if !strings.Contains(page, "tenant-acme") || strings.Contains(page, "tenant-globex") {
		t.Errorf("acme's admin sees:\n%s", page)
	}
	tenants, _ := w.main.Store.Tenants(context.Background())
	ids := map[string]string{}
	for _, tn := range tenants {
		ids[tn.Name] = tn.ID
	}
	csrf := acme.csrf()
	if st, _ := acme.post("/admin/tenants/"+ids["globex"], url.Values{"csrf": {csrf}, "maxContent": {"subject_sender"}}); st != 403 {
		t.Errorf("acme's admin changing globex = %d, want 403", st)
	}
	// CSRF: missing, wrong, and from another origin: nothing changes.
	for name, form := range map[string]url.Values{
		"missing": {"maxContent": {"subject_sender"}},
		"wrong":   {"maxContent": {"subject_sender"}, "csrf": {"x" + csrf}},
	} {
		if st, page := acme.post("/admin/tenants/"+ids["acme"], form); st != 403 || !strings.Contains(page, "csrf") {
			t.Errorf("CSRF %s = %d", name, st)
		}
	}
	req, _ := http.NewRequest("POST", base+"/admin/tenants/"+ids["acme"], strings.NewReader(url.Values{"csrf": {csrf}, "maxContent": {"subject_sender"}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", "https://evil.example")
	if resp, err := acme.http.Do(req); err != nil || resp.StatusCode != 403 {
		t.Errorf("cross-origin post = %v %v", resp.StatusCode, err)
	}
	// addTenant gave subject_sender; the refused changes left it.
	if tn, _ := w.main.Store.Tenant(context.Background(), ids["acme"]); tn.MaxContent != mailpush.ContentSubjectSender {
		t.Errorf("a refused change changed the tenant: %s", tn.MaxContent)
	}
	// The real change, audited.
	if st, page := acme.post("/admin/tenants/"+ids["acme"], url.Values{"csrf": {csrf}, "maxContent": {"badge"}, "hosts": {"mail.acme.example\n*.corp.acme.example"}}); st != 200 || !strings.Contains(page, "tenant acme updated") {
		t.Errorf("update = %d", st)
	}
	if tn, _ := w.main.Store.Tenant(context.Background(), ids["acme"]); tn.MaxContent != mailpush.ContentBadge || len(tn.AllowedHosts) != 2 {
		t.Errorf("after update: %+v", tn)
	}
	if _, page := acme.get("/admin/audit"); !strings.Contains(page, "tenant.update") || !strings.Contains(page, "token:") {
		t.Errorf("audit log lacks the change:\n%s", page)
	}
	// Bad values are named.
	if st, page := acme.post("/admin/tenants/"+ids["acme"], url.Values{"csrf": {csrf}, "maxContent": {"everything"}}); st != 400 || !strings.Contains(page, "invalid_content") {
		t.Errorf("bad content = %d", st)
	}

	// Reflected input is escaped in the search boxes.
	payload := `"><script>alert(1)</script><img src=x onerror=alert(2)>`
	for _, path := range []string{"/admin/registrations?address=", "/admin/gate?device="} {
		_, page := acme.get(path + url.QueryEscape(payload))
		if strings.Contains(page, "<script>alert(1)") || strings.Contains(page, "<img src=x") {
			t.Errorf("%s reflects the payload unescaped", path)
		}
		if !strings.Contains(page, "&lt;script&gt;") && !strings.Contains(page, "&#34;&gt;&lt;script&gt;") {
			t.Errorf("%s does not show the escaped input", path)
		}
	}

	// A forged cookie is no session.
	forged := newAdminClient(t, base)
	u, _ := url.Parse(base)
	forged.http.Jar.SetCookies(u, []*http.Cookie{{Name: "mailpush_admin", Value: strings.Repeat("A", 43), Path: "/"}})
	if _, page := forged.get("/admin/tenants"); !strings.Contains(page, `name="token"`) {
		t.Error("a forged cookie was accepted")
	}

	// Idle timeout: 31 minutes without a request end the session.
	globex := newAdminClient(t, base)
	globex.signIn(globexAdmin)
	if _, page := globex.get("/admin/tenants"); !strings.Contains(page, "tenant-globex") {
		t.Fatal("globex admin not signed in")
	}
	clock.Advance(31 * time.Minute)
	if _, page := globex.get("/admin/tenants"); !strings.Contains(page, `name="token"`) {
		t.Error("an idle session survived the idle timeout")
	}
	// Absolute timeout: kept busy, the session still ends after 12 hours.
	globex.signIn(globexAdmin)
	for range 25 {
		clock.Advance(29 * time.Minute)
		globex.get("/admin/subscriptions")
	}
	if _, page := globex.get("/admin/tenants"); !strings.Contains(page, `name="token"`) {
		t.Error("a session outlived the absolute timeout")
	}

	// Revoking the admin token ends its sessions at once, and it can no
	// longer sign in.
	acme.signIn(admin) // the clock moved past the earlier session's timeouts
	if _, page := acme.get("/admin/tenants"); !strings.Contains(page, "tenant-acme") {
		t.Fatal("acme's admin is not signed in")
	}
	if err := w.main.RevokeToken(context.Background(), "acme", strings.SplitN(admin, ".", 2)[0]); err != nil {
		t.Fatal(err)
	}
	if _, page := acme.get("/admin/tenants"); !strings.Contains(page, `name="token"`) {
		t.Error("a session outlived the revocation of its token")
	}
	if st, _ := newAdminClient(t, base).signIn(admin); st != 401 {
		t.Errorf("sign in with a revoked token = %d", st)
	}
	// Cookies are HttpOnly and SameSite=Strict.
	resp, _ := http.Get(base + "/admin/login")
	resp.Body.Close()
	for _, c := range resp.Cookies() {
		if !c.HttpOnly || c.SameSite != http.SameSiteStrictMode {
			t.Errorf("cookie %s: HttpOnly %v SameSite %v", c.Name, c.HttpOnly, c.SameSite)
		}
	}
	if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") || strings.Contains(csp, "script-src") {
		t.Errorf("CSP = %q", csp)
	}
}

// TestConsoleOIDC signs in through the fake identity provider and shows
// that each way a provider (or an attacker between it and the browser) can
// lie is refused: another issuer, another audience, a wrong nonce, a
// foreign signing key, an expired token, a state that is not this
// browser's, and a person who is not on the admin list.
func TestConsoleOIDC(t *testing.T) {
	var idp *oidcfake.Server
	w := newWorldWith(t, "info", worldOptions{extra: func(w *world) (string, []*x509.Certificate) {
		idp = oidcfake.Start("mailpush-console", "s3cret", "", oidcfake.User{Subject: "u-1", Email: "ops@example.com", EmailVerified: true})
		t.Cleanup(idp.Close)
		secret := filepath.Join(w.dir, "oidc-secret")
		os.WriteFile(secret, []byte("s3cret\n"), 0o600)
		return fmt.Sprintf("console:\n  oidc:\n    issuer: %s\n    clientId: mailpush-console\n    clientSecretFile: %s\n    admins: [ops@example.com, u-2]\n", idp.URL(), secret), nil
	}})
	idp.SetRedirectURI(w.main.URL() + "/admin/oidc/callback")
	w.addTenant(t, "acme")

	signIn := func() (int, string) {
		c := newAdminClient(t, w.main.URL())
		st, page := c.get("/admin/oidc/start")
		if st == 200 && strings.Contains(page, "Signed in") {
			_, page = c.get("/admin/tenants")
		}
		return st, page
	}
	st, page := signIn()
	if st != 200 || !strings.Contains(page, "tenant-acme") || !strings.Contains(page, "ops@example.com") {
		t.Fatalf("OIDC sign-in = %d:\n%s", st, page)
	}
	for name, tc := range map[string]struct {
		m    oidcfake.Misbehaviour
		code string
	}{
		"wrong issuer":   {oidcfake.Misbehaviour{Issuer: "https://evil.example"}, "oidc_id_token"},
		"wrong audience": {oidcfake.Misbehaviour{Audience: "another-app"}, "oidc_id_token"},
		"wrong nonce":    {oidcfake.Misbehaviour{Nonce: "replayed"}, "oidc_nonce"},
		"foreign key":    {oidcfake.Misbehaviour{Foreign: true}, "oidc_id_token"},
		"expired":        {oidcfake.Misbehaviour{Expired: true}, "oidc_id_token"},
	} {
		idp.Misbehave(tc.m)
		if st, page := signIn(); st != 401 || !strings.Contains(page, tc.code) {
			t.Errorf("%s: %d, want 401 %s:\n%s", name, st, tc.code, page)
		}
	}
	idp.Misbehave(oidcfake.Misbehaviour{})
	// Not on the list; an unverified email does not count.
	idp.SetUser(oidcfake.User{Subject: "u-9", Email: "someone@example.com", EmailVerified: true})
	if st, page := signIn(); st != 403 || !strings.Contains(page, "not_an_admin") {
		t.Errorf("a stranger = %d", st)
	}
	idp.SetUser(oidcfake.User{Subject: "u-9", Email: "ops@example.com", EmailVerified: false})
	if st, _ := signIn(); st != 403 {
		t.Errorf("an unverified email = %d", st)
	}
	idp.SetUser(oidcfake.User{Subject: "u-2"})
	if st, page := signIn(); st != 200 || !strings.Contains(page, "tenant-acme") {
		t.Errorf("an admin by subject = %d", st)
	}
	// A callback that this browser did not start (no pending cookie), and
	// one whose state is not the pending one.
	c := newAdminClient(t, w.main.URL())
	if st, page := c.get("/admin/oidc/callback?code=x&state=y"); st != 400 || !strings.Contains(page, "oidc_no_pending") {
		t.Errorf("callback without a pending sign-in = %d", st)
	}
	noFollow := &http.Client{Jar: c.http.Jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := noFollow.Get(w.main.URL() + "/admin/oidc/start")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if st, page := c.get("/admin/oidc/callback?code=x&state=forged"); st != 400 || !strings.Contains(page, "oidc_state") {
		t.Errorf("callback with a forged state = %d", st)
	}
}
