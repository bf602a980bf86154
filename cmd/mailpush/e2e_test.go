package main

import (
	"bytes"
	"context"
	"crypto/ecdh"
	"crypto/hpke"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mailpush/mailpush"
	"github.com/mailpush/mailpush/fake/apnsfake"
	"github.com/mailpush/mailpush/fake/ewsfake"
	"github.com/mailpush/mailpush/seal"
)

const (
	teamID   = "TEAM123456"
	keyID    = "KEY1234567"
	topic    = "com.example.mail"
	address  = "alice.wonder@example.com"
	username = "EXAMPLE\\alice"
	password = "correct horse battery staple"
)

// syncBuffer is a log sink that tests can read while the server writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// world is a running mailpush with a fake Exchange and a fake APNs, all on
// loopback sockets.
type world struct {
	dir        string
	configPath string
	logs       *syncBuffer
	main       *Main
	exchange   *ewsfake.Server
	apple      *apnsfake.Server
	// tokens holds the tokens of the tenants created before the server
	// started (those the configuration names: serve refuses unknown ones).
	tokens map[string]string
}

// newWorld starts the world; extraYAML is appended to the configuration.
func newWorld(t testing.TB, logLevel string, extraYAML ...string) *world {
	t.Helper()
	return newWorldWith(t, logLevel, worldOptions{extraConfig: strings.Join(extraYAML, "")})
}

// worldOptions change newWorld's defaults.
type worldOptions struct {
	clock       mailpush.Clock // mailpush's and the fake Exchange's; nil means the system clock
	extraConfig string         // YAML appended to the config file
	timeScale   float64        // the fake Exchange's; 0 means 0.001 (1 with a clock)
	configure   func(*Config)  // changes the loaded configuration
	// extra returns more YAML and CAs to trust, given the world's
	// directory and fakes (for tenants with credentials of their own).
	extra func(w *world) (string, []*x509.Certificate)
	// database replaces the configuration's database block (the SQLite
	// file in the world's directory) for the server and the commands.
	database string
	// exchange changes the fake Exchange's options.
	exchange func(*ewsfake.Options)
}

// useDatabase replaces the database block of a configuration file written
// by writeConfig.
func useDatabase(t testing.TB, path, block string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(b), "\n")
	for i, l := range lines {
		if l == "database:" {
			lines[i], lines[i+1] = block, ""
			break
		}
	}
	if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")), 0o600); err != nil {
		t.Fatal(err)
	}
}

// newWorldWith is newWorld with options.
func newWorldWith(t testing.TB, logLevel string, o worldOptions) *world {
	t.Helper()
	if o.timeScale == 0 {
		o.timeScale = 0.001
		if o.clock != nil {
			o.timeScale = 1 // the test moves the clock: Exchange's minutes are minutes
		}
	}
	w := &world{dir: t.TempDir(), logs: &syncBuffer{}}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("server logs:\n%s", w.logs.String())
		}
	})
	opts := ewsfake.Options{TimeScale: o.timeScale, Clock: o.clock}
	if o.exchange != nil {
		o.exchange(&opts)
	}
	w.exchange, w.apple = newFakesOptions(t, opts)
	yaml, cas := o.extraConfig, []*x509.Certificate(nil)
	if o.extra != nil {
		more, moreCAs := o.extra(w)
		yaml, cas = yaml+more, moreCAs
	}
	w.configPath = writeConfig(t, w.dir, w.exchange, w.apple, "127.0.0.1:0", logLevel, yaml, cas...)
	if o.database != "" {
		useDatabase(t, w.configPath, o.database)
	}
	c, err := LoadConfig(w.configPath, nil)
	if err != nil {
		t.Fatal(err)
	}
	if o.configure != nil {
		o.configure(&c)
	}
	w.tokens = map[string]string{}
	names := c.tenantNames()
	if c.Gate.Tenant != "" && !slices.Contains(names, c.Gate.Tenant) {
		names = append(names, c.Gate.Tenant)
	}
	for _, name := range names {
		w.tokens[name] = w.runTenantAdd(t, name)
	}
	w.main = NewMain(c, w.logs)
	if o.clock != nil {
		w.main.Clock = o.clock
	}
	if err := w.main.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := w.main.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return w
}

