package fcm_test

import (
	"context"
	"crypto/x509"
	"net/http"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/mailpush/mailpush"
	"github.com/mailpush/mailpush/fake/fcmfake"
	"github.com/mailpush/mailpush/fcm"
)

const project = "acme-mail-12345"

func newClient(t *testing.T) (*fcm.Client, *fcmfake.Server) {
	t.Helper()
	f := fcmfake.New()
	t.Cleanup(f.Close)
	creds, err := f.NewServiceAccount(project)
	if err != nil {
		t.Fatal(err)
	}
	return clientFor(t, f, project, creds), f
}

func clientFor(t *testing.T, f *fcmfake.Server, projectID string, creds []byte) *fcm.Client {
	t.Helper()
	pool := x509.NewCertPool()
	for _, c := range f.Certificates() {
		pool.AddCert(c)
	}
	c, err := fcm.New(fcm.Config{ProjectID: projectID, Credentials: creds, Endpoint: f.URL(), RootCAs: pool})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func token(s string) string { return s + strings.Repeat("x", 140) }

func push(kind mailpush.PushKind, tok string) *mailpush.Push {
	return &mailpush.Push{ID: "p1", Kind: kind, Badge: 3, Seq: 9, CollapseID: "mb-1",
		Device: mailpush.Device{Platform: mailpush.PlatformAndroid, Token: tok}}
}

func TestMessagesReachTheFake(t *testing.T) {
	c, f := newClient(t)
	ctx := context.Background()
	alert := push(mailpush.PushAlert, token("alert"))
	alert.Subject, alert.Sender = "Quarterly report", "Bob"
	sealed := push(mailpush.PushAlert, token("sealed"))
	sealed.Sealed = "ciphertext"
	for _, p := range []*mailpush.Push{push(mailpush.PushBadge, token("badge")), push(mailpush.PushSync, token("sync")), alert, sealed} {
		res, err := c.Push(ctx, p)
		if err != nil || res.Outcome != mailpush.PushDelivered {
			t.Fatalf("push %s: %+v, %v", p.Kind, res, err)
		}
	}
	ms := f.Messages()
	if len(ms) != 4 {
		t.Fatalf("messages = %d", len(ms))
	}
	b, s, a, e := ms[0], ms[1], ms[2], ms[3]
	if b.Project != project || b.Data["type"] != "badge" || b.Data["badge"] != "3" || b.Data["seq"] != "9" || b.Priority != "normal" || b.CollapseKey != "mb-1" || b.Title != "" {
		t.Errorf("badge message = %+v", b)
	}
	if s.Data["type"] != "sync" || s.Priority != "normal" {
		t.Errorf("sync message = %+v", s)
	}
	if a.Title != "Bob" || a.Body != "Quarterly report" || a.Priority != "high" {
		t.Errorf("alert message = %+v", a)
	}
	if e.Title != "" || e.Body != "" || e.Data["enc"] != "ciphertext" || e.Priority != "high" {
		t.Errorf("sealed alert carries more than ciphertext: %+v", e)
	}
	if n := f.TokenRequests(); n != 1 {
		t.Errorf("token requests = %d, want 1 (the access token is reused)", n)
	}
}

func TestLongSubjectIsCutOnARuneBoundary(t *testing.T) {
	c, f := newClient(t)
	p := push(mailpush.PushAlert, token("long"))
	p.Subject = strings.Repeat("é", 3000)
	if res, err := c.Push(context.Background(), p); err != nil || res.Outcome != mailpush.PushDelivered {
		t.Fatalf("%+v, %v", res, err)
	}
	body := f.Messages()[0].Body
	if !utf8.ValidString(body) || !strings.HasSuffix(body, "…") || len(body) > fcmfake.MaxPayload {
		t.Errorf("body of %d bytes, valid UTF-8 %v", len(body), utf8.ValidString(body))
	}
}

func TestErrorsAreClassified(t *testing.T) {
	c, f := newClient(t)
	ctx := context.Background()
	f.SetUnregistered(token("gone"))
	if res, _ := c.Push(ctx, push(mailpush.PushBadge, token("gone"))); res.Outcome != mailpush.PushDropToken || res.Reason != "UNREGISTERED" || res.Status != 404 {
		t.Errorf("unregistered: %+v", res)
	}
	cases := []struct {
		status int
		code   string
		want   mailpush.PushOutcome
	}{
		{429, "QUOTA_EXCEEDED", mailpush.PushRetry},
		{503, "UNAVAILABLE", mailpush.PushRetry},
		{500, "INTERNAL", mailpush.PushRetry},
		{400, "INVALID_ARGUMENT", mailpush.PushFailed},
		{403, "SENDER_ID_MISMATCH", mailpush.PushDropToken},
	}
	for _, tc := range cases {
		f.FailNext(1, tc.status, tc.code, 7)
		res, err := c.Push(ctx, push(mailpush.PushBadge, token("ok")))
		if err != nil || res.Outcome != tc.want || res.Reason != tc.code || res.Status != tc.status {
			t.Errorf("%d %s: %+v, %v; want %v", tc.status, tc.code, res, err, tc.want)
		}
		if tc.code == "QUOTA_EXCEEDED" && res.RetryAfter.Seconds() != 7 {
			t.Errorf("Retry-After = %v, want 7s", res.RetryAfter)
		}
	}
	// A malformed token is refused by the fake as FCM does: a permanent failure.
	if res, _ := c.Push(ctx, push(mailpush.PushBadge, "bad token with spaces and more than thirty-two chars")); res.Outcome != mailpush.PushFailed || res.Status != http.StatusBadRequest {
		t.Errorf("bad token: %+v", res)
	}
}

func TestServiceAccountOfAnotherProject(t *testing.T) {
	f := fcmfake.New()
	t.Cleanup(f.Close)
	other, err := f.NewServiceAccount("other-project")
	if err != nil {
		t.Fatal(err)
	}
	c := clientFor(t, f, project, other)
	res, err := c.Push(context.Background(), push(mailpush.PushBadge, token("t")))
	if err != nil || res.Outcome != mailpush.PushDropToken || res.Reason != "SENDER_ID_MISMATCH" {
		t.Errorf("%+v, %v", res, err)
	}
}

func TestTokenEndpointDown(t *testing.T) {
	c, f := newClient(t)
	f.SetTokenEndpointDown(true)
	res, err := c.Push(context.Background(), push(mailpush.PushBadge, token("t")))
	if err == nil || res.Outcome != mailpush.PushRetry || f.Requests() != 0 {
		t.Fatalf("token endpoint down: %+v, %v, %d sends", res, err, f.Requests())
	}
	f.SetTokenEndpointDown(false)
	if res, err := c.Push(context.Background(), push(mailpush.PushBadge, token("t"))); err != nil || res.Outcome != mailpush.PushDelivered {
		t.Fatalf("after recovery: %+v, %v", res, err)
	}
}

func TestConfigErrors(t *testing.T) {
	for _, cfg := range []fcm.Config{{}, {ProjectID: "p", Credentials: []byte("{}")}, {ProjectID: "p", Endpoint: "http://x"}} {
		if _, err := fcm.New(cfg); err == nil {
			t.Errorf("New(%+v) accepted", cfg)
		}
	}
}
