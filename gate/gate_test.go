package gate

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mailpush/mailpush"
	"github.com/mailpush/mailpush/clocktest"
)

// memStore is the part of mailpush.Store the gate uses, in memory; the real
// stores are exercised by storetest and the end-to-end tests.
type memStore struct {
	mailpush.Store
	mu      sync.Mutex
	devices map[string]mailpush.GateDevice
	lookups int
	fail    error
	removed map[string]int // hash → registrations removed
	seen    map[string]time.Time
}

func newMemStore() *memStore {
	return &memStore{devices: map[string]mailpush.GateDevice{}, removed: map[string]int{}, seen: map[string]time.Time{}}
}

func (s *memStore) GateDevice(ctx context.Context, tenantID, id string) (*mailpush.GateDevice, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lookups++
	if s.fail != nil {
		return nil, s.fail
	}
	d, ok := s.devices[tenantID+"/"+id]
	if !ok {
		return nil, mailpush.Errorf(mailpush.ENotFound, "gate device not found")
	}
	return &d, nil
}

func (s *memStore) PutGateDevice(ctx context.Context, d *mailpush.GateDevice) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.devices[d.TenantID+"/"+d.DeviceID] = *d
	return nil
}

func (s *memStore) DeleteGateDevice(ctx context.Context, tenantID, id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.devices[tenantID+"/"+id]; !ok {
		return mailpush.Errorf(mailpush.ENotFound, "gate device not found")
	}
	delete(s.devices, tenantID+"/"+id)
	return nil
}

func (s *memStore) DeleteRegistrationsByActiveSyncDevice(ctx context.Context, tenantID string, hash []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.removed[string(hash)]++
	return 1, nil
}

func (s *memStore) TouchGateDevices(ctx context.Context, tenantID string, seen map[string]time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, v := range seen {
		s.seen[k] = v
	}
	return nil
}

type hasher struct{}

func (hasher) HashAddress(tenantID, a string) []byte {
	m := hmac.New(sha256.New, []byte("test key"))
	m.Write([]byte(tenantID + "\x00" + strings.ToLower(strings.TrimSpace(a))))
	return m.Sum(nil)[:16]
}

type fixture struct {
	store *memStore
	reg   *Registry
	gate  *Gate
	clock *clocktest.Clock
	log   *bytes.Buffer
	srv   *httptest.Server
}

func newFixture(t *testing.T, cfg Config) *fixture {
	t.Helper()
	f := &fixture{store: newMemStore(), clock: clocktest.New(time.Date(2026, 11, 22, 8, 0, 0, 0, time.UTC)), log: &bytes.Buffer{}}
	logger := slog.New(slog.NewTextHandler(&lockedWriter{w: f.log}, nil))
	if cfg.Proxy == "" {
		cfg.Proxy = "nginx"
	}
	g, err := New(cfg, Deps{Store: f.store, Hasher: hasher{}, TenantID: "t1", Logger: logger, Clock: f.clock})
	if err != nil {
		t.Fatal(err)
	}
	f.gate = g
	f.reg = &Registry{Store: f.store, Hasher: hasher{}, Logger: logger, OnChange: g.Invalidate, Identity: g.policy.id, ClearIDs: g.clearIDs}
	mux := http.NewServeMux()
	g.Routes(mux)
	f.srv = httptest.NewServer(mux)
	t.Cleanup(f.srv.Close)
	return f
}

type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func (f *fixture) set(t *testing.T, id, user string, state mailpush.DeviceState) {
	t.Helper()
	if _, _, err := f.reg.SetDevice(context.Background(), "t1", mailpush.GateDeviceUpdate{DeviceID: id, User: user, DeviceType: "iPhone", State: state}); err != nil {
		t.Fatal(err)
	}
}

// auth calls /gate/auth with the given headers and returns the status and reason.
func (f *fixture) auth(t *testing.T, headers map[string]string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", f.srv.URL+"/gate/auth", nil)
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, res.Body)
	res.Body.Close()
	if d := res.Header.Get("X-Mailpush-Decision"); (d == "allow") != (res.StatusCode == 200) {
		t.Errorf("status %d with X-Mailpush-Decision %q", res.StatusCode, d)
	}
	return res.StatusCode, res.Header.Get("X-Mailpush-Reason")
}

func uri(dev string) map[string]string {
	return map[string]string{"X-Original-URI": "/Microsoft-Server-ActiveSync?Cmd=Sync&User=alice&DeviceId=" + dev + "&DeviceType=iPhone", "User-Agent": "Apple-iPhone/1",
		"Authorization": "Basic " + base64.StdEncoding.EncodeToString([]byte("alice:pw"))}
}

