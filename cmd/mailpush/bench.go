package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/tls"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/sideshow/apns2/token"

	"github.com/mailpush/mailpush"
	"github.com/mailpush/mailpush/fake/apnsfake"
)

// The load command: `mailpush bench` starts the real server in-process
// (SQLite store, pipeline, APNs client, Dovecot notify endpoint, device API)
// against the in-repo fake APNs, drives it over real loopback sockets and
// reports what docs/PERFORMANCE.md needs. Everything runs in one process on
// purpose: the raw HTTP/2 baseline and mailpush are measured against the
// same fake in the same run, so the ratios hold on a shared, noisy machine
// even when the absolute figures move.

const benchUsage = `Starts mailpush in-process with a fake APNs and measures it (see docs/PERFORMANCE.md).

scenarios (-scenario):
  fanout         N mailboxes x M devices, one Dovecot MessageNew per mailbox as fast
                 as the notify endpoint takes them; the raw HTTP/2 client is measured
                 first with as many pushes on the same fake (default 1000 x 100)
  realworld      N mailboxes x 1-3 devices, events at -rate per second spread over the
                 mailboxes for -duration (default 100000 mailboxes, 1000/s, 60s)
  overload       like realworld, but the fake APNs answers 503 for -outage while
                 events keep coming; then it recovers and the backlog must drain with
                 every device's last badge delivered
  raw            the raw HTTP/2 client alone (N x M pushes)
  registrations  N registrations through POST /api/v1/registrations by -concurrency
                 clients (source dovecot); reports registrations/s, RSS and DB bytes each;
                 -ceiling measures a trivial JSON handler with the same clients first,
                 -wrk D posts with wrk (another process) for D instead

-nodes N (with -database-url; fanout, realworld, overload): N nodes on the one
PostgreSQL database: this process's server and N-1 "mailpush serve" child
processes of this binary; the notifications are spread over the nodes by mailbox.
`

type benchFlags struct {
	scenario    string
	mailboxes   int
	devices     string
	rate        float64
	duration    time.Duration
	outage      time.Duration
	concurrency int
	cpuprofile  string
	dir         string
	rssLimit    int
	contentMode string
	dbURL       string // PostgreSQL instead of SQLite
	dbSchema    string
	nodes       int // servers on the database (PostgreSQL): 1 in-process, the others child processes
	apnsDelay   time.Duration
	compare     bool          // run on SQLite, PostgreSQL with one node and with -nodes nodes, one after the other
	ceiling     bool          // registrations: measure a trivial JSON handler with the same clients first
	wrk         time.Duration // registrations: drive with wrk, another process, for this long
}

// benchDevices parses "M" or "LO-HI".
func benchDevices(s string) (lo, hi int, err error) {
	a, b, ok := strings.Cut(s, "-")
	if lo, err = strconv.Atoi(a); err != nil || lo < 1 {
		return 0, 0, fmt.Errorf("-devices must be a count or a range like 1-3, not %q", s)
	}
	hi = lo
	if ok {
		if hi, err = strconv.Atoi(b); err != nil || hi < lo {
			return 0, 0, fmt.Errorf("-devices must be a count or a range like 1-3, not %q", s)
		}
	}
	return lo, hi, nil
}

func runBench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("bench", "bench [-scenario fanout|realworld|overload|raw|registrations] [flags]", stdout, stderr)
	synopsis := fs.Usage
	fs.Usage = func() { synopsis(); fmt.Fprint(stdout, "\n", benchUsage) }
	var f benchFlags
	fs.StringVar(&f.scenario, "scenario", "fanout", "fanout, realworld, overload, raw or registrations")
	fs.IntVar(&f.mailboxes, "mailboxes", 0, "mailboxes (default: scenario's)")
	fs.StringVar(&f.devices, "devices", "", "devices per mailbox: a count or a range LO-HI (default: scenario's)")
	fs.Float64Var(&f.rate, "rate", 0, "events per second (0: as fast as the server takes them; realworld default 1000)")
	fs.DurationVar(&f.duration, "duration", 0, "how long events are sent (realworld and overload; default 60s)")
	fs.DurationVar(&f.outage, "outage", 60*time.Second, "overload: how long the fake APNs answers 503")
	fs.IntVar(&f.concurrency, "concurrency", 32, "concurrent HTTP clients sending notifications or registrations")
	fs.BoolVar(&f.ceiling, "ceiling", false, "registrations: first post as many to a trivial net/http JSON handler with the same clients (the ceiling; its profile goes to FILE.ceiling)")
	fs.DurationVar(&f.wrk, "wrk", 0, "registrations: post with wrk (another process, -concurrency connections) for this long instead of the in-process clients: the CPU per registration is then the server's alone")
	fs.StringVar(&f.cpuprofile, "cpuprofile", "", "write a CPU profile of the measured phase to this file (the raw client's to FILE.raw)")
	fs.StringVar(&f.dir, "dir", "", "working directory for the database and keys (default: a temporary one, removed after)")
	fs.IntVar(&f.rssLimit, "rss-limit", 512, "overload: the RSS bound in MiB that the run is checked against")
	fs.StringVar(&f.contentMode, "content", "badge", "content mode of the devices: badge, subject or subject_sender")
	fs.StringVar(&f.dbURL, "database-url", "", "run on the PostgreSQL database at this URL (database.driver postgres) instead of SQLite in -dir")
	fs.StringVar(&f.dbSchema, "database-schema", "", "with -database-url: the schema, created if missing and kept (default: a fresh one, dropped after)")
	fs.DurationVar(&f.apnsDelay, "apns-delay", time.Second, "takeover: how long the fake APNs takes to answer each push")
	fs.BoolVar(&f.compare, "compare", false, "fanout, realworld: run on SQLite, on -database-url with one node and with -nodes nodes (default 3), one after the other, and print the ratios")
	fs.IntVar(&f.nodes, "nodes", 1, "nodes on the -database-url database: this process's and N-1 `mailpush serve` child processes")
	if _, err := parseFlags(fs, args); err != nil {
		return err
	}
	if f.nodes < 1 || f.nodes > 1 && (f.dbURL == "" || f.scenario == "raw" || f.scenario == "registrations") {
		return usageError{"-nodes above 1 needs -database-url (nodes share a PostgreSQL database) and the fanout, realworld, overload or takeover scenario"}
	}
	if f.compare && (f.dbURL == "" || f.scenario != "fanout" && f.scenario != "realworld") {
		return usageError{"-compare needs -database-url and the fanout or realworld scenario"}
	}
	if f.compare && f.nodes == 1 {
		f.nodes = 3
	}
	if f.scenario == "takeover" && f.nodes < 2 {
		return usageError{"-scenario takeover needs -database-url and -nodes 2 or more (one of them is killed)"}
	}
	defaults := map[string]struct {
		mailboxes int
		devices   string
	}{"fanout": {1000, "100"}, "raw": {1000, "100"}, "realworld": {100000, "1-3"}, "overload": {10000, "1-3"}, "registrations": {100000, "1"}, "takeover": {200, "1"}}
	d, ok := defaults[f.scenario]
	if !ok {
		return usageError{fmt.Sprintf("unknown scenario %q\n%s", f.scenario, benchUsage)}
	}
	if f.mailboxes <= 0 {
		f.mailboxes = d.mailboxes
	}
	if f.devices == "" {
		f.devices = d.devices
	}
	if f.duration <= 0 {
		f.duration = 60 * time.Second
	}
	if f.rate == 0 && (f.scenario == "realworld" || f.scenario == "overload") {
		f.rate = 1000
	}
	lo, hi, err := benchDevices(f.devices)
	if err != nil {
		return usageError{err.Error()}
	}
	if mailpush.ContentMode(f.contentMode).Rank() < 0 {
		return usageError{"-content must be badge, subject or subject_sender"}
	}
	if f.compare {
		return compareStores(ctx, f, lo, hi, stdout, stderr)
	}
	b := &bench{f: f, lo: lo, hi: hi, out: stdout, progress: stderr}
	return b.run(ctx)
}

