package apns_test

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/mailpush/mailpush"
	"github.com/mailpush/mailpush/apns"
	"github.com/mailpush/mailpush/fake/apnsfake"
)

// certClient makes a certificate-authenticated client from a .p12 the fake
// issued for topics.
func certClient(t *testing.T, fake *apnsfake.Server, topics ...string) *apns.Client {
	t.Helper()
	p12, err := fake.IssueCertificate("secret", topics...)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := apns.LoadP12(p12, "secret")
	if err != nil {
		t.Fatal(err)
	}
	c, err := apns.New(apns.Config{ProductionURL: fake.URL(), SandboxURL: fake.URL(), Certificate: cert, Topic: topics[0], RootCAs: fake.CertPool()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func TestCertificateAuth(t *testing.T) {
	fake := apnsfake.New(apnsfake.Options{}) // trusts no key: only the certificate can authenticate
	t.Cleanup(fake.Close)
	c := certClient(t, fake, "com.example.cert", "com.example.cert.voip")
	ctx := context.Background()

	res, err := c.Push(ctx, badgePush(tokA, 3))
	if err != nil || res.Outcome != mailpush.PushDelivered {
		t.Fatalf("push with a certificate: %+v, %v", res, err)
	}
	if n := fake.Connections(); n != 1 {
		t.Errorf("connections = %d, want 1", n)
	}
	// Another topic of the same certificate; the view's default
	// environment (sandbox) applies to a device that named none.
	p := badgePush(tokB, 4)
	p.Device.Environment = ""
	res, err = apns.Topic{Client: c, Topic: "com.example.cert.voip", Environment: mailpush.EnvSandbox}.Push(ctx, p)
	if err != nil || res.Outcome != mailpush.PushDelivered {
		t.Fatalf("push to the certificate's second topic: %+v, %v", res, err)
	}
	// A topic the certificate does not name is refused, as Apple does.
	res, err = apns.Topic{Client: c, Topic: "com.other.app"}.Push(ctx, badgePush(tokA, 5))
	if err != nil || res.Outcome != mailpush.PushFailed || res.Status != http.StatusBadRequest || res.Reason != apnsfake.ReasonTopicDisallowed {
		t.Fatalf("push to a topic outside the certificate: %+v, %v", res, err)
	}
	got := fake.Pushes()
	if len(got) != 2 || got[0].Topic != "com.example.cert" || got[0].Badge != 3 || got[1].Topic != "com.example.cert.voip" {
		t.Fatalf("fake accepted %+v", got)
	}
	if fake.TokensSeen() != 0 {
		t.Errorf("a certificate client sent %d provider tokens, want none", fake.TokensSeen())
	}
	// One connection per environment, shared by the topics.
	if n := fake.Connections(); n != 2 {
		t.Errorf("connections = %d, want 2 (production and sandbox)", n)
	}
}

func TestCertificateNotTrusted(t *testing.T) {
	other := apnsfake.New(apnsfake.Options{})
	t.Cleanup(other.Close)
	fake := apnsfake.New(apnsfake.Options{})
	t.Cleanup(fake.Close)
	p12, err := other.IssueCertificate("pw", "com.example.cert")
	if err != nil {
		t.Fatal(err)
	}
	cert, err := apns.LoadP12(p12, "pw")
	if err != nil {
		t.Fatal(err)
	}
	c, err := apns.New(apns.Config{ProductionURL: fake.URL(), SandboxURL: fake.URL(), Certificate: cert, Topic: "com.example.cert", RootCAs: fake.CertPool()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	res, err := c.Push(context.Background(), badgePush(tokA, 1))
	if res.Outcome == mailpush.PushDelivered {
		t.Fatalf("a certificate from another CA was accepted: %+v, %v", res, err)
	}
	if fake.Accepted() != 0 {
		t.Fatalf("fake accepted %d pushes", fake.Accepted())
	}
}

func TestLoadP12(t *testing.T) {
	fake := apnsfake.New(apnsfake.Options{})
	t.Cleanup(fake.Close)
	p12, err := fake.IssueCertificate("right", "com.example.cert")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := apns.LoadP12(p12, "wrong"); err == nil || !strings.Contains(err.Error(), "wrong password") {
		t.Errorf("wrong password: %v", err)
	}
	if _, err := apns.LoadP12([]byte("not a p12"), "x"); err == nil {
		t.Error("garbage accepted")
	}
	cert, err := apns.LoadP12(p12, "right")
	if err != nil {
		t.Fatal(err)
	}
	_, err = apns.New(apns.Config{Certificate: cert, TeamID: "TEAM123456", Topic: "com.example.cert"})
	if err == nil || !strings.Contains(err.Error(), "either certificate or token") {
		t.Errorf("certificate and token together: %v", err)
	}
}
