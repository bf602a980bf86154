package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/mailpush/mailpush"
	"go.yaml.in/yaml/v3"
)

// TestConfigErrorsExplainThemselves: each mistake is named by line and full
// key path, with what was expected, and a typo gets the closest key.
func TestConfigErrorsExplainThemselves(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.yaml")
	os.WriteFile(path, []byte(`lsiten: x
push: {batchsize: 10}
registrationTtl: forever
ews:
  statusFrequency: often
  allowInsecureHttp: maybe
gate:
  trustedProxies: 10.0.0.0/8
tenants:
  acme:
    dovecot: {usrname: x}
apns: [a]
log: {level: debug, level: info}
push2: 1
`), 0o600)
	_, err := LoadConfig(path, nil)
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{
		"line 1: lsiten: unknown key; did you mean `listen`?",
		"line 2: push.batchsize: unknown key; did you mean `push.batchSize`?",
		`line 3: registrationTtl: expected a duration such as 720h`, `got "forever"`,
		`line 5: ews.statusFrequency: expected a whole number, got "often"`,
		`line 6: ews.allowInsecureHttp: expected true or false, got "maybe"`,
		`line 8: gate.trustedProxies: expected a list`,
		"line 11: tenants.acme.dovecot.usrname: unknown key; did you mean `tenants.acme.dovecot.username`?",
		"line 12: apns: expected a mapping with keys certFile,",
		"line 13: log.level: is set twice",
		"line 14: push2: unknown key; did you mean `push`?",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not say %q:\n%v", want, err)
		}
	}
	if strings.Contains(err.Error(), "main.") || strings.Contains(err.Error(), "struct") {
		t.Errorf("error names Go internals:\n%v", err)
	}
	// Far from every key: the keys of that level are listed instead.
	os.WriteFile(path, []byte("push:\n  zzzzzzzzzz: 1\n"), 0o600)
	if _, err := LoadConfig(path, nil); err == nil || !strings.Contains(err.Error(), "push.zzzzzzzzzz: unknown key; the keys here are batchSize,") {
		t.Errorf("far-off key: %v", err)
	}
	os.WriteFile(path, []byte("listen: [\n"), 0o600)
	if _, err := LoadConfig(path, nil); err == nil || !strings.Contains(err.Error(), "not valid YAML: line") {
		t.Errorf("syntax error: %v", err)
	}
}

// TestREADMEListsEveryKey: every configuration key (every field of Config,
// tenant blocks included) appears in the README's configuration block.
func TestREADMEListsEveryKey(t *testing.T) {
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte(readmeConfigBlock(t)), &doc); err != nil {
		t.Fatal(err)
	}
	present := map[string]bool{}
	var walk func(n *yaml.Node, path string)
	walk = func(n *yaml.Node, path string) {
		switch n.Kind {
		case yaml.DocumentNode:
			walk(n.Content[0], path)
		case yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				k := n.Content[i].Value
				p := join(path, k)
				if path == "tenants" {
					p = "tenants.*" // any tenant's block documents the tenant keys
				}
				present[p] = true
				walk(n.Content[i+1], p)
			}
		case yaml.SequenceNode:
			for _, e := range n.Content {
				walk(e, path+"[]")
			}
		}
	}
	walk(&doc, "")
	var missing []string
	var want func(typ reflect.Type, path string)
	want = func(typ reflect.Type, path string) {
		for typ.Kind() == reflect.Pointer {
			typ = typ.Elem()
		}
		switch {
		case typ == durationType:
		case typ.Kind() == reflect.Struct:
			for _, k := range structKeys(typ) {
				f, _ := fieldByTag(typ, k)
				p := join(path, k)
				// A tenant's apns and fcm blocks take the top-level keys.
				inherits := strings.HasPrefix(p, "tenants.*.apns.") || strings.HasPrefix(p, "tenants.*.fcm.")
				if !present[p] && !(inherits && present[strings.TrimPrefix(p, "tenants.*.")]) {
					missing = append(missing, p)
				}
				want(f.Type, p)
			}
		case typ.Kind() == reflect.Map:
			want(typ.Elem(), path+".*")
		case typ.Kind() == reflect.Slice && typ.Elem().Kind() == reflect.Struct:
			want(typ.Elem(), path+"[]")
		}
	}
	want(reflect.TypeFor[Config](), "")
	if len(missing) > 0 {
		t.Errorf("the README's configuration block lacks %s", strings.Join(missing, ", "))
	}
}

