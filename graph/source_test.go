package graph_test

import (
	"bytes"
	"context"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v4"

	"github.com/mailpush/mailpush"
	"github.com/mailpush/mailpush/fake/graphfake"
	"github.com/mailpush/mailpush/graph"
	"github.com/mailpush/mailpush/sqlite"
	"github.com/mailpush/mailpush/storetest"
	"github.com/mailpush/mailpush/subscription"
)

const (
	clientID = "11111111-2222-4333-8444-555555555555"
	secret   = "test secret ~ 42"
	user     = "adele.vance@contoso.example"
)

// sink plays the pipeline: an unresolved event is resolved (as after the
// claim) and then recorded.
type sink struct {
	mu     sync.Mutex
	events []mailpush.Event
	ch     chan struct{}
	src    *graph.Source
	wg     sync.WaitGroup
}

func (s *sink) HandleUnresolvedEvent(ctx context.Context, ev mailpush.Event) error {
	s.wg.Go(func() {
		oe := &mailpush.OutboxEvent{Event: ev, Unresolved: true}
		if err := s.src.Resolve(context.Background(), oe); err != nil {
			panic(err)
		}
		s.HandleEvent(context.Background(), oe.Event)
	})
	return nil
}

func (s *sink) HandleEvent(_ context.Context, ev mailpush.Event) error {
	s.mu.Lock()
	s.events = append(s.events, ev)
	s.mu.Unlock()
	select {
	case s.ch <- struct{}{}:
	default:
	}
	return nil
}

func (s *sink) all() []mailpush.Event {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]mailpush.Event(nil), s.events...)
}

