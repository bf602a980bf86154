package console

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mailpush/mailpush"
	"github.com/mailpush/mailpush/clocktest"
	"github.com/mailpush/mailpush/sqlite"
	"github.com/mailpush/mailpush/storetest"
)

// TestSessionsAreSharedThroughTheStore: a session made by one console is
// accepted by another on the same store (another node), with the same CSRF
// token; the idle timeout and sign-out end it for both; the database holds
// neither the cookie nor the display name in clear.
func TestSessionsAreSharedThroughTheStore(t *testing.T) {
	ctx := context.Background()
	clock := clocktest.New(time.Unix(1_700_000_000, 0))
	path := filepath.Join(t.TempDir(), "console.db")
	store, err := sqlite.Open(ctx, path, storetest.Keyring(t), clock)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	nodeA := &sessions{store: store, clock: clock, idle: 30 * time.Minute, maxAge: 2 * time.Hour}
	nodeB := &sessions{store: store, clock: clock, idle: 30 * time.Minute, maxAge: 2 * time.Hour}
	sess := &session{actor: "oidc:x", Display: "ops@example.com"}
	cookie, err := nodeA.create(ctx, sess)
	if err != nil {
		t.Fatal(err)
	}
	got := nodeB.get(ctx, cookie)
	if got == nil || got.actor != "oidc:x" || got.Display != "ops@example.com" || got.CSRF != sess.CSRF || got.CSRF == "" {
		t.Fatalf("the other node's view = %+v, want the session with CSRF %q", got, sess.CSRF)
	}
	if nodeB.get(ctx, "forged") != nil || nodeB.get(ctx, "") != nil || nodeB.get(ctx, strings.Repeat("A", 43)) != nil {
		t.Error("an unknown cookie is a session")
	}
	clock.Advance(29 * time.Minute)
	if nodeA.get(ctx, cookie) == nil {
		t.Fatal("a used session expired early")
	}
	clock.Advance(29 * time.Minute) // 29 minutes after its last use on A
	if nodeB.get(ctx, cookie) == nil {
		t.Fatal("node B did not see node A's use of the session")
	}
	if err := nodeB.delete(ctx, cookie); err != nil {
		t.Fatal(err)
	}
	if nodeA.get(ctx, cookie) != nil {
		t.Error("a session signed out on node B lives on node A")
	}
	store.Close()
	for _, f := range []string{path, path + "-wal"} {
		b, _ := os.ReadFile(f)
		if bytes.Contains(b, []byte(cookie)) || bytes.Contains(b, []byte("ops@example.com")) {
			t.Errorf("%s holds the cookie or the display name in clear", f)
		}
	}
}

// TestDecisionLogKeepsTheLast: newest first, bounded, safe under
// concurrent adds.
func TestDecisionLogKeepsTheLast(t *testing.T) {
	l := NewDecisionLog(3)
	if len(l.Recent()) != 0 {
		t.Fatal("an empty log lists decisions")
	}
	for i := range 5 {
		l.Add(mailpush.GateDecisionRecord{Reason: fmt.Sprint(i)})
	}
	var got []string
	for _, r := range l.Recent() {
		got = append(got, r.Reason)
	}
	if fmt.Sprint(got) != "[4 3 2]" {
		t.Errorf("Recent = %v, want [4 3 2]", got)
	}
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 1000 {
				l.Add(mailpush.GateDecisionRecord{Allow: true})
				l.Recent()
			}
		}()
	}
	wg.Wait()
	if n := len(l.Recent()); n != 3 {
		t.Errorf("after concurrent adds: %d kept, want 3", n)
	}
}

func TestQuantile(t *testing.T) {
	bounds := []float64{0.01, 0.1, 1, math.Inf(1)}
	a := histogram{bounds: bounds, counts: []float64{0, 0, 0, 0}}
	b := histogram{bounds: bounds, counts: []float64{50, 90, 100, 100}, total: 100}
	if q := quantile(0.5, a, b); q != 0.01 {
		t.Errorf("p50 = %v, want 0.01", q)
	}
	if q := quantile(0.95, a, b); math.Abs(q-0.55) > 1e-9 {
		t.Errorf("p95 = %v, want 0.55 (linear within the bucket)", q)
	}
	if q := quantile(0.5, b, b); !math.IsNaN(q) {
		t.Errorf("no pushes in the window: %v, want NaN", q)
	}
}

// TestLineChartIsPlainSVG: the chart is built from numbers; a title is
// escaped.
func TestLineChartIsPlainSVG(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	svg := string(lineChart(`<script>x</script>`, []point{{t0, 1}, {t0.Add(time.Second), 3}}, "#000"))
	if strings.Contains(svg, "<script>") || !strings.Contains(svg, "&lt;script&gt;") || !strings.Contains(svg, "<path d=\"M") {
		t.Errorf("chart:\n%s", svg)
	}
	if !strings.Contains(string(lineChart("empty", nil, "#000")), "collecting samples") {
		t.Error("an empty chart says nothing")
	}
}

func TestTemplatesParse(t *testing.T) {
	pages, err := parseTemplates()
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"login", "signedin", "error", "tenants", "registrations", "subscriptions", "deliveries", "deadletters", "gate", "audit"} {
		if pages[name] == nil {
			t.Errorf("no page %s", name)
		}
	}
}

// BenchmarkDecisionLogAdd is the cost the recent-decisions list adds to
// each gate decision (gate.Deps.OnDecision), from every core at once.
func BenchmarkDecisionLogAdd(b *testing.B) {
	l := NewDecisionLog(200)
	r := mailpush.GateDecisionRecord{At: time.Now(), Device: "0123456789ab", DeviceType: "iPhone", User: "ba9876543210", Allow: true, Reason: "device is compliant"}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			l.Add(r)
		}
	})
}