// bench is one run of the load command.
type bench struct {
	f        benchFlags
	lo, hi   int
	out      io.Writer
	progress io.Writer

	dir     string
	apple   *apnsfake.Server
	key     *ecdsa.PrivateKey
	main    *Main
	base    string
	bases   []string // every node's base URL; base is bases[0]
	nodes   []*benchNode
	secret  string // the Dovecot shared secret
	tenant  *mailpush.Tenant
	tokenOf []int // device index -> mailbox index
	devOf   map[string]int32
	devices int

	// Latency bookkeeping: when each event was sent, by mailbox and badge.
	mu        sync.Mutex
	sentAt    map[int64]time.Time // mailbox<<20 | badge
	lastBadge []int32             // by device: highest badge delivered
	e2e       []time.Duration     // event -> push
	accepted  atomic.Int64
	measured  phase // the scenario's mailpush phase (fanout, paced), for -compare

	// takeover (bench_takeover.go): the fake APNs' answer delay, and what
	// it calls with the token of every background push.
	apnsDelay    atomic.Int64 // time.Duration
	onBackground atomic.Pointer[func(token string)]
}

const (
	benchTeam  = "BENCHTEAM1"
	benchKeyID = "BENCHKEY01"
	benchTopic = "com.example.mailpush.bench"
)