func TestForwardAuthStateChangesTakeEffectAtOnce(t *testing.T) {
	f := newFixture(t, Config{})
	if code, reason := f.auth(t, uri("dev1")); code != 403 || reason != "device is not registered: default deny" {
		t.Errorf("unknown device: %d %q", code, reason)
	}
	f.set(t, "DEV1", "Alice", mailpush.DeviceCompliant)
	if code, reason := f.auth(t, uri("dev1")); code != 200 || reason != "device is compliant" {
		t.Errorf("compliant device: %d %q", code, reason)
	}
	lookups := f.store.lookups
	for range 3 {
		f.auth(t, uri("dev1"))
	}
	if f.store.lookups != lookups {
		t.Errorf("cached device was looked up %d more times", f.store.lookups-lookups)
	}
	f.set(t, "dev1", "alice", mailpush.DeviceBlocked)
	if code, reason := f.auth(t, uri("dev1")); code != 403 || reason != "device is blocked" {
		t.Errorf("blocked device, next request: %d %q", code, reason)
	}
	if n := f.store.removed[string(mailpush.ActiveSyncDeviceHash(hasher{}, "t1", "dev1"))]; n != 1 {
		t.Errorf("blocking removed registrations %d times, want 1", n)
	}
	f.set(t, "dev1", "alice", mailpush.DeviceCompliant)
	if code, _ := f.auth(t, uri("dev1")); code != 200 {
		t.Errorf("unblocked device: %d", code)
	}
	if err := f.reg.DeleteDevice(context.Background(), "t1", "Dev1"); err != nil {
		t.Fatal(err)
	}
	if code, _ := f.auth(t, uri("dev1")); code != 403 {
		t.Errorf("deleted device: %d", code)
	}
	// The cache expires.
	f.store.devices["t1/DEV2"] = mailpush.GateDevice{TenantID: "t1", DeviceID: "DEV2", State: mailpush.DeviceCompliant}
	f.auth(t, uri("dev2"))
	f.store.devices["t1/DEV2"] = mailpush.GateDevice{TenantID: "t1", DeviceID: "DEV2", State: mailpush.DeviceWiped}
	f.clock.Advance(DefaultCacheTTL + time.Second)
	if code, reason := f.auth(t, uri("dev2")); code != 403 || reason != "device is wiped" {
		t.Errorf("after the TTL: %d %q", code, reason)
	}
	s := f.gate.Stats()
	if s.CacheHits == 0 || s.CacheMisses == 0 || s.Allowed == 0 || s.Denied == 0 {
		t.Errorf("stats = %+v", s)
	}
}

