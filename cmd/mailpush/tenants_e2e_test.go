package main

import (
	"context"
	"crypto/x509"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mailpush/mailpush/fake/apnsfake"
	"github.com/mailpush/mailpush/fake/fcmfake"
)

// register registers a device of platform for the test mailbox under the
// tenant token, and fails the test unless it is created.
func (w *world) register(t *testing.T, token string, device map[string]any) {
	t.Helper()
	st, out := w.call(t, "POST", "/api/v1/registrations", token, map[string]any{
		"device":  device,
		"mailbox": map[string]any{"address": address, "source": "ews", "ewsUrl": w.exchange.URL(), "sealedCredentials": w.sealCredentials(t, username, password)},
		"content": "badge",
	})
	if st != 201 {
		t.Fatalf("register %v: %d %v", device, st, out)
	}
}

// TestTenantsHaveTheirOwnCredentials runs three tenants in one process: acme
// on the default team key, otherapp on the same key with its own topic
// (sharing acme's connection), and certco with its own .p12 certificate,
// topic and sandbox default. One mail reaches each tenant's device with the
// tenant's topic and credentials.
func TestTenantsHaveTheirOwnCredentials(t *testing.T) {
	w := newWorldWith(t, "info", worldOptions{extra: func(w *world) (string, []*x509.Certificate) {
		w.apple.AllowTopic("com.other.mail")
		p12, err := w.apple.IssueCertificate("s3cret", "com.certco.mail")
		if err != nil {
			t.Fatal(err)
		}
		certFile, pwFile := filepath.Join(w.dir, "certco.p12"), filepath.Join(w.dir, "certco.pw")
		os.WriteFile(certFile, p12, 0o600)
		os.WriteFile(pwFile, []byte("s3cret\n"), 0o600)
		return fmt.Sprintf(`tenants:
  otherapp:
    apns:
      topic: com.other.mail
  certco:
    apns:
      certFile: %s
      certPasswordFile: %s
      topic: com.certco.mail
      environment: sandbox
`, certFile, pwFile), nil
	}})
	devices := map[string]string{"acme": deviceToken(21), "otherapp": deviceToken(22), "certco": deviceToken(23)}
	for name, dev := range devices {
		w.register(t, w.addTenant(t, name), map[string]any{"platform": "ios", "token": dev})
	}
	// No tenant has FCM credentials: android is refused for each.
	st, body := w.call(t, "POST", "/api/v1/registrations", w.addTenant(t, "plain"), map[string]any{
		"device":  map[string]any{"platform": "android", "token": strings.Repeat("fcm_token-", 15)},
		"mailbox": map[string]any{"address": address, "source": "ews", "ewsUrl": w.exchange.URL(), "sealedCredentials": w.sealCredentials(t, username, password)},
	})
	if st != 422 {
		t.Fatalf("android without FCM = %d %v, want 422", st, body)
	}

	w.exchange.Deliver(address, "Hello", "Bob", "bob@example.com")
	waitFor(t, "a push for each tenant", func(ctx context.Context) error {
		return w.apple.WaitFor(ctx, func(ps []apnsfake.Push) bool { return len(ps) >= 3 })
	})
	wantTopic := map[string]string{"acme": topic, "otherapp": "com.other.mail", "certco": "com.certco.mail"}
	for name, dev := range devices {
		ps := w.apple.PushesFor(dev)
		if len(ps) < 1 || ps[0].Topic != wantTopic[name] || ps[0].Badge != 1 {
			t.Errorf("tenant %s: pushes %+v, want one with topic %s", name, ps, wantTopic[name])
		}
	}
	// acme and otherapp share one client (the team key's), certco has its
	// own: one HTTP/2 connection per credentials and environment.
	if n := len(w.main.providers.apns); n != 2 {
		t.Errorf("APNs clients = %d, want 2 (team key, certificate)", n)
	}
	if n := w.apple.Connections(); n != 2 {
		t.Errorf("APNs connections = %d, want 2 (team key production, certificate sandbox)", n)
	}
	conns := w.apple.Connections()
	w.exchange.Deliver(address, "Again", "Bob", "bob@example.com")
	waitFor(t, "a second push for each tenant", func(ctx context.Context) error {
		return w.apple.WaitFor(ctx, func(ps []apnsfake.Push) bool { return len(ps) >= 6 })
	})
	if n := w.apple.Connections(); n != conns {
		t.Errorf("APNs connections = %d after the second round, %d after the first: want them reused", n, conns)
	}
	// The certificate tenant's provider sent no provider token: only the
	// team key's JWT was seen.
	if n := w.apple.TokensSeen(); n != 1 {
		t.Errorf("provider tokens seen = %d, want 1 (the shared team key's)", n)
	}
}

// TestEndToEndFCM: an Android device registered through the API of
// `mailpush serve` (Main) gets an FCM message through the fake FCM when a
// mail arrives on the fake Exchange. The tenant has its own FCM project.
func TestEndToEndFCM(t *testing.T) {
	google := fcmfake.New()
	t.Cleanup(google.Close)
	w := newWorldWith(t, "info", worldOptions{extra: func(w *world) (string, []*x509.Certificate) {
		creds, err := google.NewServiceAccount("droid-project")
		if err != nil {
			t.Fatal(err)
		}
		file := filepath.Join(w.dir, "service-account.json")
		os.WriteFile(file, creds, 0o600)
		return fmt.Sprintf(`tenants:
  droid:
    fcm:
      projectId: droid-project
      credentialsFile: %s
      endpoint: %s
      tokenUrl: %s
`, file, google.URL(), google.TokenURL()), google.Certificates()
	}})
	fcmToken := strings.Repeat("dRoId_tOkEn-", 12)
	w.register(t, w.addTenant(t, "droid"), map[string]any{"platform": "android", "token": fcmToken})

	w.exchange.Deliver(address, "Hello Android", "Bob", "bob@example.com")
	waitFor(t, "the FCM message", func(ctx context.Context) error {
		return google.WaitFor(ctx, func(ms []fcmfake.Message) bool { return len(ms) >= 1 })
	})
	ms := google.Messages()
	if len(ms) != 1 || ms[0].Project != "droid-project" || ms[0].Token != fcmToken {
		t.Fatalf("FCM messages = %+v", ms)
	}
	if fmt.Sprint(ms[0].Data) == "map[]" {
		t.Errorf("message carries no data: %+v", ms[0])
	}
	if strings.Contains(fmt.Sprint(ms[0]), "Hello Android") {
		t.Errorf("badge-only device got the subject: %+v", ms[0])
	}
	w.waitMetrics(t, `mailpush_pushes_total{provider="fcm",reason="",result="delivered"} 1`)
	if google.TokenRequests() < 1 {
		t.Error("no OAuth token was fetched")
	}
}
