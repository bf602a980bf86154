package main

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mailpush/mailpush"
	"github.com/mailpush/mailpush/clocktest"
	"github.com/mailpush/mailpush/fake/apnsfake"
	"github.com/mailpush/mailpush/fake/ewsfake"
)

const cbaPassword = "pkcs12 Pa55word of alice"

// identityCreds are the sealed credentials of a client identity: the
// PKCS#12 form, or the PEM one with pem set.
func identityCreds(t testing.TB, c *ewsfake.ClientCert, pem bool) mailpush.Credentials {
	t.Helper()
	if pem {
		return mailpush.Credentials{CertificatePEM: c.CertificatePEM(), PrivateKeyPEM: c.KeyPEM()}
	}
	der, err := c.PKCS12(cbaPassword)
	if err != nil {
		t.Fatal(err)
	}
	return mailpush.Credentials{PKCS12: base64.StdEncoding.EncodeToString(der), PKCS12Password: cbaPassword}
}

// restart stops mailpush and starts it again on the same address and
// data: what it kept in memory (the client identities) is gone.
func (w *world) restart(t *testing.T) {
	t.Helper()
	addr := w.main.listener.Addr().String()
	cfg, clock := w.main.Config, w.main.Clock
	if err := w.main.Close(); err != nil {
		t.Fatal(err)
	}
	cfg.Listen = addr
	w.main = NewMain(cfg, w.logs) // closed by newWorldWith's cleanup
	w.main.Clock = clock
	if err := w.main.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// newCBAWorld is a world with a fake clock (Exchange's timers run on it:
// a restart takes no Exchange time) and no health checks of their own,
// its tenant acme's app token, and a client certificate for address
// issued with opts.
func newCBAWorld(t *testing.T, opts ewsfake.ClientCertOptions) (*world, *clocktest.Clock, string, *ewsfake.ClientCert) {
	t.Helper()
	clock := clocktest.New(time.Now())
	w := newWorldWith(t, "debug", worldOptions{clock: clock, configure: func(c *Config) {
		c.EWS.HealthInterval, c.EWS.HostCheckInterval = 1000*time.Hour, 1000*time.Hour
	}})
	token := w.addTenant(t, "acme")
	cert, err := w.exchange.IssueClientCert(address, opts)
	if err != nil {
		t.Fatal(err)
	}
	return w, clock, token, cert
}

// deliverAndWaitPush delivers a mail with the subject to address and
// waits for the device's push that shows it with the badge.
func (w *world) deliverAndWaitPush(t *testing.T, device, subject string, badge int) {
	t.Helper()
	w.exchange.Deliver(address, subject, "Bob Sender", "bob@example.com")
	waitFor(t, "a push for "+subject, func(ctx context.Context) error {
		return w.apple.WaitFor(ctx, func(ps []apnsfake.Push) bool {
			for _, p := range pushesTo(ps, device) {
				if p.Badge == badge && strings.Contains(string(p.Payload), subject) {
					return true
				}
			}
			return false
		})
	})
}

// waitStatus waits until the registration has the status.
func (w *world) waitStatus(t *testing.T, regID string, want mailpush.Status) {
	t.Helper()
	waitFor(t, "the registration "+string(want), func(ctx context.Context) error {
		for ctx.Err() == nil {
			r, err := w.main.Store.Registration(ctx, regIDTenant(t, w), regID)
			if err == nil && r.Status == want {
				return nil
			}
			time.Sleep(10 * time.Millisecond) // polling with a deadline (the store has no waiter)
		}
		return ctx.Err()
	})
}

// TestEndToEndCBA: a device registers with its client identity (the
// certificate its MDM pushed); mailpush signs in to Exchange with it as the
// TLS client certificate and pushes. A restart loses the identity (it lives
// only in memory): the device is asked to check in, does so with the
// identity, and pushes resume. A revoked certificate asks the device again.
// Neither the PKCS#12 password, the key nor the address reaches the
// database files or the logs.
func TestEndToEndCBA(t *testing.T) {
	// Exchange's timers run on the test's clock: a restart takes no
	// Exchange time (its retries would otherwise end the subscription).
	w, clock, token, cert := newCBAWorld(t, ewsfake.ClientCertOptions{})
	device := deviceToken(15)
	st, reg := w.call(t, "POST", "/api/v1/registrations", token, map[string]any{
		"device":  map[string]any{"platform": "ios", "token": device, "environment": "production"},
		"mailbox": map[string]any{"address": address, "source": "ews", "ewsUrl": w.exchange.URL(), "sealedCredentials": w.sealCreds(t, identityCreds(t, cert, false))},
		"content": "subject",
	})
	if st != 201 || reg["mode"] != "sealed" || reg["status"] != "active" {
		t.Fatalf("register = %d %v", st, reg)
	}
	regID := reg["id"].(string)
	first := activeSubURL(t, w.exchange)
	if len(first) > 2048 {
		t.Errorf("callback URL of %d bytes: the identity must not travel in it", len(first))
	}

	pushes := func() int { return len(w.apple.PushesFor(device)) }
	unread := 0
	deliverAndWait := func(what string) {
		t.Helper()
		unread++
		n := unread
		w.deliverAndWaitPush(t, device, fmt.Sprintf("CBA %s %d", what, n), n)
	}
	deliverAndWait("registered")
	if w.exchange.Requests("Certificate") == 0 || w.exchange.Requests("Unauthorized") != 0 {
		t.Fatalf("EWS requests: %d by certificate, %d refused", w.exchange.Requests("Certificate"), w.exchange.Requests("Unauthorized"))
	}

	// A restart: the identity is gone. Exchange's next notification (a
	// status event) makes mailpush ask the device to check in.
	before := pushes()
	w.restart(t)
	clock.Advance(time.Minute) // Exchange's next status event
	w.waitStatus(t, regID, mailpush.StatusPending)
	waitFor(t, "a check-in push", func(ctx context.Context) error {
		return w.apple.WaitFor(ctx, func(ps []apnsfake.Push) bool {
			ps = pushesTo(ps, device)
			return len(ps) > before && ps[len(ps)-1].ContentAvailable && ps[len(ps)-1].PushType == "background"
		})
	})
	waitFor(t, "the old subscription answered Unsubscribe", func(ctx context.Context) error {
		return w.exchange.WaitFor(ctx, func(s *ewsfake.Server) bool { return countActive(s) == 0 })
	})

	// The app checks in with its identity (this time as PEM): pushes resume.
	st, reg = w.call(t, "POST", "/api/v1/registrations/"+regID+"/checkin", token, map[string]any{
		"mailbox": map[string]any{"address": address, "sealedCredentials": w.sealCreds(t, identityCreds(t, cert, true))}})
	if st != 200 || reg["status"] != "active" {
		t.Fatalf("checkin = %d %v", st, reg)
	}
	deliverAndWait("after the check-in")

	// The MDM revokes the certificate (the fake's control API): the next
	// mail's fetch is refused, the device is asked to check in, and no push
	// shows that mail.
	body, _ := json.Marshal(map[string]string{"serial": cert.Certificate.SerialNumber.Text(16)})
	resp, err := w.exchange.HTTPClient().Post(w.exchange.ControlURL()+"revoke", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("revoke = %d", resp.StatusCode)
	}
	before = pushes()
	w.exchange.Deliver(address, "After revocation", "Bob Sender", "bob@example.com")
	w.waitStatus(t, regID, mailpush.StatusPending)
	waitFor(t, "a check-in push after the revocation", func(ctx context.Context) error {
		return w.apple.WaitFor(ctx, func(ps []apnsfake.Push) bool { return len(pushesTo(ps, device)) > before })
	})
	for _, p := range w.apple.PushesFor(device)[before:] {
		if strings.Contains(string(p.Payload), "After revocation") {
			t.Errorf("a push shows mail fetched with a revoked certificate: %s", p.Payload)
		}
	}
	clock.Advance(time.Minute) // Exchange's next status event is answered Unsubscribe
	waitFor(t, "no active subscription after the revocation", func(ctx context.Context) error {
		return w.exchange.WaitFor(ctx, func(s *ewsfake.Server) bool { return countActive(s) == 0 })
	})
	if w.exchange.Requests("CertificateRefused") == 0 {
		t.Error("Exchange never refused the revoked certificate")
	}
	// Checking in again with the revoked certificate is refused.
	st, reg = w.call(t, "POST", "/api/v1/registrations/"+regID+"/checkin", token, map[string]any{
		"mailbox": map[string]any{"address": address, "sealedCredentials": w.sealCreds(t, identityCreds(t, cert, false))}})
	if st != 422 || errorCode(reg) != "credentials_refused" {
		t.Errorf("checkin with the revoked certificate = %d %v", st, reg)
	}

	// Privacy: nothing of the identity, nor the address, on disk or in
	// the logs.
	logs := w.logs.String()
	if !strings.Contains(logs, "client identity not in memory") || !strings.Contains(logs, "refused the client certificate") {
		t.Fatalf("logs lack the lost and the refused identity:\n%s", logs)
	}
	w.main.Close()
	keyDER, err := x509.MarshalPKCS8PrivateKey(cert.Key)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM := cert.KeyPEM()
	p12 := identityCreds(t, cert, false).PKCS12
	secrets := map[string][]byte{
		"the PKCS#12 password":       []byte(cbaPassword),
		"the PEM key header":         []byte("PRIVATE KEY"),
		"a line of the PEM key":      []byte(strings.Split(keyPEM, "\n")[5]),
		"a DER fragment of the key":  keyDER[len(keyDER)/2 : len(keyDER)/2+24],
		"a fragment of the PKCS#12":  []byte(p12[len(p12)/2 : len(p12)/2+32]),
		"the address":                []byte(address),
		"the address (case-blind)":   []byte(strings.ToUpper(address)),
		"the certificate's UPN blob": []byte("alice.wonder@"),
	}
	files, _ := filepath.Glob(filepath.Join(w.dir, "data", "*"))
	keys, _ := filepath.Glob(filepath.Join(w.dir, "data", "keys", "*"))
	if len(files) == 0 {
		t.Fatal("no database files to check")
	}
	for _, f := range append(files, keys...) {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for what, s := range secrets {
			if bytes.Contains(bytes.ToLower(b), bytes.ToLower(s)) {
				t.Errorf("%s holds %s", filepath.Base(f), what)
			}
		}
	}
	for what, s := range secrets {
		if strings.Contains(strings.ToLower(logs), strings.ToLower(string(s))) {
			t.Errorf("the logs hold %s", what)
		}
	}
}

func errorCode(body map[string]any) string {
	e, _ := body["error"].(map[string]any)
	c, _ := e["code"].(string)
	return c
}

// TestCBAIsBoundToItsUser: Alice's certificate (registered by an attacker
// who holds it) pinned to Bob's address and EWS URL opens nothing: Exchange
// maps the certificate to Alice, and every request names Bob's Inbox. A
// mailbox Alice is a delegate of, Exchange lets her open.
func TestCBAIsBoundToItsUser(t *testing.T) {
	w := newWorld(t, "debug")
	token := w.addTenant(t, "acme")
	const bob, carol = "bob@example.com", "carol@example.com"
	w.exchange.AddUser(bob, `EXAMPLE\bob`, "bob's password")
	w.exchange.AddUser(carol, `EXAMPLE\carol`, "carol's password")
	if err := w.exchange.AddDelegate(carol, address); err != nil {
		t.Fatal(err)
	}
	alice, err := w.exchange.IssueClientCert(address, ewsfake.ClientCertOptions{})
	if err != nil {
		t.Fatal(err)
	}
	st, body := w.call(t, "POST", "/api/v1/registrations", token, map[string]any{
		"device":  map[string]any{"platform": "ios", "token": deviceToken(66), "environment": "production"},
		"mailbox": map[string]any{"address": bob, "source": "ews", "ewsUrl": w.exchange.URL(), "sealedCredentials": w.sealCreds(t, identityCreds(t, alice, false))},
	})
	if st != 403 || errorCode(body) != "mailbox_access_denied" {
		t.Fatalf("Alice's certificate for Bob's mailbox = %d %v, want 403 mailbox_access_denied", st, body)
	}
	if subs := w.exchange.Subscriptions(); len(subs) != 0 {
		t.Fatalf("subscriptions made: %+v", subs)
	}
	if n, err := w.main.Store.CountRegistrations(context.Background(), regIDTenant(t, w)); err != nil || n != 0 {
		t.Fatalf("%d registrations stored (%v)", n, err)
	}
	// As Carol's delegate, Alice's certificate opens Carol's Inbox.
	st, body = w.call(t, "POST", "/api/v1/registrations", token, map[string]any{
		"device":  map[string]any{"platform": "ios", "token": deviceToken(67), "environment": "production"},
		"mailbox": map[string]any{"address": carol, "source": "ews", "ewsUrl": w.exchange.URL(), "sealedCredentials": w.sealCreds(t, identityCreds(t, alice, true))},
	})
	if st != 201 || body["status"] != "active" {
		t.Fatalf("Alice's certificate for Carol's mailbox (she is a delegate) = %d %v", st, body)
	}
	if subs := w.exchange.Subscriptions(); len(subs) != 1 || subs[0].Address != carol {
		t.Fatalf("subscriptions: %+v, want one on Carol's Inbox", subs)
	}
}

// TestCBARegistrationRefusals: a client identity that cannot sign in gets a
// precise 4xx, nothing is stored, and — unless only Exchange can tell —
// no request reaches Exchange.
func TestCBARegistrationRefusals(t *testing.T) {
	w := newWorld(t, "debug")
	token := w.addTenant(t, "acme")
	issue := func(o ewsfake.ClientCertOptions) *ewsfake.ClientCert {
		t.Helper()
		c, err := w.exchange.IssueClientCert(address, o)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	now := time.Now()
	good := issue(ewsfake.ClientCertOptions{})
	expired := issue(ewsfake.ClientCertOptions{NotBefore: now.Add(-48 * time.Hour), NotAfter: now.Add(-time.Hour)})
	signing := issue(ewsfake.ClientCertOptions{ExtKeyUsage: []x509.ExtKeyUsage{}, KeyUsage: x509.KeyUsageContentCommitment})
	smime := issue(ewsfake.ClientCertOptions{ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageEmailProtection}})
	stranger, err := ewsfake.NewCA("not Exchange's", now)
	if err != nil {
		t.Fatal(err)
	}
	foreign, err := stranger.Issue(ewsfake.ClientCertOptions{UPN: address})
	if err != nil {
		t.Fatal(err)
	}
	wrongPassword := identityCreds(t, good, false)
	wrongPassword.PKCS12Password = "not the password"
	noKey := identityCreds(t, good, true)
	noKey.PrivateKeyPEM = ""
	cases := []struct {
		name   string
		creds  mailpush.Credentials
		status int
		code   string
		ews    bool // only Exchange can tell: one GetFolder, refused
	}{
		{"PKCS#12 with a wrong password", wrongPassword, 400, "wrong_password", false},
		{"PEM certificate without its key", noKey, 400, "invalid_sealed_value", false},
		{"key of another certificate", mailpush.Credentials{CertificatePEM: good.CertificatePEM(), PrivateKeyPEM: expired.KeyPEM()}, 400, "invalid_sealed_value", false},
		{"expired certificate", identityCreds(t, expired, false), 422, "credentials_refused", false},
		{"signing-only certificate", identityCreds(t, signing, true), 422, "credentials_refused", false},
		{"S/MIME certificate", identityCreds(t, smime, false), 422, "credentials_refused", false},
		{"malformed PEM", mailpush.Credentials{CertificatePEM: "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n", PrivateKeyPEM: good.KeyPEM()}, 400, "invalid_sealed_value", false},
		{"malformed PKCS#12", mailpush.Credentials{PKCS12: base64.StdEncoding.EncodeToString([]byte("0\x82not a pfx")), PKCS12Password: cbaPassword}, 400, "invalid_sealed_value", false},
		{"oversized PEM", mailpush.Credentials{CertificatePEM: strings.Repeat(good.CertificatePEM(), 7), PrivateKeyPEM: good.KeyPEM()}, 400, "invalid_sealed_value", false},
		{"identity beside a password", mailpush.Credentials{Username: username, Password: password, CertificatePEM: good.CertificatePEM(), PrivateKeyPEM: good.KeyPEM()}, 400, "invalid_sealed_value", false},
		{"certificate of an unknown CA", identityCreds(t, foreign, false), 422, "credentials_refused", true},
	}
	for i, tc := range cases {
		folders, refused := w.exchange.Requests("GetFolder"), w.exchange.Requests("CertificateRefused")
		st, body := w.call(t, "POST", "/api/v1/registrations", token, map[string]any{
			"device":  map[string]any{"platform": "ios", "token": deviceToken(300 + i), "environment": "production"},
			"mailbox": map[string]any{"address": address, "source": "ews", "ewsUrl": w.exchange.URL(), "sealedCredentials": w.sealCreds(t, tc.creds)},
		})
		if st != tc.status || errorCode(body) != tc.code {
			t.Errorf("%s: %d %v, want %d %s", tc.name, st, body, tc.status, tc.code)
		}
		msg, _ := body["error"].(map[string]any)["message"].(string)
		if strings.Contains(msg, cbaPassword) {
			t.Errorf("%s: the answer holds the password", tc.name)
		}
		wantRefused := 0
		if tc.ews {
			wantRefused = 1
		}
		if n := w.exchange.Requests("CertificateRefused") - refused; n != wantRefused {
			t.Errorf("%s: %d certificates refused by Exchange, want %d", tc.name, n, wantRefused)
		}
		if n := w.exchange.Requests("GetFolder") - folders; n != 0 {
			t.Errorf("%s: %d GetFolder answered", tc.name, n)
		}
		if subs := w.exchange.Subscriptions(); len(subs) != 0 {
			t.Errorf("%s: subscriptions made: %+v", tc.name, subs)
		}
		if n, err := w.main.Store.CountRegistrations(context.Background(), regIDTenant(t, w)); err != nil || n != 0 {
			t.Errorf("%s: %d registrations stored (%v)", tc.name, n, err)
		}
	}
	if strings.Contains(w.logs.String(), cbaPassword) || strings.Contains(w.logs.String(), "PRIVATE KEY") {
		t.Error("the logs hold the identity")
	}
}

// TestCBACertificateExpiresInMemory: a client certificate that expires
// while mailpush holds it is used no more: the next notification asks the
// device to check in (for the MDM's renewed certificate).
func TestCBACertificateExpiresInMemory(t *testing.T) {
	w, clock, token, cert := newCBAWorld(t, ewsfake.ClientCertOptions{NotAfter: time.Now().Add(2 * time.Hour)})
	device := deviceToken(16)
	st, reg := w.call(t, "POST", "/api/v1/registrations", token, map[string]any{
		"device":  map[string]any{"platform": "ios", "token": device, "environment": "production"},
		"mailbox": map[string]any{"address": address, "source": "ews", "ewsUrl": w.exchange.URL(), "sealedCredentials": w.sealCreds(t, identityCreds(t, cert, true))},
	})
	if st != 201 || reg["status"] != "active" {
		t.Fatalf("register = %d %v", st, reg)
	}
	requests := w.exchange.Requests("Certificate")
	clock.Advance(3 * time.Hour) // past NotAfter; Exchange sends a status event
	w.waitStatus(t, reg["id"].(string), mailpush.StatusPending)
	waitFor(t, "a check-in push", func(ctx context.Context) error {
		return w.apple.WaitFor(ctx, func(ps []apnsfake.Push) bool {
			ps = pushesTo(ps, device)
			return len(ps) > 0 && ps[len(ps)-1].PushType == "background"
		})
	})
	if !strings.Contains(w.logs.String(), "client certificate expired") {
		t.Error("the logs do not say the certificate expired")
	}
	if n := w.exchange.Requests("Certificate") - requests; n != 0 {
		t.Errorf("%d requests made with the expired certificate", n)
	}
}