// newFakes starts a fake Exchange with the test user and a fake APNs that
// trusts the test key and topic.
func newFakes(t testing.TB) (*ewsfake.Server, *apnsfake.Server) {
	t.Helper()
	return newFakesScaled(t, 0.001)
}

// newFakesScaled is newFakes with the fake Exchange's TimeScale.
func newFakesScaled(t testing.TB, timeScale float64) (*ewsfake.Server, *apnsfake.Server) {
	t.Helper()
	return newFakesOptions(t, ewsfake.Options{TimeScale: timeScale})
}

// newFakesOptions is newFakes with the fake Exchange's options.
func newFakesOptions(t testing.TB, opts ewsfake.Options) (*ewsfake.Server, *apnsfake.Server) {
	t.Helper()
	exchange := ewsfake.New(opts)
	t.Cleanup(exchange.Close)
	exchange.AddUser(address, username, password)
	apple := apnsfake.New(apnsfake.Options{})
	t.Cleanup(apple.Close)
	return exchange, apple
}

// writeConfig writes dir/mailpush.yaml for mailpush against the fakes, with
// a new APNs key that the fake trusts; extra is appended (YAML).
func writeConfig(t testing.TB, dir string, exchange *ewsfake.Server, apple *apnsfake.Server, listen, logLevel, extra string, extraCAs ...*x509.Certificate) string {
	t.Helper()
	// One CA bundle trusting both fakes, as an admin would configure caFile.
	p8, ca, err := trustFakes(dir, apple, teamID, keyID, topic, append([]*x509.Certificate{exchange.Certificate()}, extraCAs...)...)
	if err != nil {
		t.Fatal(err)
	}

	path := filepath.Join(dir, "mailpush.yaml")
	cfg := fmt.Sprintf(`listen: %s
database:
  path: %s
keyDir: %s
caFile: %s
log:
  level: %s
ews:
  statusFrequency: 1
apns:
  teamId: %s
  keyId: %s
  keyFile: %s
  topic: %s
  productionUrl: %s
  sandboxUrl: %s
`, listen, filepath.Join(dir, "data", "mailpush.db"), filepath.Join(dir, "data", "keys"), ca, logLevel, teamID, keyID, p8, topic, apple.URL(), apple.URL())
	os.MkdirAll(filepath.Join(dir, "data"), 0o700)
	if err := os.WriteFile(path, []byte(cfg+extra), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// waitMetrics polls /metrics until it holds every want (the pipeline counts
// a push just after the provider answered) and returns the last body.
func (w *world) waitMetrics(t testing.TB, wants ...string) []byte {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get(w.main.URL() + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		missing := ""
		for _, want := range wants {
			if !bytes.Contains(body, []byte(want)) {
				missing = want
			}
		}
		if missing == "" {
			return body
		}
		if time.Now().After(deadline) {
			t.Fatalf("/metrics lacks %q:\n%s", missing, body)
		}
		time.Sleep(10 * time.Millisecond) // polling with a deadline
	}
}

// addTenant runs the real CLI command and returns the printed token (or
// the token of the tenant the configuration named, created before the
// server started).
func (w *world) addTenant(t testing.TB, name string) string {
	t.Helper()
	if tok, ok := w.tokens[name]; ok {
		return tok
	}
	return w.runTenantAdd(t, name)
}

func (w *world) runTenantAdd(t testing.TB, name string) string {
	t.Helper()
	var out, errOut bytes.Buffer
	if err := run(context.Background(), []string{"tenant", "add", name, "--config", w.configPath, "--allow-host", hostOf(w.exchange.URL()), "--max-content", "subject_sender", "--device-subscribed", "on"}, &out, &errOut, nil); err != nil {
		t.Fatalf("tenant add: %v (%s)", err, errOut.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	return lines[len(lines)-1]
}

// hostOf is the host:port of a URL: what a tenant allows.
func hostOf(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		panic(err)
	}
	return u.Host
}

// addToken runs `mailpush token add` and returns the printed token.
func (w *world) addToken(t testing.TB, tenant string, scope mailpush.Scope) string {
	t.Helper()
	var out, errOut bytes.Buffer
	if err := run(context.Background(), []string{"token", "add", "--tenant", tenant, "--scope", string(scope), "--config", w.configPath}, &out, &errOut, nil); err != nil {
		t.Fatalf("token add: %v (%s)", err, errOut.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	return lines[len(lines)-1]
}

func (w *world) call(t testing.TB, method, path, token string, body any) (int, map[string]any) {
	t.Helper()
	return apiCall(t, w.main.URL(), method, path, token, body)
}

// apiCall sends a JSON request to the mailpush at base and decodes the answer.
func apiCall(t testing.TB, base, method, path, token string, body any) (int, map[string]any) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, base+path, rd)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out
}

// sealCredentials does what the app does: fetch the key and seal to it.
func (w *world) sealCredentials(t testing.TB, user, pass string) string {
	t.Helper()
	return w.sealCreds(t, mailpush.Credentials{Username: user, Password: pass})
}

func deviceToken(i int) string { return fmt.Sprintf("%064x", i+0xA11CE) }

func waitFor(t testing.TB, what string, fn func(ctx context.Context) error) {
	t.Helper()
	waitForExplained(t, what, fn, func() string { return "" })
}

// waitForExplained is waitFor that adds what explain says (the state
// reached) to a failure.
func waitForExplained(t testing.TB, what string, fn func(ctx context.Context) error, explain func() string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := fn(ctx); err != nil {
		t.Fatalf("waiting for %s: %v%s", what, err, explain())
	}
}

func badges(ps []apnsfake.Push) []int {
	var out []int
	for _, p := range ps {
		out = append(out, p.Badge)
	}
	return out
}

func TestEndToEndSealedMode(t *testing.T) {
	w := newWorld(t, "debug")
	token := w.addTenant(t, "acme")
	device := deviceToken(1)

	st, reg := w.call(t, "POST", "/api/v1/registrations", token, map[string]any{
		"device":  map[string]any{"platform": "ios", "token": device, "environment": "production"},
		"mailbox": map[string]any{"address": address, "source": "ews", "ewsUrl": w.exchange.URL(), "sealedCredentials": w.sealCredentials(t, username, password)},
		"content": "badge",
	})
	if st != 201 || reg["mode"] != "sealed" || reg["status"] != "active" {
		t.Fatalf("register = %d %v", st, reg)
	}
	id := reg["id"].(string)

	subs := w.exchange.Subscriptions()
	if len(subs) != 1 || !strings.HasPrefix(subs[0].URL, w.main.URL()+"/ews/notify/") || !subs[0].Active {
		t.Fatalf("fake Exchange subscriptions = %+v", subs)
	}
	// The callback URL carries the credentials only sealed.
	if strings.Contains(subs[0].URL, "alice") || strings.Contains(subs[0].URL, "horse") {
		t.Fatalf("callback URL leaks credentials: %s", subs[0].URL)
	}

	var items []string
	for i := 1; i <= 3; i++ {
		items = append(items, w.exchange.Deliver(address, fmt.Sprintf("Quarterly report %d", i), "Bob Sender", "bob@example.com"))
		want := i
		waitFor(t, fmt.Sprintf("badge %d", want), func(ctx context.Context) error {
			return w.apple.WaitFor(ctx, func(ps []apnsfake.Push) bool { return len(ps) >= want })
		})
	}
	if got := badges(w.apple.PushesFor(device)); fmt.Sprint(got) != "[1 2 3]" {
		t.Fatalf("badges = %v, want [1 2 3]", got)
	}
	// Metrics count the pushes and carry no token, address or subject.
	metrics := w.waitMetrics(t, `mailpush_pushes_total{provider="apns",reason="",result="delivered"} 3`, "mailpush_outbox_depth 0", "mailpush_push_enqueue_to_send_seconds_bucket")
	for _, secret := range []string{device, address, "Quarterly", "alice"} {
		if bytes.Contains(metrics, []byte(secret)) {
			t.Errorf("/metrics carries %q", secret)
		}
	}
	for _, p := range w.apple.PushesFor(device) {
		if p.Topic != topic || p.PushType != "alert" || p.CollapseID == "" {
			t.Errorf("push %+v: want topic %s, push type alert, a collapse ID", p, topic)
		}
	}

	// Read on another client: the badge follows.
	w.exchange.MarkRead(address, items[0], true)
	waitFor(t, "badge 2 after a read", func(ctx context.Context) error {
		return w.apple.WaitFor(ctx, func(ps []apnsfake.Push) bool { return len(ps) >= 4 })
	})
	if got := badges(w.apple.PushesFor(device)); fmt.Sprint(got) != "[1 2 3 2]" {
		t.Fatalf("badges = %v, want [1 2 3 2]", got)
	}

	// Delete: the next notification is answered Unsubscribe.
	if st, _ := w.call(t, "DELETE", "/api/v1/registrations/"+id, token, nil); st != 204 {
		t.Fatalf("delete = %d", st)
	}
	w.exchange.Deliver(address, "After delete", "Bob Sender", "bob@example.com")
	waitFor(t, "Unsubscribe answer", func(ctx context.Context) error {
		return w.exchange.WaitFor(ctx, func(s *ewsfake.Server) bool {
			cbs := s.Callbacks()
			return len(cbs) > 0 && cbs[len(cbs)-1].Result == "Unsubscribe"
		})
	})
	if subs := w.exchange.Subscriptions(); subs[0].Active {
		t.Error("subscription still active after Unsubscribe")
	}
	if n := len(w.apple.PushesFor(device)); n != 4 {
		t.Errorf("%d pushes after delete, want 4", n)
	}

	// Privacy: no password, user name, address or device token in the
	// database files or the logs (debug level).
	w.main.Close()
	secrets := []string{password, "horse battery", address, "alice.wonder", device}
	files, _ := filepath.Glob(filepath.Join(w.dir, "data", "*"))
	files2, _ := filepath.Glob(filepath.Join(w.dir, "data", "keys", "*"))
	files = append(files, files2...)
	if len(files) < 2 {
		t.Fatalf("expected database files, found %v", files)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue // a directory
		}
		for _, s := range secrets {
			if bytes.Contains(bytes.ToLower(b), bytes.ToLower([]byte(s))) {
				t.Errorf("%s contains %q in clear", filepath.Base(f), s)
			}
		}
	}
	logs := w.logs.String()
	if !strings.Contains(logs, "registration created") || !strings.Contains(logs, "subscribed") {
		t.Fatalf("captured logs look empty:\n%s", logs)
	}
	for _, s := range secrets {
		if strings.Contains(strings.ToLower(logs), strings.ToLower(s)) {
			t.Errorf("logs contain %q", s)
		}
	}
}

func TestCallbackRefusals(t *testing.T) {
	w := newWorld(t, "info")
	token := w.addTenant(t, "acme")
	st, _ := w.call(t, "POST", "/api/v1/registrations", token, map[string]any{
		"device":  map[string]any{"platform": "ios", "token": deviceToken(2)},
		"mailbox": map[string]any{"address": address, "source": "ews", "ewsUrl": w.exchange.URL(), "sealedCredentials": w.sealCredentials(t, username, password)},
	})
	if st != 201 {
		t.Fatalf("register = %d", st)
	}
	good := w.exchange.Subscriptions()[0].URL
	goodToken := strings.TrimPrefix(good, w.main.URL()+"/ews/notify/")
	forged := []byte(goodToken)
	forged[len(forged)/2] ^= 1
	other, _ := seal.Open(t.TempDir(), time.Now())
	foreign, _ := other.SealCallback(mailpush.CallbackToken{TenantID: "t", MailboxID: "m"})
	notification := `<?xml version="1.0"?><soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/" xmlns:m="http://schemas.microsoft.com/exchange/services/2006/messages" xmlns:t="http://schemas.microsoft.com/exchange/services/2006/types"><soap:Body><m:SendNotification><m:ResponseMessages><m:SendNotificationResponseMessage ResponseClass="Success"><m:ResponseCode>NoError</m:ResponseCode><m:Notification><t:SubscriptionId>nope</t:SubscriptionId><t:PreviousWatermark>w</t:PreviousWatermark><t:MoreEvents>false</t:MoreEvents><t:StatusEvent><t:Watermark>w2</t:Watermark></t:StatusEvent></m:Notification></m:SendNotificationResponseMessage></m:ResponseMessages></m:SendNotification></soap:Body></soap:Envelope>`
	cases := []struct {
		name, token, body string
		status            int
	}{
		{"forged token", string(forged), notification, 401},
		{"truncated token", goodToken[:len(goodToken)-6], notification, 401},
		{"other service's key", foreign, notification, 401},
		{"garbage token", "abc", notification, 401},
		{"not xml", goodToken, "hello", 400},
		{"oversized", goodToken, "<a>" + strings.Repeat("x", 1<<20) + "</a>", 413},
		{"not a SendNotification", goodToken, `<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"><soap:Body><x/></soap:Body></soap:Envelope>`, 400},
	}
	mbBefore := w.mailboxes(t)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := http.Post(w.main.URL()+"/ews/notify/"+tc.token, "text/xml", strings.NewReader(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			msg, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.status || len(bytes.TrimSpace(msg)) == 0 {
				t.Errorf("status %d %q, want %d with a message", resp.StatusCode, msg, tc.status)
			}
		})
	}
	// A valid token with a subscription ID that is not the mailbox's: Unsubscribe, no change.
	resp, err := http.Post(good, "text/xml", strings.NewReader(notification))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), "Unsubscribe") {
		t.Errorf("stale subscription: %d %s", resp.StatusCode, body)
	}
	if after := w.mailboxes(t); after != mbBefore {
		t.Errorf("refused notifications changed the mailbox:\nbefore %s\nafter  %s", mbBefore, after)
	}
}

// mailboxes renders the state of every mailbox bound to a fake subscription.
func (w *world) mailboxes(t testing.TB) string {
	var b strings.Builder
	for _, s := range w.exchange.Subscriptions() {
		mb, err := w.main.Store.MailboxBySubscription(context.Background(), s.ID)
		if err != nil {
			continue
		}
		fmt.Fprintf(&b, "%s %s %d %d %s;", mb.ID, mb.Watermark, mb.Badge, mb.Seq, mb.Status)
	}
	return b.String()
}

func TestCommands(t *testing.T) {
	var out bytes.Buffer
	if err := run(context.Background(), []string{"version"}, &out, io.Discard, nil); err != nil || !strings.Contains(out.String(), mailpush.Version) {
		t.Errorf("version: %q %v", out.String(), err)
	}
	for _, args := range [][]string{nil, {"frobnicate"}, {"tenant"}, {"tenant", "add"}, {"tenant", "add", "x", "--max-content", "all"}} {
		if err := run(context.Background(), args, io.Discard, io.Discard, nil); err == nil {
			t.Errorf("%v: no error", args)
		}
	}
	dir := t.TempDir()
	env := []string{"MAILPUSH_DATABASE_PATH=" + filepath.Join(dir, "m.db"), "MAILPUSH_KEY_DIR=" + filepath.Join(dir, "keys")}
	out.Reset()
	if err := run(context.Background(), []string{"tenant", "add", "acme", "--allow-host", "mail.example.com"}, &out, io.Discard, env); err != nil {
		t.Fatal(err)
	}
	if err := run(context.Background(), []string{"tenant", "add", "acme"}, io.Discard, io.Discard, env); err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Errorf("duplicate tenant: %v", err)
	}
	if err := run(context.Background(), []string{"tenant", "set", "acme", "--max-content", "badge"}, io.Discard, io.Discard, env); err != nil {
		t.Errorf("tenant set: %v", err)
	}
	out.Reset()
	if err := run(context.Background(), []string{"keys", "rotate"}, &out, io.Discard, env); err != nil || !strings.Contains(out.String(), "is now current") {
		t.Errorf("keys rotate: %q %v", out.String(), err)
	}
}