func (b *bench) run(ctx context.Context) error {
	b.dir = b.f.dir
	if b.dir == "" {
		dir, err := os.MkdirTemp("", "mailpush-bench-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		b.dir = dir
	}
	key, p8, err := apnsfake.GenerateKey()
	if err != nil {
		return err
	}
	b.key = key
	b.apple = apnsfake.New(apnsfake.Options{MaxRecorded: 1, OnAccept: b.onAccept, RetryAfter: time.Second})
	defer b.apple.Close()
	b.apple.AddKey(benchTeam, benchKeyID, &key.PublicKey)
	b.apple.AllowTopic(benchTopic)
	fmt.Fprintf(b.out, "mailpush bench %s: %s on %d CPUs (GOMAXPROCS %d), %s\n", b.f.scenario, mailpush.Version, runtime.NumCPU(), runtime.GOMAXPROCS(0), time.Now().UTC().Format(time.RFC3339))

	if b.f.scenario == "raw" {
		_, err := b.raw(ctx, b.f.mailboxes*b.lo)
		return err
	}
	if b.f.dbURL != "" {
		drop, err := b.postgresSchema(ctx)
		if err != nil {
			return err
		}
		defer drop()
	}
	if err := b.start(ctx, p8); err != nil {
		b.stopNodes()
		return err
	}
	defer b.main.Close()
	defer b.stopNodes() // before node 1 closes
	switch b.f.scenario {
	case "fanout":
		return b.fanout(ctx)
	case "realworld", "overload":
		return b.paced(ctx)
	case "registrations":
		return b.registrations(ctx)
	case "takeover":
		return b.takeover(ctx)
	}
	return nil
}

// start writes a configuration, starts mailpush in-process and creates the
// bench tenant.
func (b *bench) start(ctx context.Context, p8 []byte) error {
	os.MkdirAll(filepath.Join(b.dir, "data"), 0o700)
	keyFile := filepath.Join(b.dir, "AuthKey.p8")
	ca := filepath.Join(b.dir, "ca.pem")
	secretFile := filepath.Join(b.dir, "dovecot-secret")
	b.secret = "bench-secret"
	for path, body := range map[string][]byte{
		keyFile:    p8,
		ca:         pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: b.apple.Certificate().Raw}),
		secretFile: []byte(b.secret + "\n"),
	} {
		if err := os.WriteFile(path, body, 0o600); err != nil {
			return err
		}
	}
	retry := ""
	if b.f.scenario == "overload" {
		// The backlog must drain soon after the outage, not after 15 min
		// of backoff.
		retry = "  retryMax: 5s\n  maxAttempts: 1000\n"
	}
	ewsBlock := ""
	if b.f.scenario == "takeover" {
		retry, ewsBlock = takeoverConfig, takeoverEWS
	}
	cfgPath := filepath.Join(b.dir, "mailpush.yaml")
	database := fmt.Sprintf("database:\n  path: %s\n", filepath.Join(b.dir, "data", "mailpush.db"))
	if b.f.dbURL != "" {
		database = fmt.Sprintf("database:\n  driver: postgres\n  url: %q\n  schema: %s\n", b.f.dbURL, b.f.dbSchema)
	}
	yaml := fmt.Sprintf(`listen: 127.0.0.1:0
%skeyDir: %s
caFile: %s
log:
  level: warn
apns:
  teamId: %s
  keyId: %s
  keyFile: %s
  topic: %s
  productionUrl: %s
  sandboxUrl: %s
push:
%s  batchSize: 512
%stenants:
  bench:
    dovecot:
      username: dovecot
      passwordFile: %s
      userMapping: address
`, database, filepath.Join(b.dir, "data", "keys"), ca, benchTeam, benchKeyID, keyFile, benchTopic,
		b.apple.URL(), b.apple.URL(), retry, ewsBlock, secretFile)
	if err := os.WriteFile(cfgPath, []byte(yaml), 0o600); err != nil {
		return err
	}
	// The tenant exists before the server starts, as with `mailpush tenant add`.
	var out bytes.Buffer
	if err := run(ctx, []string{"tenant", "add", "bench", "--config", cfgPath, "--max-content", "subject_sender"}, &out, b.progress, nil); err != nil {
		return fmt.Errorf("tenant add: %w", err)
	}
	cfg, err := LoadConfig(cfgPath, nil)
	if err != nil {
		return err
	}
	// The bench measures the store and the API, not the quotas or the
	// registration rate.
	cfg.Registrations.MaxPerTenant = 1 << 30
	cfg.Registrations.Rate, cfg.Registrations.Burst = 1<<30, 1<<30
	cfg.Registrations.BackendRate, cfg.Registrations.BackendBurst = 1<<30, 1<<30
	b.main = NewMain(cfg, b.progress)
	if err := b.main.Run(ctx); err != nil {
		return err
	}
	b.base = "http://" + b.main.listener.Addr().String()
	b.bases = []string{b.base}
	if b.tenant, err = b.main.Store.TenantByName(ctx, "bench"); err != nil {
		return err
	}
	if b.f.scenario == "registrations" {
		// Dovecot registrations are service mode: the tenant's backend
		// vouches for the user, so the API wants a backend token.
		out.Reset()
		if err := run(ctx, []string{"token", "add", "--tenant", "bench", "--scope", "backend", "--config", cfgPath}, &out, b.progress, nil); err != nil {
			return fmt.Errorf("token add: %w", err)
		}
		lines := strings.Split(strings.TrimSpace(out.String()), "\n")
		b.secret = lines[len(lines)-1] // the API's bearer token
		return nil
	}
	if err := b.seed(ctx); err != nil {
		return err
	}
	if b.f.nodes > 1 {
		return b.startNodes(ctx, yaml)
	}
	return nil
}

func benchAddress(i int) string { return fmt.Sprintf("user%d@bench.example", i) }
func benchToken(dev int) string { return fmt.Sprintf("%064x", dev+1) }

// seed registers the mailboxes and their devices straight into the store
// (concurrently: the store commits concurrent registrations together).
func (b *bench) seed(ctx context.Context) error {
	r := rand.New(rand.NewPCG(1, 2))
	per := make([]int, b.f.mailboxes)
	for i := range per {
		per[i] = b.lo + r.IntN(b.hi-b.lo+1)
		b.devices += per[i]
	}
	b.tokenOf = make([]int, 0, b.devices)
	b.devOf = make(map[string]int32, b.devices)
	first := make([]int, len(per))
	for m, n := range per {
		first[m] = len(b.tokenOf)
		for range n {
			b.devOf[benchToken(len(b.tokenOf))] = int32(len(b.tokenOf))
			b.tokenOf = append(b.tokenOf, m)
		}
	}
	b.lastBadge = make([]int32, b.devices)
	start := time.Now()
	var done atomic.Int64
	stop := b.ticker(func(el time.Duration) string {
		n := done.Load()
		return fmt.Sprintf("seeding: %d/%d devices (%.0f/s)", n, b.devices, float64(n)/el.Seconds())
	})
	jobs := make(chan int)
	var wg sync.WaitGroup
	var firstErr atomic.Value
	for range 32 {
		wg.Go(func() {
			for m := range jobs {
				if err := b.seedMailbox(ctx, m, first[m], per[m], &done); err != nil {
					firstErr.CompareAndSwap(nil, err)
				}
			}
		})
	}
	for m := range per {
		jobs <- m
	}
	close(jobs)
	wg.Wait()
	stop()
	if err, _ := firstErr.Load().(error); err != nil {
		return err
	}
	fmt.Fprintf(b.out, "seeded %d mailboxes, %d devices (%s devices each) in %s (%.0f registrations/s through the store)\n",
		b.f.mailboxes, b.devices, b.f.devices, time.Since(start).Round(time.Millisecond), float64(b.devices)/time.Since(start).Seconds())
	return nil
}

