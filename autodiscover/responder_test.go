package autodiscover_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"encoding/xml"
	"io"
	"log/slog"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"howett.net/plist"

	"github.com/mailpush/mailpush"
	"github.com/mailpush/mailpush/autodiscover"
)

const (
	outlookReqNS  = "http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006"
	outlookRespNS = "http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a"
	mobileReqNS   = "http://schemas.microsoft.com/exchange/autodiscover/mobilesync/requestschema/2006"
	mobileRespNS  = "http://schemas.microsoft.com/exchange/autodiscover/mobilesync/responseschema/2006"
)

func exchangeSite() autodiscover.Site {
	return autodiscover.Site{
		Tenant: "acme", Domains: []string{"example.com", "Example.ORG."}, DisplayName: "Acme Mail",
		EWSURL:        "https://mail.example.com/EWS/Exchange.asmx",
		ActiveSyncURL: "https://gate.example.com/Microsoft-Server-ActiveSync",
		PushURL:       "https://push.example.com/api/v1",
	}
}

func imapSite() autodiscover.Site {
	return autodiscover.Site{
		Tenant: "dove", Domains: []string{"dove.example"}, DisplayName: "Dove",
		IMAP: &autodiscover.MailServer{Host: "imap.dove.example", Port: 993, Security: "SSL"},
		SMTP: &autodiscover.MailServer{Host: "smtp.dove.example", Port: 587, Security: "STARTTLS"},
	}
}

