package main

import (
	"bytes"
	"context"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/mailpush/mailpush"
)

var versionField = regexp.MustCompile(`name="version" value="([0-9]+)"`)

// consoleGateAuth asks base's /gate/auth about an iPhone of alice's and
// returns the status and the reason.
func consoleGateAuth(t *testing.T, base, deviceID string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", base+"/gate/auth", nil)
	req.Header.Set("X-Original-URI", "/Microsoft-Server-ActiveSync?Cmd=Sync&User="+url.QueryEscape(address)+"&DeviceId="+deviceID+"&DeviceType=iPhone")
	req.Header.Set("User-Agent", "Apple-iPhone/1")
	req.SetBasicAuth(address, "the user's password (the gate reads only the user)")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode, resp.Header.Get("X-Mailpush-Reason")
}

// TestConsoleGateRules edits the gate's rules through the console: each
// change is audited and decides the very next /gate/auth; a form without
// CSRF, from another tenant's admin, against an old version or with a bad
// network changes nothing; a script in a rule name comes back as text; the
// recent decisions list shows the DeviceId only hashed.
func TestConsoleGateRules(t *testing.T) {
	w := newWorld(t, "info", "gate:\n  tenant: acme\n  proxy: nginx\n  rules:\n    - {name: guest-wifi, action: deny, networks: [192.168.77.0/24]}\n    - {name: ceo-blackberry, action: allow, users: [ceo@example.com], deviceTypes: [BlackBerry]}\n")
	w.addTenant(t, "acme")
	admin := w.addToken(t, "acme", mailpush.ScopeAdmin)
	w.addTenant(t, "globex")
	globexAdmin := w.addToken(t, "globex", mailpush.ScopeAdmin)
	ctx := context.Background()
	acmeT, _ := w.main.Store.TenantByName(ctx, "acme")
	if _, _, err := w.main.GateRegistry.SetDevice(ctx, acmeT.ID, mailpush.GateDeviceUpdate{DeviceID: "RULEDEV1", User: address, DeviceType: "iPhone", State: mailpush.DeviceCompliant}); err != nil {
		t.Fatal(err)
	}
	base := w.main.URL()
	if st, reason := consoleGateAuth(t, base, "RULEDEV1"); st != 200 {
		t.Fatalf("/gate/auth before any edit = %d %q", st, reason)
	}

	c := newAdminClient(t, base)
	if st, _ := c.signIn(admin); st != 200 {
		t.Fatal("sign in failed")
	}
	_, page := c.get("/admin/gate")
	if !strings.Contains(page, "guest-wifi") {
		t.Fatalf("the gate page does not list the file's rule (the seed):\n%s", page)
	}
	csrf, version := field(t, csrfField, page), field(t, versionField, page)
	stored := func() ([]mailpush.GateRule, int64) {
		rules, v, err := w.main.Store.GateRules(ctx, acmeT.ID)
		if err != nil {
			t.Fatal(err)
		}
		return rules, v
	}
	_, v0 := stored()
	payload := `<script>alert(1)</script>no-iphones`
	add := url.Values{"csrf": {csrf}, "version": {version}, "name": {payload}, "action": {"deny"}, "deviceTypes": {"iPhone"}, "position": {"0"}}

	// Refused: no CSRF, another tenant's admin, a bad network, a bad
	// action, a stale version. Nothing is stored.
	noCSRF := url.Values{}
	for k, v := range add {
		if k != "csrf" {
			noCSRF[k] = v
		}
	}
	if st, page := c.post("/admin/gate/rules/add", noCSRF); st != 403 || !strings.Contains(page, "csrf") {
		t.Errorf("add without CSRF = %d", st)
	}
	globex := newAdminClient(t, base)
	globex.signIn(globexAdmin)
	gcsrf := globex.csrf()
	if st, _ := globex.post("/admin/gate/rules/add", url.Values{"csrf": {gcsrf}, "version": {version}, "name": {"x"}, "action": {"deny"}, "deviceTypes": {"iPhone"}}); st != 403 {
		t.Errorf("another tenant's admin adding a rule = %d, want 403", st)
	}
	if _, page := globex.get("/admin/gate"); strings.Contains(page, "guest-wifi") {
		t.Error("another tenant's admin sees the gate's rules")
	}
	for name, tc := range map[string]struct {
		form   url.Values
		status int
		want   string
	}{
		"bad network":   {url.Values{"csrf": {csrf}, "version": {version}, "name": {"n"}, "action": {"deny"}, "networks": {"10.0.0.0/33"}}, 400, `networks: &#34;10.0.0.0/33&#34; is not a CIDR network`},
		"bad action":    {url.Values{"csrf": {csrf}, "version": {version}, "name": {"n"}, "action": {"maybe"}, "networks": {"10.0.0.0/8"}}, 400, `action: &#34;maybe&#34; must be allow or deny`},
		"matches all":   {url.Values{"csrf": {csrf}, "version": {version}, "name": {"n"}, "action": {"allow"}}, 400, "matches every request"},
		"no name":       {url.Values{"csrf": {csrf}, "version": {version}, "action": {"deny"}, "networks": {"10.0.0.0/8"}}, 400, "needs a name"},
		"stale version": {url.Values{"csrf": {csrf}, "version": {"999"}, "name": {"n"}, "action": {"deny"}, "networks": {"10.0.0.0/8"}}, 409, "changed meanwhile"},
		"no version":    {url.Values{"csrf": {csrf}, "name": {"n"}, "action": {"deny"}, "networks": {"10.0.0.0/8"}}, 400, "version"},
		"bad position":  {url.Values{"csrf": {csrf}, "version": {version}, "name": {"n"}, "action": {"deny"}, "networks": {"10.0.0.0/8"}, "position": {"7"}}, 400, "position must be 0 to 2"},
	} {
		if st, page := c.post("/admin/gate/rules/add", tc.form); st != tc.status || !strings.Contains(page, tc.want) {
			t.Errorf("%s: %d, want %d saying %q", name, st, tc.status, tc.want)
		}
	}
	if st, _ := c.post("/admin/gate/rules/5/remove", url.Values{"csrf": {csrf}, "version": {version}}); st != 404 {
		t.Errorf("removing a rule that is not there = %d", st)
	}
	if st, _ := c.post("/admin/gate/rules/0/up", url.Values{"csrf": {csrf}, "version": {version}}); st != 400 {
		t.Errorf("moving the first rule up = %d", st)
	}
	if _, v := stored(); v != v0 {
		t.Fatalf("a refused change stored version %d (was %d)", v, v0)
	}
	if st, _ := consoleGateAuth(t, base, "RULEDEV1"); st != 200 {
		t.Fatal("a refused change changed the gate's decision")
	}

	// The real change: the next request is denied by the new rule.
	st, page := c.post("/admin/gate/rules/add", add)
	if st != 200 {
		t.Fatalf("add = %d:\n%s", st, page)
	}
	if strings.Contains(page, "<script>alert(1)") || !strings.Contains(page, "&lt;script&gt;alert(1)&lt;/script&gt;no-iphones") {
		t.Error("the rule name is not shown escaped")
	}
	if st, reason := consoleGateAuth(t, base, "RULEDEV1"); st != 403 || reason != "denied by rule "+payload {
		t.Errorf("/gate/auth after adding the rule = %d %q", st, reason)
	}
	rules, _ := stored()
	if len(rules) != 3 || rules[0].Name != payload || rules[1].Name != "guest-wifi" || len(rules[2].UserHashes) != 1 {
		t.Errorf("stored rules = %+v", rules)
	}
	// Move it below guest-wifi (still denies: guest-wifi does not match),
	// then remove it: allowed again.
	_, page = c.get("/admin/gate")
	version = field(t, versionField, page)
	if st, _ := c.post("/admin/gate/rules/0/down", url.Values{"csrf": {csrf}, "version": {version}}); st != 200 {
		t.Errorf("move down = %d", st)
	}
	if rules, _ := stored(); rules[0].Name != "guest-wifi" {
		t.Errorf("after move down: %+v", rules)
	}
	_, page = c.get("/admin/gate")
	version = field(t, versionField, page)
	if st, _ := c.post("/admin/gate/rules/1/remove", url.Values{"csrf": {csrf}, "version": {version}}); st != 200 {
		t.Errorf("remove = %d", st)
	}
	if st, reason := consoleGateAuth(t, base, "RULEDEV1"); st != 200 {
		t.Errorf("/gate/auth after removing the rule = %d %q", st, reason)
	}
	// Audited, and the decisions list shows the decisions with the DeviceId hashed.
	_, page = c.get("/admin/audit")
	for _, want := range []string{"gate.rule.add", "gate.rule.down", "gate.rule.remove"} {
		if !strings.Contains(page, want) {
			t.Errorf("the audit log lacks %s", want)
		}
	}
	_, page = c.get("/admin/gate")
	if n := strings.Count(page, `class="decision"`); n != 4 {
		t.Errorf("the gate page lists %d recent decisions, want 4", n)
	}
	decisions := page[strings.Index(page, `id="decisions"`):]
	decisions = decisions[:strings.Index(decisions, "</table>")]
	if strings.Contains(decisions, "RULEDEV1") || !strings.Contains(decisions, "denied by rule &lt;script&gt;") {
		t.Errorf("recent decisions: the DeviceId is in clear or the rule's denial is missing:\n%s", page)
	}
	// The rule's user is stored as a keyed hash only.
	for _, f := range []string{"mailpush.db", "mailpush.db-wal"} {
		b, _ := os.ReadFile(filepath.Join(w.dir, "data", f))
		if bytes.Contains(bytes.ToLower(b), []byte("ceo@example.com")) {
			t.Errorf("%s holds a rule's user in clear", f)
		}
	}
}