func (b *bench) seedMailbox(ctx context.Context, m, first, n int, done *atomic.Int64) error {
	for k := range n {
		mb := &mailpush.Mailbox{TenantID: b.tenant.ID, AddressHash: b.main.Keys.HashAddress(b.tenant.ID, benchAddress(m)), Source: mailpush.SourceDovecot,
			Mode: mailpush.ModeService, Badge: mailpush.NoBadge, Status: mailpush.StatusActive}
		reg := &mailpush.Registration{Device: mailpush.Device{Platform: mailpush.PlatformIOS, Token: benchToken(first + k), Environment: mailpush.EnvProduction},
			Content: mailpush.ContentMode(b.f.contentMode), Status: mailpush.StatusActive, ExpiresAt: time.Now().Add(24 * time.Hour)}
		if _, err := b.main.Store.Register(ctx, reg, mb, nil); err != nil {
			return err
		}
		done.Add(1)
	}
	return nil
}

// onAccept is the fake APNs' hook: delivery latency and last badges.
func (b *bench) onAccept(p apnsfake.Push) {
	b.accepted.Add(1)
	if d := time.Duration(b.apnsDelay.Load()); d > 0 {
		time.Sleep(d) // a slow APNs: pushes stay in flight
	}
	if f := b.onBackground.Load(); f != nil && p.Badge < 0 {
		(*f)(p.Token)
	}
	dev, ok := b.devOf[p.Token]
	if !ok || p.Badge < 0 {
		return
	}
	m := b.tokenOf[dev]
	b.mu.Lock()
	if sent, ok := b.sentAt[int64(m)<<20|int64(p.Badge)]; ok {
		b.e2e = append(b.e2e, p.At.Sub(sent))
	}
	if int32(p.Badge) > b.lastBadge[dev] {
		b.lastBadge[dev] = int32(p.Badge)
	}
	b.mu.Unlock()
}

// notifier posts Dovecot notifications to the running server.
type notifier struct {
	b      *bench
	client *http.Client
}

func (b *bench) notifier() *notifier {
	return &notifier{b: b, client: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256, MaxConnsPerHost: 0}, Timeout: 60 * time.Second}}
}

// notify sends mailbox m's MessageNew with unseen count badge and returns
// how long the acknowledgement took.
func (n *notifier) notify(ctx context.Context, m, badge int) (time.Duration, error) {
	body, _ := json.Marshal(map[string]any{"user": benchAddress(m), "folder": "INBOX", "event": "MessageNew", "unseen": badge,
		"from": "Bob <bob@example.com>", "subject": "bench message " + strconv.Itoa(badge), "imap-uid": badge, "imap-uidvalidity": 1})
	req, _ := http.NewRequestWithContext(ctx, "POST", n.b.bases[m%len(n.b.bases)]+"/dovecot/notify", bytes.NewReader(body))
	req.SetBasicAuth("dovecot", n.b.secret)
	req.Header.Set("Content-Type", "application/json")
	start := time.Now()
	n.b.mu.Lock()
	n.b.sentAt[int64(m)<<20|int64(badge)] = start
	n.b.mu.Unlock()
	resp, err := n.client.Do(req)
	took := time.Since(start)
	if err != nil {
		return took, err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		return took, fmt.Errorf("notify: %s", resp.Status)
	}
	return took, nil
}

// usage is the process's CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// rss returns the process's resident set and its peak, in bytes.
func rss() (now, peak int64) {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		k, v, _ := strings.Cut(line, ":")
		kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		switch k {
		case "VmRSS":
			now = kb << 10
		case "VmHWM":
			peak = kb << 10
		}
	}
	return now, peak
}

// ticker prints a live progress line every second until stopped.
func (b *bench) ticker(line func(elapsed time.Duration) string) (stop func()) {
	start := time.Now()
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-done:
				fmt.Fprintf(b.progress, "\r%s\033[K\n", line(time.Since(start)))
				return
			case <-t.C:
				fmt.Fprintf(b.progress, "\r%s\033[K", line(time.Since(start)))
			}
		}
	}()
	return func() { close(done); <-finished }
}

func (b *bench) depth() int {
	n, _ := b.main.Store.OutboxDepth(context.Background())
	return n
}

// profile starts the CPU profile of the measured phase, if asked.
func (b *bench) profile(suffix string) (stop func()) {
	if b.f.cpuprofile == "" {
		return func() {}
	}
	f, err := os.Create(b.f.cpuprofile + suffix)
	if err != nil {
		fmt.Fprintln(b.progress, "cpuprofile:", err)
		return func() {}
	}
	pprof.StartCPUProfile(f)
	return func() { pprof.StopCPUProfile(); f.Close() }
}

type phase struct {
	name     string
	pushes   int64
	events   int64
	elapsed  time.Duration
	cpu      time.Duration
	acks     []time.Duration
	e2e      []time.Duration
	maxDepth int
}

func pct(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	slices.Sort(d)
	return d[min(len(d)-1, int(float64(len(d))*p))]
}

func ms3(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d)/1e6) }

