package main

import (
	"bytes"
	"crypto/x509"
	"encoding/base64"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"howett.net/plist"

	"github.com/mailpush/mailpush"
	"github.com/mailpush/mailpush/directory/slapdtest"
)

// appConfigLDIF holds users as Active Directory shows them: alice with
// every attribute and a non-ASCII display name, bob without the optional
// ones, a user whose account name is made of LDAP filter metacharacters,
// and a formula-looking display name.
func appConfigLDIF() string {
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	return `dn: ou=people,dc=example,dc=com
objectClass: organizationalUnit
ou: people

dn: uid=alice,ou=people,dc=example,dc=com
objectClass: inetOrgPerson
objectClass: mailpushTestUser
uid: alice
cn: Alice
sn: Müller
displayName:: ` + b64("Ålice Müller 山田") + `
mail: alice@example.com
mobile: +1 555 0100
departmentNumber: R&D
userPrincipalName: alice@corp.example.com
sAMAccountName: alice

dn: uid=bob,ou=people,dc=example,dc=com
objectClass: inetOrgPerson
objectClass: mailpushTestUser
uid: bob
cn: Bob
sn: Bob
mail: bob@example.com
departmentNumber: Sales
userPrincipalName: bob@corp.example.com
sAMAccountName: bob

dn: uid=odd,ou=people,dc=example,dc=com
objectClass: inetOrgPerson
objectClass: mailpushTestUser
uid: odd
cn: Odd
sn: Odd
mail: odd@example.com
departmentNumber: x
displayName: =HYPERLINK("http://evil.example")
userPrincipalName: odd@corp.example.com
sAMAccountName:: ` + b64(`a*b(c)d\e`) + `
`
}

type appConfigWorld struct {
	*world
	slapd        *slapdtest.Server
	admin, app   string
	appTokenFile string
}

func newAppConfigWorld(t *testing.T) *appConfigWorld {
	slapd := slapdtest.Start(t, appConfigLDIF(), slapdtest.Options{Anonymous: true})
	a := &appConfigWorld{slapd: slapd}
	a.world = newWorldWith(t, "debug", worldOptions{extra: func(w *world) (string, []*x509.Certificate) {
		a.appTokenFile = filepath.Join(w.dir, "app-token")
		os.WriteFile(a.appTokenFile, []byte("acme.app-token-for-the-mdm\n"), 0o600)
		return fmt.Sprintf(`tenants:
  acme:
    directory:
      url: %s
      baseDn: %s
      attributes: [mail]
      timeout: 2s
      dialTimeout: 1s
    appConfig:
      attributes: [mobile, departmentNumber]
      appTokenFile: %s
      keys:
        pushServiceUrl: "${mailpush.url}/api/v1"
        appToken: "${ tenant.appToken }"
        pushEnabled: true
        pollMinutes: 15
        ewsUrl: https://mail.example.com/EWS/Exchange.asmx
        user: "${user.userPrincipalName}"
        displayName: "${user.displayname:-}"
        phone: "${user.MOBILE:-none}"
        department: "${user.departmentNumber}"
        SEND_LDAP_ATTRIBUTES: "userPrincipalName=${user.userprincipalname},sAMAccountNAme=${user.samaccountname}, displayName= ${ user.displayName:-} ,mail= ${ user.mail}"
`, slapd.URL, slapdtest.BaseDN, a.appTokenFile), nil
	}})
	a.addTenant(t, "acme")
	a.admin = a.addToken(t, "acme", mailpush.ScopeAdmin)
	a.app = a.addToken(t, "acme", mailpush.ScopeApp)
	return a
}

