package api_test

import (
	"context"
	"encoding/base64"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mailpush/mailpush"
)

// fakeSMIME records what the API passes and answers fixed results.
type fakeSMIME struct {
	mu       sync.Mutex
	tenants  []string
	files    [][]byte
	password string
}

func (f *fakeSMIME) LookupCertificates(ctx context.Context, t *mailpush.Tenant, recipients []string) (mailpush.SMIMELookup, error) {
	f.mu.Lock()
	f.tenants = append(f.tenants, t.Name)
	f.mu.Unlock()
	if len(recipients) == 0 {
		return mailpush.SMIMELookup{}, mailpush.Errorf(mailpush.EInvalid, "recipients: give at least one address")
	}
	res := mailpush.SMIMELookup{Verdict: mailpush.SMIMEVerdictEncryptAll}
	for _, r := range recipients {
		rc := mailpush.SMIMERecipient{Address: r}
		if strings.HasPrefix(r, "expired") {
			rc.Reason, rc.Detail = mailpush.SMIMEExpired, "expired"
			res.Verdict, res.Blocking = mailpush.SMIMEVerdictCannotEncrypt, append(res.Blocking, r)
		} else {
			rc.Certificates = []mailpush.SMIMECertificate{{DER: []byte{0x30, 0x00}, SHA256: "ab", Subject: "CN=x", NotBefore: time.Unix(0, 0), NotAfter: time.Unix(1, 0)}}
		}
		res.Recipients = append(res.Recipients, rc)
	}
	return res, nil
}

func (f *fakeSMIME) Classify(ctx context.Context, file []byte, password string) ([]mailpush.SMIMEClassified, error) {
	f.mu.Lock()
	f.files, f.password = append(f.files, file), password
	f.mu.Unlock()
	if string(file) == "p12" && password != "right" {
		return nil, mailpush.Errorf(mailpush.EBadPassword, "the PKCS#12 password is wrong")
	}
	return []mailpush.SMIMEClassified{{Subject: "CN=x", Class: mailpush.SMIMEClassBoth}}, nil
}

func TestSMIMELookupAPI(t *testing.T) {
	e := setup(t)
	fake := &fakeSMIME{}
	e.srv.SMIME = fake
	body := `{"recipients":["alice@example.com","expired@example.com"]}`
	code, out := e.do(t, "POST", "/api/v1/smime/lookup", e.token, "application/json", strings.NewReader(body))
	if code != http.StatusOK || out["verdict"] != "cannot_encrypt" {
		t.Fatalf("%d %v", code, out)
	}
	recips := out["recipients"].([]any)
	first := recips[0].(map[string]any)
	certs := first["certificates"].([]any)
	if !strings.HasPrefix(certs[0].(map[string]any)["pem"].(string), "-----BEGIN CERTIFICATE-----") {
		t.Errorf("pem: %v", certs[0])
	}
	if second := recips[1].(map[string]any); second["reason"] != "expired" || len(second["certificates"].([]any)) != 0 {
		t.Errorf("blocked recipient: %v", second)
	}
	if b := out["blocking"].([]any); len(b) != 1 || b[0] != "expired@example.com" {
		t.Errorf("blocking: %v", b)
	}

	// Only app tokens look up; another tenant's token looks up in its own
	// tenant; no token, bad JSON and an error of the service are precise.
	for _, tc := range []struct {
		name, token, body string
		status            int
		code              string
	}{
		{"admin token", e.admin, body, 403, "insufficient_scope"},
		{"backend token", e.backend, body, 403, "insufficient_scope"},
		{"no token", "", body, 401, "unauthorized"},
		{"not json", e.token, "recipients=a", 400, "invalid_request"},
		{"recipients not a list", e.token, `{"recipients":"a@example.com"}`, 400, "invalid_request"},
		{"unknown field", e.token, `{"recipients":[],"to":[]}`, 400, "invalid_request"},
		{"empty list", e.token, `{"recipients":[]}`, 400, "invalid_request"},
		{"huge body", e.token, `{"recipients":["` + strings.Repeat("a", 2<<20) + `"]}`, 413, "request_too_large"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out := e.do(t, "POST", "/api/v1/smime/lookup", tc.token, "application/json", strings.NewReader(tc.body))
			errObj, _ := out["error"].(map[string]any)
			if code != tc.status || errObj["code"] != tc.code {
				t.Errorf("%d %v, want %d %s", code, out, tc.status, tc.code)
			}
		})
	}
	fake.tenants = nil
	e.do(t, "POST", "/api/v1/smime/lookup", e.other, "application/json", strings.NewReader(body))
	if len(fake.tenants) != 1 || fake.tenants[0] != "globex" {
		t.Errorf("globex's token looked up in %v", fake.tenants)
	}
}

func TestSMIMEClassifyAPI(t *testing.T) {
	e := setup(t)
	fake := &fakeSMIME{}
	e.srv.SMIME = fake
	b64 := base64.StdEncoding.EncodeToString
	for _, tok := range []string{e.token, e.backend, e.admin} {
		code, out := e.do(t, "POST", "/api/v1/smime/classify", tok, "application/json", strings.NewReader(`{"file":"`+b64([]byte("cert"))+`"}`))
		if code != 200 || out["certificates"].([]any)[0].(map[string]any)["class"] != "both" {
			t.Errorf("%d %v", code, out)
		}
	}
	code, out := e.do(t, "POST", "/api/v1/smime/classify", e.token, "application/json", strings.NewReader(`{"file":"`+b64([]byte("p12"))+`","password":"wrong"}`))
	if code != 400 || out["error"].(map[string]any)["code"] != "wrong_password" {
		t.Errorf("wrong password: %d %v", code, out)
	}
	n := len(fake.files)
	code, out = e.do(t, "POST", "/api/v1/smime/classify", e.token, "application/json", strings.NewReader(`{"file":"not base64!"}`))
	if code != 400 || out["error"].(map[string]any)["code"] != "invalid_request" || len(fake.files) != n {
		t.Errorf("bad base64: %d %v", code, out)
	}

	e.srv.SMIME = nil
	code, out = e.do(t, "POST", "/api/v1/smime/classify", e.token, "application/json", strings.NewReader(`{"file":""}`))
	if code != 422 || out["error"].(map[string]any)["code"] != "unsupported" {
		t.Errorf("no S/MIME: %d %v", code, out)
	}
}
