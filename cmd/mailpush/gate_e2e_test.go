package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"github.com/mailpush/mailpush"
	"github.com/mailpush/mailpush/fake/apnsfake"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// requireBinary finds a real component; in CI its absence is a failure.
func requireBinary(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	for _, dir := range []string{"/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"} {
		if _, err := os.Stat(filepath.Join(dir, name)); err == nil {
			return filepath.Join(dir, name)
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("%s is not installed: .ci/run installs it (apt-get install %s)", name, name)
	}
	t.Skipf("%s is not installed (apt-get install %s); CI is not set, so skipping", name, name)
	return ""
}

// backend is a fake Exchange ActiveSync endpoint that records what reaches it.
type backend struct {
	srv   *httptest.Server
	mu    sync.Mutex
	seen  []string          // "METHOD URI"
	peers map[string]string // the connection (remote address) each URI came on
}

func newBackend(t *testing.T) *backend {
	b := &backend{peers: map[string]string{}}
	b.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		b.mu.Lock()
		b.seen = append(b.seen, r.Method+" "+r.RequestURI)
		b.peers[r.RequestURI] = r.RemoteAddr
		b.mu.Unlock()
		w.Header().Set("MS-Server-ActiveSync", "15.1")
		w.Write([]byte("exchange says hi"))
	}))
	t.Cleanup(b.srv.Close)
	return b
}

func (b *backend) saw(uri string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, s := range b.seen {
		if s == "POST "+uri {
			return true
		}
	}
	return false
}

func freePort(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	_, port, _ := net.SplitHostPort(l.Addr().String())
	return port
}

// renderTemplate fills a proxy template of docs/gate the way its header says
// (envsubst of ${MAILPUSH} ${EXCHANGE} ${LISTEN}, ${GATE_LUA} for HAProxy, and
// for nginx's upstream block ${EXCHANGE_SCHEME} and ${EXCHANGE_HOST}, the
// two halves of exchange's URL).
func renderTemplate(t *testing.T, name, mailpushAddr, exchange, listen string) string {
	b, err := os.ReadFile(filepath.Join("..", "..", "docs", "gate", name))
	if err != nil {
		t.Fatal(err)
	}
	lua, err := filepath.Abs(filepath.Join("..", "..", "docs", "gate", "mailpush-gate.lua"))
	if err != nil {
		t.Fatal(err)
	}
	scheme, host, _ := strings.Cut(exchange, "://")
	return strings.NewReplacer("${MAILPUSH}", mailpushAddr, "${EXCHANGE}", exchange, "${EXCHANGE_SCHEME}", scheme, "${EXCHANGE_HOST}", host,
		"${LISTEN}", listen, "${GATE_LUA}", lua).Replace(string(b))
}

// gateProxyName is gate.proxy for each proxy the tests run.
var gateProxyName = map[string]string{"nginx": "nginx", "nginx-identity": "nginx", "caddy": "caddy", "haproxy": "haproxy", "traefik": "traefik"}