func (b *bench) report(ph phase) {
	now, peak := rss()
	fmt.Fprintf(b.out, "%s: %d pushes, %d events in %s\n", ph.name, ph.pushes, ph.events, ph.elapsed.Round(time.Millisecond))
	fmt.Fprintf(b.out, "  pushes/s %.0f   events/s %.0f   CPU µs/push %.1f (process: fake APNs, load generator and server; and the child nodes)\n",
		float64(ph.pushes)/ph.elapsed.Seconds(), float64(ph.events)/ph.elapsed.Seconds(), float64(ph.cpu.Microseconds())/float64(max(1, ph.pushes)))
	if len(ph.acks) > 0 {
		fmt.Fprintf(b.out, "  ack latency p50 %s  p99 %s  max %s (%d)\n", ms3(pct(ph.acks, .5)), ms3(pct(ph.acks, .99)), ms3(pct(ph.acks, 1)), len(ph.acks))
	}
	if len(ph.e2e) > 0 {
		fmt.Fprintf(b.out, "  event->push latency p50 %s  p99 %s  max %s (%d pushes)\n", ms3(pct(ph.e2e, .5)), ms3(pct(ph.e2e, .99)), ms3(pct(ph.e2e, 1)), len(ph.e2e))
	}
	fmt.Fprintf(b.out, "  RSS %.1f MiB (peak %.1f MiB)   outbox depth max %d, now %d\n", float64(now)/(1<<20), float64(peak)/(1<<20), ph.maxDepth, b.depthOrZero())
	for i, r := range b.childRSS() {
		fmt.Fprintf(b.out, "  node %d (child process) RSS %.1f MiB\n", i+2, float64(r)/(1<<20))
	}
}

func (b *bench) depthOrZero() int {
	if b.main == nil {
		return 0
	}
	return b.depth()
}

// raw drives the fake APNs with a bare net/http HTTP/2 client (one
// connection, 64 streams in flight, a prebuilt payload): the machine's
// ceiling for this work.
func (b *bench) raw(ctx context.Context, n int) (phase, error) {
	tok := &token.Token{AuthKey: b.key, KeyID: benchKeyID, TeamID: benchTeam}
	bearer := tok.GenerateIfExpired()
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: b.apple.CertPool()}, ForceAttemptHTTP2: true, MaxConnsPerHost: 1}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	payload := []byte(`{"aps":{"badge":1}}`)
	push := func(i int) error {
		req, _ := http.NewRequestWithContext(ctx, "POST", b.apple.URL()+"/3/device/"+benchToken(i%1_000_000), bytes.NewReader(payload))
		req.Header.Set("authorization", "bearer "+bearer)
		req.Header.Set("apns-topic", benchTopic)
		req.Header.Set("apns-push-type", "alert")
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("raw: %s", resp.Status)
		}
		return nil
	}
	if err := push(0); err != nil { // the connection exists before the clock starts
		return phase{}, err
	}
	before := b.accepted.Load()
	var next atomic.Int64
	var firstErr atomic.Value
	stopProfile := b.profile(".raw")
	cpu0, start := cpuTime(), time.Now()
	stop := b.ticker(func(el time.Duration) string {
		d := b.accepted.Load() - before
		return fmt.Sprintf("raw: %d/%d pushes (%.0f/s)", d, n, float64(d)/el.Seconds())
	})
	var wg sync.WaitGroup
	for range 64 {
		wg.Go(func() {
			for i := int(next.Add(1)); i <= n; i = int(next.Add(1)) {
				if err := push(i); err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
			}
		})
	}
	wg.Wait()
	ph := phase{name: "raw HTTP/2 client → fake APNs", pushes: b.accepted.Load() - before, elapsed: time.Since(start), cpu: cpuTime() - cpu0}
	stop()
	stopProfile()
	if err, _ := firstErr.Load().(error); err != nil {
		return ph, err
	}
	b.report(ph)
	return ph, nil
}

// fanout: the raw client first, then one MessageNew per mailbox as fast as
// the notify endpoint takes them, until every device got its push.
func (b *bench) fanout(ctx context.Context) error {
	b.sentAt = make(map[int64]time.Time, b.f.mailboxes)
	raw, err := b.raw(ctx, b.devices)
	if err != nil {
		return err
	}
	// The connection to APNs exists before the clock starts (as raw's did).
	runtime.GC()
	ph, err := b.drive(ctx, "mailpush fan-out", func(yield func(m, badge int) bool) {
		for m := range b.f.mailboxes {
			if !yield(m, 1) {
				return
			}
		}
	}, int64(b.devices), 0)
	if err != nil {
		return err
	}
	b.report(ph)
	b.measured = ph
	rawRate := float64(raw.pushes) / raw.elapsed.Seconds()
	rate := float64(ph.pushes) / ph.elapsed.Seconds()
	rawCPU := float64(raw.cpu.Microseconds()) / float64(raw.pushes)
	cpu := float64(ph.cpu.Microseconds()) / float64(max(1, ph.pushes))
	fmt.Fprintf(b.out, "ratios (same run): pushes/s %.0f%% of the raw client (goal ≥ 85%%); CPU µs/push %.2fx the raw client's (goal ≤ 1.3x)\n", 100*rate/rawRate, cpu/rawCPU)
	return nil
}