// get fetches path with token and Accept, returning status, headers and body.
func (a *appConfigWorld) get(t *testing.T, path, token, accept string) (int, http.Header, []byte) {
	t.Helper()
	req, _ := http.NewRequest("GET", a.main.URL()+path, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, b
}

func TestAppConfigFromRealDirectory(t *testing.T) {
	a := newAppConfigWorld(t)
	want := map[string]any{
		"pushServiceUrl":       a.main.URL() + "/api/v1",
		"appToken":             "acme.app-token-for-the-mdm",
		"pushEnabled":          true,
		"pollMinutes":          float64(15),
		"ewsUrl":               "https://mail.example.com/EWS/Exchange.asmx",
		"user":                 "alice@corp.example.com",
		"displayName":          "Ålice Müller 山田",
		"phone":                "+1 555 0100",
		"department":           "R&D",
		"SEND_LDAP_ATTRIBUTES": "userPrincipalName=alice@corp.example.com,sAMAccountNAme=alice, displayName= Ålice Müller 山田 ,mail= alice@example.com",
	}
	// By sAMAccountName, userPrincipalName or mail: the same user.
	for _, name := range []string{"alice", "alice@corp.example.com", "alice@example.com", "ALICE"} {
		st, h, body := a.get(t, "/api/v1/appconfig/"+url.PathEscape(name), a.admin, "")
		var got map[string]any
		if err := json.Unmarshal(body, &got); st != 200 || err != nil || !strings.HasPrefix(h.Get("Content-Type"), "application/json") {
			t.Fatalf("%s = %d %s", name, st, body)
		}
		for k, v := range want {
			if got[k] != v {
				t.Errorf("%s: %s = %#v, want %#v", name, k, got[k], v)
			}
		}
		if len(got) != len(want) {
			t.Errorf("%s: %d keys, want %d: %v", name, len(got), len(want), got)
		}
	}

	// The plist an MDM uploads as the app's managed configuration.
	st, h, body := a.get(t, "/api/v1/appconfig/alice", a.admin, "application/x-plist")
	var p map[string]any
	if _, err := plist.Unmarshal(body, &p); st != 200 || err != nil || h.Get("Content-Type") != "application/x-plist" {
		t.Fatalf("plist = %d %v %s", st, err, body)
	}
	if p["pushEnabled"] != true || p["pollMinutes"] != uint64(15) || p["displayName"] != "Ålice Müller 山田" || !bytes.Contains(body, []byte("<true/>")) {
		t.Errorf("plist = %v\n%s", p, body)
	}

	// Missing optional attributes: the defaults.
	st, _, body = a.get(t, "/api/v1/appconfig/bob", a.admin, "")
	var bob map[string]any
	json.Unmarshal(body, &bob)
	if st != 200 || bob["phone"] != "none" || bob["displayName"] != "" || bob["user"] != "bob@corp.example.com" {
		t.Errorf("bob = %d %v", st, bob)
	}

	// LDAP filter metacharacters are matched literally (escaped), never
	// as wildcards or filter syntax: against the real slapd.
	for name, wantStatus := range map[string]int{
		"*":                       404,
		"al*":                     404,
		"alice)(sAMAccountName=*": 404,
		"*)(|(mail=*":             404,
		`a*b(c)d\e`:               200, // the odd user's literal account name
		"nobody":                  404,
	} {
		st, _, body := a.get(t, "/api/v1/appconfig/"+url.PathEscape(name), a.admin, "")
		var got map[string]any
		json.Unmarshal(body, &got)
		if st != wantStatus {
			t.Errorf("%q = %d %s, want %d", name, st, body, wantStatus)
		}
		if st == 200 && got["user"] != "odd@corp.example.com" {
			t.Errorf("%q found %v, want the odd user only", name, got["user"])
		}
		if st == 404 && errCode(got) != mailpush.ENotFound {
			t.Errorf("%q = %s, want code not_found", name, body)
		}
	}
	if st, _, body := a.get(t, "/api/v1/appconfig/"+url.PathEscape(strings.Repeat("x", 300)), a.admin, ""); st != 400 {
		t.Errorf("long name = %d %s", st, body)
	}
}

// TestAppConfigNeedsAdmin plays the holder of the app token (it ships in
// every app) and of no token: neither reads anyone's configuration, which
// carries the app token and directory attributes.
func TestAppConfigNeedsAdmin(t *testing.T) {
	a := newAppConfigWorld(t)
	backend := a.addToken(t, "acme", mailpush.ScopeBackend)
	for _, tok := range []struct{ name, token string }{{"app", a.app}, {"backend", backend}} {
		st, _, body := a.get(t, "/api/v1/appconfig/alice", tok.token, "")
		if st != 403 || !bytes.Contains(body, []byte(mailpush.EScope)) || bytes.Contains(body, []byte("app-token")) {
			t.Errorf("%s token = %d %s, want 403 %s", tok.name, st, body, mailpush.EScope)
		}
		if st, _ := a.call(t, "POST", "/api/v1/appconfig/export", tok.token, map[string]any{"users": []string{"alice"}}); st != 403 {
			t.Errorf("%s token export = %d", tok.name, st)
		}
	}
	if st, _, _ := a.get(t, "/api/v1/appconfig/alice", "", ""); st != 401 {
		t.Errorf("no token = %d, want 401", st)
	}
}

func TestAppConfigExport(t *testing.T) {
	a := newAppConfigWorld(t)
	users := []string{"alice", "bob", "nobody", `a*b(c)d\e`}
	st, out := a.call(t, "POST", "/api/v1/appconfig/export", a.admin, map[string]any{"users": users})
	configs, _ := out["configs"].([]any)
	errs, _ := out["errors"].([]any)
	if st != 200 || len(configs) != 3 || len(errs) != 1 || errs[0].(map[string]any)["user"] != "nobody" || errs[0].(map[string]any)["code"] != mailpush.ENotFound {
		t.Fatalf("JSON export = %d %v", st, out)
	}

	b, _ := json.Marshal(map[string]any{"users": users})
	req, _ := http.NewRequest("POST", a.main.URL()+"/api/v1/appconfig/export", bytes.NewReader(b))
	req.Header.Set("Authorization", "Bearer "+a.admin)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "text/csv")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	rows, err := csv.NewReader(resp.Body).ReadAll()
	if err != nil || resp.StatusCode != 200 || len(rows) != 5 {
		t.Fatalf("CSV export = %d %v %v", resp.StatusCode, rows, err)
	}
	col := map[string]int{}
	for i, h := range rows[0] {
		col[h] = i
	}
	if rows[0][0] != "_user" || rows[0][len(rows[0])-1] != "_error" || len(col) != 12 {
		t.Errorf("header = %v", rows[0])
	}
	byUser := map[string][]string{}
	for _, r := range rows[1:] {
		byUser[r[0]] = r
	}
	if r := byUser["alice"]; r[col["displayName"]] != "Ålice Müller 山田" || r[col["pushEnabled"]] != "true" || r[col["_error"]] != "" {
		t.Errorf("alice row = %v", r)
	}
	// A display name that a spreadsheet would run as a formula is defused.
	if r := byUser[`a*b(c)d\e`]; r[col["displayName"]] != `'=HYPERLINK("http://evil.example")` {
		t.Errorf("odd row = %v", r)
	}
	if r := byUser["nobody"]; !strings.HasPrefix(r[col["_error"]], mailpush.ENotFound) {
		t.Errorf("nobody row = %v", r)
	}

	for _, body := range []any{map[string]any{"users": []string{}}, map[string]any{"users": make([]string, 1001)}, map[string]any{"user": "alice"}} {
		if st, out := a.call(t, "POST", "/api/v1/appconfig/export", a.admin, body); st != 400 || errCode(out) != mailpush.EInvalid {
			t.Errorf("export %.40v = %d %v", body, st, out)
		}
	}
}

