package pipeline_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/mailpush/mailpush"
	"github.com/mailpush/mailpush/apns"
	"github.com/mailpush/mailpush/fake/apnsfake"
	"github.com/mailpush/mailpush/pipeline"
	"github.com/mailpush/mailpush/sqlite"
	"github.com/mailpush/mailpush/storetest"
)

// timing wraps a Pusher and records enqueue→answer latencies.
type timing struct {
	next mailpush.Pusher
	mu   sync.Mutex
	lat  []time.Duration
}

func (t *timing) Push(ctx context.Context, p *mailpush.Push) (mailpush.PushResult, error) {
	res, err := t.next.Push(ctx, p)
	d := time.Since(p.CreatedAt)
	t.mu.Lock()
	t.lat = append(t.lat, d)
	t.mu.Unlock()
	return res, err
}

// BenchmarkOutboxToAPNs measures sustained delivery from events through the
// SQLite outbox to the fake APNs over one HTTP/2 connection: each event
// fans out to 100 devices of a mailbox (alert pushes: never coalesced);
// 100 mailboxes. Events are offered as fast as HandleEvent takes them, so
// the latency includes the backlog that builds when they outrun delivery. It reports
// pushes/s and the p99 from enqueue (HandleEvent) to APNs' answer.
func BenchmarkOutboxToAPNs(b *testing.B) {
	ctx := context.Background()
	fake := apnsfake.New(apnsfake.Options{MaxRecorded: 1000})
	defer fake.Close()
	key, p8, err := apnsfake.GenerateKey()
	if err != nil {
		b.Fatal(err)
	}
	fake.AddKey("TEAM123456", "KEY1234567", &key.PublicKey)
	fake.AllowTopic("com.example.mail")
	client, err := apns.New(apns.Config{ProductionURL: fake.URL(), SandboxURL: fake.URL(), TeamID: "TEAM123456", KeyID: "KEY1234567",
		PrivateKey: p8, Topic: "com.example.mail", RootCAs: fake.CertPool()})
	if err != nil {
		b.Fatal(err)
	}
	defer client.Close()
	keys := storetest.Keyring(b)
	store, err := sqlite.Open(ctx, filepath.Join(b.TempDir(), "bench.db"), keys, mailpush.SystemClock{})
	if err != nil {
		b.Fatal(err)
	}
	defer store.Close()
	tn := &mailpush.Tenant{Name: "acme", TokenHash: []byte("h"), MaxContent: mailpush.ContentSubjectSender}
	store.CreateTenant(ctx, tn)
	const mailboxes, perMailbox = 100, 100
	var mbIDs []string
	for m := range mailboxes {
		var mbID string
		for d := range perMailbox {
			reg := &mailpush.Registration{Device: mailpush.Device{Platform: mailpush.PlatformIOS, Token: fmt.Sprintf("%064x", m*perMailbox+d+1), Environment: mailpush.EnvProduction},
				Content: mailpush.ContentSubject, Status: mailpush.StatusActive, ExpiresAt: time.Now().Add(time.Hour)}
			mb := &mailpush.Mailbox{TenantID: tn.ID, AddressHash: keys.HashAddress(tn.ID, fmt.Sprintf("u%d@example.com", m)), Source: mailpush.SourceEWS,
				Mode: mailpush.ModeSealed, Badge: mailpush.NoBadge, Status: mailpush.StatusActive}
			stored, err := store.Register(ctx, reg, mb)
			if err != nil {
				b.Fatal(err)
			}
			mbID = stored.ID
		}
		mbIDs = append(mbIDs, mbID)
	}
	tp := &timing{next: client}
	p := pipeline.New(pipeline.Config{Store: store, Pushers: map[mailpush.Platform]mailpush.Pusher{mailpush.PlatformIOS: tp}, Clock: mailpush.SystemClock{}})
	p.Start()
	defer p.Shutdown(ctx)

	b.ResetTimer()
	start := time.Now()
	for i := range b.N {
		ev := mailpush.Event{TenantID: tn.ID, MailboxID: mbIDs[i%mailboxes], Kind: mailpush.EventNewMail, Badge: i, Subject: "Quarterly figures", Seq: int64(i + 1), At: time.Now()}
		if err := p.HandleEvent(ctx, ev); err != nil {
			b.Fatal(err)
		}
	}
	want := b.N * perMailbox
	wctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	for fake.Accepted() < want {
		// Coalescing may merge a mailbox's consecutive events: stop once
		// the outbox is empty.
		if n, _ := store.OutboxDepth(ctx); n == 0 {
			break
		}
		select {
		case <-wctx.Done():
			b.Fatalf("only %d of %d pushes sent", fake.Accepted(), want)
		case <-time.After(5 * time.Millisecond):
		}
	}
	elapsed := time.Since(start)
	b.StopTimer()
	sent := fake.Accepted()
	tp.mu.Lock()
	lat := slices.Clone(tp.lat)
	tp.mu.Unlock()
	slices.Sort(lat)
	if len(lat) > 0 {
		b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
		b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	}
	b.ReportMetric(float64(sent)/elapsed.Seconds(), "pushes/s")
	b.ReportMetric(float64(want-sent), "coalesced")
}

// TestQueuedPushFootprint reports the bytes on disk per queued push (run
// with -v; it asserts only that the pushes are all queued).
func TestQueuedPushFootprint(t *testing.T) {
	if testing.Short() {
		t.Skip("writes 5,000 rows")
	}
	f := newFixture(t, pipeline.Config{})
	const n = 5_000
	f.register(t, mailpush.PlatformIOS, tok(1), mailpush.ContentSubject, nil)
	size := func() int64 {
		st, err := os.Stat(f.path)
		if err != nil {
			t.Fatal(err)
		}
		return st.Size()
	}
	before := size()
	for i := range n {
		f.eventSeq(t, mailpush.EventNewMail, i, "Subject of a typical length for mail", "", int64(i+1))
	}
	if d := f.depth(t); d != n {
		t.Fatalf("depth = %d, want %d", d, n)
	}
	f.store.Close() // checkpoints the WAL into the file
	t.Logf("queued alert pushes: %d, database growth %d bytes, %.0f bytes per queued push", n, size()-before, float64(size()-before)/n)
}