func fieldByTag(t reflect.Type, tag string) (reflect.StructField, bool) {
	for i := range t.NumField() {
		if name, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ","); name == tag {
			return t.Field(i), true
		}
	}
	return reflect.StructField{}, false
}

func TestClosest(t *testing.T) {
	keys := []string{"listen", "publicUrl", "tls", "database", "push"}
	for in, want := range map[string]string{"lsiten": "listen", "LISTEN": "listen", "publicurl": "publicUrl", "databse": "database", "zzzzzz": "", "pus": "push"} {
		if got := closest(in, keys); got != want {
			t.Errorf("closest(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestEveryCommandHasHelp: --help exits 0 (no error) and prints the
// command's usage on stdout; stray and missing arguments are usage errors
// that name the argument.
func TestEveryCommandHasHelp(t *testing.T) {
	for _, args := range [][]string{
		{"--help"}, {"help"}, {"serve", "--help"}, {"serve", "-h"}, {"config", "--help"}, {"config", "check", "--help"},
		{"tenant", "--help"}, {"tenant", "add", "--help"}, {"tenant", "set", "--help"}, {"tenant", "list", "--help"},
		{"tenant", "delete", "--help"}, {"keys", "--help"}, {"keys", "rotate", "--help"}, {"gate", "--help"},
		{"gate", "import", "--help"}, {"version", "--help"}, {"token", "--help"}, {"token", "add", "--help"}, {"token", "revoke", "--help"},
		{"keys", "list", "--help"}, {"keys", "retire", "--help"}, {"registrations", "import", "--help"}, {"smime", "classify", "--help"}, {"bench", "--help"}, {"demo", "--help"},
		{"smime", "--help"}, {"smime", "classify", "--help"},
		{"bench", "--help"}, {"registrations", "--help"}, {"registrations", "import", "--help"},
	} {
		var out bytes.Buffer
		err := run(context.Background(), args, &out, io.Discard, nil)
		if err != nil && !errors.Is(err, errHelpShown) {
			t.Errorf("%v: %v", args, err)
		}
		if !strings.Contains(out.String(), "mailpush") {
			t.Errorf("%v printed %q, want the usage", args, out.String())
		}
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"serve", "extra-arg"}, `serve: unexpected argument "extra-arg"`},
		{[]string{"serve", "--config", "x.yaml", "extra-arg"}, `serve: unexpected argument "extra-arg"`},
		{[]string{"keys", "rotate", "now"}, `keys rotate: unexpected argument "now"`},
		{[]string{"tenant", "add"}, "tenant add: missing NAME"},
		{[]string{"tenant", "add", "a", "b"}, `tenant add: unexpected argument "b"`},
		{[]string{"tenant", "list", "x"}, `tenant list: unexpected argument "x"`},
		{[]string{"tenant", "frob"}, `tenant: unknown subcommand "frob"`},
		{[]string{"tenant", "add", "x", "--max-content", "all"}, `--max-content must be badge, subject or subject_sender, not "all"`},
		{[]string{"tenant", "delete", "acme"}, "add --yes to confirm"},
		{[]string{"config", "check"}, "config check: missing FILE"},
		{[]string{"serve", "--nope"}, "serve: flag provided but not defined: -nope"},
		{[]string{"gate", "import", "f.csv"}, "--tenant NAME is required"},
		{[]string{"token", "list"}, "token list: --tenant NAME is required"},
		{[]string{"token", "revoke"}, "token revoke: missing ID"},
		{[]string{"token", "frob"}, `token: unknown subcommand "frob"`},
	} {
		err := run(context.Background(), tc.args, io.Discard, io.Discard, nil)
		var u usageError
		if !errors.As(err, &u) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want a usage error saying %q", tc.args, err, tc.want)
		}
	}
}

// TestTenantCommands: add defaults to badge and says so, list shows the
// tenants, delete removes one, and errors name the tenant.
func TestTenantCommands(t *testing.T) {
	dir := t.TempDir()
	env := []string{"MAILPUSH_DATABASE_PATH=" + filepath.Join(dir, "m.db"), "MAILPUSH_KEY_DIR=" + filepath.Join(dir, "keys")}
	ctx := context.Background()
	var out bytes.Buffer
	if err := run(ctx, []string{"tenant", "add", "acme"}, &out, io.Discard, env); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "at most: badge (the default and most private") || !strings.Contains(out.String(), "may use no mail-server host yet") {
		t.Errorf("tenant add said %q", out.String())
	}
	if err := run(ctx, []string{"tenant", "add", "globex", "--max-content", "subject", "--allow-host", "mail.globex.example"}, io.Discard, io.Discard, env); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	if err := run(ctx, []string{"tenant", "list"}, &out, io.Discard, env); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[1], "acme ") || !strings.Contains(lines[1], "badge") || !strings.Contains(lines[2], "mail.globex.example") {
		t.Errorf("tenant list:\n%s", out.String())
	}
	if err := run(ctx, []string{"tenant", "set", "nosuch", "--max-content", "badge"}, io.Discard, io.Discard, env); err == nil || !strings.Contains(err.Error(), "tenant nosuch:") {
		t.Errorf("set of a missing tenant: %v", err)
	}
	out.Reset()
	if err := run(ctx, []string{"tenant", "delete", "acme", "--yes"}, &out, io.Discard, env); err != nil || !strings.Contains(out.String(), "tenant acme deleted") {
		t.Fatalf("delete: %v %q", err, out.String())
	}
	if err := run(ctx, []string{"tenant", "delete", "acme", "--yes"}, io.Discard, io.Discard, env); err == nil || !strings.Contains(err.Error(), "tenant acme:") {
		t.Errorf("second delete: %v", err)
	}
	out.Reset()
	run(ctx, []string{"tenant", "list"}, &out, io.Discard, env)
	if strings.Contains(out.String(), "acme") || !strings.Contains(out.String(), "globex") {
		t.Errorf("after delete:\n%s", out.String())
	}
}

