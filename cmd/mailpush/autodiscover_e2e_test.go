package main

import (
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestAutodiscoverResponderEndToEnd configures a tenant's autodiscover
// block and asks the running server over loopback, as Outlook, an
// ActiveSync device and Thunderbird would.
func TestAutodiscoverResponderEndToEnd(t *testing.T) {
	w := newWorldWith(t, "info", worldOptions{extraConfig: `tenants:
  acme:
    autodiscover:
      domains: [example.com]
      displayName: Acme
      ewsUrl: https://mail.example.com/EWS/Exchange.asmx
      activeSyncUrl: https://gate.example.com/Microsoft-Server-ActiveSync
      pushUrl: https://push.example.com/api/v1
      imap: {host: imap.example.com, port: 993, security: ssl}
      smtp: {host: smtp.example.com, port: 465, security: SSL}
`})
	ask := func(method, path, body string) (int, string) {
		req, _ := http.NewRequest(method, w.main.URL()+path, strings.NewReader(body))
		if body != "" {
			req.Header.Set("Content-Type", "text/xml")
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	pox := func(kind, addr string) string {
		return `<Autodiscover xmlns="http://schemas.microsoft.com/exchange/autodiscover/` + kind + `/requestschema/2006"><Request><EMailAddress>` + addr +
			`</EMailAddress><AcceptableResponseSchema>http://schemas.microsoft.com/exchange/autodiscover/` + kind + `/responseschema/2006` +
			map[string]string{"outlook": "a", "mobilesync": ""}[kind] + `</AcceptableResponseSchema></Request></Autodiscover>`
	}
	for _, tc := range []struct {
		method, path, body string
		status             int
		want               string
	}{
		{"POST", "/autodiscover/autodiscover.xml", pox("outlook", "alice@example.com"), 200, "<EwsUrl>https://mail.example.com/EWS/Exchange.asmx</EwsUrl>"},
		{"POST", "/Autodiscover/Autodiscover.xml", pox("mobilesync", "alice@example.com"), 200, "<Url>https://gate.example.com/Microsoft-Server-ActiveSync</Url>"},
		{"POST", "/autodiscover/autodiscover.xml", pox("outlook", "alice@elsewhere.example"), 200, "<ErrorCode>500</ErrorCode>"},
		{"POST", "/autodiscover/autodiscover.xml", `<!DOCTYPE x [<!ENTITY a "b">]>` + pox("outlook", "alice@example.com"), 400, "DOCTYPE"},
		{"GET", "/autodiscover/autodiscover.json/v1.0/alice@example.com?Protocol=Mailpush", "", 200, `"Url":"https://push.example.com/api/v1"`},
		{"GET", "/mail/config-v1.1.xml?emailaddress=alice@example.com", "", 200, "<hostname>imap.example.com</hostname>"},
		{"GET", "/autodiscover/mail.mobileconfig?emailaddress=alice@example.com", "", 200, "<string>com.apple.eas.account</string>"},
	} {
		st, body := ask(tc.method, tc.path, tc.body)
		if st != tc.status || !strings.Contains(body, tc.want) {
			t.Errorf("%s %s = %d %s\nwant %d with %s", tc.method, tc.path, st, body, tc.status, tc.want)
		}
	}
	// Autodiscover requests leave no address in the logs.
	if strings.Contains(w.logs.String(), "alice@") {
		t.Errorf("an address was logged:\n%s", w.logs.String())
	}
}

func TestAutodiscoverConfig(t *testing.T) {
	dir := t.TempDir()
	load := func(body string) error {
		p := filepath.Join(dir, "c.yaml")
		os.WriteFile(p, []byte(body), 0o600)
		_, err := LoadConfig(p, nil)
		return err
	}
	for _, tc := range []struct{ body, key string }{
		{"tenants:\n  acme:\n    autodiscover: {ewsUrl: 'https://m.example.com/EWS/Exchange.asmx'}\n", "tenants.acme.autodiscover.domains"},
		{"tenants:\n  acme:\n    autodiscover: {domains: [example.com], ewsUrl: 'http://m.example.com/x'}\n", "tenants.acme.autodiscover.ewsUrl"},
		{"tenants:\n  acme:\n    autodiscover: {domains: [example.com], imap: {host: i, port: 993, security: SSL}}\n", "tenants.acme.autodiscover.smtp"},
		{"tenants:\n  acme:\n    autodiscover: {domains: [example.com], ewsUrl: 'https://m/x', profile: {certFile: c}}\n", "tenants.acme.autodiscover.profile"},
		{"tenants:\n  a:\n    autodiscover: {domains: [example.com], ewsUrl: 'https://m/x'}\n  b:\n    autodiscover: {domains: [example.com], ewsUrl: 'https://m/x'}\n", "tenants.b.autodiscover.domains"},
	} {
		if err := load(tc.body); err == nil || !strings.Contains(err.Error(), "config key "+tc.key+":") {
			t.Errorf("%q: error %v, want one naming %s", tc.body, err, tc.key)
		}
	}
	// Signing files are read at start: a missing one stops it, naming the key.
	p := filepath.Join(dir, "c.yaml")
	os.WriteFile(p, []byte("tenants:\n  acme:\n    autodiscover: {domains: [example.com], ewsUrl: 'https://m/x', profile: {certFile: "+filepath.Join(dir, "none.pem")+", keyFile: "+filepath.Join(dir, "none.key")+"}}\n"), 0o600)
	c, err := LoadConfig(p, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.autodiscoverSites(true); err == nil || !strings.Contains(err.Error(), "config key tenants.acme.autodiscover.profile") {
		t.Errorf("missing signing files: %v", err)
	}
}