func TestForwardAuthBadInputIsDenied(t *testing.T) {
	f := newFixture(t, Config{Mode: ModeAllButBlocked}) // would allow any well-formed request
	basic := "Basic " + base64.StdEncoding.EncodeToString([]byte("alice:Pa55word!"))
	tests := []struct {
		name    string
		headers map[string]string
		reason  string
	}{
		{"no URI", map[string]string{}, "no X-Original-URI header"},
		{"no DeviceId", map[string]string{"X-Original-URI": "/Microsoft-Server-ActiveSync?Cmd=Sync&User=a"}, "no DeviceId"},
		{"not ActiveSync", map[string]string{"X-Original-URI": "/owa/?DeviceId=a"}, "not /Microsoft-Server-ActiveSync"},
		{"malformed base64", map[string]string{"X-Original-URI": "/Microsoft-Server-ActiveSync?jAAJBAp2MTQ%%%"}, "malformed"},
		{"base64 garbage", map[string]string{"X-Original-URI": "/Microsoft-Server-ActiveSync?jAAJ"}, "truncated"},
		{"long User-Agent", map[string]string{"X-Original-URI": "/Microsoft-Server-ActiveSync?DeviceId=a", "User-Agent": strings.Repeat("x", MaxUserAgentLen+1)}, "User-Agent"},
		{"binary User-Agent", map[string]string{"X-Original-URI": "/Microsoft-Server-ActiveSync?DeviceId=a", "User-Agent": "a\xff\xfeb"}, "User-Agent"},
		{"binary URI", map[string]string{"X-Original-URI": "/Microsoft-Server-ActiveSync?DeviceId=a\x80"}, "printable"},
		{"long URI", map[string]string{"X-Original-URI": "/Microsoft-Server-ActiveSync?DeviceId=" + strings.Repeat("a", MaxURILen)}, "printable"},
		{"bad XFF", map[string]string{"X-Original-URI": "/Microsoft-Server-ActiveSync?DeviceId=a", "X-Forwarded-For": "not-an-ip"}, "X-Forwarded-For"},
		{"bad Basic", map[string]string{"X-Original-URI": "/Microsoft-Server-ActiveSync?DeviceId=a", "Authorization": "Basic %%%"}, "base64"},
		{"long Authorization", map[string]string{"X-Original-URI": "/Microsoft-Server-ActiveSync?DeviceId=a", "Authorization": "Basic " + strings.Repeat("QUFB", MaxHeaderLen)}, "longer"},
		{"password not logged", map[string]string{"X-Original-URI": "/Microsoft-Server-ActiveSync?DeviceId=a%01", "Authorization": basic}, "ASCII letters and digits"},
		{"absolute URI", map[string]string{"X-Original-URI": "http://evil.example/Microsoft-Server-ActiveSync?DeviceId=a"}, "absolute URL is refused"},
		{"scheme-relative URI", map[string]string{"X-Original-URI": "//evil.example/Microsoft-Server-ActiveSync?DeviceId=a"}, "not /Microsoft-Server-ActiveSync"},
		{"dot segments", map[string]string{"X-Original-URI": "/Microsoft-Server-ActiveSync/../Microsoft-Server-ActiveSync?DeviceId=a"}, "not /Microsoft-Server-ActiveSync"},
		{"escaped path", map[string]string{"X-Original-URI": "/%4Dicrosoft-Server-ActiveSync?DeviceId=a"}, "not /Microsoft-Server-ActiveSync"},
		{"other proxy's URI header disagrees", map[string]string{"X-Original-URI": "/Microsoft-Server-ActiveSync?DeviceId=a", "X-Forwarded-Uri": "/Microsoft-Server-ActiveSync?DeviceId=b"}, "disagree"},
		{"other proxy's method header disagrees", map[string]string{"X-Original-URI": "/Microsoft-Server-ActiveSync?DeviceId=a", "X-Original-Method": "POST", "X-Forwarded-Method": "OPTIONS"}, "disagree"},
		{"only the other proxy's URI header", map[string]string{"X-Forwarded-Uri": "/Microsoft-Server-ActiveSync?DeviceId=a"}, "disagree"},
		{"NTLM garbage", map[string]string{"X-Original-URI": "/Microsoft-Server-ActiveSync?DeviceId=a", "Authorization": "NTLM " + base64.StdEncoding.EncodeToString([]byte("NTLMSSP\x00\x03\x00\x00\x00"))}, "truncated"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, reason := f.auth(t, tc.headers)
			if code != 403 || !strings.Contains(reason, tc.reason) || !strings.HasPrefix(reason, "malformed request: ") {
				t.Errorf("got %d %q, want 403 with %q", code, reason, tc.reason)
			}
		})
	}
	if code, _ := f.auth(t, map[string]string{"X-Original-URI": "/Microsoft-Server-ActiveSync?DeviceId=a", "Authorization": basic}); code != 200 {
		t.Errorf("a well-formed request in allButBlocked mode got %d", code)
	}
	for _, secret := range []string{"Pa55word!", "alice"} {
		if strings.Contains(f.log.String(), secret) {
			t.Errorf("the audit log holds %q:\n%s", secret, f.log.String())
		}
	}
}

