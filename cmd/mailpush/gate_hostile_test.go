package main

import (
	"bufio"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// The hostile-client suite: every request below is one a client behind the
// proxy can send to talk its way past the gate. Each runs through the real
// proxy, started from the docs/gate template, and must be refused without
// reaching the recording backend (the fake Exchange).
//
// The client connects from 127.0.0.2, the proxies from 127.0.0.1: only
// 127.0.0.1 is a trusted proxy, so the client's real address is known and
// differs from the proxy's (Linux routes all of 127/8 to loopback).

const hostileClientAddr = "127.0.0.2"

// gateHostileConfig is the gate section of the hostile suite's world.
const gateHostileConfig = `  trustedProxies: [127.0.0.1/32]
  minProtocolVersion: "14.0"
  identity:
    domains: {CORP: example.com}
  rules:
    - {name: guest-wifi, action: deny, commands: [Sync], networks: [127.0.0.2/32]}
    - {name: office-lan, action: allow, networks: [10.1.0.0/16]}
`

// rawRequest sends one HTTP/1.1 request exactly as written (the path, the
// header lines and their order are not touched) from the hostile client's
// address, and returns the status and body.
func rawRequest(t *testing.T, hostport, requestTarget string, headers [][2]string) (int, string) {
	t.Helper()
	return rawRequestFrom(t, hostileClientAddr, hostport, "POST", requestTarget, headers)
}

// rawRequestFrom is rawRequest from another local address, with a method.
func rawRequestFrom(t *testing.T, from, hostport, method, requestTarget string, headers [][2]string) (int, string) {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", hostport)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: mail.example.com\r\nContent-Type: application/vnd.ms-sync.wbxml\r\nContent-Length: 4\r\nConnection: close\r\n", method, requestTarget)
	for _, h := range headers {
		fmt.Fprintf(&b, "%s: %s\r\n", h[0], h[1])
	}
	b.WriteString("\r\n\x03\x01j\x00")
	if _, err := io.WriteString(c, b.String()); err != nil {
		t.Fatal(err)
	}
	res, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("reading the answer to %s: %v", requestTarget, err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(body)
}

func basicAuth(user string) [2]string {
	return [2]string{"Authorization", "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":Secret-Passw0rd"))}
}

type hostileCase struct {
	name    string
	target  string // the request target; MARK is replaced by a unique marker
	headers [][2]string
}

// hostileCases are the requests that must never pass. Every target carries
// MARK so that the backend's record shows whether it got through.
func hostileCases() []hostileCase {
	alice := basicAuth("alice@example.com")
	ua := [2]string{"User-Agent", "Apple-iPhone/1"}
	v161 := [2]string{"MS-ASProtocolVersion", "16.1"}
	asURI := func(q string) string { return "/Microsoft-Server-ActiveSync?" + q }
	goodURI := asURI("Cmd=Ping&User=alice%40example.com&DeviceId=GOODDEV01&DeviceType=iPhone")
	std := func(extra ...[2]string) [][2]string { return append([][2]string{alice, ua, v161}, extra...) }
	return []hostileCase{
		// 1. Spoofed original-URI headers: the gate must judge the request the proxy forwards.
		{"blocked device, own X-Original-URI", asURI("Cmd=Sync&DeviceId=BLOCKED&DeviceType=iPhone&ItemId=MARK"), std([2]string{"X-Original-URI", goodURI})},
		{"blocked device, own X-Forwarded-Uri", asURI("Cmd=Ping&DeviceId=BLOCKED&DeviceType=iPhone&ItemId=MARK"), std([2]string{"X-Forwarded-Uri", goodURI})},
		{"blocked device, both URI headers", asURI("Cmd=Ping&DeviceId=BLOCKED&DeviceType=iPhone&ItemId=MARK"), std([2]string{"X-Original-URI", goodURI}, [2]string{"X-Forwarded-Uri", goodURI})},
		{"unregistered device, own X-Original-URI", asURI("Cmd=Ping&DeviceId=NEWDEV99&DeviceType=iPhone&ItemId=MARK"), std([2]string{"X-Original-URI", goodURI})},
		{"unregistered device, absolute X-Original-URI", asURI("Cmd=Ping&DeviceId=NEWDEV99&DeviceType=iPhone&ItemId=MARK"), std([2]string{"X-Original-URI", "http://evil.example" + goodURI})},
		{"blocked device, own method and URI headers", asURI("Cmd=Ping&DeviceId=BLOCKED&DeviceType=iPhone&ItemId=MARK"), std([2]string{"X-Original-Method", "OPTIONS"}, [2]string{"X-Forwarded-Method", "OPTIONS"}, [2]string{"X-Original-URI", goodURI})},
		// 2. User mismatch: the authenticated user is bob.
		{"Basic bob, query User alice", asURI("Cmd=Ping&User=alice%40example.com&DeviceId=GOODDEV01&DeviceType=iPhone&ItemId=MARK"), [][2]string{basicAuth("bob@example.com"), ua, v161}},
		{"Basic bob, no query User", asURI("Cmd=Ping&DeviceId=GOODDEV01&DeviceType=iPhone&ItemId=MARK"), [][2]string{basicAuth("bob@example.com"), ua, v161}},
		{"Basic CORP\\bob, no query User", asURI("Cmd=Ping&DeviceId=GOODDEV01&DeviceType=iPhone&ItemId=MARK"), [][2]string{basicAuth(`CORP\bob`), ua, v161}},
		{"Basic alice then Basic bob", asURI("Cmd=Ping&DeviceId=GOODDEV01&DeviceType=iPhone&ItemId=MARK"), std(basicAuth("bob@example.com"))},
		{"no credentials on alice's device", asURI("Cmd=Ping&User=alice%40example.com&DeviceId=GOODDEV01&DeviceType=iPhone&ItemId=MARK"), [][2]string{ua, v161}},
		{"own X-Remote-User", asURI("Cmd=Ping&DeviceId=GOODDEV01&DeviceType=iPhone&ItemId=MARK"), [][2]string{basicAuth("bob@example.com"), ua, v161, {"X-Remote-User", "alice@example.com"}}},
		{"base64 query, User alice, Basic bob", asURI(binaryQueryMark(18, []byte{0xf2, 0x4c, 0x11, 0x00, 0xab, 0xcd, 0xef, 0x01, 0x23, 0x45, 0x67, 0x89, 0x0a, 0xbc, 0xde, 0xf0}, "WP8", "alice@example.com")), [][2]string{basicAuth("bob@example.com"), ua}},
		// 3. X-Forwarded-For lines of the client's own: the client is 127.0.0.2 (guest-wifi, no Sync).
		{"own XFF line", asURI("Cmd=Sync&DeviceId=GOODDEV01&DeviceType=iPhone&ItemId=MARK"), std([2]string{"X-Forwarded-For", "10.1.2.3"})},
		{"two own XFF lines", asURI("Cmd=Sync&DeviceId=GOODDEV01&DeviceType=iPhone&ItemId=MARK"), std([2]string{"X-Forwarded-For", "10.1.2.3"}, [2]string{"X-Forwarded-For", "10.1.2.4"})},
		{"own X-Real-IP and Forwarded", asURI("Cmd=Sync&DeviceId=GOODDEV01&DeviceType=iPhone&ItemId=MARK"), std([2]string{"X-Real-IP", "10.1.2.3"}, [2]string{"Forwarded", "for=10.1.2.3"})},
		// 4. DeviceId look-alikes of registered devices.
		{"dotless i", asURI("Cmd=Ping&DeviceId=gooddev%C4%B1&DeviceType=iPhone&ItemId=MARK"), std()},
		{"no-break space", asURI("Cmd=Ping&DeviceId=GOODDEV01%C2%A0&DeviceType=iPhone&ItemId=MARK"), std()},
		{"next line", asURI("Cmd=Ping&DeviceId=GOODDEV01%C2%85&DeviceType=iPhone&ItemId=MARK"), std()},
		{"trailing space", asURI("Cmd=Ping&DeviceId=GOODDEV01%20&DeviceType=iPhone&ItemId=MARK"), std()},
		{"fullwidth G", asURI("Cmd=Ping&DeviceId=%EF%BC%A7OODDEV01&DeviceType=iPhone&ItemId=MARK"), std()},
		{"long s", asURI("Cmd=Ping&DeviceId=GOODDEV%C5%BF&DeviceType=iPhone&ItemId=MARK"), std()},
		{"NUL", asURI("Cmd=Ping&DeviceId=GOODDEV01%00&DeviceType=iPhone&ItemId=MARK"), std()},
		{"smuggled second DeviceId", asURI("Cmd=Ping&DeviceId=BLOCKED%26DeviceId%3DGOODDEV01&DeviceType=iPhone&ItemId=MARK"), std()},
		{"repeated DeviceId", asURI("Cmd=Ping&DeviceId=GOODDEV01&deviceid=BLOCKED&DeviceType=iPhone&ItemId=MARK"), std()},
		// 5. Absolute-form request targets and path tricks.
		{"absolute-form request line", "http://mail.example.com" + asURI("Cmd=Ping&DeviceId=BLOCKED&DeviceType=iPhone&ItemId=MARK"), std()},
		{"dot segments", "/Microsoft-Server-ActiveSync/../Microsoft-Server-ActiveSync?Cmd=Ping&DeviceId=BLOCKED&DeviceType=iPhone&ItemId=MARK", std()},
		{"escaped dot segments", "/Microsoft-Server-ActiveSync/%2e%2e/Microsoft-Server-ActiveSync?Cmd=Ping&DeviceId=BLOCKED&DeviceType=iPhone&ItemId=MARK", std()},
		{"double slash", "//Microsoft-Server-ActiveSync?Cmd=Ping&DeviceId=BLOCKED&DeviceType=iPhone&ItemId=MARK", std()},
		{"escaped letter", "/%4Dicrosoft-Server-ActiveSync?Cmd=Ping&DeviceId=BLOCKED&DeviceType=iPhone&ItemId=MARK", std()},
		{"lower case path", "/microsoft-server-activesync?Cmd=Ping&DeviceId=BLOCKED&DeviceType=iPhone&ItemId=MARK", std()},
		{"suffixed path", "/Microsoft-Server-ActiveSyncX?Cmd=Ping&DeviceId=GOODDEV01&DeviceType=iPhone&ItemId=MARK", std()},
		// 6. base64 tricks.
		{"base64 plus plain DeviceId", asURI(binaryQuery(18, []byte("BLOCKED"), "WP8", "alice@example.com") + "&DeviceId=GOODDEV01&ItemId=MARK"), std()},
		{"base64 of a blocked device", asURI(binaryQueryMark(18, []byte{0xde, 0xad}, "WP8", "alice@example.com")), std()},
		{"base64 of a blocked device, own X-Original-URI", asURI(binaryQueryMark(18, []byte{0xde, 0xad}, "WP8", "alice@example.com")), std([2]string{"X-Original-URI", goodURI}, [2]string{"X-Forwarded-Uri", goodURI})},
		{"base64 bare key", asURI("jAAJBAp2MTQ&Cmd=Ping&DeviceId=GOODDEV01&ItemId=MARK"), std()},
		// 7. The protocol floor (14.0 here).
		{"protocol 12.1", asURI("Cmd=Ping&DeviceId=GOODDEV01&DeviceType=iPhone&ItemId=MARK"), [][2]string{alice, ua, {"MS-ASProtocolVersion", "12.1"}}},
		{"no protocol version", asURI("Cmd=Ping&DeviceId=GOODDEV01&DeviceType=iPhone&ItemId=MARK"), [][2]string{alice, ua}},
		{"two protocol versions", asURI("Cmd=Ping&DeviceId=GOODDEV01&DeviceType=iPhone&ItemId=MARK"), std([2]string{"MS-ASProtocolVersion", "12.1"})},
	}
}

// binaryQueryMark is binaryQuery with an ItemId parameter (tag 3) holding
// MARK, which the test replaces; it is base64-encoded after the
// replacement, so the marker is found in the decoded query by sawMark.
func binaryQueryMark(cmd byte, deviceID []byte, deviceType, user string) string {
	return "B64:" + string(cmd) + string(deviceID) + "\x00" + deviceType + "\x00" + user
}

// expandMark puts the marker in place: in a B64: target it is built into
// the binary query's ItemId before encoding.
func expandMark(target, mark string) string {
	before, spec, ok := strings.Cut(target, "B64:")
	if !ok {
		return strings.Replace(target, "MARK", mark, 1)
	}
	parts := strings.SplitN(spec[1:], "\x00", 3)
	q := binaryQuery(spec[0], []byte(parts[0]), parts[1], parts[2])
	raw, _ := base64.StdEncoding.DecodeString(q)
	raw = append(raw, 3, byte(len(mark)))
	raw = append(raw, mark...)
	return before + base64.StdEncoding.EncodeToString(raw)
}

// gateProxies are the proxies whose templates docs/gate ships and CI runs.
var gateProxies = []string{"nginx", "caddy", "haproxy"}

func TestGateHostileClientsThroughRealProxies(t *testing.T) {
	for _, kind := range gateProxies {
		t.Run(kind, func(t *testing.T) { hostileClientsThroughRealProxy(t, kind) })
	}
}

func hostileClientsThroughRealProxy(t *testing.T, kind string) {
	w, _, token := newGateWorldFor(t, gateProxyName[kind], gateHostileConfig)
	m := w.main
	binDev := []byte{0xf2, 0x4c, 0x11, 0x00, 0xab, 0xcd, 0xef, 0x01, 0x23, 0x45, 0x67, 0x89, 0x0a, 0xbc, 0xde, 0xf0}
	for id, state := range map[string]string{"GOODDEV01": "compliant", "GOODDEVI": "compliant", "GOODDEVS": "compliant", "BLOCKED": "blocked",
		"DEAD": "blocked", fmt.Sprintf("%X", binDev): "compliant"} {
		if st, body := w.call(t, "PUT", "/api/v1/gate/devices/"+id, token, map[string]string{"user": "alice@example.com", "deviceType": "iPhone", "state": state}); st != 200 {
			t.Fatalf("PUT device %s = %d %v", id, st, body)
		}
	}
	exchange := newBackend(t)
	proxy := strings.TrimPrefix(startProxy(t, kind, strings.TrimPrefix(m.URL(), "http://"), exchange.srv.URL), "http://")
	alice := basicAuth("alice@example.com")
	ua := [2]string{"User-Agent", "Apple-iPhone/1"}
	// The controls: what a managed device of alice's sends gets through.
	for i, c := range []struct {
		name, target string
		headers      [][2]string
	}{
		{"compliant", "/Microsoft-Server-ActiveSync?Cmd=Ping&User=alice%40example.com&DeviceId=GOODDEV01&DeviceType=iPhone&ItemId=OK", [][2]string{alice, ua, {"MS-ASProtocolVersion", "16.1"}}},
		{"lower-case DeviceId", "/Microsoft-Server-ActiveSync?Cmd=FolderSync&DeviceId=gooddev01&DeviceType=iPhone&ItemId=OK", [][2]string{alice, ua, {"MS-ASProtocolVersion", "14.0"}}},
		{"DOMAIN\\user", "/Microsoft-Server-ActiveSync?Cmd=Ping&User=alice&DeviceId=GOODDEV01&DeviceType=iPhone&ItemId=OK", [][2]string{basicAuth(`corp\Alice`), ua, {"MS-ASProtocolVersion", "16.1"}}},
		{"base64", "/Microsoft-Server-ActiveSync?" + binaryQuery(18, binDev, "WP8", "alice@example.com"), [][2]string{alice, ua}},
	} {
		target := strings.Replace(c.target, "ItemId=OK", fmt.Sprintf("ItemId=OK%s%d", kind, i), 1)
		code, body := rawRequest(t, proxy, target, c.headers)
		if code != 200 || body != "exchange says hi" {
			t.Errorf("control %s: %d %q, want Exchange's answer", c.name, code, body)
		}
	}
	// Sync from the guest network is refused by a rule: the client's
	// address is what the proxy saw.
	if code, _ := rawRequest(t, proxy, "/Microsoft-Server-ActiveSync?Cmd=Sync&DeviceId=GOODDEV01&DeviceType=iPhone&ItemId=RULE"+kind, [][2]string{alice, ua, {"MS-ASProtocolVersion", "16.1"}}); code != 403 {
		t.Errorf("Sync from the guest network: %d, want 403", code)
	}
	for i, c := range hostileCases() {
		mark := fmt.Sprintf("H%s%d", kind, i)
		target := expandMark(c.target, mark)
		code, body := rawRequest(t, proxy, target, c.headers)
		if code < 400 || exchange.sawMark(mark) || exchange.sawMark(target) {
			t.Errorf("%s: status %d (%.80q), reached Exchange %v; want refused", c.name, code, body, exchange.sawMark(mark) || exchange.sawMark(target))
		}
	}
	// Straight to the gate, around the proxy: the client is not a trusted proxy.
	code, _ := rawRequest(t, strings.TrimPrefix(m.URL(), "http://"), "/gate/auth", [][2]string{
		{"X-Original-URI", "/Microsoft-Server-ActiveSync?Cmd=Ping&DeviceId=GOODDEV01&DeviceType=iPhone"}, basicAuth("alice@example.com"), {"MS-ASProtocolVersion", "16.1"}})
	if code != 403 {
		t.Errorf("a client asking the gate itself: %d, want 403", code)
	}
}

// sawMark reports whether any request that reached the backend carries mark.
func (b *backend) sawMark(mark string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, s := range b.seen {
		if strings.Contains(s, mark) {
			return true
		}
	}
	return false
}

// TestGateIdentityHeaderThroughNginx: nginx authenticates the user itself
// (auth_basic) and forwards it in X-Remote-User (gate.identity.header), as
// docs/gate/nginx.conf's comment says; a client's own X-Remote-User never
// survives.
func TestGateIdentityHeaderThroughNginx(t *testing.T) {
	w, _, token := newGateWorldFor(t, "nginx", "  identity: {header: X-Remote-User}\n")
	if st, body := w.call(t, "PUT", "/api/v1/gate/devices/GOODDEV01", token, map[string]string{"user": "alice@example.com", "state": "compliant"}); st != 200 {
		t.Fatalf("PUT device = %d %v", st, body)
	}
	exchange := newBackend(t)
	proxy := strings.TrimPrefix(startProxy(t, "nginx-identity", strings.TrimPrefix(w.main.URL(), "http://"), exchange.srv.URL), "http://")
	basic := func(user, pw string) [2]string {
		return [2]string{"Authorization", "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pw))}
	}
	for i, tc := range []struct {
		name    string
		headers [][2]string
		want    int
	}{
		{"alice", [][2]string{basic("alice@example.com", "alice-pw")}, 200},
		{"bob", [][2]string{basic("bob@example.com", "bob-pw")}, 403},
		{"bob with his own X-Remote-User", [][2]string{basic("bob@example.com", "bob-pw"), {"X-Remote-User", "alice@example.com"}}, 403},
		{"no credentials, own X-Remote-User", [][2]string{{"X-Remote-User", "alice@example.com"}}, 401},
		{"alice's name, wrong password", [][2]string{basic("alice@example.com", "guess")}, 401},
	} {
		target := fmt.Sprintf("/Microsoft-Server-ActiveSync?Cmd=Ping&DeviceId=GOODDEV01&DeviceType=iPhone&ItemId=ID%d", i)
		code, _ := rawRequest(t, proxy, target, tc.headers)
		if code != tc.want || exchange.sawMark(fmt.Sprintf("ItemId=ID%d", i)) != (tc.want == 200) {
			t.Errorf("%s: %d, reached Exchange %v; want %d", tc.name, code, exchange.sawMark(fmt.Sprintf("ItemId=ID%d", i)), tc.want)
		}
	}
}

// TestGateDownDeniesThroughRealProxies: with nothing answering at the
// gate's address every proxy template refuses the request (fail closed)
// instead of passing it to Exchange.
func TestGateDownDeniesThroughRealProxies(t *testing.T) {
	exchange := newBackend(t)
	for _, kind := range gateProxies {
		t.Run(kind, func(t *testing.T) {
			nobody := "127.0.0.1:" + freePort(t) // nothing listens here
			proxy := strings.TrimPrefix(startProxy(t, kind, nobody, exchange.srv.URL), "http://")
			mark := "DOWN" + kind
			code, _ := rawRequest(t, proxy, "/Microsoft-Server-ActiveSync?Cmd=Ping&DeviceId=GOODDEV01&DeviceType=iPhone&ItemId="+mark,
				[][2]string{basicAuth("alice@example.com"), {"MS-ASProtocolVersion", "16.1"}})
			if code < 400 || exchange.sawMark(mark) {
				t.Errorf("gate down: %d, reached Exchange %v; want refused", code, exchange.sawMark(mark))
			}
		})
	}
}

// TestGateKeepsExchangeAliveWithoutConnectionAuth: docs/gate/nginx.conf and
// the Caddyfile keep their connections to Exchange alive and share them
// between clients, so they must refuse the schemes that authenticate a
// connection rather than a request (NTLM, Negotiate): one client's NTLM
// handshake would otherwise leave a pooled connection on which another
// client's request without credentials is served as the first user.
// (HAProxy marks such a connection private itself.)
func TestGateKeepsExchangeAliveWithoutConnectionAuth(t *testing.T) {
	for _, kind := range []string{"nginx", "caddy"} {
		t.Run(kind, func(t *testing.T) { keepsExchangeAliveWithoutConnectionAuth(t, kind) })
	}
}

func keepsExchangeAliveWithoutConnectionAuth(t *testing.T, kind string) {
	w, _, token := newGateWorldFor(t, gateProxyName[kind], gateHostileConfig)
	if st, body := w.call(t, "PUT", "/api/v1/gate/devices/GOODDEV01", token, map[string]string{"user": "alice@example.com", "state": "compliant"}); st != 200 {
		t.Fatalf("PUT device = %d %v", st, body)
	}
	exchange := newBackend(t)
	proxy := strings.TrimPrefix(startProxy(t, kind, strings.TrimPrefix(w.main.URL(), "http://"), exchange.srv.URL), "http://")
	std := [][2]string{basicAuth("alice@example.com"), {"User-Agent", "Apple-iPhone/1"}, {"MS-ASProtocolVersion", "16.1"}}
	// Five clients, one after the other, each on its own connection to the
	// proxy: Exchange sees them all on one kept-alive connection.
	conns := map[string]bool{}
	for i := range 5 {
		uri := fmt.Sprintf("/Microsoft-Server-ActiveSync?Cmd=Ping&DeviceId=GOODDEV01&DeviceType=iPhone&ItemId=KA%d", i)
		if code, body := rawRequest(t, proxy, uri, std); code != 200 {
			t.Fatalf("request %d: %d %q", i, code, body)
		}
		exchange.mu.Lock()
		conns[exchange.peers[uri]] = true
		exchange.mu.Unlock()
	}
	if len(conns) != 1 {
		t.Errorf("five requests reached Exchange on %d connections %v, want one kept-alive connection", len(conns), conns)
	}
	ntlmNegotiate := "TlRMTVNTUAABAAAAB4IIogAAAAAAAAAAAAAAAAAAAAAGAbEdAAAADw=="
	for i, auth := range []string{"NTLM " + ntlmNegotiate, "ntlm " + ntlmNegotiate, "Negotiate " + ntlmNegotiate, "NEGOTIATE YIIGhgYGKwYBBQUCoIIGejCCBnag", "NTLM",
		"NTLM\t" + ntlmNegotiate, "Negotiate\t" + ntlmNegotiate} { // a tab is whitespace to IIS too
		mark := fmt.Sprintf("CONNAUTH%d", i)
		uri := "/Microsoft-Server-ActiveSync?Cmd=Ping&DeviceId=GOODDEV01&DeviceType=iPhone&ItemId=" + mark
		code, body := rawRequest(t, proxy, uri, [][2]string{{"Authorization", auth}, {"User-Agent", "Apple-iPhone/1"}, {"MS-ASProtocolVersion", "16.1"}})
		if code != 403 || exchange.sawMark(mark) {
			t.Errorf("Authorization %.12q…: %d %q, reached Exchange %v; want 403", auth, code, body, exchange.sawMark(mark))
		}
	}
}