// TestUnknownTenantBlockIsAnError: a tenants.<name> block for a tenant that
// does not exist stops serve and config check, with the closest name.
func TestUnknownTenantBlockIsAnError(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "c.yaml")
	os.WriteFile(cfg, []byte("listen: 127.0.0.1:0\ndatabase: {path: "+filepath.Join(dir, "m.db")+"}\nkeyDir: "+filepath.Join(dir, "keys")+
		"\ntenants:\n  acmee:\n    apns: {topic: com.acme.mail}\n"), 0o600)
	ctx := context.Background()
	var out bytes.Buffer
	// Before any tenant exists, config check validates the file alone.
	if err := run(ctx, []string{"config", "check", cfg}, &out, io.Discard, nil); err != nil || !strings.Contains(out.String(), "tenant names not checked") {
		t.Errorf("config check without a database: %v %q", err, out.String())
	}
	if err := run(ctx, []string{"tenant", "add", "acme", "--config", cfg}, io.Discard, io.Discard, nil); err != nil {
		t.Fatal(err)
	}
	err := run(ctx, []string{"config", "check", cfg}, io.Discard, io.Discard, nil)
	if err == nil || !strings.Contains(err.Error(), "config key tenants.acmee: no tenant named \"acmee\"") || !strings.Contains(err.Error(), "did you mean `tenants.acme`?") {
		t.Errorf("config check: %v", err)
	}
	c, err := LoadConfig(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	m := NewMain(c, io.Discard)
	err = m.Run(ctx)
	m.Close()
	if err == nil || !strings.Contains(err.Error(), "tenants.acmee") {
		t.Errorf("serve: %v", err)
	}
	os.WriteFile(cfg, []byte("listen: 127.0.0.1:0\ndatabase: {path: "+filepath.Join(dir, "m.db")+"}\nkeyDir: "+filepath.Join(dir, "keys")+
		"\ntenants:\n  acme:\n    apns: {topic: com.acme.mail}\n"), 0o600)
	out.Reset()
	if err := run(ctx, []string{"config", "check", cfg}, &out, io.Discard, nil); err != nil || !strings.Contains(out.String(), "its tenants exist") {
		t.Errorf("config check of a good file: %v %q", err, out.String())
	}
}

