package console

import (
	"math"
	"strings"
	"testing"
	"time"

	"github.com/mailpush/mailpush/clocktest"
)

// TestSessionsExpireAndStayBounded: idle and absolute timeouts, and the
// oldest session dropped when the table is full.
func TestSessionsExpireAndStayBounded(t *testing.T) {
	clock := clocktest.New(time.Unix(1_700_000_000, 0))
	s := newSessions(clock, 30*time.Minute, 2*time.Hour, 2)
	a := s.create(&session{actor: "a"})
	if got := s.get(a); got == nil || got.actor != "a" || got.CSRF == "" {
		t.Fatalf("get = %+v", got)
	}
	if s.get("forged") != nil || s.get("") != nil {
		t.Error("an unknown cookie is a session")
	}
	clock.Advance(29 * time.Minute)
	if s.get(a) == nil {
		t.Error("a used session expired early")
	}
	clock.Advance(31 * time.Minute)
	if s.get(a) != nil {
		t.Error("an idle session survived")
	}
	b := s.create(&session{actor: "b"})
	for range 5 {
		clock.Advance(25 * time.Minute)
		s.get(b)
	}
	if s.get(b) != nil {
		t.Error("a session outlived its absolute timeout")
	}
	c := s.create(&session{actor: "c"})
	clock.Advance(time.Second)
	d := s.create(&session{actor: "d"})
	clock.Advance(time.Second)
	e := s.create(&session{actor: "e"})
	if s.get(c) != nil || s.get(d) == nil || s.get(e) == nil {
		t.Error("a full table did not drop its oldest session")
	}
	// Only the cookie's hash is kept.
	for id := range s.byID {
		if strings.Contains(id, e) {
			t.Error("the cookie value is kept in clear")
		}
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