// paced: events at a fixed rate spread over the mailboxes for the duration
// (overload: with the fake APNs down for the outage), then the drain.
func (b *bench) paced(ctx context.Context) error {
	b.sentAt = make(map[int64]time.Time, int(b.f.rate*b.f.duration.Seconds())+1)
	r := rand.New(rand.NewPCG(3, 4))
	counts := make([]int, b.f.mailboxes)
	total := int(b.f.rate * b.f.duration.Seconds())
	type ev struct{ m, badge int }
	evs := make([]ev, total)
	for i := range evs {
		m := r.IntN(b.f.mailboxes)
		counts[m]++
		evs[i] = ev{m, counts[m]}
	}
	var outageEnd time.Time
	if b.f.scenario == "overload" {
		b.apple.FailNext(1<<30, http.StatusServiceUnavailable, apnsfake.ReasonServiceUnavailable)
		outageEnd = time.Now().Add(b.f.outage)
		go func() {
			select {
			case <-time.After(b.f.outage):
				b.apple.FailNext(0, 0, "")
			case <-ctx.Done():
			}
		}()
	}
	ph, err := b.drive(ctx, fmt.Sprintf("mailpush %s at %.0f events/s", b.f.scenario, b.f.rate), func(yield func(m, badge int) bool) {
		for _, e := range evs {
			if !yield(e.m, e.badge) {
				return
			}
		}
	}, -1, b.f.rate)
	if err != nil {
		return err
	}
	b.report(ph)
	b.measured = ph
	if b.f.scenario == "overload" {
		_, peak := rss()
		fmt.Fprintf(b.out, "overload: APNs down until %s; peak RSS %.1f MiB against the bound of %d MiB: %s\n", outageEnd.UTC().Format(time.TimeOnly),
			float64(peak)/(1<<20), b.f.rssLimit, map[bool]string{true: "within", false: "EXCEEDED"}[peak <= int64(b.f.rssLimit)<<20])
	}
	// Nothing lost: every device of a mailbox that had events got the
	// mailbox's last badge.
	b.mu.Lock()
	missing := 0
	for dev, m := range b.tokenOf {
		if counts[m] > 0 && int(b.lastBadge[dev]) != counts[m] {
			missing++
		}
	}
	b.mu.Unlock()
	fmt.Fprintf(b.out, "devices without their mailbox's last badge: %d\n", missing)
	if missing > 0 {
		return fmt.Errorf("%d devices did not get their last badge", missing)
	}
	return nil
}

// drive sends the events that next yields (at rate per second, or as fast
// as -concurrency clients can), then waits until want pushes were accepted
// (want < 0: until the outbox is empty and every device has its last
// badge, or quiet).
func (b *bench) drive(ctx context.Context, name string, next func(yield func(m, badge int) bool), want int64, rate float64) (phase, error) {
	n := b.notifier()
	defer n.client.CloseIdleConnections()
	// Warm the notify connections outside the measurement.
	before := b.accepted.Load()
	var sent, failed atomic.Int64
	var ackMu sync.Mutex
	acks := make([]time.Duration, 0, 1024)
	var maxDepth atomic.Int64
	stopProfile := b.profile("")
	cpu0, start := cpuTime()+b.childCPU(), time.Now()
	stop := b.ticker(func(el time.Duration) string {
		d := b.depth()
		if int64(d) > maxDepth.Load() {
			maxDepth.Store(int64(d))
		}
		p := b.accepted.Load() - before
		now, _ := rss()
		return fmt.Sprintf("%s: %5.0fs events %d (%.0f/s) pushes %d (%.0f/s) depth %d rss %.0f MiB", name, el.Seconds(), sent.Load(), float64(sent.Load())/el.Seconds(),
			p, float64(p)/el.Seconds(), d, float64(now)/(1<<20))
	})
	type job struct{ m, badge int }
	// A mailbox's events go through one client, in order, as its mail
	// server would send them (the unread count of a later notification
	// reflects a later state).
	queues := make([]chan job, b.f.concurrency)
	var wg sync.WaitGroup
	var firstErr atomic.Value
	for i := range b.f.concurrency {
		queues[i] = make(chan job, 64)
		jobs := queues[i]
		wg.Go(func() {
			for j := range jobs {
				took, err := n.notify(ctx, j.m, j.badge)
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err)
					continue
				}
				sent.Add(1)
				ackMu.Lock()
				acks = append(acks, took)
				ackMu.Unlock()
			}
		})
	}
	i := 0
	next(func(m, badge int) bool {
		if rate > 0 {
			due := start.Add(time.Duration(float64(i) / rate * float64(time.Second)))
			if wait := time.Until(due); wait > 0 {
				time.Sleep(wait) // pacing the load generator, not waiting for a result
			}
		}
		i++
		select {
		case queues[m%len(queues)] <- job{m, badge}:
			return true
		case <-ctx.Done():
			return false
		}
	})
	for _, q := range queues {
		close(q)
	}
	wg.Wait()
	sendDone := time.Since(start)
	// Wait for the pushes: the expected count, or an empty outbox and no
	// push for a while.
	last, lastChange := b.accepted.Load(), time.Now()
	for {
		got := b.accepted.Load() - before
		if want >= 0 && got >= want {
			break
		}
		if want < 0 && b.depth() == 0 && time.Since(lastChange) > 2*time.Second {
			break
		}
		if a := b.accepted.Load(); a != last {
			last, lastChange = a, time.Now()
		}
		if time.Since(lastChange) > 120*time.Second {
			stop()
			stopProfile()
			return phase{}, fmt.Errorf("%s: no push for 2 minutes: %d of %d accepted, outbox depth %d", name, got, want, b.depth())
		}
		select {
		case <-ctx.Done():
			return phase{}, ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
	elapsed := time.Since(start)
	if want < 0 {
		elapsed = max(sendDone, time.Since(start)-2*time.Second) // the quiet wait is not work
	}
	ph := phase{name: name, pushes: b.accepted.Load() - before, events: sent.Load(), elapsed: elapsed, cpu: cpuTime() + b.childCPU() - cpu0, maxDepth: int(maxDepth.Load())}
	stop()
	stopProfile()
	ackMu.Lock()
	ph.acks = acks
	ackMu.Unlock()
	b.mu.Lock()
	ph.e2e = b.e2e
	b.e2e = nil
	b.mu.Unlock()
	if err, _ := firstErr.Load().(error); err != nil {
		fmt.Fprintf(b.out, "%d notifications failed; first: %v\n", failed.Load(), err)
	}
	return ph, nil
}

// registrations: N registrations through the device API by -concurrency
// clients, then RSS and database bytes per registration. With -ceiling, the
// same clients first post as many to a trivial net/http JSON handler in this
// process: what the machine's HTTP and JSON alone allow, the registrations'
// ceiling.
func (b *bench) registrations(ctx context.Context) error {
	total := b.f.mailboxes * b.lo
	var ceiling float64
	if b.f.ceiling {
		n, elapsed, cpu, err := b.ceiling(ctx, total)
		what := "process: clients and server"
		if b.f.wrk > 0 {
			what = "server alone, clients in wrk"
		}
		if err != nil {
			return err
		}
		ceiling = float64(n) / elapsed.Seconds()
		fmt.Fprintf(b.out, "ceiling, a trivial net/http JSON handler with the same clients: %d in %s: %.0f/s; CPU µs/request %.0f (%s)\n",
			n, elapsed.Round(time.Millisecond), ceiling, float64(cpu.Microseconds())/float64(n), what)
	}
	stopProfile := b.profile("")
	n, elapsed, cpu, err := b.post(ctx, b.base, total, "registrations")
	stopProfile()
	if err != nil {
		return err
	}
	what := "process: clients and server"
	if b.f.wrk > 0 {
		what = "server alone, clients in wrk"
	}
	fmt.Fprintf(b.out, "registrations through the API: %d in %s: %.0f/s; CPU µs/registration %.0f (%s)\n",
		n, elapsed.Round(time.Millisecond), float64(n)/elapsed.Seconds(), float64(cpu.Microseconds())/float64(n), what)
	if ceiling > 0 {
		fmt.Fprintf(b.out, "  %.0f %% of the ceiling\n", 100*float64(n)/elapsed.Seconds()/ceiling)
	}
	return b.registrationBytes(ctx, n)
}

// ceiling serves a trivial handler (the bearer token present, the request
// decoded into the API's shape, a response of the API's shape encoded) and
// posts total registrations to it as postRegistrations does.
func (b *bench) ceiling(ctx context.Context, total int) (n int64, elapsed, cpu time.Duration, err error) {
	type request struct {
		Device struct {
			Platform, Token string
		}
		Mailbox struct {
			Address, Source string
		}
		Content string
	}
	type response struct {
		ID, Mode, Platform, Content, Status, ExpiresAt string
	}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req request
		if r.Header.Get("Authorization") == "" || json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20)).Decode(&req) != nil {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		json.NewEncoder(w).Encode(response{ID: mailpush.NewID(), Mode: "service", Platform: req.Device.Platform, Content: "badge", Status: "active", ExpiresAt: time.Now().UTC().Format(time.RFC3339)})
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, 0, 0, err
	}
	srv := &http.Server{Handler: h}
	go srv.Serve(ln)
	defer srv.Close()
	stopProfile := b.profile(".ceiling")
	defer stopProfile()
	return b.post(ctx, "http://"+ln.Addr().String(), total, "ceiling")
}

