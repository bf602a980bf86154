package gate

import (
	"encoding/base64"
	"encoding/binary"
	"net/http"
	"strings"
	"testing"
	"time"
	"unicode/utf16"

	"github.com/mailpush/mailpush"
	"github.com/mailpush/mailpush/clocktest"
)

func TestIdentityCanonical(t *testing.T) {
	id, errs := CompileIdentity(IdentityConfig{Domains: map[string]string{"corp": "Example.COM"}, DefaultDomain: "example.com"})
	if len(errs) != 0 {
		t.Fatal(errs)
	}
	for _, tc := range []struct{ in, want, err string }{
		{"alice@example.com", "alice@example.com", ""},
		{" Alice@EXAMPLE.com ", "alice@example.com", ""},
		{`CORP\alice`, "alice@example.com", ""},
		{`corp\ALICE`, "alice@example.com", ""},
		{`OTHER\alice`, `other\alice`, ""},
		{"alice", "alice@example.com", ""},
		{"", "", ""},
		{"\u212Aen@example.com", "", "non-ASCII capital"}, // Kelvin sign: folds to k elsewhere
		{"\u0130lker@example.com", "", "non-ASCII capital"},
		{"jos\u00e9@example.com", "jos\u00e9@example.com", ""},
		{`CORP\`, "", `DOMAIN\user`},
		{`CORP\a\b`, "", `DOMAIN\user`},
		{"a@b@c", "", "user@domain"},
		{"@example.com", "", "user@domain"},
		{"a\x00b", "", "printable"},
	} {
		got, err := id.Canonical(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(mailpush.ErrorMessage(err), tc.err) {
				t.Errorf("Canonical(%q) = %q, %v; want error %q", tc.in, got, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("Canonical(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
	for _, bad := range []IdentityConfig{{Header: "X Bad"}, {Domains: map[string]string{"CORP": "a@b"}}, {Domains: map[string]string{`C\D`: "x"}}, {DefaultDomain: "a b"}} {
		if _, errs := CompileIdentity(bad); len(errs) == 0 {
			t.Errorf("CompileIdentity(%+v) accepted", bad)
		}
	}
}

// ntlmAuthenticate builds an NTLM AUTHENTICATE message (MS-NLMP 2.2.1.3)
// with the given domain and user, in UTF-16 or OEM.
func ntlmAuthenticate(domain, user string, unicode bool) string {
	enc := func(s string) []byte {
		if !unicode {
			return []byte(s)
		}
		var b []byte
		for _, u := range utf16.Encode([]rune(s)) {
			b = binary.LittleEndian.AppendUint16(b, u)
		}
		return b
	}
	d, u := enc(domain), enc(user)
	b := make([]byte, 64)
	copy(b, "NTLMSSP\x00")
	binary.LittleEndian.PutUint32(b[8:], 3)
	put := func(at int, v []byte) {
		binary.LittleEndian.PutUint16(b[at:], uint16(len(v)))
		binary.LittleEndian.PutUint16(b[at+2:], uint16(len(v)))
		binary.LittleEndian.PutUint32(b[at+4:], uint32(len(b)))
		b = append(b, v...)
	}
	put(28, d)
	put(36, u)
	if unicode {
		binary.LittleEndian.PutUint32(b[60:], 0x00000001|0x00080000)
	}
	return "NTLM " + base64.StdEncoding.EncodeToString(b)
}

func jwt(claims string) string {
	e := base64.RawURLEncoding.EncodeToString
	return "Bearer " + e([]byte(`{"alg":"RS256"}`)) + "." + e([]byte(claims)) + ".c2lnbmF0dXJl"
}

func TestAuthorizationUser(t *testing.T) {
	ntlmNegotiate := "NTLM " + base64.StdEncoding.EncodeToString(append([]byte("NTLMSSP\x00"), 1, 0, 0, 0, 7, 0x82, 8, 0xa2))
	for _, tc := range []struct {
		name, auth string
		want       credential
		err        string
	}{
		{"none", "", credential{}, ""},
		{"Basic", "Basic " + base64.StdEncoding.EncodeToString([]byte(`CORP\bob:pw`)), credential{user: `CORP\bob`}, ""},
		{"NTLM NEGOTIATE", ntlmNegotiate, credential{challenge: true}, ""},
		{"NTLM AUTHENTICATE, UTF-16", ntlmAuthenticate("CORP", "alice", true), credential{user: `CORP\alice`}, ""},
		{"NTLM AUTHENTICATE, OEM", ntlmAuthenticate("CORP", "bob", false), credential{user: `CORP\bob`}, ""},
		{"NTLM AUTHENTICATE, no domain", ntlmAuthenticate("", "bob@example.com", true), credential{user: "bob@example.com"}, ""},
		{"NTLM in Negotiate", strings.Replace(ntlmAuthenticate("CORP", "alice", true), "NTLM", "Negotiate", 1), credential{user: `CORP\alice`}, ""},
		{"Kerberos", "Negotiate " + base64.StdEncoding.EncodeToString([]byte{0x60, 0x82, 1, 2, 3}), credential{}, ""},
		{"NTLM bad base64", "NTLM %%%", credential{}, "base64"},
		{"NTLM field outside", "NTLM " + base64.StdEncoding.EncodeToString(append(append([]byte("NTLMSSP\x00"), 3, 0, 0, 0), make([]byte, 24)...)[:12]), credential{}, "truncated"},
		{"Bearer upn", jwt(`{"upn":"bob@example.com","unique_name":"x"}`), credential{user: "bob@example.com"}, ""},
		{"Bearer unique_name", jwt(`{"unique_name":"alice@example.com"}`), credential{user: "alice@example.com"}, ""},
		{"Bearer without a user", jwt(`{"sub":"123"}`), credential{}, ""},
		{"Bearer opaque", "Bearer abc", credential{}, ""},
		{"empty Bearer", "Bearer", credential{challenge: true}, ""},
	} {
		got, err := authorizationUser(tc.auth)
		if tc.err != "" {
			if err == nil || !strings.Contains(mailpush.ErrorMessage(err), tc.err) {
				t.Errorf("%s: %+v, %v; want error %q", tc.name, got, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%s: %+v, %v; want %+v", tc.name, got, err, tc.want)
		}
	}
	// A field pointing outside the message.
	bad := []byte(strings.TrimPrefix(ntlmAuthenticate("CORP", "alice", true), "NTLM "))
	raw, _ := base64.StdEncoding.DecodeString(string(bad))
	binary.LittleEndian.PutUint32(raw[40:], 5000)
	if _, err := authorizationUser("NTLM " + base64.StdEncoding.EncodeToString(raw)); err == nil {
		t.Error("an NTLM field outside the message was accepted")
	}
}

// TestTheUserIsTheAuthenticatedOne plays bob with alice's compliant device.
func TestTheUserIsTheAuthenticatedOne(t *testing.T) {
	f := newFixture(t, Config{Identity: IdentityConfig{Domains: map[string]string{"CORP": "example.com"}}})
	f.set(t, "dev1", `CORP\Alice`, mailpush.DeviceCompliant) // the MDM's form; stored as alice@example.com
	basic := func(u string) string { return "Basic " + base64.StdEncoding.EncodeToString([]byte(u+":pw")) }
	req := func(query, auth string) map[string]string {
		h := map[string]string{"X-Original-URI": "/Microsoft-Server-ActiveSync?Cmd=Ping&DeviceId=dev1&DeviceType=iPhone" + query}
		if auth != "" {
			h["Authorization"] = auth
		}
		return h
	}
	for _, tc := range []struct {
		name    string
		headers map[string]string
		code    int
		reason  string
	}{
		{"alice, UPN", req("&User=alice%40example.com", basic("alice@example.com")), 200, "compliant"},
		{"alice, DOMAIN\\user", req("&User=alice", basic(`corp\alice`)), 200, "compliant"},
		{"alice, NTLM", req("", ntlmAuthenticate("CORP", "alice", true)), 200, "compliant"},
		{"alice, Bearer", req("", jwt(`{"upn":"Alice@Example.com"}`)), 200, "compliant"},
		{"NTLM NEGOTIATE (Exchange challenges)", req("", "NTLM "+base64.StdEncoding.EncodeToString(append([]byte("NTLMSSP\x00"), 1, 0, 0, 0))), 200, "compliant"},
		{"bob, query User alice", req("&User=alice%40example.com", basic("bob@example.com")), 403, "query's User is not the authenticated user"},
		{"bob, query User CORP\\alice", req("&User=CORP%5Calice", basic("bob@example.com")), 403, "query's User"},
		{"bob, no query User", req("", basic("bob@example.com")), 403, "registered to another user"},
		{"bob, DOMAIN\\user", req("", basic(`CORP\bob`)), 403, "registered to another user"},
		{"bob, NTLM", req("", ntlmAuthenticate("CORP", "bob", true)), 403, "registered to another user"},
		{"bob, Bearer", req("&User=alice", jwt(`{"upn":"bob@example.com"}`)), 403, "query's User"},
		{"alice in an unmapped domain", req("", basic(`OTHER\alice`)), 403, "registered to another user"},
		{"no credentials", req("&User=alice%40example.com", ""), 403, "no credentials"},
		{"Kerberos", req("", "Negotiate YIIBAgM="), 403, "no user the gate can read"},
		{"Kelvin sign", req("", basic("\u212Alice@example.com")), 403, "non-ASCII capital"},
		{"base64 query User alice, Basic bob", map[string]string{"X-Original-URI": "/Microsoft-Server-ActiveSync?" + encodeQuery(141, 18, []byte{0xde, 0x01}, nil, "WP8", map[byte]string{userTag: "alice@example.com"}), "Authorization": basic("bob@example.com")}, 403, "query's User"},
	} {
		code, reason := f.auth(t, tc.headers)
		if code != tc.code || !strings.Contains(reason, tc.reason) {
			t.Errorf("%s: %d %q, want %d %q", tc.name, code, reason, tc.code, tc.reason)
		}
	}

	// With gate.identity.header the proxy's header is the user, and the
	// Authorization header may not name another.
	g := newFixture(t, Config{Identity: IdentityConfig{Header: "X-Remote-User", DefaultDomain: "example.com"}})
	g.set(t, "dev1", "alice@example.com", mailpush.DeviceCompliant)
	for _, tc := range []struct {
		name    string
		headers map[string]string
		code    int
		reason  string
	}{
		{"header alice", map[string]string{"X-Original-URI": "/Microsoft-Server-ActiveSync?DeviceId=dev1", "X-Remote-User": "alice"}, 200, "compliant"},
		{"header alice, Basic alice", map[string]string{"X-Original-URI": "/Microsoft-Server-ActiveSync?DeviceId=dev1", "X-Remote-User": "alice", "Authorization": basic("alice@example.com")}, 200, "compliant"},
		{"header alice, Basic bob", map[string]string{"X-Original-URI": "/Microsoft-Server-ActiveSync?DeviceId=dev1", "X-Remote-User": "alice", "Authorization": basic("bob")}, 403, "another user than the proxy authenticated"},
		{"no header", map[string]string{"X-Original-URI": "/Microsoft-Server-ActiveSync?DeviceId=dev1", "Authorization": basic("alice")}, 403, "no X-Remote-User header"},
		{"header bob", map[string]string{"X-Original-URI": "/Microsoft-Server-ActiveSync?DeviceId=dev1", "X-Remote-User": "bob"}, 403, "registered to another user"},
	} {
		code, reason := g.auth(t, tc.headers)
		if code != tc.code || !strings.Contains(reason, tc.reason) {
			t.Errorf("%s: %d %q, want %d %q", tc.name, code, reason, tc.code, tc.reason)
		}
	}
	// The header repeated: the proxy appended instead of overwriting.
	r, _ := http.NewRequest("GET", g.srv.URL+"/gate/auth", nil)
	r.Header.Set("X-Original-URI", "/Microsoft-Server-ActiveSync?DeviceId=dev1")
	r.Header.Add("X-Remote-User", "bob")
	r.Header.Add("X-Remote-User", "alice")
	res, err := http.DefaultClient.Do(r)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 403 || !strings.Contains(res.Header.Get("X-Mailpush-Reason"), "repeated") {
		t.Errorf("repeated X-Remote-User: %d %q", res.StatusCode, res.Header.Get("X-Mailpush-Reason"))
	}
}

func TestProtocolFloor(t *testing.T) {
	f := newFixture(t, Config{Mode: ModeAllButBlocked, MinProtocolVersion: "16.1"})
	h := func(kv ...string) map[string]string {
		m := map[string]string{"X-Original-URI": "/Microsoft-Server-ActiveSync?Cmd=Ping&DeviceId=dev1"}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	enc := func(ver byte) string {
		return "/Microsoft-Server-ActiveSync?" + encodeQuery(ver, 18, []byte{1, 2}, nil, "WP8", nil)
	}
	for _, tc := range []struct {
		name    string
		headers map[string]string
		code    int
		reason  string
	}{
		{"16.1", h("MS-ASProtocolVersion", "16.1"), 200, ""},
		{"16.10 is not 16.1", h("MS-ASProtocolVersion", "16.10"), 403, "not a protocol version"},
		{"14.1", h("MS-ASProtocolVersion", "14.1"), 403, "protocol version 14.1 is below the gate's minimum 16.1"},
		{"2.5", h("MS-ASProtocolVersion", "2.5"), 403, "below"},
		{"none", h(), 403, "no MS-ASProtocolVersion"},
		{"OPTIONS asks for the versions", h("X-Original-Method", "OPTIONS"), 200, ""},
		{"base64 16.1", map[string]string{"X-Original-URI": enc(161)}, 200, ""},
		{"base64 14.1", map[string]string{"X-Original-URI": enc(141)}, 403, "14.1 is below"},
		{"base64 14.1, header 16.1", map[string]string{"X-Original-URI": enc(141), "MS-ASProtocolVersion": "16.1"}, 403, "contradicts"},
		{"garbage", h("MS-ASProtocolVersion", "sixteen"), 403, "not a protocol version"},
	} {
		code, reason := f.auth(t, tc.headers)
		if code != tc.code || !strings.Contains(reason, tc.reason) {
			t.Errorf("%s: %d %q, want %d %q", tc.name, code, reason, tc.code, tc.reason)
		}
	}
	for _, bad := range []string{"16", "x.y", "16.1.1", "0.0"} {
		if _, err := New(Config{Proxy: "nginx", MinProtocolVersion: bad}, Deps{Store: newMemStore(), Hasher: hasher{}, TenantID: "t1", Logger: discardLogger(), Clock: clocktest.New(time.Time{})}); err == nil || !strings.Contains(err.Error(), "gate.minProtocolVersion") {
			t.Errorf("minProtocolVersion %q: %v", bad, err)
		}
	}
}

func TestConfigNamesTheProxy(t *testing.T) {
	deps := Deps{Store: newMemStore(), Hasher: hasher{}, TenantID: "t1", Logger: discardLogger(), Clock: clocktest.New(time.Time{})}
	for _, p := range []string{"", "apache", "NGINX"} {
		if _, err := New(Config{Proxy: p}, deps); err == nil || !strings.Contains(err.Error(), "gate.proxy") {
			t.Errorf("proxy %q: %v", p, err)
		}
	}
	for name := range Proxies {
		if _, err := New(Config{Proxy: name}, deps); err != nil {
			t.Errorf("proxy %q: %v", name, err)
		}
	}
	if _, err := New(Config{Proxy: "nginx", AuditIdentifiers: "plain"}, deps); err == nil || !strings.Contains(err.Error(), "gate.auditIdentifiers") {
		t.Errorf("auditIdentifiers plain: %v", err)
	}
	// Caddy's and Traefik's headers.
	f := newFixture(t, Config{Proxy: "caddy", Mode: ModeAllButBlocked})
	if code, reason := f.auth(t, map[string]string{"X-Forwarded-Uri": "/Microsoft-Server-ActiveSync?DeviceId=a", "X-Forwarded-Method": "POST"}); code != 200 {
		t.Errorf("caddy: %d %q", code, reason)
	}
	if code, reason := f.auth(t, map[string]string{"X-Original-URI": "/Microsoft-Server-ActiveSync?DeviceId=a"}); code != 403 || !strings.Contains(reason, "disagree") {
		t.Errorf("caddy, only X-Original-URI: %d %q", code, reason)
	}
	if code, reason := f.auth(t, map[string]string{"X-Forwarded-Uri": "/Microsoft-Server-ActiveSync?DeviceId=a", "X-Original-URI": "/Microsoft-Server-ActiveSync?DeviceId=a"}); code != 200 {
		t.Errorf("caddy, both URI headers alike: %d %q", code, reason)
	}
}

func TestAuditIdentifiers(t *testing.T) {
	h := map[string]string{"X-Original-URI": "/Microsoft-Server-ActiveSync?Cmd=Ping&DeviceId=SECRETDEV42", "X-Forwarded-For": "198.51.100.77"}
	f := newFixture(t, Config{})
	f.auth(t, h)
	f.store.fail = mailpush.Errorf(mailpush.EUnavailable, "down")
	f.auth(t, map[string]string{"X-Original-URI": "/Microsoft-Server-ActiveSync?Cmd=Ping&DeviceId=SECRETDEV43", "X-Forwarded-For": "198.51.100.77"})
	f.store.fail = nil
	f.set(t, "SECRETDEV44", "", mailpush.DeviceBlocked)
	log := f.log.String()
	for _, s := range []string{"SECRETDEV4", "secretdev4", "198.51.100.77"} {
		if strings.Contains(log, s) {
			t.Errorf("with hashed identifiers the log holds %q:\n%s", s, log)
		}
	}
	if !strings.Contains(log, "identifiers=hashed") || !strings.Contains(log, "deviceId="+userID(mailpush.ActiveSyncDeviceHash(hasher{}, "t1", "SECRETDEV42"))) {
		t.Errorf("the log does not carry the hashed DeviceId:\n%s", log)
	}
	c := newFixture(t, Config{AuditIdentifiers: "clear"})
	c.auth(t, h)
	log = c.log.String()
	for _, s := range []string{"deviceId=SECRETDEV42", "ip=198.51.100.77", "identifiers=clear", "holds ActiveSync DeviceIds and client IP addresses in clear"} {
		if !strings.Contains(log, s) {
			t.Errorf("with clear identifiers the log lacks %q:\n%s", s, log)
		}
	}
}