// responderServer serves the responder over loopback.
func responderServer(t *testing.T, sites ...autodiscover.Site) *httptest.Server {
	t.Helper()
	r, err := autodiscover.NewResponder(sites, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	r.Routes(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

func poxRequest(reqNS, respNS, address string) string {
	return `<?xml version="1.0" encoding="utf-8"?><Autodiscover xmlns="` + reqNS + `"><Request><EMailAddress>` + address +
		`</EMailAddress><AcceptableResponseSchema>` + respNS + `</AcceptableResponseSchema></Request></Autodiscover>`
}

func post(t *testing.T, srv *httptest.Server, path, contentType, body string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, srv.URL+path, strings.NewReader(body))
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func get(t *testing.T, srv *httptest.Server, host, path string) (int, http.Header, []byte) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, srv.URL+path, nil)
	if host != "" {
		req.Host = host
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, b
}

// outlookAnswer is the outlook response as a client reads it.
type outlookAnswer struct {
	Response struct {
		XMLName xml.Name
		User    struct {
			Address string `xml:"AutoDiscoverSMTPAddress"`
		} `xml:"User"`
		Error struct {
			Code      int    `xml:"ErrorCode"`
			Message   string `xml:"Message"`
			DebugData string `xml:"DebugData"`
		} `xml:"Error"`
		Account struct {
			Action    string `xml:"Action"`
			Protocols []struct {
				Type, Server, EwsUrl, ASUrl, SSL, Encryption, LoginName string
				Port                                                    int
			} `xml:"Protocol"`
		} `xml:"Account"`
	} `xml:"Response"`
}

func TestPOXOutlook(t *testing.T) {
	srv := responderServer(t, exchangeSite(), imapSite())
	st, body := post(t, srv, "/autodiscover/autodiscover.xml", "text/xml; charset=utf-8", poxRequest(outlookReqNS, outlookRespNS, "Alice@Example.ORG"))
	var a outlookAnswer
	if err := xml.Unmarshal([]byte(body), &a); st != 200 || err != nil {
		t.Fatalf("POX = %d %v\n%s", st, err, body)
	}
	if a.Response.XMLName.Space != outlookRespNS || a.Response.Account.Action != "settings" || a.Response.User.Address != "Alice@Example.ORG" {
		t.Errorf("answer = %+v", a.Response)
	}
	var types []string
	for _, p := range a.Response.Account.Protocols {
		types = append(types, p.Type)
		if p.EwsUrl != "https://mail.example.com/EWS/Exchange.asmx" || p.ASUrl != p.EwsUrl || p.Server != "mail.example.com" {
			t.Errorf("protocol %s = %+v", p.Type, p)
		}
	}
	if strings.Join(types, ",") != "EXCH,EXPR" {
		t.Errorf("protocols %v, want EXCH,EXPR", types)
	}

	// An IMAP tenant's answer carries IMAP and SMTP.
	st, body = post(t, srv, "/autodiscover/autodiscover.xml", "text/xml", poxRequest(outlookReqNS, outlookRespNS, "bob@dove.example"))
	a = outlookAnswer{}
	xml.Unmarshal([]byte(body), &a)
	got := map[string]string{}
	for _, p := range a.Response.Account.Protocols {
		got[p.Type] = p.Server + " " + p.Encryption + " " + p.LoginName
	}
	if st != 200 || got["IMAP"] != "imap.dove.example SSL bob@dove.example" || got["SMTP"] != "smtp.dove.example TLS bob@dove.example" {
		t.Errorf("IMAP tenant = %d %v\n%s", st, got, body)
	}
}

func TestPOXMobileSync(t *testing.T) {
	srv := responderServer(t, exchangeSite(), imapSite())
	var a struct {
		Response struct {
			XMLName xml.Name
			User    struct {
				EMailAddress string
			}
			Action struct {
				Settings struct {
					Server struct{ Type, Url, Name string }
				}
				Error struct {
					Status  int
					Message string
				}
			}
		}
	}
	// ActiveSync devices send the capitalized path.
	st, body := post(t, srv, "/Autodiscover/Autodiscover.xml", "text/xml", poxRequest(mobileReqNS, mobileRespNS, "alice@example.com"))
	if err := xml.Unmarshal([]byte(body), &a); st != 200 || err != nil {
		t.Fatalf("mobilesync = %d %v\n%s", st, err, body)
	}
	s := a.Response.Action.Settings.Server
	if a.Response.XMLName.Space != mobileRespNS || s.Type != "MobileSync" || s.Url != "https://gate.example.com/Microsoft-Server-ActiveSync" || a.Response.User.EMailAddress != "alice@example.com" {
		t.Errorf("mobilesync answer = %+v", a.Response)
	}
	// A tenant without ActiveSync, and an unknown domain: the not-found status.
	for _, addr := range []string{"bob@dove.example", "carol@elsewhere.example"} {
		a.Response.Action.Error.Status = 0
		st, body = post(t, srv, "/Autodiscover/Autodiscover.xml", "text/xml", poxRequest(mobileReqNS, mobileRespNS, addr))
		xml.Unmarshal([]byte(body), &a)
		if st != 200 || a.Response.Action.Error.Status != 1 || strings.Contains(body, "MobileSync") {
			t.Errorf("%s = %d\n%s", addr, st, body)
		}
	}
}

// TestNoUserEnumeration plays the attacker who probes addresses: the
// answers for a mailbox that exists and one that does not are the same
// bytes once the echoed address is replaced (the responder never asks a
// directory), for every protocol; an unknown domain gets one fixed answer.
func TestNoUserEnumeration(t *testing.T) {
	srv := responderServer(t, exchangeSite(), imapSite())
	probes := []struct {
		name string
		ask  func(addr string) (int, string)
	}{
		{"outlook", func(addr string) (int, string) {
			return post(t, srv, "/autodiscover/autodiscover.xml", "text/xml", poxRequest(outlookReqNS, outlookRespNS, addr))
		}},
		{"mobilesync", func(addr string) (int, string) {
			return post(t, srv, "/autodiscover/autodiscover.xml", "text/xml", poxRequest(mobileReqNS, mobileRespNS, addr))
		}},
		{"json", func(addr string) (int, string) {
			st, _, b := get(t, srv, "", "/autodiscover/autodiscover.json/v1.0/"+addr+"?Protocol=ActiveSync")
			return st, string(b)
		}},
		{"autoconfig", func(addr string) (int, string) {
			st, _, b := get(t, srv, "", "/mail/config-v1.1.xml?emailaddress="+addr)
			return st, string(b)
		}},
		{"mobileconfig", func(addr string) (int, string) {
			st, _, b := get(t, srv, "", "/autodiscover/mail.mobileconfig?emailaddress="+addr)
			// The profile's UUIDs derive from the address.
			return st, string(b)
		}},
	}
	for _, p := range probes {
		t.Run(p.name, func(t *testing.T) {
			for _, domain := range []string{"example.com", "dove.example", "unknown.example"} {
				st1, real := p.ask("alice@" + domain)       // "exists"
				st2, ghost := p.ask("zz9-nobody@" + domain) // does not
				real = strings.ReplaceAll(real, "alice@"+domain, "X")
				ghost = strings.ReplaceAll(ghost, "zz9-nobody@"+domain, "X")
				if p.name == "mobileconfig" {
					real, ghost = dropUUIDs(real), dropUUIDs(ghost)
				}
				if st1 != st2 || real != ghost {
					t.Errorf("%s: answers differ:\n%d %s\n%d %s", domain, st1, real, st2, ghost)
				}
			}
			// Unknown domains all get the same answer.
			st1, a := p.ask("x@unknown.example")
			st2, b := p.ask("x@other.invalid")
			a = strings.ReplaceAll(a, "unknown.example", "D")
			b = strings.ReplaceAll(b, "other.invalid", "D")
			if st1 != st2 || a != b {
				t.Errorf("unknown domains answered differently: %d %s / %d %s", st1, a, st2, b)
			}
		})
	}
}

func dropUUIDs(s string) string {
	var out []string
	for _, line := range strings.Split(s, "\n") {
		if strings.Count(line, "-") == 4 && strings.Contains(line, "<string>") {
			line = "<uuid>"
		}
		out = append(out, line)
	}
	return strings.Join(out, "\n")
}

func TestPOXBadInput(t *testing.T) {
	srv := responderServer(t, exchangeSite())
	billion := `<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;">]>` +
		`<Autodiscover xmlns="` + outlookReqNS + `"><Request><EMailAddress>&lol2;@example.com</EMailAddress><AcceptableResponseSchema>` + outlookRespNS + `</AcceptableResponseSchema></Request></Autodiscover>`
	xxe := `<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]>` +
		`<Autodiscover xmlns="` + outlookReqNS + `"><Request><EMailAddress>&x;</EMailAddress><AcceptableResponseSchema>` + outlookRespNS + `</AcceptableResponseSchema></Request></Autodiscover>`
	cases := []struct {
		name, contentType, body string
		status                  int
		code, say               string
	}{
		{"entity expansion", "text/xml", billion, 400, mailpush.EInvalid, "DOCTYPE"},
		{"external entity", "text/xml", xxe, 400, mailpush.EInvalid, "DOCTYPE"},
		{"oversized", "text/xml", poxRequest(outlookReqNS, outlookRespNS, strings.Repeat("a", 20<<10)+"@example.com"), 413, mailpush.ETooLarge, "exceeds"},
		{"not XML", "text/xml", "hello", 400, mailpush.EInvalid, "no Autodiscover element"},
		{"two roots", "text/xml", "<Autodiscover/><Autodiscover/>", 400, mailpush.EInvalid, "more than one root"},
		{"truncated", "text/xml", poxRequest(outlookReqNS, outlookRespNS, "a@example.com")[:120], 400, mailpush.EInvalid, "XML"},
		{"unknown request schema", "text/xml", poxRequest("urn:nope", outlookRespNS, "a@example.com"), 400, mailpush.EUnsupported, "urn:nope"},
		{"unknown response schema", "text/xml", poxRequest(outlookReqNS, "urn:other", "a@example.com"), 400, mailpush.EUnsupported, "urn:other"},
		{"mismatched schemas", "text/xml", poxRequest(outlookReqNS, mobileRespNS, "a@example.com"), 400, mailpush.EUnsupported, "does not belong"},
		{"no address", "text/xml", strings.Replace(poxRequest(outlookReqNS, outlookRespNS, ""), "<EMailAddress></EMailAddress>", "", 1), 400, mailpush.EInvalid, "EMailAddress"},
		{"not an address", "text/xml", poxRequest(outlookReqNS, outlookRespNS, "alice"), 400, mailpush.EInvalid, "not an e-mail address"},
		{"two addresses", "text/xml", strings.Replace(poxRequest(outlookReqNS, outlookRespNS, "a@example.com"), "<Request>", "<Request><EMailAddress>b@example.com</EMailAddress>", 1), 400, mailpush.EInvalid, "more than one"},
		{"JSON body", "application/json", "{}", 415, mailpush.EMediaType, "text/xml"},
		{"deep nesting", "text/xml", `<Autodiscover xmlns="` + outlookReqNS + `">` + strings.Repeat("<a>", 20) + strings.Repeat("</a>", 20) + `</Autodiscover>`, 400, mailpush.EInvalid, "deeper"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			st, body := post(t, srv, "/autodiscover/autodiscover.xml", tc.contentType, tc.body)
			var a outlookAnswer
			xml.Unmarshal([]byte(body), &a)
			if st != tc.status || a.Response.Error.Code != 600 || a.Response.Error.DebugData != tc.code || !strings.Contains(a.Response.Error.Message, tc.say) {
				t.Errorf("= %d %+v, want %d %s saying %q\n%s", st, a.Response.Error, tc.status, tc.code, tc.say, body)
			}
			if strings.Contains(body, "root:") || strings.Contains(body, "lollol") {
				t.Errorf("an entity was expanded: %s", body)
			}
		})
	}
}

func TestJSONv2(t *testing.T) {
	srv := responderServer(t, exchangeSite(), imapSite())
	cases := []struct {
		path   string
		status int
		want   string // Url, or ErrorCode
	}{
		{"alice@example.com?Protocol=EWS", 200, "https://mail.example.com/EWS/Exchange.asmx"},
		{"alice@example.com?Protocol=activesync", 200, "https://gate.example.com/Microsoft-Server-ActiveSync"},
		{"alice@example.com?Protocol=Mailpush", 200, "https://push.example.com/api/v1"},
		{"alice@example.com?Protocol=AutodiscoverV1", 200, "https://autodiscover.example.com/autodiscover/autodiscover.xml"},
		{"bob@dove.example?Protocol=EWS", 404, mailpush.ENotFound},
		{"bob@nowhere.example?Protocol=EWS", 404, mailpush.ENotFound},
		{"alice@example.com?Protocol=Smoke", 400, mailpush.EInvalid},
		{"alice@example.com", 400, mailpush.EInvalid},
		{"alice?Protocol=EWS", 400, mailpush.EInvalid},
		{strings.Repeat("a", 4000) + "@example.com?Protocol=EWS", 400, mailpush.EInvalid},
	}
	for _, tc := range cases {
		st, h, body := get(t, srv, "", "/autodiscover/autodiscover.json/v1.0/"+tc.path)
		var a struct{ Protocol, Url, ErrorCode, ErrorMessage string }
		json.Unmarshal(body, &a)
		got := a.Url
		if st != 200 {
			got = a.ErrorCode
			if a.ErrorMessage == "" {
				t.Errorf("%s: no ErrorMessage", tc.path)
			}
		}
		if st != tc.status || got != tc.want || !strings.HasPrefix(h.Get("Content-Type"), "application/json") {
			t.Errorf("%.60s = %d %s, want %d %s", tc.path, st, body, tc.status, tc.want)
		}
	}
	// A Host header that is not the domain's is never echoed.
	_, _, body := get(t, srv, "evil.example", "/autodiscover/autodiscover.json/v1.0/alice@example.com?Protocol=AutodiscoverV1")
	if strings.Contains(string(body), "evil") {
		t.Errorf("the answer echoes a foreign Host: %s", body)
	}
}

func TestAutoconfig(t *testing.T) {
	srv := responderServer(t, exchangeSite(), imapSite())
	var c struct {
		Provider struct {
			ID       string `xml:"id,attr"`
			Domain   []string
			Incoming []struct {
				Type       string `xml:"type,attr"`
				Hostname   string `xml:"hostname"`
				Port       int    `xml:"port"`
				SocketType string `xml:"socketType"`
				Username   string `xml:"username"`
				EWSURL     string `xml:"ewsURL"`
			} `xml:"incomingServer"`
			Outgoing []struct {
				Type       string `xml:"type,attr"`
				Hostname   string `xml:"hostname"`
				Port       int    `xml:"port"`
				SocketType string `xml:"socketType"`
			} `xml:"outgoingServer"`
		} `xml:"emailProvider"`
	}
	for _, ask := range []struct{ host, path string }{
		{"autoconfig.dove.example", "/.well-known/autoconfig/mail/config-v1.1.xml"},
		{"dove.example:8443", "/.well-known/autoconfig/mail/config-v1.1.xml?emailaddress=bob@dove.example"},
		{"", "/mail/config-v1.1.xml?emailaddress=bob@dove.example"},
	} {
		st, _, body := get(t, srv, ask.host, ask.path)
		c.Provider.Incoming, c.Provider.Outgoing = nil, nil
		if err := xml.Unmarshal(body, &c); st != 200 || err != nil {
			t.Fatalf("%s %s = %d %v %s", ask.host, ask.path, st, err, body)
		}
		in, out := c.Provider.Incoming, c.Provider.Outgoing
		if c.Provider.ID != "dove.example" || len(in) != 1 || in[0].Type != "imap" || in[0].Hostname != "imap.dove.example" || in[0].Port != 993 ||
			in[0].SocketType != "SSL" || in[0].Username != "%EMAILADDRESS%" || len(out) != 1 || out[0].Port != 587 || out[0].SocketType != "STARTTLS" {
			t.Errorf("%s %s = %s", ask.host, ask.path, body)
		}
	}
	st, _, body := get(t, srv, "", "/mail/config-v1.1.xml?emailaddress=alice@example.com")
	if st != 200 || !strings.Contains(string(body), `<incomingServer type="exchange">`) || !strings.Contains(string(body), "<ewsURL>https://mail.example.com/EWS/Exchange.asmx</ewsURL>") {
		t.Errorf("exchange tenant = %d %s", st, body)
	}
	for _, ask := range []struct{ host, path string }{
		{"autoconfig.nowhere.example", "/.well-known/autoconfig/mail/config-v1.1.xml"},
		{"", "/mail/config-v1.1.xml?emailaddress=x@nowhere.example"},
	} {
		if st, _, body := get(t, srv, ask.host, ask.path); st != 404 || !strings.HasPrefix(string(body), mailpush.ENotFound) {
			t.Errorf("unknown domain = %d %s", st, body)
		}
	}
	if st, _, body := get(t, srv, "", "/mail/config-v1.1.xml?emailaddress=nobody"); st != 400 || !strings.HasPrefix(string(body), mailpush.EInvalid) {
		t.Errorf("bad address = %d %s", st, body)
	}
}

func TestResponderConfig(t *testing.T) {
	cases := []struct {
		name string
		edit func(s *autodiscover.Site)
		say  string
	}{
		{"no domains", func(s *autodiscover.Site) { s.Domains = nil }, "domains"},
		{"wildcard domain", func(s *autodiscover.Site) { s.Domains = []string{"*.example.com"} }, "not a mail domain"},
		{"http EWS", func(s *autodiscover.Site) { s.EWSURL = "http://mail.example.com/EWS/Exchange.asmx" }, "ewsUrl"},
		{"nothing to answer", func(s *autodiscover.Site) { s.EWSURL, s.ActiveSyncURL = "", "" }, "nothing to answer"},
		{"plain IMAP", func(s *autodiscover.Site) {
			s.IMAP = &autodiscover.MailServer{Host: "i", Port: 143, Security: "none"}
			s.SMTP = &autodiscover.MailServer{Host: "s", Port: 25, Security: "SSL"}
		}, "imap.security"},
	}
	for _, tc := range cases {
		s := exchangeSite()
		tc.edit(&s)
		if _, err := autodiscover.NewResponder([]autodiscover.Site{s}, slog.New(slog.DiscardHandler)); err == nil || !strings.Contains(err.Error(), tc.say) || !strings.Contains(err.Error(), "tenants.acme.autodiscover") {
			t.Errorf("%s: err = %v, want one naming the key and saying %q", tc.name, err, tc.say)
		}
	}
	other := imapSite()
	other.Domains = []string{"EXAMPLE.com"}
	if _, err := autodiscover.NewResponder([]autodiscover.Site{exchangeSite(), other}, slog.New(slog.DiscardHandler)); err == nil || !strings.Contains(err.Error(), "also tenant acme's") {
		t.Errorf("shared domain: err = %v", err)
	}
}

// TestClientFindsResponder runs mailpush's own client against its own
// responder over TLS on loopback: through the JSON endpoint, and through
// POX when the JSON endpoint is not there (as on older Exchange).
func TestClientFindsResponder(t *testing.T) {
	r, err := autodiscover.NewResponder([]autodiscover.Site{exchangeSite()}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	r.Routes(mux)
	for _, tc := range []struct {
		name  string
		host  string
		path  string // the request path that must have been served
		block string // a path answered 404
	}{
		{"json v2", "example.com", "/autodiscover/autodiscover.json/v1.0/alice@example.com", ""},
		{"pox", "autodiscover.example.com", "/autodiscover/autodiscover.xml", "/autodiscover/autodiscover.json/"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			var served []string
			e.mu.Lock()
			e.handlers[tc.host] = func(w http.ResponseWriter, req *http.Request) {
				if tc.block != "" && strings.HasPrefix(req.URL.Path, tc.block) {
					http.NotFound(w, req)
					return
				}
				served = append(served, req.URL.Path)
				mux.ServeHTTP(w, req)
			}
			e.mu.Unlock()
			// The candidates answer at the test's https port; the EWS URL
			// found is on port 443.
			tn := e.tenantAt("example.com", "*.example.com")
			tn.AllowedHosts = append(tn.AllowedHosts, "mail.example.com")
			got, err := e.client.LocateEWS(context.Background(), tn, "alice@example.com", mailpush.Credentials{})
			if err != nil || got != "https://mail.example.com/EWS/Exchange.asmx" {
				t.Fatalf("LocateEWS = %q, %v", got, err)
			}
			e.mu.Lock()
			defer e.mu.Unlock()
			if len(served) != 1 || served[0] != tc.path {
				t.Errorf("served %v, want %s", served, tc.path)
			}
		})
	}
	// An address the responder does not serve: the client gets no URL.
	e := newEnv(t)
	e.mu.Lock()
	e.handlers["autodiscover.elsewhere.example"] = mux.ServeHTTP
	e.mu.Unlock()
	if got, err := e.client.LocateEWS(context.Background(), tenant("*.elsewhere.example"), "alice@elsewhere.example", mailpush.Credentials{}); mailpush.ErrorCode(err) != mailpush.EUnsupported {
		t.Errorf("unknown domain: LocateEWS = %q, %v", got, err)
	}
}

// TestMobileconfig checks the profile's payloads and that a signed profile
// verifies with OpenSSL against the signer's CA, and fails against another.
func TestMobileconfig(t *testing.T) {
	if _, err := exec.LookPath("openssl"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("openssl is required under CI")
		}
		t.Skip("openssl not installed")
	}
	dir := t.TempDir()
	caCert, caKey := makeCA(t, "Acme Profile CA")
	certFile, keyFile := filepath.Join(dir, "signer.pem"), filepath.Join(dir, "signer.key")
	makeLeaf(t, caCert, caKey, "profiles.example.com", certFile, keyFile)
	caFile := filepath.Join(dir, "ca.pem")
	os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caCert.Raw}), 0o600)
	otherCA, _ := makeCA(t, "Someone Else")
	otherFile := filepath.Join(dir, "other.pem")
	os.WriteFile(otherFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: otherCA.Raw}), 0o600)

	signer, err := autodiscover.LoadProfileSigner(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	signed := exchangeSite()
	signed.Profile = signer
	srv := responderServer(t, signed, imapSite())

	st, h, data := get(t, srv, "", "/autodiscover/mail.mobileconfig?emailaddress=alice@example.com")
	if st != 200 || h.Get("Content-Type") != "application/x-apple-aspen-config" {
		t.Fatalf("signed profile = %d %s", st, h)
	}
	signedFile := filepath.Join(dir, "signed.mobileconfig")
	os.WriteFile(signedFile, data, 0o600)
	for _, verb := range []string{"smime", "cms"} {
		out, err := exec.Command("openssl", verb, "-verify", "-inform", "DER", "-in", signedFile, "-CAfile", caFile, "-purpose", "any").Output()
		if err != nil {
			t.Fatalf("openssl %s -verify: %v", verb, err)
		}
		checkProfile(t, out, "com.apple.eas.account", map[string]any{"Host": "gate.example.com", "SSL": true, "EmailAddress": "alice@example.com", "UserName": "alice@example.com"})
		var stderr bytes.Buffer
		cmd := exec.Command("openssl", verb, "-verify", "-inform", "DER", "-in", signedFile, "-CAfile", otherFile, "-purpose", "any")
		cmd.Stderr = &stderr
		if err := cmd.Run(); err == nil {
			t.Errorf("openssl %s verified the profile against a CA that did not sign it", verb)
		}
	}
	// Tampering breaks the signature.
	i := bytes.Index(data, []byte("gate.example.com"))
	tampered := bytes.Clone(data)
	copy(tampered[i:], "evil.example.com")
	os.WriteFile(signedFile, tampered, 0o600)
	if err := exec.Command("openssl", "cms", "-verify", "-inform", "DER", "-in", signedFile, "-CAfile", caFile, "-purpose", "any").Run(); err == nil {
		t.Error("a tampered profile verified")
	}

	// Unsigned (no signer configured): the plist itself, IMAP payload.
	st, _, data = get(t, srv, "", "/autodiscover/mail.mobileconfig?emailaddress=bob@dove.example")
	if st != 200 {
		t.Fatalf("unsigned profile = %d %s", st, data)
	}
	checkProfile(t, data, "com.apple.mail.managed", map[string]any{"IncomingMailServerHostName": "imap.dove.example", "IncomingMailServerPortNumber": uint64(993),
		"OutgoingMailServerPortNumber": uint64(587), "IncomingMailServerUseSSL": true, "EmailAccountType": "EmailTypeIMAP", "IncomingMailServerUsername": "bob@dove.example"})
	// Downloading again gives the same identifiers (reinstalling replaces).
	_, _, again := get(t, srv, "", "/autodiscover/mail.mobileconfig?emailaddress=bob@dove.example")
	if !bytes.Equal(data, again) {
		t.Error("a second download differs: reinstalling would add a second account")
	}
	for path, want := range map[string]int{"?emailaddress=x@nowhere.example": 404, "?emailaddress=nobody": 400, "": 400} {
		if st, _, _ := get(t, srv, "", "/autodiscover/mail.mobileconfig"+path); st != want {
			t.Errorf("%q = %d, want %d", path, st, want)
		}
	}
}