// post posts registrations to base with wrk when -wrk is set, else with
// postRegistrations.
func (b *bench) post(ctx context.Context, base string, total int, name string) (n int64, elapsed, cpu time.Duration, err error) {
	if b.f.wrk > 0 {
		return b.wrkRegistrations(ctx, base, name)
	}
	return b.postRegistrations(ctx, base, total, name)
}

// wrkLua makes every request a new device of a new mailbox: thread t's
// n-th request registers token t‖n for the address wt-n@bench.example.
const wrkLua = `local threads = 0
function setup(thread) thread:set("id", threads); threads = threads + 1 end
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer %s"
local n = 0
function request()
  n = n + 1
  return wrk.format(nil, "/api/v1/registrations", nil, string.format('{"device":{"platform":"ios","token":"%%056x%%08x"},"mailbox":{"address":"w%%d-%%d@bench.example","source":"dovecot"},"content":"%s"}', id, n, id, n))
end
`

// wrkRegistrations runs wrk against base for -wrk with -concurrency
// connections on 2 threads and returns the requests it counted and this
// process's CPU meanwhile (the server's alone). Any answer but 2xx fails.
func (b *bench) wrkRegistrations(ctx context.Context, base, name string) (n int64, elapsed, cpu time.Duration, err error) {
	script := filepath.Join(b.dir, "registrations.lua")
	if err := os.WriteFile(script, fmt.Appendf(nil, wrkLua, b.secret, b.f.contentMode), 0o600); err != nil {
		return 0, 0, 0, err
	}
	if _, err := exec.LookPath("wrk"); err != nil {
		return 0, 0, 0, errors.New("-wrk needs the wrk load generator on PATH (apt-get install wrk)")
	}
	cmd := exec.CommandContext(ctx, "wrk", "-t2", "-c"+strconv.Itoa(b.f.concurrency), "-d"+b.f.wrk.String(), "-s", script, base)
	fmt.Fprintf(b.progress, "%s: wrk for %s…\n", name, b.f.wrk)
	cpu0, start := cpuTime(), time.Now()
	out, err := cmd.CombinedOutput()
	elapsed, cpu = time.Since(start), cpuTime()-cpu0
	if err != nil {
		return 0, 0, 0, fmt.Errorf("wrk: %w: %s", err, out)
	}
	if bytes.Contains(out, []byte("Non-2xx")) || bytes.Contains(out, []byte("Socket errors")) {
		return 0, 0, 0, fmt.Errorf("wrk: requests failed:\n%s", out)
	}
	var secs float64
	var unit string
	for _, line := range strings.Split(string(out), "\n") {
		if _, err := fmt.Sscanf(strings.TrimSpace(line), "%d requests in %f%s", &n, &secs, &unit); err == nil {
			break
		}
	}
	if n == 0 {
		return 0, 0, 0, fmt.Errorf("wrk: no request count in its output:\n%s", out)
	}
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		fmt.Fprintf(b.out, "  wrk's own CPU: %.0f µs/request\n", float64(ru.Utime.Nano()+ru.Stime.Nano())/1e3/float64(n))
	}
	return n, elapsed, cpu, nil
}

// postRegistrations posts total registrations to base by -concurrency
// keep-alive clients and returns how many were answered 201 or 200, in
// what time and with what CPU of this process.
func (b *bench) postRegistrations(ctx context.Context, base string, total int, name string) (n int64, elapsed, cpu time.Duration, err error) {
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256}}
	defer client.CloseIdleConnections()
	var next, done atomic.Int64
	var firstErr atomic.Value
	cpu0, start := cpuTime(), time.Now()
	stop := b.ticker(func(el time.Duration) string {
		d := done.Load()
		return fmt.Sprintf("%s: %d/%d (%.0f/s)", name, d, total, float64(d)/el.Seconds())
	})
	var wg sync.WaitGroup
	for range b.f.concurrency {
		wg.Go(func() {
			for i := int(next.Add(1)) - 1; i < total; i = int(next.Add(1)) - 1 {
				// Formatted, not marshalled from maps: the client's CPU
				// counts in the process's, so it is kept small.
				body := fmt.Appendf(nil, `{"device":{"platform":"ios","token":%q},"mailbox":{"address":%q,"source":"dovecot"},"content":%q}`,
					benchToken(i), benchAddress(i/b.lo), b.f.contentMode)
				req, _ := http.NewRequestWithContext(ctx, "POST", base+"/api/v1/registrations", bytes.NewReader(body))
				req.Header.Set("Authorization", "Bearer "+b.secret)
				req.Header.Set("Content-Type", "application/json")
				resp, err := client.Do(req)
				if err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusCreated && resp.StatusCode != http.StatusOK {
					firstErr.CompareAndSwap(nil, fmt.Errorf("%s: %s", name, resp.Status))
					return
				}
				done.Add(1)
			}
		})
	}
	wg.Wait()
	elapsed, cpu = time.Since(start), cpuTime()-cpu0
	stop()
	if err, _ := firstErr.Load().(error); err != nil {
		return 0, 0, 0, err
	}
	return done.Load(), elapsed, cpu, nil
}

// registrationBytes prints RSS and database bytes per registration.
func (b *bench) registrationBytes(ctx context.Context, n int64) error {
	now, peak := rss()
	dbPath := filepath.Join(b.dir, "data", "mailpush.db")
	if err := b.main.Close(); err != nil { // checkpoints the WAL into the file
		fmt.Fprintln(b.out, "close:", err)
	}
	var size int64
	if b.f.dbURL != "" {
		var err error
		if size, err = b.postgresBytes(ctx); err != nil {
			return err
		}
	} else {
		st, err := os.Stat(dbPath)
		if err != nil {
			return err
		}
		size = st.Size()
	}
	fmt.Fprintf(b.out, "  RSS %.1f MiB (peak %.1f MiB, %.0f B per registration); database %d bytes (%.0f B per registration)\n",
		float64(now)/(1<<20), float64(peak)/(1<<20), float64(peak)/float64(n), size, float64(size)/float64(n))
	return nil
}

// postgresSchema creates the -database-schema (a fresh one when none was
// named) and returns what drops it again (nothing for a named one).
func (b *bench) postgresSchema(ctx context.Context) (drop func(), err error) {
	conn, err := pgx.Connect(ctx, b.f.dbURL)
	if err != nil {
		return nil, fmt.Errorf("-database-url: %w", err)
	}
	defer conn.Close(ctx)
	named := b.f.dbSchema != ""
	if !named {
		b.f.dbSchema = fmt.Sprintf("mailpush_bench_%d", time.Now().UnixNano())
	}
	if _, err := conn.Exec(ctx, "CREATE SCHEMA IF NOT EXISTS "+pgx.Identifier{b.f.dbSchema}.Sanitize()); err != nil {
		return nil, fmt.Errorf("create schema %s: %w", b.f.dbSchema, err)
	}
	fmt.Fprintf(b.out, "database: PostgreSQL, schema %s\n", b.f.dbSchema)
	if named {
		return func() {}, nil
	}
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		conn, err := pgx.Connect(ctx, b.f.dbURL)
		if err != nil {
			fmt.Fprintln(b.progress, "drop schema:", err)
			return
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, "DROP SCHEMA "+pgx.Identifier{b.f.dbSchema}.Sanitize()+" CASCADE"); err != nil {
			fmt.Fprintln(b.progress, "drop schema:", err)
		}
	}, nil
}

// postgresBytes is what the registrations and their mailboxes take in
// PostgreSQL: tables, indexes and TOAST.
func (b *bench) postgresBytes(ctx context.Context) (int64, error) {
	conn, err := pgx.Connect(ctx, b.f.dbURL)
	if err != nil {
		return 0, err
	}
	defer conn.Close(ctx)
	var n int64
	s := pgx.Identifier{b.f.dbSchema}.Sanitize()
	err = conn.QueryRow(ctx, fmt.Sprintf(`SELECT pg_total_relation_size('%s.registrations') + pg_total_relation_size('%s.mailboxes')`, s, s)).Scan(&n)
	return n, err
}
