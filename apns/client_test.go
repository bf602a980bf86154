package apns_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/x509"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/mailpush/mailpush"
	"github.com/mailpush/mailpush/apns"
	"github.com/mailpush/mailpush/fake/apnsfake"
)

const (
	team  = "TEAM123456"
	kid   = "KEY1234567"
	topic = "com.example.mail"
	tokA  = "a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1"
	tokB  = "b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2"
	pid   = "123e4567-e89b-12d3-a456-426614174000"
)

// syncBuffer is a log sink that tests can read while the client writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type env struct {
	fake   *apnsfake.Server
	client *apns.Client
	key    *ecdsa.PrivateKey
	p8     []byte
	logs   *syncBuffer
}

// setup starts a fake APNs that trusts a fresh key and a client that uses
// it for both environments.
func setup(t testing.TB, opts apnsfake.Options) *env {
	t.Helper()
	key, p8, err := apnsfake.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	fake := apnsfake.New(opts)
	t.Cleanup(fake.Close)
	fake.AddKey(team, kid, &key.PublicKey)
	fake.AllowTopic(topic)
	e := &env{fake: fake, key: key, p8: p8, logs: &syncBuffer{}}
	e.client = e.newClient(t, func(*apns.Config) {})
	return e
}

func (e *env) newClient(t testing.TB, edit func(*apns.Config)) *apns.Client {
	t.Helper()
	cfg := apns.Config{
		ProductionURL: e.fake.URL(),
		SandboxURL:    e.fake.URL(),
		TeamID:        team,
		KeyID:         kid,
		PrivateKey:    e.p8,
		Topic:         topic,
		RootCAs:       e.fake.CertPool(),
		Logger:        slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	edit(&cfg)
	c, err := apns.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func badgePush(token string, badge int) *mailpush.Push {
	return &mailpush.Push{
		ID:         pid,
		Device:     mailpush.Device{Platform: mailpush.PlatformIOS, Token: token, Environment: mailpush.EnvProduction},
		Kind:       mailpush.PushBadge,
		Badge:      badge,
		CollapseID: "mb-1",
		Seq:        41,
		CreatedAt:  time.Unix(1700000000, 0),
	}
}

func push(t *testing.T, c *apns.Client, p *mailpush.Push) mailpush.PushResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := c.Push(ctx, p)
	if err != nil {
		t.Fatalf("Push: %v", err)
	}
	return res
}

func TestPushPayloads(t *testing.T) {
	e := setup(t, apnsfake.Options{})
	created := time.Unix(1700000000, 0)
	base := func(kind mailpush.PushKind) *mailpush.Push {
		p := badgePush(tokA, 5)
		p.Kind = kind
		return p
	}
	alert := base(mailpush.PushAlert)
	alert.Subject, alert.Sender = "Quarterly figures", "Ann Example"
	sealed := base(mailpush.PushAlert)
	sealed.Sealed = "c2VhbGVkLWNpcGhlcnRleHQ"
	noBadge := base(mailpush.PushBadge)
	noBadge.Badge = mailpush.NoBadge

	tests := []struct {
		name string
		push *mailpush.Push
		want apnsfake.Push
		raw  string
	}{
		{"badge", base(mailpush.PushBadge),
			apnsfake.Push{PushType: "alert", Priority: 10, Badge: 5},
			`{"aps":{"badge":5},"mp":{"seq":41}}`},
		{"badge unknown", noBadge,
			apnsfake.Push{PushType: "alert", Priority: 5, Badge: -1},
			`{"aps":{},"mp":{"seq":41}}`},
		{"sync", base(mailpush.PushSync),
			apnsfake.Push{PushType: "background", Priority: 5, Badge: -1, ContentAvailable: true},
			`{"aps":{"content-available":1},"mp":{"seq":41}}`},
		{"alert", alert,
			apnsfake.Push{PushType: "alert", Priority: 10, Badge: 5, AlertTitle: "Ann Example", AlertBody: "Quarterly figures", Sound: "default"},
			`{"aps":{"alert":{"title":"Ann Example","body":"Quarterly figures"},"badge":5,"sound":"default"},"mp":{"seq":41}}`},
		{"sealed alert", sealed,
			apnsfake.Push{PushType: "alert", Priority: 10, Badge: 5, AlertTitle: "New mail", AlertBody: "New mail", Sound: "default",
				MutableContent: true, Enc: "c2VhbGVkLWNpcGhlcnRleHQ"},
			`{"aps":{"alert":{"title":"New mail","body":"New mail"},"badge":5,"sound":"default","mutable-content":1},"mp":{"seq":41,"enc":"c2VhbGVkLWNpcGhlcnRleHQ"}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e.fake.Reset()
			res := push(t, e.client, tt.push)
			if res.Outcome != mailpush.PushDelivered || res.Status != 200 {
				t.Fatalf("result %+v, want delivered with 200", res)
			}
			got := e.fake.PushesFor(tokA)
			if len(got) != 1 {
				t.Fatalf("fake has %d pushes, want 1", len(got))
			}
			g := got[0]
			if string(g.Payload) != tt.raw {
				t.Errorf("payload\n %s\nwant\n %s", g.Payload, tt.raw)
			}
			w := tt.want
			w.Token, w.Topic, w.ID, w.CollapseID, w.Seq = tokA, topic, pid, "mb-1", 41
			w.Expiration = created.Add(24 * time.Hour)
			w.Payload, w.At = g.Payload, g.At
			if !equalPush(g, w) {
				t.Errorf("fake recorded\n %+v\nwant\n %+v", g, w)
			}
		})
	}
}

func equalPush(a, b apnsfake.Push) bool {
	ap, bp := a.Payload, b.Payload
	a.Payload, b.Payload = nil, nil
	a.Expiration, b.Expiration = a.Expiration.UTC(), b.Expiration.UTC()
	a.At, b.At = time.Time{}, time.Time{}
	return bytes.Equal(ap, bp) && a.Token == b.Token && a.Topic == b.Topic && a.PushType == b.PushType &&
		a.CollapseID == b.CollapseID && a.ID == b.ID && a.Priority == b.Priority && a.Expiration.Equal(b.Expiration) &&
		a.Badge == b.Badge && a.ContentAvailable == b.ContentAvailable && a.MutableContent == b.MutableContent &&
		a.AlertTitle == b.AlertTitle && a.AlertBody == b.AlertBody && a.Sound == b.Sound && a.Enc == b.Enc && a.Seq == b.Seq
}

func TestPushHeadersNormalised(t *testing.T) {
	e := setup(t, apnsfake.Options{})
	p := badgePush(tokA, 1)
	p.ID = "not-a-uuid"
	p.CollapseID = strings.Repeat("mailbox-", 20) // 160 bytes
	if res := push(t, e.client, p); res.Outcome != mailpush.PushDelivered {
		t.Fatalf("result %+v, want delivered", res)
	}
	g := e.fake.PushesFor(tokA)[0]
	if len(g.ID) != 36 || g.ID == p.ID {
		t.Errorf("apns-id %q: want one made by APNs", g.ID)
	}
	if len(g.CollapseID) != 64 {
		t.Errorf("collapse ID %q: want 64 bytes", g.CollapseID)
	}
}

// TestPushSendsOnlyFieldsAPNsReads looks at the header fields on the wire:
// every field APNs does not read is HPACK work on every push, so net/http's
// own user-agent and accept-encoding are not sent, nor content-type, nor
// apns-priority when it is APNs' default of 10.
func TestPushSendsOnlyFieldsAPNsReads(t *testing.T) {
	got := make(chan http.Header, 2)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ProtoMajor != 2 {
			t.Errorf("request over %s, want HTTP/2", r.Proto)
		}
		got <- r.Header.Clone()
	}))
	srv.EnableHTTP2 = true
	srv.StartTLS()
	t.Cleanup(srv.Close)
	roots := x509.NewCertPool()
	roots.AddCert(srv.Certificate())
	_, p8, err := apnsfake.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	c, err := apns.New(apns.Config{ProductionURL: srv.URL, SandboxURL: srv.URL, TeamID: team, KeyID: kid,
		PrivateKey: p8, Topic: topic, RootCAs: roots, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)

	alert := badgePush(tokA, 3)
	if res := push(t, c, alert); res.Outcome != mailpush.PushDelivered {
		t.Fatalf("alert push: %+v", res)
	}
	h := <-got
	var names []string
	for k := range h {
		names = append(names, strings.ToLower(k))
	}
	slices.Sort(names)
	want := []string{"apns-collapse-id", "apns-expiration", "apns-id", "apns-push-type", "apns-topic", "authorization", "content-length"}
	if !slices.Equal(names, want) {
		t.Errorf("alert push sent header fields %v, want exactly %v", names, want)
	}

	bg := badgePush(tokA, 0)
	bg.Kind = mailpush.PushSync
	if res := push(t, c, bg); res.Outcome != mailpush.PushDelivered {
		t.Fatalf("sync push: %+v", res)
	}
	if h := <-got; h.Get("apns-priority") != "5" || h.Get("apns-push-type") != "background" {
		t.Errorf("background push: priority %q, push type %q; want 5, background", h.Get("apns-priority"), h.Get("apns-push-type"))
	}
}

func TestOversizedSubjectTruncated(t *testing.T) {
	e := setup(t, apnsfake.Options{})
	p := badgePush(tokA, 2)
	p.Kind = mailpush.PushAlert
	p.Subject = strings.Repeat("Überweisung <fällig> & 至急 📬 ", 300)
	p.Sender = "Zoë"
	if res := push(t, e.client, p); res.Outcome != mailpush.PushDelivered {
		t.Fatalf("result %+v, want delivered", res)
	}
	g := e.fake.PushesFor(tokA)[0]
	if len(g.Payload) > 4096 {
		t.Errorf("payload of %d bytes", len(g.Payload))
	}
	if !utf8.ValidString(g.AlertBody) || !strings.HasSuffix(g.AlertBody, "…") ||
		!strings.HasPrefix(p.Subject, strings.TrimSuffix(g.AlertBody, "…")) || len(g.AlertBody) < 1000 {
		t.Errorf("subject arrived as %d bytes %q…: want a long prefix of the original ending in …", len(g.AlertBody), g.AlertBody[:40])
	}
	if g.AlertTitle != "Zoë" {
		t.Errorf("sender %q, want it untouched", g.AlertTitle)
	}
}

func TestPushOutcomes(t *testing.T) {
	invalidAt := time.UnixMilli(1700000000123)
	tests := []struct {
		name       string
		setup      func(*apnsfake.Server)
		token      string
		outcome    mailpush.PushOutcome
		status     int
		reason     string
		retryAfter time.Duration
		invalidAt  time.Time
	}{
		{"410 unregistered", func(f *apnsfake.Server) { f.SetTokenUnregistered(tokA, invalidAt) }, tokA,
			mailpush.PushDropToken, 410, "Unregistered", 0, invalidAt},
		{"410 expired token", func(f *apnsfake.Server) { f.FailNext(1, 410, "ExpiredToken") }, tokA,
			mailpush.PushDropToken, 410, "ExpiredToken", 0, time.Time{}}, // invalidAt checked below: set
		{"bad device token", func(*apnsfake.Server) {}, tokA[:32],
			mailpush.PushDropToken, 400, "BadDeviceToken", 0, time.Time{}},
		{"token not for topic", func(f *apnsfake.Server) { f.FailNext(1, 400, "DeviceTokenNotForTopic") }, tokA,
			mailpush.PushDropToken, 400, "DeviceTokenNotForTopic", 0, time.Time{}},
		{"429", func(f *apnsfake.Server) { f.FailNext(1, 429, "TooManyRequests") }, tokA,
			mailpush.PushRetry, 429, "TooManyRequests", 2 * time.Second, time.Time{}},
		{"500", func(f *apnsfake.Server) { f.FailNext(1, 500, "InternalServerError") }, tokA,
			mailpush.PushRetry, 500, "InternalServerError", 0, time.Time{}},
		{"503", func(f *apnsfake.Server) { f.FailNext(1, 503, "ServiceUnavailable") }, tokA,
			mailpush.PushRetry, 503, "ServiceUnavailable", 2 * time.Second, time.Time{}},
		{"expired provider token", func(f *apnsfake.Server) { f.FailNext(1, 403, "ExpiredProviderToken") }, tokA,
			mailpush.PushRetry, 403, "ExpiredProviderToken", 0, time.Time{}},
		{"bad collapse ID", func(f *apnsfake.Server) { f.FailNext(1, 400, "BadCollapseId") }, tokA,
			mailpush.PushFailed, 400, "BadCollapseId", 0, time.Time{}},
		{"payload too large", func(f *apnsfake.Server) { f.FailNext(1, 413, "PayloadTooLarge") }, tokA,
			mailpush.PushFailed, 413, "PayloadTooLarge", 0, time.Time{}},
	}
	e := setup(t, apnsfake.Options{RetryAfter: 2 * time.Second})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e.fake.Reset()
			tt.setup(e.fake)
			p := badgePush(tt.token, 1)
			p.Kind, p.Subject, p.Sender = mailpush.PushAlert, "Top secret subject", "Secret Sender"
			res := push(t, e.client, p)
			if res.Outcome != tt.outcome || res.Status != tt.status || res.Reason != tt.reason || res.RetryAfter != tt.retryAfter {
				t.Errorf("result %+v, want %v %d %s retry after %v", res, tt.outcome, tt.status, tt.reason, tt.retryAfter)
			}
			switch {
			case !tt.invalidAt.IsZero() && !res.InvalidAt.Equal(tt.invalidAt):
				t.Errorf("InvalidAt %v, want %v (to the millisecond)", res.InvalidAt, tt.invalidAt)
			case tt.status == 410 && res.InvalidAt.IsZero():
				t.Error("410 without InvalidAt")
			case tt.status != 410 && !res.InvalidAt.IsZero():
				t.Errorf("InvalidAt %v on a %d", res.InvalidAt, tt.status)
			}
		})
	}
	logs := e.logs.String()
	for _, secret := range []string{tokA, tokA[:32], "Top secret subject", "Secret Sender"} {
		if strings.Contains(logs, secret) {
			t.Errorf("logs carry %q:\n%s", secret, logs)
		}
	}
	if !strings.Contains(logs, tokA[:8]) {
		t.Errorf("logs do not identify the token by its prefix:\n%s", logs)
	}
}

func TestWrongSigningKey(t *testing.T) {
	e := setup(t, apnsfake.Options{})
	_, other, err := apnsfake.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	c := e.newClient(t, func(cfg *apns.Config) { cfg.PrivateKey = other })
	res := push(t, c, badgePush(tokA, 1))
	if res.Outcome != mailpush.PushFailed || res.Status != 403 || res.Reason != "InvalidProviderToken" {
		t.Errorf("result %+v, want failed 403 InvalidProviderToken", res)
	}
}

func TestWrongTopic(t *testing.T) {
	e := setup(t, apnsfake.Options{})
	c := e.newClient(t, func(cfg *apns.Config) { cfg.Topic = "com.example.other" })
	res := push(t, c, badgePush(tokA, 1))
	if res.Outcome != mailpush.PushFailed || res.Status != 400 || res.Reason != "TopicDisallowed" {
		t.Errorf("result %+v, want failed 400 TopicDisallowed", res)
	}
}

func TestEnvironments(t *testing.T) {
	e := setup(t, apnsfake.Options{})
	sandbox := apnsfake.New(apnsfake.Options{})
	t.Cleanup(sandbox.Close)
	sandbox.AddKey(team, kid, &e.key.PublicKey)
	sandbox.AllowTopic(topic)
	roots := x509.NewCertPool()
	roots.AddCert(e.fake.Certificate())
	roots.AddCert(sandbox.Certificate())
	c := e.newClient(t, func(cfg *apns.Config) {
		cfg.SandboxURL = sandbox.URL()
		cfg.RootCAs = roots
	})

	for _, env := range []mailpush.Environment{mailpush.EnvProduction, mailpush.EnvSandbox, ""} {
		p := badgePush(tokA, 1)
		p.Device.Environment = env
		if res := push(t, c, p); res.Outcome != mailpush.PushDelivered {
			t.Errorf("%q: result %+v", env, res)
		}
	}
	if got, want := len(e.fake.Pushes()), 2; got != want {
		t.Errorf("production got %d pushes, want %d (production and the default)", got, want)
	}
	if got, want := len(sandbox.Pushes()), 1; got != want {
		t.Errorf("sandbox got %d pushes, want %d", got, want)
	}
}

func TestUntrustedServer(t *testing.T) {
	e := setup(t, apnsfake.Options{})
	c := e.newClient(t, func(cfg *apns.Config) { cfg.RootCAs = x509.NewCertPool() })
	res, err := c.Push(context.Background(), badgePush(tokA, 1))
	if err == nil || res.Outcome != mailpush.PushRetry || e.fake.Requests() != 0 {
		t.Errorf("server outside RootCAs: %+v, %v; want a transport error", res, err)
	}
}

func TestTransportErrorRedactsToken(t *testing.T) {
	e := setup(t, apnsfake.Options{})
	e.fake.Close() // nothing listens any more
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := e.client.Push(ctx, badgePush(tokA, 1))
	if err == nil || res.Outcome != mailpush.PushRetry || res.Status != 0 {
		t.Fatalf("Push to a closed server = %+v, %v; want retry with an error", res, err)
	}
	if strings.Contains(err.Error(), tokA) {
		t.Errorf("error carries the device token: %v", err)
	}
}

func TestPushHonoursContext(t *testing.T) {
	e := setup(t, apnsfake.Options{})
	e.fake.SetLatency(time.Hour)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	res, err := e.client.Push(ctx, badgePush(tokA, 1))
	if !errors.Is(err, context.DeadlineExceeded) || res.Outcome != mailpush.PushRetry {
		t.Errorf("slow APNs: %+v, %v; want retry with DeadlineExceeded", res, err)
	}
}

func TestLocalRefusals(t *testing.T) {
	e := setup(t, apnsfake.Options{})
	ctx := context.Background()

	p := badgePush("not/hex?token", 1)
	res, err := e.client.Push(ctx, p)
	if err != nil || res.Outcome != mailpush.PushDropToken || res.Reason != "BadDeviceToken" {
		t.Errorf("non-hex token: %+v, %v; want dropped token", res, err)
	}

	p = badgePush(tokA, 1)
	p.Device.Environment = "staging"
	if res, err := e.client.Push(ctx, p); err == nil || res.Outcome != mailpush.PushFailed {
		t.Errorf("unknown environment: %+v, %v; want failed with an error", res, err)
	}

	p = badgePush(tokA, 1)
	p.Kind = mailpush.PushAlert
	p.Sealed = strings.Repeat("A", 5000)
	if res, err := e.client.Push(ctx, p); !errors.Is(err, apns.ErrPayloadTooLarge) || res.Outcome != mailpush.PushFailed {
		t.Errorf("oversized sealed content: %+v, %v; want failed with ErrPayloadTooLarge", res, err)
	}
	if n := e.fake.Requests(); n != 0 {
		t.Errorf("fake got %d requests, want none", n)
	}
}

func TestConnectionAndTokenReuse(t *testing.T) {
	e := setup(t, apnsfake.Options{})
	push(t, e.client, badgePush(tokA, 0)) // opens the connection
	var wg sync.WaitGroup
	for i := range 50 {
		wg.Go(func() {
			p := badgePush(tokB, i)
			res, err := e.client.Push(context.Background(), p)
			if err != nil || res.Outcome != mailpush.PushDelivered {
				t.Errorf("push %d: %+v, %v", i, res, err)
			}
		})
	}
	wg.Wait()
	p := badgePush(tokA, 1)
	p.Device.Environment = mailpush.EnvSandbox
	push(t, e.client, p)

	if got := len(e.fake.Pushes()); got != 52 {
		t.Errorf("fake has %d pushes, want 52", got)
	}
	// One connection per environment; both environments point at the fake.
	if got := e.fake.Connections(); got != 2 {
		t.Errorf("fake saw %d connections, want 2 (one per environment)", got)
	}
	if got := e.fake.TokensSeen(); got != 1 {
		t.Errorf("fake saw %d provider tokens, want 1 shared by both environments", got)
	}
}

func TestClose(t *testing.T) {
	e := setup(t, apnsfake.Options{})
	push(t, e.client, badgePush(tokA, 1))
	e.client.Close()
	e.client.Close() // twice is fine
	if _, err := e.client.Push(context.Background(), badgePush(tokA, 1)); !errors.Is(err, apns.ErrClosed) {
		t.Errorf("Push after Close: err = %v, want ErrClosed", err)
	}
}

func TestConfigValidate(t *testing.T) {
	_, p8, err := apnsfake.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	good := apns.Config{TeamID: team, KeyID: kid, PrivateKey: p8, Topic: topic}
	if err := good.Validate(); err != nil {
		t.Fatalf("valid config: %v", err)
	}
	rsaLike := []byte("-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----\n")
	tests := []struct {
		name string
		edit func(*apns.Config)
		want string // in the error: the field
	}{
		{"no team", func(c *apns.Config) { c.TeamID = "" }, "Config.TeamID"},
		{"team with spaces", func(c *apns.Config) { c.TeamID = "TEAM 12345" }, "Config.TeamID"},
		{"no key ID", func(c *apns.Config) { c.KeyID = "" }, "Config.KeyID"},
		{"no key", func(c *apns.Config) { c.PrivateKey = nil }, "Config.PrivateKey is empty"},
		{"key not PEM", func(c *apns.Config) { c.PrivateKey = []byte("secret") }, "Config.PrivateKey"},
		{"key not PKCS8", func(c *apns.Config) { c.PrivateKey = rsaLike }, "Config.PrivateKey"},
		{"no topic", func(c *apns.Config) { c.Topic = "" }, "Config.Topic"},
		{"http URL", func(c *apns.Config) { c.ProductionURL = "http://api.push.apple.com" }, "Config.ProductionURL"},
		{"URL with path", func(c *apns.Config) { c.SandboxURL = "https://api.sandbox.push.apple.com/3/device" }, "Config.SandboxURL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := good
			tt.edit(&c)
			err := c.Validate()
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Validate() = %v, want an error naming %s", err, tt.want)
			}
			if _, err := apns.New(c); err == nil {
				t.Error("New accepted the config")
			}
		})
	}
	multi := apns.Config{}
	if err := multi.Validate(); err == nil || strings.Count(err.Error(), "Config.") < 4 {
		t.Errorf("empty config: %v; want every missing field named", err)
	}
}

// BenchmarkPush measures pushes through one client to the fake over a
// single loopback HTTP/2 connection, from 8×GOMAXPROCS goroutines.
func BenchmarkPush(b *testing.B) {
	e := setup(b, apnsfake.Options{})
	ctx := context.Background()
	p := badgePush(tokA, 1)
	p.Kind, p.Subject, p.Sender = mailpush.PushAlert, "Quarterly figures", "Ann Example"
	if res, err := e.client.Push(ctx, p); err != nil || res.Outcome != mailpush.PushDelivered {
		b.Fatalf("warm-up push: %+v, %v", res, err)
	}
	b.SetParallelism(8) // 8×GOMAXPROCS pushes in flight, as a pipeline's workers would have
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			res, err := e.client.Push(ctx, p)
			if err != nil || res.Outcome != mailpush.PushDelivered {
				b.Errorf("push: %+v, %v", res, err)
				return
			}
		}
	})
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "pushes/s")
}