func TestForwardedForTrust(t *testing.T) {
	// Only 10.9.0.0/16 is trusted: the test client (127.0.0.1) is not, so
	// it may not ask at all.
	f := newFixture(t, Config{Mode: ModeAllButBlocked, TrustedProxies: []string{"10.9.0.0/16"}, Rules: []Rule{{Name: "office", Action: "allow", Networks: []string{"192.0.2.0/24"}}}})
	h := uri("a")
	if code, reason := f.auth(t, h); code != 403 || !strings.Contains(reason, "not a trusted proxy") {
		t.Errorf("untrusted caller: %d %q", code, reason)
	}
	g := f.gate
	g.trusted = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("10.9.0.0/16")}
	peer := netip.MustParseAddr("127.0.0.1")
	for _, tc := range []struct {
		lines []string
		want  string
	}{
		{nil, "127.0.0.1"},
		{[]string{"192.0.2.7"}, "192.0.2.7"},
		{[]string{"203.0.113.1, 192.0.2.7, 10.9.1.1"}, "192.0.2.7"}, // the leftmost is the client's own claim: not believed
		{[]string{"10.9.0.1"}, "10.9.0.1"},
		// Several header lines are one list, in order: the client's own
		// line comes first, the proxy's last.
		{[]string{"192.0.2.99", "203.0.113.5"}, "203.0.113.5"},
		{[]string{"192.0.2.99", "203.0.113.5, 10.9.0.2", "127.0.0.1"}, "203.0.113.5"},
	} {
		ip, err := g.forwardedFor(peer, tc.lines)
		if err != nil || ip.String() != tc.want {
			t.Errorf("forwardedFor(%q) = %v, %v; want %s", tc.lines, ip, err, tc.want)
		}
	}
	// Through the handler: two header lines, the client's first.
	req, _ := http.NewRequest("GET", f.srv.URL+"/gate/auth", nil)
	req.Header.Set("X-Original-URI", h["X-Original-URI"])
	req.Header.Add("X-Forwarded-For", "192.0.2.7")
	req.Header.Add("X-Forwarded-For", "203.0.113.9")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if r := res.Header.Get("X-Mailpush-Reason"); r == "allowed by rule office" {
		t.Errorf("the client's own X-Forwarded-For line chose the rule: %q", r)
	}
	h["X-Forwarded-For"] = "192.0.2.7"
	if code, reason := f.auth(t, h); code != 200 || reason != "allowed by rule office" {
		t.Errorf("trusted proxy: %d %q", code, reason)
	}
}

func TestAuthorizeCallout(t *testing.T) {
	f := newFixture(t, Config{Proxy: "netscaler"})
	f.set(t, "dev1", "alice@example.com", mailpush.DeviceCompliant)
	get := func(q string) (string, string) {
		res, err := http.Get(f.srv.URL + "/services/ActiveSync/Authorize?" + q)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return string(b), res.Header.Get("X-Mailpush-Reason")
	}
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	u := b64("https://mail.example.com/Microsoft-Server-ActiveSync?Cmd=Ping&User=alice@example.com&DeviceId=dev1&DeviceType=iPhone")
	for _, tc := range []struct{ q, want, reason string }{
		{"user=alice@example.com&agent=Apple&ip=192.0.2.1&url=" + u + "&DeviceId=dev1", "Allow", "device is compliant"},
		{"DeviceId=DEV1&user=alice@example.com", "Allow", "device is compliant"},
		{"DeviceId=dev1&user=mallory@example.com", "Deny", "device is registered to another user"},
		{"DeviceId=dev1", "Deny", "no credentials"},
		{"url=" + u + "&DeviceId=dev1&resultType=json&user=alice%40example.com", `{"result":"Allow","reason":"device is compliant"}` + "\n", ""},
		{"url=" + u + "&DeviceId=other&user=alice%40example.com", "Deny", "contradicts"},
		// Duplicates: NetScaler's QUERY.VALUE takes the first; the gate refuses.
		{"DeviceId=dev1&DeviceId=blocked&user=alice@example.com", "Deny", "repeats its deviceid"},
		{"DeviceId=dev1&deviceid=blocked&user=alice@example.com", "Deny", "repeats its deviceid"},
		{"DeviceId=dev1&ip=192.0.2.1&ip=10.0.0.1&user=alice@example.com", "Deny", "repeats its ip"},
		{"url=" + b64("https://mail.example.com/Microsoft-Server-ActiveSync?DeviceId=dev1&DeviceId=blocked") + "&DeviceId=dev1&user=alice@example.com", "Deny", "repeats"},
		{"DeviceId=dev1&user=alice@example.com&proxy=x", "Deny", "does not define"},
		{"DeviceId=dev1&ip=not-an-ip&user=alice@example.com", "Deny", "not an IP address"},
		{"url=%%%", "Deny", ""},
		{"url=bm90IGEgdXJs", "Deny", "not a path"},
		{"url=" + b64("https://evil@mail.example.com/Microsoft-Server-ActiveSync?DeviceId=dev1") + "&user=alice@example.com", "Deny", "no host and path"},
		{"DeviceId=unknown1", "Deny", "not registered"},
		{"", "Deny", "no original URI"},
	} {
		body, reason := get(tc.q)
		if body != tc.want || !strings.Contains(reason, tc.reason) {
			t.Errorf("Authorize?%.60s = %q (%q), want %q (%q)", tc.q, body, reason, tc.want, tc.reason)
		}
	}
	// A netscaler gate does not answer /gate/auth.
	if code, reason := f.auth(t, uri("dev1")); code != 403 || !strings.Contains(reason, "Authorize") {
		t.Errorf("/gate/auth with gate.proxy netscaler: %d %q", code, reason)
	}
	res, err := http.Get(f.srv.URL + "/services/ActiveSync/Version")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 200 || !strings.HasPrefix(string(b), "mailpush-gate ") {
		t.Errorf("Version = %d %q", res.StatusCode, b)
	}
	// An nginx gate does not answer the callout.
	g := newFixture(t, Config{Proxy: "nginx"})
	g.set(t, "dev1", "alice@example.com", mailpush.DeviceCompliant)
	res, err = http.Get(g.srv.URL + "/services/ActiveSync/Authorize?DeviceId=dev1&user=alice@example.com")
	if err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(res.Body)
	res.Body.Close()
	if string(b) != "Deny" {
		t.Errorf("Authorize with gate.proxy nginx = %q", b)
	}
}