func b64url(s string) ([]byte, error) {
	return base64.RawURLEncoding.DecodeString(s)
}

// TestEndToEndContentAndFanOut registers three devices for one mailbox with
// different content modes and checks what each receives for one new mail:
// every device gets it, the alert carries subject and sender fetched with
// GetItem, and the device with a content key gets only ciphertext it can open.
func TestEndToEndContentAndFanOut(t *testing.T) {
	w := newWorld(t, "debug")
	token := w.addTenant(t, "acme")
	devKey, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	devices := []struct {
		token, content, contentKey string
	}{
		{deviceToken(10), "badge", ""},
		{deviceToken(11), "subject_sender", ""},
		{deviceToken(12), "subject_sender", base64.RawURLEncoding.EncodeToString(devKey.PublicKey().Bytes())},
	}
	for _, d := range devices {
		dev := map[string]any{"platform": "ios", "token": d.token}
		if d.contentKey != "" {
			dev["contentKey"] = d.contentKey
		}
		st, out := w.call(t, "POST", "/api/v1/registrations", token, map[string]any{
			"device":  dev,
			"mailbox": map[string]any{"address": address, "source": "ews", "ewsUrl": w.exchange.URL(), "sealedCredentials": w.sealCredentials(t, username, password)},
			"content": d.content,
		})
		if st != 201 || out["content"] != d.content {
			t.Fatalf("register %s: %d %v", d.content, st, out)
		}
	}
	const subject = "Board meeting moved to Thursday"
	w.exchange.Deliver(address, subject, "Carol Chair", "carol@example.com")
	waitFor(t, "three pushes", func(ctx context.Context) error {
		return w.apple.WaitFor(ctx, func(ps []apnsfake.Push) bool { return len(ps) >= 3 })
	})
	badgeOnly := w.apple.PushesFor(devices[0].token)
	if len(badgeOnly) != 1 || badgeOnly[0].Badge != 1 || badgeOnly[0].AlertBody != "" {
		t.Errorf("badge device got %+v", badgeOnly)
	}
	alert := w.apple.PushesFor(devices[1].token)
	if len(alert) != 1 || alert[0].AlertBody != subject || alert[0].AlertTitle != "Carol Chair" || alert[0].Badge != 1 {
		t.Errorf("alert device got %+v", alert)
	}
	sealed := w.apple.PushesFor(devices[2].token)
	if len(sealed) != 1 || sealed[0].Enc == "" || !sealed[0].MutableContent || strings.Contains(string(sealed[0].Payload), "Board meeting") || strings.Contains(string(sealed[0].Payload), "Carol") {
		t.Fatalf("sealed device got %+v (payload %s)", sealed, sealed[0].Payload)
	}
	ct, _ := base64.RawURLEncoding.DecodeString(sealed[0].Enc)
	hk, _ := hpke.NewDHKEMPrivateKey(devKey)
	plain, err := hpke.Open(hk, hpke.HKDFSHA256(), hpke.AES128GCM(), []byte("mailpush content v1"), ct)
	if err != nil || !strings.Contains(string(plain), subject) || !strings.Contains(string(plain), "Carol Chair") {
		t.Errorf("device could not open its content: %q %v", plain, err)
	}
	if n := w.exchange.Requests("GetItem"); n != 1 {
		t.Errorf("GetItem called %d times for one new mail, want 1", n)
	}
	// The subject and sender never reach the logs.
	w.main.Close()
	if logs := w.logs.String(); strings.Contains(logs, "Board meeting") || strings.Contains(logs, "Carol") {
		t.Error("logs contain the subject or sender")
	}
}

func TestRegistrationRefusedWithoutPlatformCredentials(t *testing.T) {
	w := newWorld(t, "info")
	token := w.addTenant(t, "acme")
	st, body := w.call(t, "POST", "/api/v1/registrations", token, map[string]any{
		"device":  map[string]any{"platform": "android", "token": strings.Repeat("fcm_token-", 15)},
		"mailbox": map[string]any{"address": address, "source": "ews", "ewsUrl": w.exchange.URL(), "sealedCredentials": w.sealCredentials(t, username, password)},
	})
	if st != 422 || !strings.Contains(fmt.Sprint(body), "unsupported") || !strings.Contains(fmt.Sprint(body), "android") {
		t.Fatalf("android registration without FCM = %d %v, want 422 unsupported naming the platform", st, body)
	}
	if subs := w.exchange.Subscriptions(); len(subs) != 0 {
		t.Errorf("a refused registration subscribed on Exchange: %+v", subs)
	}
}
