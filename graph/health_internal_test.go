package graph

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mailpush/mailpush/clocktest"
)

func TestSlowAnswersWarnBeforeGraphWould(t *testing.T) {
	clock := clocktest.New(time.Date(2026, 12, 1, 8, 0, 0, 0, time.UTC))
	var logs bytes.Buffer
	m := NewMetrics(prometheus.NewRegistry(), clock, slog.New(slog.NewTextHandler(&logs, nil)))
	for i := range 100 {
		took := 20 * time.Millisecond
		if i == 40 || i == 60 || i == 80 || i == 99 {
			took = 3 * time.Second // 4 of 100, never 5 % on the way: no warning
		}
		m.observe(took, false)
		clock.Advance(time.Second)
	}
	if strings.Contains(logs.String(), "getting slow") {
		t.Fatalf("warned at 4 %%:\n%s", logs.String())
	}
	m.observe(time.Millisecond, true) // a failed answer counts as slow
	m.observe(5*time.Second, false)
	if got := m.w.ratio(); got < 0.058 || got > 0.059 {
		t.Errorf("ratio = %v, want 6/102", got)
	}
	if n := strings.Count(logs.String(), "getting slow"); n != 1 {
		t.Fatalf("%d warnings at 5.9 %%, want 1:\n%s", n, logs.String())
	}
	m.observe(5*time.Second, false)
	if n := strings.Count(logs.String(), "getting slow"); n != 1 {
		t.Errorf("%d warnings within a minute, want 1", n)
	}
	clock.Advance(SlowWindow + windowBucket)
	if got := m.w.ratio(); got != 0 {
		t.Errorf("ratio %v after the window passed, want 0", got)
	}
}