func TestFailModes(t *testing.T) {
	for _, tc := range []struct {
		failMode string
		code     int
		reason   string
	}{{"", 403, "fail-closed"}, {"closed", 403, "fail-closed"}, {"open", 200, "fail-open"}} {
		f := newFixture(t, Config{FailMode: tc.failMode, Rules: []Rule{{Name: "banned", Action: "deny", DeviceTypes: []string{"evil"}}}})
		f.store.fail = mailpush.Errorf(mailpush.EUnavailable, "the database failed")
		if code, reason := f.auth(t, uri("dev1")); code != tc.code || !strings.Contains(reason, tc.reason) {
			t.Errorf("failMode %q: %d %q", tc.failMode, code, reason)
		}
		// A deny rule still denies while the store is down.
		h := uri("dev1")
		h["X-Original-URI"] = "/Microsoft-Server-ActiveSync?DeviceId=d&DeviceType=evil"
		if code, _ := f.auth(t, h); code != 403 {
			t.Errorf("failMode %q: deny rule gave %d", tc.failMode, code)
		}
		if !strings.Contains(f.log.String(), "device registry unavailable") {
			t.Errorf("failMode %q: not logged", tc.failMode)
		}
	}
}

func TestLastSeenIsWrittenInBatches(t *testing.T) {
	f := newFixture(t, Config{})
	f.set(t, "dev1", "", mailpush.DeviceCompliant)
	f.gate.Start()
	f.auth(t, uri("dev1"))
	f.auth(t, uri("dev1"))
	f.gate.Close()
	f.gate.Close() // twice is fine
	if got := f.store.seen["DEV1"]; !got.Equal(f.clock.Now()) {
		t.Errorf("last seen = %v, want %v", got, f.clock.Now())
	}
	if _, ok := f.store.seen["UNKNOWN"]; ok {
		t.Error("an unregistered device was touched")
	}
}

func TestRegistryImport(t *testing.T) {
	f := newFixture(t, Config{})
	csv := "\ufeffDeviceId,User,DeviceType,State\n dev1 ,alice@example.com,iPhone,compliant\ndev2,,Android,NonCompliant\ndev3,bob,iPad,wiped\n"
	var calls int
	res, err := f.reg.Import(context.Background(), "t1", strings.NewReader(csv), func(mailpush.GateImportResult) { calls++ })
	if err != nil || res.Rows != 3 || res.Stored != 3 || res.Removed != 1 || calls != 3 {
		t.Fatalf("Import = %+v, %v (%d progress calls)", res, err, calls)
	}
	d, err := f.reg.Device(context.Background(), "t1", "Dev2")
	if err != nil || d.State != mailpush.DeviceNonCompliant || d.UserHash != nil {
		t.Errorf("dev2 = %+v, %v", d, err)
	}
	for _, tc := range []struct{ csv, err string }{
		{"", "empty"},
		{"deviceId,user\n", "no state column"},
		{"deviceId,state\ndev4,compliant\ndev5,shiny\n", "line 3: state must be"},
		{"deviceId,state\n,compliant\n", "line 2: deviceId"},
		{"deviceId,state\n\"dev6,compliant\n", "malformed"},
	} {
		_, err := f.reg.Import(context.Background(), "t1", strings.NewReader(tc.csv), nil)
		if mailpush.ErrorCode(err) != mailpush.EInvalid || !strings.Contains(mailpush.ErrorMessage(err), tc.err) {
			t.Errorf("Import(%q) = %v, want invalid with %q", tc.csv, err, tc.err)
		}
	}
	if _, err := f.reg.Device(context.Background(), "t1", "dev4"); err != nil {
		t.Errorf("rows before a bad line are kept: %v", err)
	}
	if strings.Contains(f.log.String(), "alice") || strings.Contains(f.log.String(), "bob") {
		t.Errorf("a user name reached the log:\n%s", f.log.String())
	}
}

func discardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }
