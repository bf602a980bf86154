package pipeline_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mailpush/mailpush"
	"github.com/mailpush/mailpush/apns"
	"github.com/mailpush/mailpush/fake/apnsfake"
	"github.com/mailpush/mailpush/pipeline"
	"github.com/mailpush/mailpush/seal"
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

// benchEnv is a fake APNs, a real client on one HTTP/2 connection to it, and
// a SQLite store with mailboxes×perMailbox active iOS registrations.
type benchEnv struct {
	fake   *apnsfake.Server
	client *apns.Client
	store  *sqlite.Store
	tenant *mailpush.Tenant
	mbIDs  []string
}

func newBenchEnv(b *testing.B, mailboxes, perMailbox int) *benchEnv {
	e := &benchEnv{fake: apnsfake.New(apnsfake.Options{MaxRecorded: 1000})}
	b.Cleanup(e.fake.Close)
	key, p8, err := apnsfake.GenerateKey()
	if err != nil {
		b.Fatal(err)
	}
	e.fake.AddKey("TEAM123456", "KEY1234567", &key.PublicKey)
	e.fake.AllowTopic("com.example.mail")
	e.client, err = apns.New(apns.Config{ProductionURL: e.fake.URL(), SandboxURL: e.fake.URL(), TeamID: "TEAM123456", KeyID: "KEY1234567",
		PrivateKey: p8, Topic: "com.example.mail", RootCAs: e.fake.CertPool()})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(e.client.Close)
	var keys *seal.Keyring
	e.store, keys, e.tenant = openTenantStore(b)
	for m := range mailboxes {
		var mbID string
		for d := range perMailbox {
			mbID = registerDevice(b, e.store, keys, e.tenant, m, mailpush.PlatformIOS, fmt.Sprintf("%064x", m*perMailbox+d+1))
		}
		e.mbIDs = append(e.mbIDs, mbID)
	}
	return e
}

// registerDevice registers an active device (subject content) on mailbox
// number m of the tenant and returns the mailbox ID.
func registerDevice(tb testing.TB, store *sqlite.Store, keys *seal.Keyring, tn *mailpush.Tenant, m int, platform mailpush.Platform, token string) string {
	tb.Helper()
	reg := &mailpush.Registration{Device: mailpush.Device{Platform: platform, Token: token, Environment: mailpush.EnvProduction},
		Content: mailpush.ContentSubject, Status: mailpush.StatusActive, ExpiresAt: time.Now().Add(time.Hour)}
	mb := &mailpush.Mailbox{TenantID: tn.ID, AddressHash: keys.HashAddress(tn.ID, fmt.Sprintf("u%d@example.com", m)), Source: mailpush.SourceEWS,
		Mode: mailpush.ModeSealed, Badge: mailpush.NoBadge, Status: mailpush.StatusActive}
	stored, err := store.Register(context.Background(), reg, mb, nil)
	if err != nil {
		tb.Fatal(err)
	}
	return stored.ID
}

// openTenantStore opens a SQLite store on the system clock in a temporary
// directory, with one tenant.
func openTenantStore(tb testing.TB) (*sqlite.Store, *seal.Keyring, *mailpush.Tenant) {
	tb.Helper()
	keys := storetest.Keyring(tb)
	store, err := sqlite.Open(context.Background(), filepath.Join(tb.TempDir(), "outbox.db"), keys, mailpush.SystemClock{})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { store.Close() })
	tn := &mailpush.Tenant{Name: "acme", MaxContent: mailpush.ContentSubjectSender}
	if err := store.CreateTenant(context.Background(), tn); err != nil {
		tb.Fatal(err)
	}
	return store, keys, tn
}

// start starts a pipeline that sends to the fake through the client,
// timing each push.
func (e *benchEnv) start(b *testing.B) (*pipeline.Pipeline, *timing) {
	tp := &timing{next: e.client}
	p := pipeline.New(pipeline.Config{Store: e.store, Pushers: map[mailpush.Platform]mailpush.Pusher{mailpush.PlatformIOS: tp}, Clock: mailpush.SystemClock{}})
	p.Start()
	b.Cleanup(func() { p.Shutdown(context.Background()) })
	return p, tp
}

// ceiling sends n alert pushes with the bare client from 64 goroutines (the
// pipeline's default Workers) and returns pushes per second.
func (e *benchEnv) ceiling(b *testing.B, n int) float64 {
	ctx := context.Background()
	next := make(chan int)
	var wg sync.WaitGroup
	start := time.Now()
	for range 64 {
		wg.Go(func() {
			for i := range next {
				p := &mailpush.Push{Kind: mailpush.PushAlert, Subject: "Quarterly figures", Badge: i, CreatedAt: time.Now(),
					Device: mailpush.Device{Platform: mailpush.PlatformIOS, Token: fmt.Sprintf("%064x", i%10_000+1), Environment: mailpush.EnvProduction}}
				if res, err := e.client.Push(ctx, p); err != nil || res.Outcome != mailpush.PushDelivered {
					b.Errorf("bare client push: %+v, %v", res, err)
				}
			}
		})
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	return float64(n) / time.Since(start).Seconds()
}

// drain waits until the fake accepted want pushes or the outbox is empty.
func (e *benchEnv) drain(b *testing.B, want int) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	for e.fake.Accepted() < want {
		// Coalescing may merge a mailbox's consecutive events: stop once
		// the outbox is empty.
		if n, _ := e.store.OutboxDepth(ctx); n == 0 {
			return
		}
		select {
		case <-ctx.Done():
			b.Fatalf("only %d of %d pushes sent", e.fake.Accepted(), want)
		case <-time.After(5 * time.Millisecond):
		}
	}
}

func (e *benchEnv) event(i int) mailpush.Event {
	return mailpush.Event{TenantID: e.tenant.ID, MailboxID: e.mbIDs[i%len(e.mbIDs)], Kind: mailpush.EventNewMail, Badge: i, Subject: "Quarterly figures", Seq: int64(i + 1), At: time.Now()}
}

// profilePhase writes a CPU profile of the measured phase only (not the
// setup nor the ceiling, which -cpuprofile would include) to the file named
// by $BENCH_CPUPROFILE, suffixed with the benchmark's name. It returns the
// function that stops it.
func profilePhase(b *testing.B) func() {
	path := os.Getenv("BENCH_CPUPROFILE")
	if path == "" {
		return func() {}
	}
	f, err := os.Create(path + "." + strings.NewReplacer("/", "_", "=", "").Replace(b.Name()))
	if err != nil {
		b.Fatal(err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		b.Fatal(err)
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}
}

// cpuTime is the CPU time (user and system) the process used so far: the
// fake APNs, the client and the pipeline all run in it. CPU per push is a
// figure that the other jobs on a shared machine disturb much less than
// pushes per second.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func reportLatency(b *testing.B, tp *timing) {
	tp.mu.Lock()
	lat := slices.Clone(tp.lat)
	tp.mu.Unlock()
	slices.Sort(lat)
	if len(lat) > 0 {
		b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
		b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	}
}

