package api_test

import (
	"context"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"

	"howett.net/plist"

	"github.com/mailpush/mailpush"
)

// appConfigs answers from a table and records which tenant asked.
type appConfigs struct {
	mu      sync.Mutex
	tenants []string
	errs    map[string]error
}

func (a *appConfigs) AppConfig(_ context.Context, t *mailpush.Tenant, user string) (mailpush.AppConfig, error) {
	a.mu.Lock()
	a.tenants = append(a.tenants, t.Name)
	a.mu.Unlock()
	if err := a.errs[user]; err != nil {
		return mailpush.AppConfig{}, err
	}
	return mailpush.AppConfig{User: user, Values: []mailpush.AppConfigValue{
		{Key: "displayName", Value: "=cmd|' /C calc'!A0"}, {Key: "pushEnabled", Value: true},
		{Key: "pollMinutes", Value: int64(15)}, {Key: "ratio", Value: 0.5}, {Key: "user", Value: user + "@corp.example.com"},
	}}, nil
}

func (e *env) raw(t *testing.T, method, path, token, accept, body string) (int, http.Header, string) {
	t.Helper()
	req, _ := http.NewRequest(method, e.url+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(b)
}

func TestAppConfigRoutes(t *testing.T) {
	e := setup(t)
	if st, out := e.do(t, "GET", "/api/v1/appconfig/alice", e.admin, "", nil); st != 422 || errCode(out) != mailpush.EUnsupported {
		t.Errorf("without app configuration = %d %v", st, out)
	}
	ac := &appConfigs{errs: map[string]error{
		"ghost": mailpush.Errorf(mailpush.ENotFound, "no such user in the tenant's directory"),
		"down":  mailpush.Errorf(mailpush.EUnavailable, "directory unavailable: it did not answer in time; retry later"),
	}}
	e.srv.AppConfigs = ac

	st, out := e.do(t, "GET", "/api/v1/appconfig/alice", e.admin, "", nil)
	if st != 200 || out["pushEnabled"] != true || out["pollMinutes"] != float64(15) || out["user"] != "alice@corp.example.com" {
		t.Errorf("JSON = %d %v", st, out)
	}
	if ac.tenants[len(ac.tenants)-1] != "acme" {
		t.Errorf("asked for tenant %v, want the caller's", ac.tenants)
	}
	st, h, body := e.raw(t, "GET", "/api/v1/appconfig/alice", e.admin, "application/x-plist", "")
	var p map[string]any
	if _, err := plist.Unmarshal([]byte(body), &p); st != 200 || err != nil || h.Get("Content-Type") != "application/x-plist" ||
		!strings.Contains(body, "<key>pushEnabled</key>\n\t\t<true/>") && !strings.Contains(body, "<key>pushEnabled</key>\n\t<true/>") ||
		!strings.Contains(body, "<integer>15</integer>") || !strings.Contains(body, "<real>0.5</real>") {
		t.Errorf("plist = %d %v %s", st, err, body)
	}
	for user, want := range map[string]int{"ghost": 404, "down": 503} {
		if st, out := e.do(t, "GET", "/api/v1/appconfig/"+user, e.admin, "", nil); st != want || !strings.Contains(out["error"].(map[string]any)["message"].(string), map[int]string{404: "no such user", 503: "did not answer"}[want]) {
			t.Errorf("%s = %d %v", user, st, out)
		}
	}

	// CSV export: formula-looking cells are defused; unknown users are rows
	// with their error; a directory that is down fails the export whole.
	st, h, body = e.raw(t, "POST", "/api/v1/appconfig/export", e.admin, "text/csv", `{"users":["alice","ghost"]}`)
	lines := strings.Split(strings.TrimSpace(body), "\n")
	if st != 200 || !strings.HasPrefix(h.Get("Content-Type"), "text/csv") || len(lines) != 3 ||
		lines[0] != "_user,displayName,pushEnabled,pollMinutes,ratio,user,_error" ||
		lines[1] != `alice,'=cmd|' /C calc'!A0,true,15,0.5,alice@corp.example.com,` ||
		!strings.HasPrefix(lines[2], "ghost,,,,,,not_found: ") {
		t.Errorf("CSV = %d\n%s", st, body)
	}
	if st, out := e.do(t, "POST", "/api/v1/appconfig/export", e.admin, "application/json", strings.NewReader(`{"users":["alice","down"]}`)); st != 503 || errCode(out) != mailpush.EUnavailable {
		t.Errorf("export with the directory down = %d %v", st, out)
	}
	if st, out := e.do(t, "POST", "/api/v1/appconfig/export", e.admin, "application/json", strings.NewReader(`{"users":["alice"],"extra":1}`)); st != 400 || errCode(out) != mailpush.EInvalid {
		t.Errorf("unknown field = %d %v", st, out)
	}

	// Only admin tokens: the app token ships inside every app.
	n := len(ac.tenants)
	for _, tok := range []string{e.token, e.backend, e.other} {
		if st, out := e.do(t, "GET", "/api/v1/appconfig/alice", tok, "", nil); st != 403 || errCode(out) != mailpush.EScope {
			t.Errorf("non-admin token = %d %v", st, out)
		}
	}
	if len(ac.tenants) != n {
		t.Errorf("a refused request reached the app configuration")
	}
}