// TestConsoleSubscriptionsAndQuotas: the subscriptions page counts the
// renewals due per window from the engine's rule and says which sources
// have none to renew; the tenants page shows the registration quota and
// its use. No address appears.
func TestConsoleSubscriptionsAndQuotas(t *testing.T) {
	w := newWorldWith(t, "info", worldOptions{extraConfig: "registrations: {maxPerTenant: 40, maxPerMailbox: 3, rate: 7}\n"})
	app := w.addTenant(t, "acme")
	admin := w.addToken(t, "acme", mailpush.ScopeAdmin)
	st, reg := w.call(t, "POST", "/api/v1/registrations", app, map[string]any{
		"device":  map[string]any{"platform": "ios", "token": deviceToken(3)},
		"mailbox": map[string]any{"address": address, "source": "ews", "ewsUrl": w.exchange.URL(), "sealedCredentials": w.sealCredentials(t, username, password)},
	})
	if st != 201 {
		t.Fatalf("register = %d %v", st, reg)
	}
	c := newAdminClient(t, w.main.URL())
	c.signIn(admin)
	_, page := c.get("/admin/subscriptions")
	ews := page[strings.Index(page, `id="source-ews"`):]
	ews = ews[:strings.Index(ews, "</section>")]
	due := regexp.MustCompile(`<b>(\d+)</b><span>([a-z ]+)</span>`).FindAllStringSubmatch(ews, -1)
	if len(due) != 3 || due[0][1] != "0" || due[0][2] != "due now" || due[2][1] != "1" || due[2][2] != "within the next day" {
		t.Errorf("EWS renewals due = %v, want 0 due now and 1 within the next day:\n%s", due, ews)
	}
	if !strings.Contains(ews, "Healing in progress") || !strings.Contains(page, "there is no subscription to renew") {
		t.Errorf("the page lacks the healing list or Dovecot's note:\n%s", page)
	}
	_, page = c.get("/admin/tenants")
	if !strings.Contains(page, `<span class="reg-count">1</span> of <span class="reg-limit">40</span>`) || !strings.Contains(page, `<span class="mailbox-limit">3</span>`) ||
		!strings.Contains(page, `<span class="reg-rate">7</span>/s, bursts of <span class="reg-burst">200</span>`) {
		t.Errorf("the tenants page does not show the quota 1 of 40, 3 per mailbox:\n%s", page)
	}
	for _, p := range []string{"/admin/subscriptions", "/admin/tenants"} {
		if _, page := c.get(p); strings.Contains(strings.ToLower(page), address) {
			t.Errorf("%s shows the address", p)
		}
	}
}