// TestAPIErrorsAreJSON: an unknown API path and a wrong method get the JSON
// error envelope with a stable code; other paths keep ServeMux's answer.
func TestAPIErrorsAreJSON(t *testing.T) {
	w := newWorld(t, "info")
	for _, tc := range []struct {
		method, path string
		status       int
		code, allow  string
	}{
		{"GET", "/api/v1/nothing", 404, "not_found", ""},
		{"PATCH", "/api/v1/registrations/abc", 405, "method_not_allowed", "DELETE, GET, HEAD"},
		{"GET", "/api/v1/registrations", 405, "method_not_allowed", "POST"},
	} {
		req, _ := http.NewRequest(tc.method, w.main.URL()+tc.path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var body struct {
			Error struct{ Code, Message string }
		}
		err = json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != tc.status || body.Error.Code != tc.code || resp.Header.Get("Content-Type") != "application/json" {
			t.Errorf("%s %s: %d %q %v", tc.method, tc.path, resp.StatusCode, body.Error.Code, err)
		}
		if tc.allow != "" && resp.Header.Get("Allow") != tc.allow {
			t.Errorf("%s %s: Allow %q, want %q", tc.method, tc.path, resp.Header.Get("Allow"), tc.allow)
		}
		if !strings.Contains(body.Error.Message, tc.path) {
			t.Errorf("%s %s: message %q does not name the path", tc.method, tc.path, body.Error.Message)
		}
	}
}

// TestGetRegistrationReturnsItsCallbackURL: GET answers the callbackUrl the
// create (or the last check-in) answered, to its tenant only; the URL is
// kept sealed, and goes with the registration.
func TestGetRegistrationReturnsItsCallbackURL(t *testing.T) {
	w := newWorld(t, "info")
	token := w.addTenant(t, "acme")
	other := w.addTenant(t, "globex")
	st, reg := w.call(t, "POST", "/api/v1/registrations", token, map[string]any{
		"device":  map[string]any{"platform": "ios", "token": deviceToken(3)},
		"mailbox": map[string]any{"address": address, "source": "ews", "ewsUrl": w.exchange.URL()},
	})
	if st != 201 || reg["mode"] != "device-subscribed" || reg["callbackUrl"] == nil {
		t.Fatalf("register = %d %v", st, reg)
	}
	id, url := reg["id"].(string), reg["callbackUrl"].(string)
	if st, got := w.call(t, "GET", "/api/v1/registrations/"+id, token, nil); st != 200 || got["callbackUrl"] != url {
		t.Errorf("GET = %d, callbackUrl %v; want the create's %s", st, got["callbackUrl"], url)
	}
	if st, _ := w.call(t, "GET", "/api/v1/registrations/"+id, other, nil); st != 404 {
		t.Errorf("another tenant's GET = %d, want 404", st)
	}
	st, in := w.call(t, "POST", "/api/v1/registrations/"+id+"/checkin", token, nil)
	if st != 200 || in["callbackUrl"] == nil {
		t.Fatalf("check-in = %d %v", st, in)
	}
	if _, got := w.call(t, "GET", "/api/v1/registrations/"+id, token, nil); got["callbackUrl"] != in["callbackUrl"] {
		t.Errorf("GET after the check-in = %v, want the check-in's %v", got["callbackUrl"], in["callbackUrl"])
	}
	_, sealedToken, _ := strings.Cut(in["callbackUrl"].(string), "/ews/notify/")
	db, _ := os.ReadFile(w.main.Config.Database.Path)
	wal, _ := os.ReadFile(w.main.Config.Database.Path + "-wal")
	if bytes.Contains(db, []byte(sealedToken)) || bytes.Contains(wal, []byte(sealedToken)) {
		t.Error("the callback URL is stored in clear")
	}
	acme, err := w.main.Store.TenantByName(context.Background(), "acme")
	if err != nil {
		t.Fatal(err)
	}
	tenantID := acme.ID
	if st, _ := w.call(t, "DELETE", "/api/v1/registrations/"+id, token, nil); st != 204 {
		t.Fatalf("delete = %d", st)
	}
	if _, err := w.main.Store.CallbackURL(context.Background(), tenantID, id); mailpush.ErrorCode(err) != mailpush.ENotFound {
		t.Errorf("the callback URL outlived its registration: %v", err)
	}
}