// startProxy runs a real reverse proxy from the docs' template and returns
// its base URL once it answers.
func startProxy(t *testing.T, kind, mailpushAddr, exchange string) string {
	dir := t.TempDir()
	port := freePort(t)
	var cmd *exec.Cmd
	switch kind {
	case "nginx", "nginx-identity":
		bin := requireBinary(t, "nginx")
		tmpl := renderTemplate(t, "nginx.conf", mailpushAddr, exchange, "127.0.0.1:"+port)
		if kind == "nginx-identity" {
			// The template's documented change for gate.identity.header, with
			// nginx's own Basic authentication in front.
			os.WriteFile(filepath.Join(dir, "htpasswd"), []byte("alice@example.com:{PLAIN}alice-pw\nbob@example.com:{PLAIN}bob-pw\n"), 0o600)
			tmpl = strings.Replace(tmpl, `proxy_set_header X-Remote-User "";`, `proxy_set_header X-Remote-User $remote_user;`, 1)
			tmpl = strings.Replace(tmpl, "auth_request /mailpush-gate;", "auth_request /mailpush-gate;\n        auth_basic ActiveSync;\n        auth_basic_user_file "+filepath.Join(dir, "htpasswd")+";", 1)
		}
		user := ""
		if os.Geteuid() == 0 {
			user = "user root;"
		}
		conf := fmt.Sprintf(`%s
daemon off;
master_process off;
pid %[2]s/nginx.pid;
error_log %[2]s/error.log warn;
events { worker_connections 256; }
http {
    access_log off;
    client_body_temp_path %[2]s/body;
    proxy_temp_path %[2]s/proxy;
    fastcgi_temp_path %[2]s/fastcgi;
    uwsgi_temp_path %[2]s/uwsgi;
    scgi_temp_path %[2]s/scgi;
%[3]s
}
`, user, dir, tmpl)
		path := filepath.Join(dir, "nginx.conf")
		os.WriteFile(path, []byte(conf), 0o600)
		cmd = exec.Command(bin, "-p", dir, "-c", path)
	case "caddy":
		bin := requireBinary(t, "caddy")
		conf := "{\n\tadmin off\n\tauto_https off\n}\n" + renderTemplate(t, "Caddyfile", mailpushAddr, exchange, port)
		path := filepath.Join(dir, "Caddyfile")
		os.WriteFile(path, []byte(conf), 0o600)
		cmd = exec.Command(bin, "run", "--config", path, "--adapter", "caddyfile")
		cmd.Env = append(os.Environ(), "HOME="+dir, "XDG_DATA_HOME="+dir, "XDG_CONFIG_HOME="+dir)
	case "haproxy":
		bin := requireBinary(t, "haproxy")
		conf := renderTemplate(t, "haproxy.cfg", mailpushAddr, strings.TrimPrefix(exchange, "http://"), "127.0.0.1:"+port)
		path := filepath.Join(dir, "haproxy.cfg")
		os.WriteFile(path, []byte(conf), 0o600)
		cmd = exec.Command(bin, "-db", "-f", path)
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("%s output:\n%s", kind, out.String())
		}
	})
	base := "http://127.0.0.1:" + port
	deadline := time.Now().Add(20 * time.Second)
	for {
		if c, err := net.DialTimeout("tcp", "127.0.0.1:"+port, time.Second); err == nil {
			c.Close()
			return base
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not listen on %s: %s", kind, port, out.String())
		}
		select { // poll the port of a process we do not control, with a deadline
		case <-exited:
			t.Fatalf("%s exited: %s", kind, out.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// binaryQuery is MS-ASHTTP's base64 query form.
func binaryQuery(cmd byte, deviceID []byte, deviceType, user string) string {
	b := []byte{141, cmd}
	b = binary.LittleEndian.AppendUint16(b, 0x0409)
	b = append(b, byte(len(deviceID)))
	b = append(b, deviceID...)
	b = append(b, 4, 1, 0, 0, 0)
	b = append(b, byte(len(deviceType)))
	b = append(b, deviceType...)
	b = append(b, 8, byte(len(user)))
	b = append(b, user...)
	return base64.StdEncoding.EncodeToString(b)
}

// newGateWorld runs mailpush with the gate on for tenant acme and returns it
// with acme's app token (the one inside the mail app) and an admin token
// (the MDM's). gateYAML, when given, replaces the gate section's
// default rules (it is indented by two spaces, under gate:).
// The proxy is nginx unless one is named.
func newGateWorld(t *testing.T, proxy ...string) (w *world, app, admin string) {
	if len(proxy) == 1 {
		return newGateWorldFor(t, proxy[0])
	}
	return newGateWorldFor(t, "nginx")
}

// newGateWorldFor is newGateWorld with gate.proxy set to proxy.
func newGateWorldFor(t *testing.T, proxy string, gateYAML ...string) (w *world, app, admin string) {
	gateSection := "  rules:\n    - {name: no-old-clients, action: deny, userAgent: \"^OldMail/\"}\n"
	if len(gateYAML) > 0 {
		gateSection = strings.Join(gateYAML, "")
	}
	dir := t.TempDir()
	logs := &syncBuffer{}
	cfgPath := filepath.Join(dir, "mailpush.yaml")
	// APNs credentials make iOS registrations possible; no push is sent here.
	_, p8, err := apnsfake.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(dir, "AuthKey.p8")
	os.WriteFile(keyFile, p8, 0o600)
	os.WriteFile(cfgPath, []byte(fmt.Sprintf(`listen: 127.0.0.1:0
database: {path: %s}
keyDir: %s
log: {level: debug}
apns: {teamId: TEAM123456, keyId: KEY1234567, keyFile: %s, topic: com.example.mail}
gate:
  tenant: acme
  mode: compliantOnly
  proxy: %s
%s`, filepath.Join(dir, "m.db"), filepath.Join(dir, "keys"), keyFile, proxy, gateSection)), 0o600)
	var out, errOut bytes.Buffer
	if err := run(context.Background(), []string{"tenant", "add", "acme", "--config", cfgPath, "--allow-host", "mail.example.com", "--device-subscribed", "on"}, &out, &errOut, nil); err != nil {
		t.Fatalf("tenant add: %v %s", err, errOut.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	token := lines[len(lines)-1]
	cfg, err := LoadConfig(cfgPath, nil)
	if err != nil {
		t.Fatal(err)
	}
	m := NewMain(cfg, logs)
	if err := m.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	w = &world{main: m, logs: logs, dir: dir, configPath: cfgPath}
	return w, token, w.addToken(t, "acme", mailpush.ScopeAdmin)
}

func TestGateBehindRealProxies(t *testing.T) {
	for _, kind := range gateProxies {
		t.Run(kind, func(t *testing.T) { gateBehindRealProxy(t, kind) })
	}
}

func gateBehindRealProxy(t *testing.T, kind string) {
	w, token, admin := newGateWorldFor(t, gateProxyName[kind])
	m, logs := w.main, w.logs

	// The MDM reports three devices; the binary one as Exchange shows it (hex).
	binDev := []byte{0xf2, 0x4c, 0x11, 0x00, 0xab, 0xcd, 0xef, 0x01, 0x23, 0x45, 0x67, 0x89, 0x0a, 0xbc, 0xde, 0xf0}
	for id, state := range map[string]string{"ApplGOOD001": "compliant", "ApplBAD0002": "blocked", "f24c1100abcdef01234567890abcdef0": "compliant"} {
		if st, body := w.call(t, "PUT", "/api/v1/gate/devices/"+id, admin, map[string]string{"user": "alice.wonder@example.com", "deviceType": "iPhone", "state": state}); st != 200 {
			t.Fatalf("PUT device %s = %d %v", id, st, body)
		}
	}

	exchange := newBackend(t)
	proxy := startProxy(t, kind, strings.TrimPrefix(m.URL(), "http://"), exchange.srv.URL)
	post := func(query, ua string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest("POST", proxy+"/Microsoft-Server-ActiveSync?"+query, strings.NewReader("\x03\x01j\x00"))
		req.Header.Set("Content-Type", "application/vnd.ms-sync.wbxml")
		req.Header.Set("User-Agent", ua)
		req.SetBasicAuth("alice.wonder@example.com", "Secret-Passw0rd")
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, string(b)
	}
	good := "Cmd=Sync&User=alice.wonder%40example.com&DeviceId=ApplGOOD001&DeviceType=iPhone&ItemId=1"
	cases := []struct {
		name, query, ua string
		want            int
	}{
		{"compliant plain", good, "Apple-iPhone/1", 200},
		{"compliant base64", binaryQuery(0, binDev, "WP8", "alice.wonder@example.com"), "MSFT-WP/8", 200},
		{"blocked", "Cmd=Sync&User=alice&DeviceId=ApplBAD0002&DeviceType=iPhone", "Apple-iPhone/1", 403},
		{"unknown", "Cmd=Ping&DeviceId=ApplNEW0003&DeviceType=iPhone", "Apple-iPhone/1", 403},
		{"unknown base64", binaryQuery(18, []byte{1, 2, 3, 4, 5, 6, 7, 8}, "WP8", "alice"), "MSFT-WP/8", 403},
		{"malformed base64", "jAAJBAp2MTQ", "MSFT-WP/8", 403},
		{"no DeviceId", "Cmd=Sync&User=alice", "Apple-iPhone/1", 403},
		{"rule", strings.Replace(good, "ItemId=1", "ItemId=2", 1), "OldMail/2.0", 403},
	}
	for _, tc := range cases {
		code, body := post(tc.query, tc.ua)
		reached := exchange.saw("/Microsoft-Server-ActiveSync?" + tc.query)
		if code != tc.want || reached != (tc.want == 200) {
			t.Errorf("%s: status %d (%q), reached Exchange %v; want %d", tc.name, code, body, reached, tc.want)
		}
		if tc.want == 200 && body != "exchange says hi" {
			t.Errorf("%s: body %q", tc.name, body)
		}
	}
	// A block takes effect on the very next request.
	if st, _ := w.call(t, "PUT", "/api/v1/gate/devices/applgood001", admin, map[string]string{"user": "alice.wonder@example.com", "state": "blocked"}); st != 200 {
		t.Fatalf("block = %d", st)
	}
	if code, _ := post(strings.Replace(good, "ItemId=1", "ItemId=3", 1), "Apple-iPhone/1"); code != 403 {
		t.Errorf("blocked device's next request: %d, want 403", code)
	}
	w.call(t, "PUT", "/api/v1/gate/devices/applgood001", admin, map[string]string{"user": "alice.wonder@example.com", "state": "compliant"})
	if code, _ := post(strings.Replace(good, "ItemId=1", "ItemId=4", 1), "Apple-iPhone/1"); code != 200 {
		t.Errorf("unblocked device's next request: %d, want 200", code)
	}
	// Blocking or wiping a device removes the push registrations linked to it.
	st, reg := w.call(t, "POST", "/api/v1/registrations", token, map[string]any{
		"device":  map[string]string{"platform": "ios", "token": deviceToken(7), "environment": "production", "activeSyncDeviceId": "applgood001 "},
		"mailbox": map[string]string{"address": "alice.wonder@example.com", "source": "ews", "ewsUrl": "https://mail.example.com/EWS/Exchange.asmx"},
	})
	if st != 201 {
		t.Fatalf("registration = %d %v", st, reg)
	}
	st, dev := w.call(t, "PUT", "/api/v1/gate/devices/ApplGOOD001", admin, map[string]string{"state": "wiped"})
	if st != 200 || dev["removedRegistrations"] != float64(1) {
		t.Errorf("wipe = %d %v, want 1 registration removed", st, dev)
	}
	if st, _ := w.call(t, "GET", "/api/v1/registrations/"+reg["id"].(string), token, nil); st != 404 {
		t.Errorf("the wiped device's registration answers %d, want 404", st)
	}
	if s := m.Gate.Stats(); s.CacheHits == 0 || s.CacheMisses == 0 {
		t.Errorf("gate stats %+v: the cache was not used", s)
	}
	m.Gate.Flush() // the audit lines of every decision above
	for _, secret := range []string{"Secret-Passw0rd", "alice.wonder@example.com", "alice.wonder%40example.com"} {
		if strings.Contains(logs.String(), secret) {
			t.Errorf("the log holds %q", secret)
		}
	}
	if !strings.Contains(logs.String(), "gate decision") {
		t.Error("no audit log line")
	}
	// The counters reach /metrics, and nothing that names a device or user.
	resp, err := http.Get(m.URL() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	st2 := m.Gate.Stats()
	for _, want := range []string{
		fmt.Sprintf("mailpush_gate_decisions_total{decision=\"allow\"} %d", st2.Allowed),
		fmt.Sprintf("mailpush_gate_decisions_total{decision=\"deny\"} %d", st2.Denied),
		"mailpush_gate_cache_hits_total", "mailpush_gate_cache_entries",
	} {
		if !strings.Contains(string(metrics), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	for _, secret := range []string{"APPLGOOD001", "alice.wonder"} {
		if strings.Contains(string(metrics), secret) {
			t.Errorf("/metrics holds %q", secret)
		}
	}
}

// TestGateDocsShowTheTestedTemplates keeps docs/gate.md's copy-paste
// configurations identical to the files the proxy test runs.
func TestGateDocsShowTheTestedTemplates(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join("..", "..", "docs", "gate.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"nginx.conf", "Caddyfile", "haproxy.cfg", "mailpush-gate.lua"} {
		tmpl, err := os.ReadFile(filepath.Join("..", "..", "docs", "gate", name))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Contains(doc, tmpl) {
			t.Errorf("docs/gate.md does not show docs/gate/%s verbatim", name)
		}
	}
}

func TestGateAdminAPIRefusals(t *testing.T) {
	w, app, token := newGateWorld(t)
	put := map[string]string{"state": "compliant"}
	for _, tc := range []struct {
		name, method, path, token string
		body                      any
		status                    int
		code                      string
	}{
		{"no token", "PUT", "/api/v1/gate/devices/dev1", "", put, 401, "unauthorized"},
		{"bad state", "PUT", "/api/v1/gate/devices/dev1", token, map[string]string{"state": "shiny"}, 400, "invalid_request"},
		{"unknown field", "PUT", "/api/v1/gate/devices/dev1", token, map[string]string{"state": "compliant", "password": "x"}, 400, "invalid_request"},
		{"bad DeviceId", "PUT", "/api/v1/gate/devices/a,b", token, put, 400, "invalid_request"},
		{"missing device", "GET", "/api/v1/gate/devices/nosuch", token, nil, 404, "not_found"},
		{"delete missing", "DELETE", "/api/v1/gate/devices/nosuch", token, nil, 404, "not_found"},
		{"bad activeSyncDeviceId", "POST", "/api/v1/registrations", app, map[string]any{
			"device":  map[string]string{"platform": "ios", "token": deviceToken(1), "activeSyncDeviceId": "has space"},
			"mailbox": map[string]string{"address": "a@example.com", "source": "ews", "ewsUrl": "https://mail.example.com/EWS/Exchange.asmx"}}, 400, "invalid_request"},
	} {
		st, body := w.call(t, tc.method, tc.path, tc.token, tc.body)
		if st != tc.status || (body != nil && body["error"].(map[string]any)["code"] != tc.code) {
			t.Errorf("%s: %d %v, want %d %s", tc.name, st, body, tc.status, tc.code)
		}
	}
	if st, _ := w.call(t, "GET", "/api/v1/gate/devices/dev1", token, nil); st != 404 {
		t.Errorf("a refused request stored a device: GET = %d", st)
	}
	importCSV := func(ct, csv string) (int, map[string]any) {
		req, _ := http.NewRequest("POST", w.main.URL()+"/api/v1/gate/import", strings.NewReader(csv))
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("Content-Type", ct)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		var out map[string]any
		json.NewDecoder(res.Body).Decode(&out)
		return res.StatusCode, out
	}
	if st, body := importCSV("application/json", "deviceId,state\n"); st != 415 {
		t.Errorf("import as JSON: %d %v", st, body)
	}
	if st, body := importCSV("text/csv", "deviceId,state\ndev9,compliant\ndev10,bogus\n"); st != 400 || !strings.Contains(fmt.Sprint(body), "line 3") {
		t.Errorf("import with a bad line: %d %v", st, body)
	}
	if st, body := importCSV("text/csv", "deviceId,user,deviceType,state\ndev11,bob@example.com,iPad,compliant\n"); st != 200 || body["stored"] != float64(1) {
		t.Errorf("import: %d %v", st, body)
	}
	if st, body := w.call(t, "GET", "/api/v1/gate/devices/DEV11", token, nil); st != 200 || body["state"] != "compliant" || body["hasUser"] != true {
		t.Errorf("imported device: %d %v", st, body)
	}

	// The import command, straight into the store, with progress.
	csvPath := filepath.Join(w.dir, "devices.csv")
	os.WriteFile(csvPath, []byte("deviceId,state\ncli1,blocked\ncli2,non-compliant\n"), 0o600)
	var out, errOut bytes.Buffer
	if err := run(context.Background(), []string{"gate", "import", csvPath, "--tenant", "acme", "--config", w.configPath}, &out, &errOut, nil); err != nil {
		t.Fatalf("gate import: %v (%s)", err, errOut.String())
	}
	if !strings.Contains(out.String(), "2 rows, 2 devices stored") || !strings.Contains(errOut.String(), "imported 2 devices (100%)") {
		t.Errorf("gate import printed %q and %q", out.String(), errOut.String())
	}
	if st, body := w.call(t, "GET", "/api/v1/gate/devices/cli2", token, nil); st != 200 || body["state"] != "non-compliant" {
		t.Errorf("device imported by the command: %d %v", st, body)
	}
	err := run(context.Background(), []string{"gate", "import", csvPath, "--tenant", "nosuch", "--config", w.configPath}, &out, &errOut, nil)
	if err == nil || !strings.Contains(err.Error(), "nosuch") {
		t.Errorf("import for an unknown tenant: %v", err)
	}
}
