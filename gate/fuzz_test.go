package gate

import (
	"encoding/base64"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/mailpush/mailpush"
	"github.com/mailpush/mailpush/clocktest"
)

func FuzzParseQuery(f *testing.F) {
	f.Add("Cmd=Sync&User=alice&DeviceId=ApplF2LL&DeviceType=iPhone")
	f.Add(encodeQuery(141, 0, []byte{1, 2, 3, 4}, []byte{1, 2, 3, 4}, "WP8", map[byte]string{userTag: "bob"}))
	f.Add(encodeQuery(160, 18, []byte("x"), nil, "", nil))
	f.Add("jAAJBAp2MTQwRGV2aWNlAApTbWFydFBob25l")
	f.Add("DeviceId=%00")
	f.Add("==")
	f.Fuzz(func(t *testing.T, raw string) {
		q, err := ParseQuery(raw)
		if err != nil {
			if mailpush.ErrorCode(err) != mailpush.EInvalid {
				t.Fatalf("error code %q, want invalid_request", mailpush.ErrorCode(err))
			}
			return
		}
		if q.DeviceID == "" || q.DeviceID != mailpush.NormalizeDeviceID(q.DeviceID) || len(q.DeviceID) > mailpush.MaxDeviceIDLen {
			t.Fatalf("accepted DeviceId %q", q.DeviceID)
		}
		if !printable(q.User) || !printable(q.DeviceType) || (q.Cmd != "" && CanonicalCommand(q.Cmd) != q.Cmd) {
			t.Fatalf("accepted %+v", q)
		}
	})
}

// FuzzForwardAuth drives the whole decision path with arbitrary headers
// under a policy that allows every well-formed request (allButBlocked, no
// registry entry): whatever the input, a request is allowed only if its URI
// is a well-formed ActiveSync query, and nothing panics.
func FuzzForwardAuth(f *testing.F) {
	f.Add("/Microsoft-Server-ActiveSync?Cmd=Sync&DeviceId=abc&DeviceType=iPhone", "Apple-iPhone", "192.0.2.1", "Basic YWxpY2U6cHc=")
	f.Add("/Microsoft-Server-ActiveSync?"+encodeQuery(141, 0, []byte{9, 9}, nil, "WP", nil), "", "", "")
	f.Add("/Microsoft-Server-ActiveSync?jAAJ", "x", "not-ip", "Basic !!")
	f.Add("", "", "", "")
	f.Add("/Microsoft-Server-ActiveSync?DeviceId=blocked", "", "", "")
	st := newMemStore()
	st.devices["t1/BLOCKED"] = mailpush.GateDevice{TenantID: "t1", DeviceID: "BLOCKED", State: mailpush.DeviceBlocked}
	g, err := New(Config{Proxy: "nginx", Mode: ModeAllButBlocked, CacheSize: 64}, Deps{Store: st, Hasher: hasher{}, TenantID: "t1", Logger: discardLogger(), Clock: clocktest.New(time.Time{})})
	if err != nil {
		f.Fatal(err)
	}
	mux := http.NewServeMux()
	g.Routes(mux)
	f.Fuzz(func(t *testing.T, uri, ua, xff, auth string) {
		req := httptest.NewRequest("GET", "/gate/auth", nil)
		req.RemoteAddr = "127.0.0.1:4000"
		for k, v := range map[string]string{"X-Original-URI": uri, "User-Agent": ua, "X-Forwarded-For": xff, "Authorization": auth} {
			if v != "" {
				req.Header[k] = []string{v}
			}
		}
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, req)
		if rec.Code != 200 {
			if rec.Code != 403 || rec.Header().Get("X-Mailpush-Decision") != "deny" || rec.Header().Get("X-Mailpush-Reason") == "" {
				t.Fatalf("status %d, headers %v", rec.Code, rec.Header())
			}
			return
		}
		// Allowed: it must have been well-formed and not the blocked device.
		path, raw, _ := strings.Cut(uri, "?")
		q, err := ParseQuery(raw)
		if err != nil || !strings.EqualFold(strings.TrimSuffix(path, "/"), "/Microsoft-Server-ActiveSync") || q.DeviceID == "BLOCKED" {
			t.Fatalf("allowed a request that is malformed or blocked: uri %q (%v)", uri, err)
		}
		if !printable(ua) || len(ua) > MaxUserAgentLen {
			t.Fatalf("allowed a bad User-Agent %q", ua)
		}
		if _, err := BasicUser(auth); err != nil {
			t.Fatalf("allowed a bad Authorization %q", auth)
		}
	})
}