type fixture struct {
	fake   *graphfake.Server
	src    *graph.Source
	store  *sqlite.Store
	sink   *sink
	tenant *mailpush.Tenant
	logs   *bytes.Buffer
	url    string
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	ctx := context.Background()
	f := &fixture{sink: &sink{ch: make(chan struct{}, 1)}, logs: &bytes.Buffer{}}
	f.fake = graphfake.New(graphfake.Options{})
	t.Cleanup(f.fake.Close)
	f.fake.AddApp(clientID, secret, nil)
	f.fake.AddUser(user)
	keys := storetest.Keyring(t)
	var err error
	f.store, err = sqlite.Open(ctx, filepath.Join(t.TempDir(), "t.db"), keys, mailpush.SystemClock{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.store.Close() })
	f.tenant = &mailpush.Tenant{Name: "acme", MaxContent: mailpush.ContentSubjectSender}
	if err := f.store.CreateTenant(ctx, f.tenant); err != nil {
		t.Fatal(err)
	}
	logger := slog.New(slog.NewTextHandler(&syncWriter{b: f.logs}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	f.src = &graph.Source{Store: f.store, Sealer: keys, Hasher: keys, Sink: f.sink,
		Apps:   map[string]*graph.App{"acme": {TenantID: f.fake.TenantID(), ClientID: clientID, ClientSecret: secret, Authority: f.fake.Authority(), BaseURL: f.fake.GraphURL()}},
		HTTP:   f.fake.HTTPClient(),
		Logger: logger, Clock: mailpush.SystemClock{}}
	f.sink.src = f.src
	t.Cleanup(f.sink.wg.Wait)
	f.src.Engine = &subscription.Engine{Store: f.store, Source: mailpush.SourceGraph, Healer: f.src, Logger: logger, Clock: mailpush.SystemClock{}, DueAfter: f.src.RenewAfter(), MaxPerAccount: 4}
	mux := http.NewServeMux()
	mux.Handle("POST "+graph.NotifyPath+"{token}", f.src)
	mux.Handle("POST "+graph.LifecyclePath+"{token}", f.src)
	ts := httptest.NewServer(mux)
	t.Cleanup(ts.Close)
	f.url = ts.URL
	f.src.PublicURL = ts.URL
	f.src.Run(ctx)
	t.Cleanup(f.src.Close)
	return f
}

type syncWriter struct {
	mu sync.Mutex
	b  *bytes.Buffer
}

func (w *syncWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func (w *syncWriter) String() string { return "" }

func (f *fixture) logText() string {
	// the handler writes through syncWriter; reading under no lock is fine
	// once the source is idle in these tests.
	return f.logs.String()
}

// register stores a registration for the user's mailbox and watches it.
func (f *fixture) register(t *testing.T, device int, token string) (*mailpush.Mailbox, error) {
	t.Helper()
	ctx := context.Background()
	if err := f.src.VerifyCredentials(ctx, f.tenant, user, mailpush.Credentials{AccessToken: token}); err != nil {
		return nil, err
	}
	keys := f.src.Hasher
	mb := &mailpush.Mailbox{TenantID: f.tenant.ID, AddressHash: keys.HashAddress(f.tenant.ID, user), Source: mailpush.SourceGraph, Mode: mailpush.ModeService, Badge: mailpush.NoBadge, Status: mailpush.StatusPending, Address: user}
	reg := &mailpush.Registration{Device: mailpush.Device{Platform: mailpush.PlatformIOS, Token: fmt.Sprintf("%064x", device)}, Content: mailpush.ContentSubjectSender, Status: mailpush.StatusPending, ExpiresAt: time.Now().Add(time.Hour)}
	stored, err := f.store.Register(ctx, reg, mb, nil)
	if err != nil {
		t.Fatal(err)
	}
	stored.Address = user
	res, err := f.src.Watch(ctx, f.tenant, stored, reg, mailpush.Credentials{})
	if err != nil {
		return nil, err
	}
	if res.Status == mailpush.StatusActive {
		f.store.UpdateRegistration(ctx, f.tenant.ID, reg.ID, func(r *mailpush.Registration) error { r.Status = mailpush.StatusActive; return nil })
	}
	return f.store.Mailbox(ctx, stored.ID)
}

func TestUserTokenProvesTheMailbox(t *testing.T) {
	f := newFixture(t)
	other := graphfake.New(graphfake.Options{TenantID: f.fake.TenantID()}) // same tenant ID, another signing key
	t.Cleanup(other.Close)
	for _, tc := range []struct {
		name  string
		token string
	}{
		{"wrong audience", f.fake.UserToken(user, "another-app", time.Hour, nil)},
		{"expired", f.fake.UserToken(user, clientID, -2*time.Minute, nil)},
		{"another user", f.fake.UserToken("mallory@contoso.example", clientID, time.Hour, nil)},
		{"wrong issuer", f.fake.UserToken(user, clientID, time.Hour, func(c jwt.MapClaims) { c["iss"] = "https://evil.example/tenant/v2.0" })},
		{"signed by another key", other.UserToken(user, clientID, time.Hour, nil)},
		{"not a JWT", "eyJhbGciOi.not-a-token"},
		{"unsigned", func() string {
			s, _ := jwt.NewWithClaims(jwt.SigningMethodNone, jwt.MapClaims{"aud": clientID, "preferred_username": user}).SignedString(jwt.UnsafeAllowNoneSignatureType)
			return s
		}()},
	} {
		_, err := f.register(t, 1, tc.token)
		if mailpush.ErrorCode(err) != mailpush.ECredentials {
			t.Errorf("%s: err = %v, want %s", tc.name, err, mailpush.ECredentials)
		}
	}
	if n := f.fake.Requests("create"); n != 0 {
		t.Fatalf("%d subscriptions created for refused tokens", n)
	}
	mb, err := f.register(t, 1, f.fake.UserToken(user, clientID, time.Hour, nil))
	if err != nil || mb.Status != mailpush.StatusActive || mb.SubscriptionID == "" {
		t.Fatalf("good token: %+v %v", mb, err)
	}
	if _, err := f.register(t, 2, f.fake.UserToken(strings.ToUpper(user), clientID, time.Hour, nil)); err != nil {
		t.Fatalf("second device (UPN in another case): %v", err)
	}
	if n := f.fake.Requests("create"); n != 1 {
		t.Errorf("%d subscriptions created for one mailbox, want 1", n)
	}
}

func (f *fixture) waitEvents(t *testing.T, n int) []mailpush.Event {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		if evs := f.sink.all(); len(evs) >= n {
			return evs
		}
		select {
		case <-f.sink.ch:
		case <-deadline:
			t.Fatalf("%d events, want %d: %+v", len(f.sink.all()), n, f.sink.all())
		}
	}
}

func TestNotificationsThatAreNotOursAreIgnored(t *testing.T) {
	f := newFixture(t)
	mb, err := f.register(t, 1, f.fake.UserToken(user, clientID, time.Hour, nil))
	if err != nil {
		t.Fatal(err)
	}
	before := len(f.waitEvents(t, 1)) // the initial badge
	sub := f.fake.Subscriptions()[0]
	note := func(subID, clientState string) []byte {
		return []byte(fmt.Sprintf(`{"value":[{"subscriptionId":%q,"clientState":%q,"changeType":"created","resource":"Users/x/Messages/m1","resourceData":{"id":"m1"}}]}`, subID, clientState))
	}
	for _, tc := range []struct {
		name   string
		body   []byte
		status int
	}{
		{"wrong clientState", note(sub.ID, "guessed"), 202},
		{"empty clientState", note(sub.ID, ""), 202},
		{"unknown subscription", note("sub-unknown", sub.ClientState), 202},
		{"malformed JSON", []byte(`{"value":[{"subscriptionId":`), 400},
		{"no value", []byte(`{}`), 400},
		{"bad changeType", []byte(`{"value":[{"subscriptionId":"s","changeType":"exploded"}]}`), 400},
		{"too many", []byte(`{"value":[` + strings.Repeat(`{"subscriptionId":"s","changeType":"created"},`, graph.MaxNotifications) + `{"subscriptionId":"s","changeType":"created"}]}`), 400},
		{"oversized", append([]byte(`{"value":[],"x":"`), append(bytes.Repeat([]byte("a"), graph.MaxNotificationSize), '"', '}')...), 413},
	} {
		st, err := f.fake.Inject(sub.ID, tc.body)
		if err != nil || st != tc.status {
			t.Errorf("%s: %d %v, want %d", tc.name, st, err, tc.status)
		}
	}
	// A good one goes through: the others queued nothing before it.
	f.fake.Deliver(user, "Hello", "Bob", "bob@contoso.example")
	evs := f.waitEvents(t, before+1)
	if len(evs) != before+1 || evs[before].Kind != mailpush.EventNewMail || evs[before].Badge != 1 || evs[before].Subject != "Hello" {
		t.Fatalf("events = %+v, want exactly one new mail with badge 1", evs)
	}
	for _, want := range []string{"wrong clientState", "unknown subscription", "malformed batch"} {
		if !strings.Contains(f.logText(), want) {
			t.Errorf("no log line says %q", want)
		}
	}
	stored, _ := f.store.Mailbox(context.Background(), mb.ID)
	if stored.SubscriptionID != sub.ID {
		t.Errorf("subscription changed by ignored notifications: %q", stored.SubscriptionID)
	}
}

func TestValidationOnlyWhileCreating(t *testing.T) {
	f := newFixture(t)
	if _, err := f.register(t, 1, f.fake.UserToken(user, clientID, time.Hour, nil)); err != nil {
		t.Fatal(err)
	}
	sub := f.fake.Subscriptions()[0]
	res, err := http.Post(sub.NotificationURL+"?validationToken=unasked", "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusForbidden {
		t.Fatalf("validation for a subscription nobody is creating = %d, want 403", res.StatusCode)
	}
}

func TestRenewalWaitsOutRetryAfterAndRecreatesAGoneSubscription(t *testing.T) {
	f := newFixture(t)
	mb, err := f.register(t, 1, f.fake.UserToken(user, clientID, time.Hour, nil))
	if err != nil {
		t.Fatal(err)
	}
	f.fake.FailNext("renew", http.StatusTooManyRequests, 1)
	if out := f.src.Heal(context.Background(), mb); out != mailpush.HealResubscribed {
		t.Fatalf("Heal = %v, want renewed after the Retry-After", out)
	}
	if n := f.fake.Requests("renew"); n != 2 {
		t.Errorf("%d renew requests, want 2 (one throttled)", n)
	}
	if s := f.fake.Subscriptions(); len(s) != 1 || s[0].Renewals != 1 {
		t.Fatalf("subscriptions = %+v", s)
	}
	// Gone on Graph: made again (the address is in memory).
	sub := f.fake.Subscriptions()[0]
	f.fake.Lifecycle(sub.ID, "subscriptionRemoved")
	waitFor(t, func() bool {
		s := f.fake.Subscriptions()
		return len(s) == 1 && s[0].ID != sub.ID
	})
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10 s")
		}
		time.Sleep(5 * time.Millisecond) // polling with a deadline
	}
}

