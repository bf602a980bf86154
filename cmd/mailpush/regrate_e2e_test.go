package main

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"software.sslmate.com/src/go-pkcs12"

	"github.com/mailpush/mailpush"
	"github.com/mailpush/mailpush/fake/ewsfake"
)

// registerRaw POSTs a registration and returns the status, the error code
// and the Retry-After header.
func registerRaw(t testing.TB, base, token string, body any) (int, string, string) {
	t.Helper()
	b, _ := json.Marshal(body)
	req, _ := http.NewRequest("POST", base+"/api/v1/registrations", bytes.NewReader(b))
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Error(err)
		return 0, "", ""
	}
	defer resp.Body.Close()
	var out map[string]any
	json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, errCode(out), resp.Header.Get("Retry-After")
}

func (w *world) tenantRegistrations(t testing.TB, name string) int {
	t.Helper()
	ctx := context.Background()
	tn, err := w.main.Store.TenantByName(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	n, err := w.main.Store.CountRegistrations(ctx, tn.ID)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestRegistrationFloodIsRateLimited plays the holder of tenant acme's app
// token (it ships inside the app) flooding POST /api/v1/registrations over
// real sockets: past acme's burst (tenants.acme.registrations, here 5 and
// next to no refill) every call is 429 rate_limited with Retry-After,
// nothing of it is stored and Exchange hears nothing, while tenant globex
// (the top-level defaults) and acme's own backend token keep registering.
func TestRegistrationFloodIsRateLimited(t *testing.T) {
	w := newWorld(t, "info", "tenants:\n  acme:\n    registrations: {rate: 0.001, burst: 5}\n")
	acme, globex := w.addTenant(t, "acme"), w.addTenant(t, "globex")
	backend := w.addToken(t, "acme", mailpush.ScopeBackend)
	body := func(n int) any {
		return map[string]any{
			"device":  map[string]any{"platform": "ios", "token": deviceToken(n)},
			"mailbox": map[string]any{"address": fmt.Sprintf("user%d@example.com", n), "source": "ews", "ewsUrl": w.exchange.URL()},
		}
	}
	exchangeBefore := w.exchange.Requests("Subscribe") + w.exchange.Requests("GetFolder")
	const flood = 40
	type answer struct {
		status     int
		code, wait string
	}
	answers := make(chan answer, flood)
	for i := range flood {
		go func() {
			st, code, wait := registerRaw(t, w.main.URL(), acme, body(i))
			answers <- answer{st, code, wait}
		}()
	}
	// globex registers during acme's flood.
	for i := range 3 {
		if st, code, _ := registerRaw(t, w.main.URL(), globex, body(1000+i)); st != 201 {
			t.Errorf("globex's registration %d during acme's flood: %d %s", i, st, code)
		}
	}
	created, limited := 0, 0
	for range flood {
		a := <-answers
		switch {
		case a.status == 201:
			created++
		case a.status == 429 && a.code == mailpush.ERateLimited:
			limited++
			if s, err := strconv.Atoi(a.wait); err != nil || s < 1 {
				t.Errorf("429 with Retry-After %q, want whole seconds", a.wait)
			}
		default:
			t.Errorf("acme's flood: %d %s", a.status, a.code)
		}
	}
	if created != 5 || limited != flood-5 {
		t.Errorf("acme's flood: %d created, %d limited; want 5 and %d", created, limited, flood-5)
	}
	if n := w.tenantRegistrations(t, "acme"); n != 5 {
		t.Errorf("acme has %d registrations stored, want 5: a refused call must leave nothing", n)
	}
	if n := w.exchange.Requests("Subscribe") + w.exchange.Requests("GetFolder"); n != exchangeBefore {
		t.Errorf("device-subscribed registrations made %d Exchange requests", n-exchangeBefore)
	}
	// The message says what is wrong and which key to change.
	st, out := w.call(t, "POST", "/api/v1/registrations", acme, body(flood))
	if msg := fmt.Sprint(out); st != 429 || !strings.Contains(msg, "registrations.rate") || !strings.Contains(msg, "acme") {
		t.Errorf("the next call: %d %v, want 429 naming the tenant and registrations.rate", st, out)
	}
	if st, code, _ := registerRaw(t, w.main.URL(), backend, body(2000)); st != 201 {
		t.Errorf("acme's backend token, its own bucket: %d %s", st, code)
	}
	if n := w.tenantRegistrations(t, "globex"); n != 3 {
		t.Errorf("globex has %d registrations, want 3", n)
	}
	w.waitMetrics(t, fmt.Sprintf(`mailpush_registrations_refused_total{limit="rate"} %d`, flood-5+1))
}

// TestCBAFloodDoesNotStarveAnotherTenant plays the holder of tenant acme's
// app token sending client identities that cost the most to open (PKCS#12
// at mailpush.MaxPKCS12Iterations), many at once, over real sockets: acme
// opens one at a time with four waiting, the rest are refused at once (429
// with Retry-After, nothing stored), and tenant globex's own CBA
// registration, sent while acme's are being opened, is answered 201 before
// acme's five accepted ones are through: it waits for none of them.
// Counts, not timing: a bound that let acme's queue run first would answer
// globex only after all of acme's had finished.
func TestCBAFloodDoesNotStarveAnotherTenant(t *testing.T) {
	w := newWorld(t, "info")
	acme, globex := w.addTenant(t, "acme"), w.addTenant(t, "globex")
	cert, err := w.exchange.IssueClientCert(address, ewsfake.ClientCertOptions{})
	if err != nil {
		t.Fatal(err)
	}
	costly, err := pkcs12.Modern.WithIterations(mailpush.MaxPKCS12Iterations).Encode(cert.Key, cert.Certificate, []*x509.Certificate{cert.CA.Certificate}, cbaPassword)
	if err != nil {
		t.Fatal(err)
	}
	costlyCreds := w.sealCreds(t, mailpush.Credentials{PKCS12: base64.StdEncoding.EncodeToString(costly), PKCS12Password: cbaPassword})
	body := func(n int, sealed string) any {
		return map[string]any{
			"device":  map[string]any{"platform": "ios", "token": deviceToken(n)},
			"mailbox": map[string]any{"address": address, "source": "ews", "ewsUrl": w.exchange.URL(), "sealedCredentials": sealed},
		}
	}
	type answer struct {
		tenant     string
		status     int
		code, wait string
	}
	answers := make(chan answer, 32)
	const flood = 12
	for i := range flood {
		go func() {
			st, code, wait := registerRaw(t, w.main.URL(), acme, body(i, costlyCreds))
			answers <- answer{"acme", st, code, wait}
		}()
	}
	// One opening runs and four wait; the other seven are refused at once,
	// before any of the five is through (each takes the whole cap).
	acmeCreated := 0
	for range flood - 5 {
		a := <-answers
		if a.status == 201 {
			acmeCreated++
			continue
		}
		if a.status != 429 || a.code != mailpush.ERateLimited || a.wait == "" {
			t.Fatalf("acme's flood: %+v, want 429 rate_limited with Retry-After", a)
		}
	}
	go func() {
		st, code, wait := registerRaw(t, w.main.URL(), globex, body(100, w.sealCreds(t, identityCreds(t, cert, false))))
		answers <- answer{"globex", st, code, wait}
	}()
	acmeBeforeGlobex := acmeCreated
	for a := range answers {
		if a.tenant == "globex" {
			if a.status != 201 {
				t.Fatalf("globex's CBA registration during acme's flood: %+v", a)
			}
			break
		}
		if a.status != 201 {
			t.Fatalf("acme's accepted registration: %+v", a)
		}
		acmeBeforeGlobex++
	}
	acmeCreated = acmeBeforeGlobex
	for acmeCreated < 5 {
		if a := <-answers; a.status == 201 {
			acmeCreated++
		} else {
			t.Fatalf("acme's accepted registration: %+v", a)
		}
	}
	t.Logf("acme registrations answered before globex's: %d of 5", acmeBeforeGlobex)
	if acmeBeforeGlobex >= 5 {
		t.Errorf("globex was answered only after all of acme's %d accepted registrations: it waited behind acme's queue", acmeBeforeGlobex)
	}
	// acme's five share one mailbox and device tokens; the refused seven
	// left nothing.
	if n := w.tenantRegistrations(t, "acme"); n != 5 {
		t.Errorf("acme has %d registrations, want 5", n)
	}
	if n := w.tenantRegistrations(t, "globex"); n != 1 {
		t.Errorf("globex has %d registrations, want 1", n)
	}
}