// FuzzDecide checks the policy alone: malformed input is never allowed, nor
// is a blocked or wiped device, whatever the rules say.
func FuzzDecide(f *testing.F) {
	f.Add("dev", "iPhone", "Sync", "ua", true, uint8(0))
	f.Add("", "", "", "", false, uint8(2))
	p, err := Compile(Config{Mode: ModeAllButBlocked, DefaultAction: "allow", FailMode: "open",
		Rules: []Rule{{Name: "all iphones", Action: "allow", DeviceTypes: []string{"iPhone"}}, {Name: "ua", Action: "allow", UserAgent: "."}}}, hasher{}, "t1")
	if err != nil {
		f.Fatal(err)
	}
	states := []mailpush.DeviceState{mailpush.DeviceCompliant, mailpush.DeviceNonCompliant, mailpush.DeviceBlocked, mailpush.DeviceWiped, mailpush.DeviceUnknown}
	f.Fuzz(func(t *testing.T, dev, dtype, cmd, ua string, malformed bool, state uint8) {
		in := Input{Query: Query{DeviceID: dev, DeviceType: dtype, Cmd: cmd}, UserAgent: ua}
		if malformed {
			in.Malformed = invalid("bad")
		}
		s := states[int(state)%len(states)]
		in.Device = &mailpush.GateDevice{DeviceID: dev, State: s}
		d := p.Decide(in)
		if d.Allow && (malformed || dev == "" || s.Shut()) {
			t.Fatalf("allowed %+v (state %s)", in, s)
		}
		if d.Reason == "" {
			t.Fatal("a decision without a reason")
		}
	})
}

// FuzzAuthorizationUser feeds arbitrary Authorization headers (Basic, NTLM
// messages, Bearer tokens) to the user reader: it never panics, errors are
// invalid_request, and a user it returns is canonicalised or refused.
func FuzzAuthorizationUser(f *testing.F) {
	f.Add("Basic YWxpY2U6cHc=")
	f.Add(ntlmAuthenticate("CORP", "alice", true))
	f.Add(ntlmAuthenticate("CORP", "bob", false))
	f.Add("NTLM TlRMTVNTUAABAAAAB4IIog==")
	f.Add(jwt(`{"upn":"alice@example.com"}`))
	f.Add("Negotiate YIIBAgM=")
	f.Add("Bearer")
	id, _ := CompileIdentity(IdentityConfig{Domains: map[string]string{"CORP": "example.com"}})
	f.Fuzz(func(t *testing.T, auth string) {
		c, err := authorizationUser(auth)
		if err != nil {
			if mailpush.ErrorCode(err) != mailpush.EInvalid {
				t.Fatalf("error code %q", mailpush.ErrorCode(err))
			}
			return
		}
		if c.user != "" && c.challenge {
			t.Fatalf("a challenge with a user: %+v", c)
		}
		u, err := id.Canonical(c.user)
		if err == nil && u != asciiLower(u) {
			t.Fatalf("canonical %q has capitals", u)
		}
	})
}

// FuzzAuthorize drives the NetScaler callout with arbitrary queries under a
// policy that allows every well-formed request of alice's: nothing panics,
// the answer is Allow or Deny, and a query that repeats a parameter is never
// allowed (the blocked device is denied by the policy, which FuzzDecide
// covers).
func FuzzAuthorize(f *testing.F) {
	f.Add("user=alice&DeviceId=dev1&ip=192.0.2.1")
	f.Add("user=alice&DeviceId=dev1&DeviceId=blocked")
	f.Add("user=alice&url=" + base64.StdEncoding.EncodeToString([]byte("https://h/Microsoft-Server-ActiveSync?DeviceId=blocked")))
	f.Add("user=alice&ip=1.2.3.4&ip=5.6.7.8&DeviceId=x")
	st := newMemStore()
	st.devices["t1/BLOCKED"] = mailpush.GateDevice{TenantID: "t1", DeviceID: "BLOCKED", State: mailpush.DeviceBlocked}
	g, err := New(Config{Proxy: "netscaler", Mode: ModeAllButBlocked, CacheSize: 64}, Deps{Store: st, Hasher: hasher{}, TenantID: "t1", Logger: discardLogger(), Clock: clocktest.New(time.Time{})})
	if err != nil {
		f.Fatal(err)
	}
	mux := http.NewServeMux()
	g.Routes(mux)
	f.Fuzz(func(t *testing.T, query string) {
		req := httptest.NewRequest("GET", "/services/ActiveSync/Authorize", nil)
		req.URL.RawQuery = query
		req.RemoteAddr = "127.0.0.1:4000"
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, req)
		body := rec.Body.String()
		if rec.Code != 200 || (body != "Allow" && body != "Deny" && !strings.HasPrefix(body, "{")) {
			t.Fatalf("answer %d %q", rec.Code, body)
		}
		if body != "Allow" {
			return
		}
		q, _ := url.ParseQuery(query)
		seen := map[string]bool{}
		for k, vs := range q {
			if len(vs) > 1 || seen[strings.ToLower(k)] {
				t.Fatalf("allowed a repeated %s: %q", k, query)
			}
			seen[strings.ToLower(k)] = true
		}
	})
}