// Rich notifications: content is used only with valid validationTokens and
// a valid dataSignature; otherwise the event carries no content from it.
func TestRichContentNeedsValidTokensAndSignature(t *testing.T) {
	f := newFixture(t)
	f.src.Certs = &graph.Certs{Dir: t.TempDir(), Clock: mailpush.SystemClock{}}
	if _, err := f.register(t, 1, f.fake.UserToken(user, clientID, time.Hour, nil)); err != nil {
		t.Fatal(err)
	}
	before := len(f.waitEvents(t, 1))
	sub := f.fake.Subscriptions()[0]
	id, certB64, err := f.src.Certs.Current()
	if err != nil || id != sub.EncryptionCertificateID {
		t.Fatalf("certificate %q %v, subscription's %q", id, err, sub.EncryptionCertificateID)
	}
	der, _ := base64.StdEncoding.DecodeString(certB64)
	cert, _ := x509.ParseCertificate(der)
	content := func(subject string, breakSig bool) string {
		data, key, sig, err := graphfake.EncryptContent([]byte(`{"subject":"`+subject+`","from":{"emailAddress":{"name":"Eve"}}}`), cert.PublicKey.(*rsa.PublicKey))
		if err != nil {
			t.Fatal(err)
		}
		if breakSig {
			sig = base64.StdEncoding.EncodeToString(make([]byte, 32))
		}
		return fmt.Sprintf(`{"data":%q,"dataKey":%q,"dataSignature":%q,"encryptionCertificateId":%q}`, data, key, sig, id)
	}
	body := func(ec, token string) []byte {
		return []byte(fmt.Sprintf(`{"value":[{"subscriptionId":%q,"clientState":%q,"changeType":"created","resourceData":{"id":"nope"},"encryptedContent":%s}],"validationTokens":[%q]}`,
			sub.ID, sub.ClientState, ec, token))
	}
	good := f.fake.ValidationToken(clientID, nil)
	for _, tc := range []struct{ name, ec, token string }{
		{"token for another app", content("Forged A", false), f.fake.ValidationToken("another-app", nil)},
		{"token not from Graph's app", content("Forged B", false), f.fake.ValidationToken(clientID, func(c jwt.MapClaims) { c["azp"], c["appid"] = "evil", "evil" })},
		{"expired token", content("Forged C", false), f.fake.ValidationToken(clientID, func(c jwt.MapClaims) { c["exp"] = time.Now().Add(-time.Hour).Unix() })},
		{"bad dataSignature", content("Forged D", true), good},
	} {
		n := len(f.sink.all())
		if st, err := f.fake.Inject(sub.ID, body(tc.ec, tc.token)); err != nil || st != 202 {
			t.Fatalf("%s: %d %v", tc.name, st, err)
		}
		evs := f.waitEvents(t, n+1)
		if ev := evs[len(evs)-1]; ev.Subject != "" {
			t.Errorf("%s: content %q used", tc.name, ev.Subject)
		}
	}
	n := len(f.sink.all())
	f.fake.Inject(sub.ID, body(content("Genuine", false), good))
	if evs := f.waitEvents(t, n+1); evs[len(evs)-1].Subject != "Genuine" || evs[len(evs)-1].Sender != "Eve" {
		t.Errorf("genuine rich notification: %+v", evs[len(evs)-1])
	}
	_ = before
}
