package pipeline_test

import (
	"context"
	"crypto/ecdh"
	"crypto/hpke"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mailpush/mailpush"
	"github.com/mailpush/mailpush/pipeline"
	"github.com/mailpush/mailpush/seal"
	"github.com/mailpush/mailpush/sqlite"
	"github.com/mailpush/mailpush/storetest"
)

// recorder is a Pusher that records pushes and answers from a script.
type recorder struct {
	mu     sync.Mutex
	pushes []mailpush.Push
	calls  int
	answer func(p *mailpush.Push, call int) (mailpush.PushResult, error)
}

func (r *recorder) Push(ctx context.Context, p *mailpush.Push) (mailpush.PushResult, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls++
	if r.answer != nil {
		res, err := r.answer(p, r.calls)
		if res.Outcome != mailpush.PushDelivered || err != nil {
			return res, err
		}
	}
	r.pushes = append(r.pushes, *p)
	return mailpush.PushResult{Outcome: mailpush.PushDelivered, Status: 200}, nil
}

func (r *recorder) delivered() []mailpush.Push {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]mailpush.Push(nil), r.pushes...)
}

type fixture struct {
	store  *sqlite.Store
	path   string
	clock  *storetest.Clock
	keys   *seal.Keyring
	ios    *recorder
	droid  *recorder
	p      *pipeline.Pipeline
	tenant *mailpush.Tenant
	mb     *mailpush.Mailbox
	seq    int64
}

