package graph

import (
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mailpush/mailpush"
)

// Graph's rule for a notification endpoint: over a 10-minute window, when
// at least 10 % of the answers take longer than about 3 s the endpoint is
// "slow" (its notifications are delayed), at 15 % they are dropped. We
// watch our own answers the same way and warn at half of Graph's threshold.
const (
	SlowAnswer   = 2900 * time.Millisecond
	SlowWindow   = 10 * time.Minute
	WarnRatio    = 0.05 // warn here: Graph calls us slow at 0.10 and drops at 0.15
	minAnswers   = 20   // a ratio over fewer answers means little
	windowBucket = 10 * time.Second
	warnEvery    = time.Minute
)

// Metrics are the Graph listener's health on /metrics: the acknowledgement
// latency of every notification POST and the share of slow answers in
// Graph's window. Nothing in them names a tenant, a mailbox or a user.
type Metrics struct {
	ack   prometheus.Histogram
	ratio prometheus.GaugeFunc
	w     *slowWindow
}

// NewMetrics registers the metrics on reg; log receives the warning when
// the slow ratio nears Graph's threshold.
func NewMetrics(reg prometheus.Registerer, clock mailpush.Clock, log *slog.Logger) *Metrics {
	w := &slowWindow{clock: clock, log: log}
	m := &Metrics{
		ack: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "mailpush_graph_ack_seconds",
			Help:    "Time from a Graph notification POST's arrival to its answer (Graph wants well under 3 s).",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2, 2.9, 5, 10},
		}),
		ratio: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "mailpush_graph_slow_answer_ratio",
			Help: "Share of Graph notification answers over 2.9 s (or failed) in the last 10 minutes: Graph calls the endpoint slow at 0.10 and drops notifications at 0.15.",
		}, w.ratio),
		w: w,
	}
	reg.MustRegister(m.ack, m.ratio)
	return m
}

// observe records one answer.
func (m *Metrics) observe(took time.Duration, failed bool) {
	if m == nil {
		return
	}
	m.ack.Observe(took.Seconds())
	m.w.add(took > SlowAnswer || failed)
}

// slowWindow counts answers and slow answers in 10-second buckets over
// Graph's 10-minute window (bounded: 60 buckets).
type slowWindow struct {
	clock mailpush.Clock
	log   *slog.Logger

	mu      sync.Mutex
	buckets [int(SlowWindow / windowBucket)]struct {
		start       time.Time
		total, slow int
	}
	warned time.Time
}

func (w *slowWindow) add(slow bool) {
	now := w.clock.Now()
	w.mu.Lock()
	start := now.Truncate(windowBucket)
	b := &w.buckets[(start.Unix()/int64(windowBucket/time.Second))%int64(len(w.buckets))]
	if !b.start.Equal(start) {
		b.start, b.total, b.slow = start, 0, 0
	}
	b.total++
	if slow {
		b.slow++
	}
	total, slowN := w.sumLocked(now)
	warn := total >= minAnswers && float64(slowN) >= WarnRatio*float64(total) && now.Sub(w.warned) >= warnEvery
	if warn {
		w.warned = now
	}
	w.mu.Unlock()
	if warn {
		w.log.Warn("Graph notification answers are getting slow: Graph marks the endpoint slow at 10 % and drops notifications at 15 %",
			"slowRatio", float64(slowN)/float64(total), "answers", total, "window", SlowWindow)
	}
}

func (w *slowWindow) sumLocked(now time.Time) (total, slow int) {
	for _, b := range w.buckets {
		if !b.start.IsZero() && now.Sub(b.start) < SlowWindow {
			total += b.total
			slow += b.slow
		}
	}
	return total, slow
}

func (w *slowWindow) ratio() float64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	total, slow := w.sumLocked(w.clock.Now())
	if total == 0 {
		return 0
	}
	return float64(slow) / float64(total)
}