// BenchmarkOutboxToAPNs measures sustained delivery from events through the
// SQLite outbox to the fake APNs over one HTTP/2 connection: each event
// fans out to 100 devices of a mailbox (alert pushes: never coalesced);
// 100 mailboxes. Events are offered as fast as HandleEvent takes them, so
// the latency includes the backlog that builds when they outrun delivery. It
// reports pushes/s, the p99 from enqueue (HandleEvent) to APNs' answer, and
// as ceiling-pushes/s the bare client driving the same fake with as many
// pushes, measured just before in the same run.
func BenchmarkOutboxToAPNs(b *testing.B) {
	ctx := context.Background()
	const mailboxes, perMailbox = 100, 100
	e := newBenchEnv(b, mailboxes, perMailbox)
	p, tp := e.start(b)

	want := b.N * perMailbox
	cpu0 := cpuTime(b)
	ceiling := e.ceiling(b, want)
	ceilingCPU := cpuTime(b) - cpu0
	e.fake.Reset()
	stopProfile := profilePhase(b)
	b.ResetTimer()
	cpu0 = cpuTime(b)
	start := time.Now()
	for i := range b.N {
		if err := p.HandleEvent(ctx, e.event(i)); err != nil {
			b.Fatal(err)
		}
	}
	e.drain(b, want)
	elapsed := time.Since(start)
	cpu := cpuTime(b) - cpu0
	b.StopTimer()
	stopProfile()
	sent := e.fake.Accepted()
	b.ReportMetric(float64(cpu.Microseconds())/float64(sent), "cpu-µs/push")
	b.ReportMetric(float64(ceilingCPU.Microseconds())/float64(want), "ceiling-cpu-µs/push")
	reportLatency(b, tp)
	b.ReportMetric(float64(sent)/elapsed.Seconds(), "pushes/s")
	b.ReportMetric(ceiling, "ceiling-pushes/s")
	b.ReportMetric(float64(want-sent), "coalesced")
}

// BenchmarkOutboxToAPNsPaced offers pushes at a fixed rate below saturation
// (events of 10 devices each, 1,000 mailboxes, each event's HandleEvent in
// its own goroutine as concurrent webhooks would be), so that the p99 from
// enqueue to APNs' answer is a latency, not the wait in a backlog. b.N is
// the number of events; run it with a -benchtime of a few seconds' worth
// (e.g. 5000x: 10 s at 5,000 pushes/s).
func BenchmarkOutboxToAPNsPaced(b *testing.B) {
	for _, rate := range []int{5000, 8000, 10000} {
		b.Run(fmt.Sprintf("rate=%d", rate), func(b *testing.B) {
			ctx := context.Background()
			const mailboxes, perMailbox = 1000, 10
			e := newBenchEnv(b, mailboxes, perMailbox)
			p, tp := e.start(b)
			interval := time.Second * perMailbox / time.Duration(rate)
			sem := make(chan struct{}, 256) // webhooks in flight
			var wg sync.WaitGroup
			late := 0
			var hmu sync.Mutex
			var hlat []time.Duration
			stopProfile := profilePhase(b)
			b.ResetTimer()
			cpu0 := cpuTime(b)
			start := time.Now()
			for i := range b.N {
				due := start.Add(time.Duration(i) * interval)
				if d := time.Until(due); d > 0 {
					time.Sleep(d) // pacing the offered load, not waiting for a result
				} else if d < -interval {
					late++
				}
				sem <- struct{}{}
				wg.Go(func() {
					defer func() { <-sem }()
					t0 := time.Now()
					if err := p.HandleEvent(ctx, e.event(i)); err != nil {
						b.Error(err)
					}
					hmu.Lock()
					hlat = append(hlat, time.Since(t0))
					hmu.Unlock()
				})
			}
			wg.Wait()
			e.drain(b, b.N*perMailbox)
			elapsed := time.Since(start)
			cpu := cpuTime(b) - cpu0
			b.StopTimer()
			stopProfile()
			reportLatency(b, tp)
			b.ReportMetric(float64(cpu.Microseconds())/float64(e.fake.Accepted()), "cpu-µs/push")
			b.ReportMetric(float64(e.fake.Accepted())/elapsed.Seconds(), "pushes/s")
			b.ReportMetric(float64(rate), "offered/s")
			b.ReportMetric(float64(late), "late-events")
			slices.Sort(hlat)
			b.ReportMetric(float64(hlat[len(hlat)*99/100].Microseconds())/1000, "handle-p99-ms")
			b.ReportMetric(float64(hlat[len(hlat)/2].Microseconds())/1000, "handle-p50-ms")
		})
	}
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