// TestAppConfigDirectoryDown stops slapd: a user not cached gets 503
// unavailable with the reason, within the directory's timeout, and the
// export fails whole rather than with holes.
func TestAppConfigDirectoryDown(t *testing.T) {
	a := newAppConfigWorld(t)
	if st, _, body := a.get(t, "/api/v1/appconfig/alice", a.admin, ""); st != 200 {
		t.Fatalf("alice = %d %s", st, body)
	}
	a.slapd.Stop()
	st, _, body := a.get(t, "/api/v1/appconfig/bob", a.admin, "")
	var out map[string]any
	json.Unmarshal(body, &out)
	if st != 503 || errCode(out) != mailpush.EUnavailable || !strings.Contains(string(body), "directory unavailable") {
		t.Errorf("directory down = %d %s", st, body)
	}
	if st, out := a.call(t, "POST", "/api/v1/appconfig/export", a.admin, map[string]any{"users": []string{"alice", "bob"}}); st != 503 {
		t.Errorf("export with the directory down = %d %v", st, out)
	}
	// Nothing about the users or the token reached the logs.
	logs := a.logs.String()
	for _, secret := range []string{"alice", "bob@", "app-token-for-the-mdm", "Müller"} {
		if strings.Contains(logs, secret) {
			t.Errorf("the logs hold %q", secret)
		}
	}
}

// TestAppConfigConfig: a template's mistakes stop the start, naming the key.
func TestAppConfigConfig(t *testing.T) {
	dir := t.TempDir()
	load := func(body string) error {
		p := filepath.Join(dir, "c.yaml")
		os.WriteFile(p, []byte(body), 0o600)
		_, err := LoadConfig(p, nil)
		return err
	}
	const directory = "    directory: {url: 'ldap://127.0.0.1:1', baseDn: 'dc=example,dc=com', attributes: [mail]}\n"
	for _, tc := range []struct{ body, key, say string }{
		{directory + "    appConfig:\n      keys: {SEND_LDAP_ATTRIBUTES: 'mail=${user.mial}'}\n", "tenants.acme.appConfig.keys.SEND_LDAP_ATTRIBUTES", "unknown macro ${user.mial}"},
		{directory + "    appConfig:\n      keys: {phone: '${user.mobile:-none}'}\n", "tenants.acme.appConfig.keys.phone", "add it to attributes"},
		{directory + "    appConfig:\n      keys: {token: '${tenant.appToken}'}\n", "tenants.acme.appConfig.keys.token", "unknown macro"},
		{directory + "    appConfig:\n      keys: {a: '${user.mail'}\n", "tenants.acme.appConfig.keys.a", "unterminated"},
		{directory + "    appConfig:\n      keys: {}\n", "tenants.acme.appConfig.keys", "empty"},
		{directory + "    appConfig:\n      filter: '(uid=x)'\n      keys: {a: b}\n", "tenants.acme.appConfig.filter", "placeholder"},
		{"    appConfig:\n      keys: {a: b}\n", "tenants.acme.appConfig", "directory"},
	} {
		err := load("tenants:\n  acme:\n" + tc.body)
		if err == nil || !strings.Contains(err.Error(), "config key "+tc.key+":") || !strings.Contains(err.Error(), tc.say) {
			t.Errorf("%q: error %v, want one naming %s and saying %q", tc.body, err, tc.key, tc.say)
		}
	}
	if err := load("tenants:\n  acme:\n" + directory + "    appConfig:\n      attributes: [mobile]\n      appTokenFile: /nonexistent\n      keys: {phone: '${ User.Mobile :-none}', t: '${tenant.appToken}', n: 3, b: false}\n"); err != nil {
		t.Errorf("a good template: %v", err)
	}
}