func newFixture(t testing.TB, cfg pipeline.Config) *fixture {
	t.Helper()
	f := &fixture{clock: storetest.NewClock(), keys: storetest.Keyring(t), ios: &recorder{}, droid: &recorder{}}
	f.path = filepath.Join(t.TempDir(), "p.db")
	s, err := sqlite.Open(context.Background(), f.path, f.keys, f.clock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	f.store = s
	f.tenant = &mailpush.Tenant{Name: "acme", MaxContent: mailpush.ContentSubjectSender}
	if err := s.CreateTenant(context.Background(), f.tenant); err != nil {
		t.Fatal(err)
	}
	cfg.Store, cfg.Clock = s, f.clock
	cfg.Pushers = map[mailpush.Platform]mailpush.Pusher{mailpush.PlatformIOS: f.ios, mailpush.PlatformAndroid: f.droid}
	if cfg.Jitter == nil {
		cfg.Jitter = func(d time.Duration) time.Duration { return d }
	}
	f.p = pipeline.New(cfg)
	return f
}

// register adds an active device to the fixture's mailbox.
func (f *fixture) register(t testing.TB, platform mailpush.Platform, token string, content mailpush.ContentMode, contentKey []byte) *mailpush.Registration {
	t.Helper()
	reg := &mailpush.Registration{Device: mailpush.Device{Platform: platform, Token: token, Environment: mailpush.EnvProduction, ContentKey: contentKey},
		Content: content, Status: mailpush.StatusActive, ExpiresAt: f.clock.Now().Add(time.Hour)}
	mb := &mailpush.Mailbox{TenantID: f.tenant.ID, AddressHash: f.keys.HashAddress(f.tenant.ID, "alice@example.com"), Source: mailpush.SourceEWS,
		Mode: mailpush.ModeSealed, Badge: mailpush.NoBadge, Status: mailpush.StatusActive}
	stored, err := f.store.Register(context.Background(), reg, mb, nil)
	if err != nil {
		t.Fatal(err)
	}
	f.mb = stored
	return reg
}

func (f *fixture) event(t *testing.T, kind mailpush.EventKind, badge int, subject, sender string) {
	t.Helper()
	f.seq++
	f.eventSeq(t, kind, badge, subject, sender, f.seq)
}

func (f *fixture) eventSeq(t *testing.T, kind mailpush.EventKind, badge int, subject, sender string, seq int64) {
	t.Helper()
	ev := mailpush.Event{TenantID: f.tenant.ID, MailboxID: f.mb.ID, Kind: kind, Badge: badge, Subject: subject, Sender: sender, Seq: seq, At: f.clock.Now()}
	if err := f.p.HandleEvent(context.Background(), ev); err != nil {
		t.Fatalf("HandleEvent: %v", err)
	}
}

// drain processes batches until none is due.
func (f *fixture) drain(t *testing.T) {
	t.Helper()
	for range 100 {
		n, err := f.p.Process(context.Background())
		if err != nil {
			t.Fatalf("Process: %v", err)
		}
		if n == 0 {
			return
		}
	}
	t.Fatal("Process never ran dry")
}

func (f *fixture) depth(t *testing.T) int {
	t.Helper()
	n, err := f.store.OutboxDepth(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func tok(i int) string { return fmt.Sprintf("%064x", i) }

func TestFanOutToEveryDevice(t *testing.T) {
	f := newFixture(t, pipeline.Config{})
	for i := range 3 {
		f.register(t, mailpush.PlatformIOS, tok(i+1), mailpush.ContentBadge, nil)
	}
	f.register(t, mailpush.PlatformAndroid, strings.Repeat("fcmtoken", 20), mailpush.ContentBadge, nil)
	f.event(t, mailpush.EventChanged, 4, "", "")
	if got := f.depth(t); got != 1 {
		t.Fatalf("outbox depth after HandleEvent = %d, want 1: the event is durable before it returns, as one row whatever its devices", got)
	}
	f.drain(t)
	ios, droid := f.ios.delivered(), f.droid.delivered()
	if len(ios) != 3 || len(droid) != 1 {
		t.Fatalf("delivered ios %d android %d, want 3 and 1", len(ios), len(droid))
	}
	seen := map[string]bool{}
	for _, p := range append(ios, droid...) {
		if p.Kind != mailpush.PushBadge || p.Badge != 4 || p.Seq != 1 || p.CollapseID != "mb-"+f.mb.ID {
			t.Errorf("push = %+v", p)
		}
		seen[p.Device.Token] = true
	}
	if len(seen) != 4 {
		t.Errorf("devices reached = %d, want 4", len(seen))
	}
	if got := f.depth(t); got != 0 {
		t.Errorf("outbox depth after delivery = %d", got)
	}
}

func TestSequentialEventsAllDelivered(t *testing.T) {
	f := newFixture(t, pipeline.Config{})
	f.register(t, mailpush.PlatformIOS, tok(1), mailpush.ContentBadge, nil)
	for i := 1; i <= 3; i++ {
		f.event(t, mailpush.EventChanged, i, "", "")
		f.drain(t)
	}
	var badges []int
	for _, p := range f.ios.delivered() {
		badges = append(badges, p.Badge)
	}
	if fmt.Sprint(badges) != "[1 2 3]" {
		t.Fatalf("badges = %v, want [1 2 3]", badges)
	}
}

func TestContentModes(t *testing.T) {
	f := newFixture(t, pipeline.Config{SealContent: seal.SealContent})
	badge := f.register(t, mailpush.PlatformIOS, tok(1), mailpush.ContentBadge, nil)
	subj := f.register(t, mailpush.PlatformIOS, tok(2), mailpush.ContentSubject, nil)
	both := f.register(t, mailpush.PlatformIOS, tok(3), mailpush.ContentSubjectSender, nil)
	priv, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	sealed := f.register(t, mailpush.PlatformIOS, tok(4), mailpush.ContentSubjectSender, priv.PublicKey().Bytes())
	f.event(t, mailpush.EventNewMail, 7, "Quarterly report", "Bob Sender")
	f.event(t, mailpush.EventResync, mailpush.NoBadge, "", "")
	f.drain(t)
	byReg := map[string][]mailpush.Push{}
	for _, p := range f.ios.delivered() {
		byReg[p.RegistrationID] = append(byReg[p.RegistrationID], p)
	}
	check := func(name string, reg *mailpush.Registration, want func(p mailpush.Push) bool) {
		t.Helper()
		ps := byReg[reg.ID]
		if len(ps) != 2 || !want(ps[0]) || ps[1].Kind != mailpush.PushSync || ps[1].CollapseID == "" {
			t.Errorf("%s: pushes = %+v", name, ps)
		}
	}
	check("badge", badge, func(p mailpush.Push) bool {
		return p.Kind == mailpush.PushBadge && p.Badge == 7 && p.Subject == "" && p.Sender == ""
	})
	check("subject", subj, func(p mailpush.Push) bool {
		return p.Kind == mailpush.PushAlert && p.Subject == "Quarterly report" && p.Sender == "" && p.Badge == 7
	})
	check("subject_sender", both, func(p mailpush.Push) bool {
		return p.Kind == mailpush.PushAlert && p.Subject == "Quarterly report" && p.Sender == "Bob Sender"
	})
	check("sealed", sealed, func(p mailpush.Push) bool {
		if p.Kind != mailpush.PushAlert || p.Subject != "" || p.Sender != "" || p.Sealed == "" {
			return false
		}
		ct, err := base64.RawURLEncoding.DecodeString(p.Sealed)
		if err != nil {
			return false
		}
		hp, _ := hpke.NewDHKEMPrivateKey(priv)
		plain, err := hpke.Open(hp, hpke.HKDFSHA256(), hpke.AES128GCM(), []byte("mailpush content v1"), ct)
		return err == nil && string(plain) == `{"subject":"Quarterly report","sender":"Bob Sender"}`
	})
}

func badgesOf(ps []mailpush.Push) []int {
	var out []int
	for _, p := range ps {
		out = append(out, p.Badge)
	}
	return out
}

func TestBurstCoalescesToLatestBadge(t *testing.T) {
	f := newFixture(t, pipeline.Config{})
	f.register(t, mailpush.PlatformIOS, tok(1), mailpush.ContentBadge, nil)
	for i := 1; i <= 20; i++ {
		f.event(t, mailpush.EventChanged, i, "", "")
	}
	if d := f.depth(t); d != 1 {
		t.Fatalf("outbox depth after a burst of 20 = %d, want 1", d)
	}
	f.drain(t)
	if got := badgesOf(f.ios.delivered()); fmt.Sprint(got) != "[20]" {
		t.Fatalf("badges = %v, want [20]", got)
	}
}

func TestBadgeNeverGoesBackwards(t *testing.T) {
	f := newFixture(t, pipeline.Config{})
	reg := f.register(t, mailpush.PlatformIOS, tok(1), mailpush.ContentSubject, nil)
	f.eventSeq(t, mailpush.EventChanged, 5, "", "", 5)
	f.drain(t)
	// Reordered: events 3 (badge) and 4 (new mail) arrive after 5 was sent.
	f.eventSeq(t, mailpush.EventChanged, 3, "", "", 3)
	f.eventSeq(t, mailpush.EventNewMail, 4, "Late news", "", 4)
	f.drain(t)
	ps := f.ios.delivered()
	if len(ps) != 2 || ps[0].Badge != 5 || ps[1].Kind != mailpush.PushAlert || ps[1].Subject != "Late news" || ps[1].Badge != mailpush.NoBadge {
		t.Fatalf("pushes = %+v; want badge 5, then the late alert without a badge", ps)
	}
	if d := f.depth(t); d != 0 {
		t.Errorf("stale push left in the outbox: depth %d", d)
	}
	_ = reg
}

func TestRetryBackoffAndRetryAfter(t *testing.T) {
	f := newFixture(t, pipeline.Config{RetryBase: time.Second, RetryMax: time.Minute})
	f.register(t, mailpush.PlatformIOS, tok(1), mailpush.ContentBadge, nil)
	f.ios.answer = func(p *mailpush.Push, call int) (mailpush.PushResult, error) {
		switch call {
		case 1:
			return mailpush.PushResult{Outcome: mailpush.PushRetry, Status: 503, Reason: "ServiceUnavailable"}, nil
		case 2:
			return mailpush.PushResult{Outcome: mailpush.PushRetry}, fmt.Errorf("connection reset")
		case 3:
			return mailpush.PushResult{Outcome: mailpush.PushRetry, Status: 429, Reason: "TooManyRequests", RetryAfter: 30 * time.Second}, nil
		}
		return mailpush.PushResult{Outcome: mailpush.PushDelivered}, nil
	}
	f.event(t, mailpush.EventChanged, 1, "", "")
	// Backoff 1s after the first failure, 2s after the second, then the
	// provider's 30s Retry-After (longer than the 4s backoff).
	steps := []struct {
		advance time.Duration
		calls   int
	}{{0, 1}, {999 * time.Millisecond, 1}, {time.Millisecond, 2}, {2*time.Second - time.Millisecond, 2}, {time.Millisecond, 3}, {29 * time.Second, 3}, {time.Second, 4}}
	for i, s := range steps {
		f.clock.Add(s.advance)
		f.drain(t)
		f.ios.mu.Lock()
		calls := f.ios.calls
		f.ios.mu.Unlock()
		if calls != s.calls {
			t.Fatalf("step %d (+%v): %d provider calls, want %d", i, s.advance, calls, s.calls)
		}
	}
	if len(f.ios.delivered()) != 1 || f.depth(t) != 0 {
		t.Fatalf("delivered %d, depth %d", len(f.ios.delivered()), f.depth(t))
	}
}

func TestDeadLetters(t *testing.T) {
	f := newFixture(t, pipeline.Config{MaxAttempts: 3, RetryBase: time.Second})
	f.register(t, mailpush.PlatformIOS, tok(1), mailpush.ContentBadge, nil)
	f.register(t, mailpush.PlatformAndroid, strings.Repeat("a", 150), mailpush.ContentBadge, nil)
	f.ios.answer = func(p *mailpush.Push, call int) (mailpush.PushResult, error) {
		return mailpush.PushResult{Outcome: mailpush.PushRetry, Status: 500, Reason: "InternalServerError"}, nil
	}
	f.droid.answer = func(p *mailpush.Push, call int) (mailpush.PushResult, error) {
		return mailpush.PushResult{Outcome: mailpush.PushFailed, Status: 400, Reason: "INVALID_ARGUMENT"}, nil
	}
	f.event(t, mailpush.EventChanged, 1, "", "")
	for range 10 {
		f.drain(t)
		f.clock.Add(time.Minute)
	}
	if f.ios.calls != 3 || f.droid.calls != 1 {
		t.Errorf("calls ios %d (want 3: bounded), android %d (want 1: permanent errors are never retried)", f.ios.calls, f.droid.calls)
	}
	dead, err := f.store.DeadLetters(context.Background(), 10)
	if err != nil || len(dead) != 2 {
		t.Fatalf("dead letters = %+v, %v", dead, err)
	}
	reasons := dead[0].Reason + " | " + dead[1].Reason
	if !strings.Contains(reasons, "gave up after 3 attempts: InternalServerError") || !strings.Contains(reasons, "refused: 400 INVALID_ARGUMENT") {
		t.Errorf("dead letter reasons = %s", reasons)
	}
	if f.depth(t) != 0 {
		t.Errorf("outbox depth = %d", f.depth(t))
	}
}

func TestLaterPushesWaitBehindARetry(t *testing.T) {
	f := newFixture(t, pipeline.Config{RetryBase: time.Second})
	f.register(t, mailpush.PlatformIOS, tok(1), mailpush.ContentSubject, nil)
	f.ios.answer = func(p *mailpush.Push, call int) (mailpush.PushResult, error) {
		if call == 1 {
			return mailpush.PushResult{Outcome: mailpush.PushRetry, Status: 503}, nil
		}
		return mailpush.PushResult{Outcome: mailpush.PushDelivered}, nil
	}
	f.event(t, mailpush.EventNewMail, 1, "first", "")
	f.event(t, mailpush.EventNewMail, 2, "second", "")
	f.drain(t)
	if n := len(f.ios.delivered()); n != 0 {
		t.Fatalf("second push overtook the first: %d delivered", n)
	}
	f.clock.Add(time.Second)
	f.drain(t)
	var subjects []string
	for _, p := range f.ios.delivered() {
		subjects = append(subjects, p.Subject)
	}
	if fmt.Sprint(subjects) != "[first second]" {
		t.Fatalf("subjects = %v, want [first second]", subjects)
	}
}

func TestDeadTokenDeactivates(t *testing.T) {
	f := newFixture(t, pipeline.Config{})
	dead := f.register(t, mailpush.PlatformIOS, tok(1), mailpush.ContentBadge, nil)
	again := f.register(t, mailpush.PlatformIOS, tok(2), mailpush.ContentBadge, nil)
	alive := f.register(t, mailpush.PlatformIOS, tok(3), mailpush.ContentBadge, nil)
	f.ios.answer = func(p *mailpush.Push, call int) (mailpush.PushResult, error) {
		switch p.Device.Token {
		case tok(1):
			return mailpush.PushResult{Outcome: mailpush.PushDropToken, Status: 410, Reason: "Unregistered", InvalidAt: f.clock.Now()}, nil
		case tok(2):
			// Invalid since before the device registered again.
			return mailpush.PushResult{Outcome: mailpush.PushDropToken, Status: 410, Reason: "Unregistered", InvalidAt: f.clock.Now().Add(-time.Hour)}, nil
		}
		return mailpush.PushResult{Outcome: mailpush.PushDelivered}, nil
	}
	f.clock.Add(time.Second)
	f.event(t, mailpush.EventChanged, 1, "", "")
	f.drain(t)
	status := func(r *mailpush.Registration) mailpush.Status {
		got, err := f.store.Registration(context.Background(), r.TenantID, r.ID)
		if err != nil {
			t.Fatal(err)
		}
		return got.Status
	}
	if status(dead) != mailpush.StatusInactive || status(again) != mailpush.StatusActive || status(alive) != mailpush.StatusActive {
		t.Fatalf("statuses: dead %s, registered again %s, alive %s", status(dead), status(again), status(alive))
	}
	if len(f.ios.delivered()) != 1 || f.depth(t) != 0 {
		t.Errorf("delivered %d, depth %d", len(f.ios.delivered()), f.depth(t))
	}
}

func TestBackgroundPushesPerDeviceAreLimited(t *testing.T) {
	f := newFixture(t, pipeline.Config{SyncPerHour: 2})
	f.register(t, mailpush.PlatformIOS, tok(1), mailpush.ContentBadge, nil)
	for range 5 {
		f.event(t, mailpush.EventResync, mailpush.NoBadge, "", "")
		f.drain(t)
	}
	if n := len(f.ios.delivered()); n != 2 {
		t.Fatalf("background pushes in the first moment = %d, want 2 (the burst)", n)
	}
	if d := f.depth(t); d != 1 {
		t.Fatalf("outbox depth = %d, want 1: the waiting ones coalesce", d)
	}
	f.clock.Add(30 * time.Minute) // one more token: 2 per hour
	f.drain(t)
	if n := len(f.ios.delivered()); n != 3 {
		t.Fatalf("after 30 minutes: %d background pushes, want 3", n)
	}
}

func TestTenantRateLimit(t *testing.T) {
	f := newFixture(t, pipeline.Config{TenantRate: 10, TenantBurst: 10})
	for i := range 25 {
		f.register(t, mailpush.PlatformIOS, tok(i+1), mailpush.ContentBadge, nil)
	}
	f.event(t, mailpush.EventChanged, 1, "", "")
	f.drain(t)
	if n := len(f.ios.delivered()); n != 10 {
		t.Fatalf("first moment: %d pushes, want the burst of 10", n)
	}
	f.clock.Add(time.Second)
	f.drain(t)
	if n := len(f.ios.delivered()); n != 20 {
		t.Fatalf("after 1s: %d pushes, want 20", n)
	}
	f.clock.Add(time.Second)
	f.drain(t)
	if n := len(f.ios.delivered()); n != 25 {
		t.Fatalf("after 2s: %d pushes, want 25", n)
	}
	f.ios.mu.Lock()
	defer f.ios.mu.Unlock()
	if f.ios.calls != 25 {
		t.Errorf("provider calls = %d: rate-limited pushes must not reach the provider", f.ios.calls)
	}
}