func checkProfile(t *testing.T, data []byte, payloadType string, want map[string]any) {
	t.Helper()
	var p map[string]any
	if _, err := plist.Unmarshal(data, &p); err != nil {
		t.Fatalf("profile is not a plist: %v\n%s", err, data)
	}
	if p["PayloadType"] != "Configuration" || p["PayloadUUID"] == "" {
		t.Errorf("profile = %v", p)
	}
	content, _ := p["PayloadContent"].([]any)
	if len(content) != 1 {
		t.Fatalf("PayloadContent = %v", p["PayloadContent"])
	}
	acc := content[0].(map[string]any)
	if acc["PayloadType"] != payloadType {
		t.Errorf("payload type %v, want %s", acc["PayloadType"], payloadType)
	}
	for k, v := range want {
		if acc[k] != v {
			t.Errorf("%s = %#v, want %#v", k, acc[k], v)
		}
	}
	if bytes.Contains(data, []byte("<key>Password</key>")) || bytes.Contains(data, []byte("<key>IncomingPassword</key>")) {
		t.Error("the profile carries a password")
	}
}

func makeCA(t testing.TB, name string) (*x509.Certificate, *ecdsa.PrivateKey) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return c, key
}

func makeLeaf(t testing.TB, ca *x509.Certificate, caKey *ecdsa.PrivateKey, name, certFile, keyFile string) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalPKCS8PrivateKey(key)
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600)
}

// BenchmarkProfile is the cost of one Apple profile, unsigned and signed
// with a P-256 key (an anonymous request can ask for one). Run:
//
//	go test -run XXX -bench Profile ./autodiscover
func BenchmarkProfile(b *testing.B) {
	dir := b.TempDir()
	caCert, caKey := makeCA(b, "CA")
	certFile, keyFile := filepath.Join(dir, "s.pem"), filepath.Join(dir, "s.key")
	makeLeaf(b, caCert, caKey, "profiles.example.com", certFile, keyFile)
	signer, err := autodiscover.LoadProfileSigner(certFile, keyFile)
	if err != nil {
		b.Fatal(err)
	}
	for _, signed := range []bool{false, true} {
		site := exchangeSite()
		if signed {
			site.Profile = signer
		}
		r, err := autodiscover.NewResponder([]autodiscover.Site{site}, slog.New(slog.DiscardHandler))
		if err != nil {
			b.Fatal(err)
		}
		b.Run(map[bool]string{false: "unsigned", true: "signed"}[signed], func(b *testing.B) {
			for b.Loop() {
				if _, err := r.Profile("alice@example.com"); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
