package pipeline_test

import (
	"context"
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
	clock  *storetest.Clock
	keys   *seal.Keyring
	ios    *recorder
	droid  *recorder
	p      *pipeline.Pipeline
	tenant *mailpush.Tenant
	mb     *mailpush.Mailbox
	seq    int64
}

func newFixture(t *testing.T, cfg pipeline.Config) *fixture {
	t.Helper()
	f := &fixture{clock: storetest.NewClock(), keys: storetest.Keyring(t), ios: &recorder{}, droid: &recorder{}}
	s, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "p.db"), f.keys, f.clock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	f.store = s
	f.tenant = &mailpush.Tenant{Name: "acme", TokenHash: []byte("h"), MaxContent: mailpush.ContentSubjectSender}
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
func (f *fixture) register(t *testing.T, platform mailpush.Platform, token string, content mailpush.ContentMode, contentKey []byte) *mailpush.Registration {
	t.Helper()
	reg := &mailpush.Registration{Device: mailpush.Device{Platform: platform, Token: token, Environment: mailpush.EnvProduction, ContentKey: contentKey},
		Content: content, Status: mailpush.StatusActive, ExpiresAt: f.clock.Now().Add(time.Hour)}
	mb := &mailpush.Mailbox{TenantID: f.tenant.ID, AddressHash: f.keys.HashAddress(f.tenant.ID, "alice@example.com"), Source: mailpush.SourceEWS,
		Mode: mailpush.ModeSealed, Badge: mailpush.NoBadge, Status: mailpush.StatusActive}
	stored, err := f.store.Register(context.Background(), reg, mb)
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
	if got := f.depth(t); got != 4 {
		t.Fatalf("outbox depth after HandleEvent = %d, want 4 (durable before it returns)", got)
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
