package console

import (
	"fmt"
	"html/template"
	"math"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// sample is the pipeline's counters at one moment (read from the metrics
// registry: the console keeps no second count of its own).
type sample struct {
	at        time.Time
	delivered float64
	failed    float64            // every result but delivered and superseded
	byReason  map[string]float64 // failed pushes by result/reason
	latency   histogram          // enqueue to provider answer
	depth     float64
}

type histogram struct {
	bounds []float64
	counts []float64 // cumulative, per bound
	total  float64
}

// sampler keeps the last n samples.
type sampler struct {
	mu   sync.Mutex
	ring []sample
	n    int
}

func newSampler(n int) *sampler { return &sampler{n: n} }

func (s *sampler) take(g prometheus.Gatherer, now time.Time) {
	sm, ok := read(g, now)
	if !ok {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ring = append(s.ring, sm)
	if len(s.ring) > s.n {
		s.ring = s.ring[len(s.ring)-s.n:]
	}
}

// read gathers the counters now.
func read(g prometheus.Gatherer, now time.Time) (sample, bool) {
	if g == nil {
		return sample{}, false
	}
	mfs, err := g.Gather()
	if err != nil {
		return sample{}, false
	}
	sm := sample{at: now, byReason: map[string]float64{}}
	for _, mf := range mfs {
		switch mf.GetName() {
		case "mailpush_pushes_total":
			for _, m := range mf.GetMetric() {
				labels := map[string]string{}
				for _, l := range m.GetLabel() {
					labels[l.GetName()] = l.GetValue()
				}
				v := m.GetCounter().GetValue()
				switch labels["result"] {
				case "delivered":
					sm.delivered += v
				case "superseded":
				default:
					sm.failed += v
					reason := labels["result"]
					if labels["reason"] != "" {
						reason += ": " + labels["reason"]
					}
					sm.byReason[reason] += v
				}
			}
		case "mailpush_push_enqueue_to_send_seconds":
			for _, m := range mf.GetMetric() {
				h := m.GetHistogram()
				if len(sm.latency.bounds) == 0 {
					for _, b := range h.GetBucket() {
						sm.latency.bounds = append(sm.latency.bounds, b.GetUpperBound())
					}
					sm.latency.counts = make([]float64, len(sm.latency.bounds))
				}
				for i, b := range h.GetBucket() {
					if i < len(sm.latency.counts) {
						sm.latency.counts[i] += float64(b.GetCumulativeCount())
					}
				}
				sm.latency.total += float64(h.GetSampleCount())
			}
		case "mailpush_outbox_depth":
			for _, m := range mf.GetMetric() {
				sm.depth += m.GetGauge().GetValue()
			}
		}
	}
	return sm, true
}

func (s *sampler) snapshot() []sample {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]sample(nil), s.ring...)
}

// quantile estimates a quantile from the difference of two cumulative
// histograms (the interval's pushes), as Prometheus' histogram_quantile.
func quantile(q float64, a, b histogram) float64 {
	if len(b.bounds) == 0 {
		return math.NaN()
	}
	total := b.total - a.total
	if total <= 0 {
		return math.NaN()
	}
	rank := q * total
	prevBound, prevCount := 0.0, 0.0
	for i, bound := range b.bounds {
		c := b.counts[i]
		if len(a.counts) == len(b.counts) {
			c -= a.counts[i]
		}
		if c >= rank {
			if math.IsInf(bound, 1) {
				return prevBound
			}
			if c == prevCount {
				return bound
			}
			return prevBound + (bound-prevBound)*(rank-prevCount)/(c-prevCount)
		}
		prevBound, prevCount = bound, c
	}
	return prevBound
}

type reasonCount struct {
	Reason string
	Count  float64
}

type deliveriesData struct {
	Samples     int
	Window      time.Duration
	Delivered   float64
	Failed      float64
	Rate        string
	P50, P95    string
	Depth       float64
	Reasons     []reasonCount
	RateChart   template.HTML
	ErrorChart  template.HTML
	SampleEvery time.Duration
}

func (c *Console) deliveriesPage(w http.ResponseWriter, r *http.Request, sess *session) {
	// The figures are read now; the charts add this reading to the samples.
	ss := c.samples.snapshot()
	if now, ok := read(c.cfg.Metrics, c.cfg.Clock.Now()); ok && (len(ss) == 0 || now.at.After(ss[len(ss)-1].at)) {
		ss = append(ss, now)
	}
	d := deliveriesData{Samples: len(ss), SampleEvery: c.cfg.SampleEvery, Rate: "–", P50: "–", P95: "–"}
	if n := len(ss); n > 0 {
		last := ss[n-1]
		d.Delivered, d.Failed, d.Depth = last.delivered, last.failed, last.depth
		for k, v := range last.byReason {
			d.Reasons = append(d.Reasons, reasonCount{k, v})
		}
		sort.Slice(d.Reasons, func(i, j int) bool { return d.Reasons[i].Count > d.Reasons[j].Count })
	}
	var rates, errs []point
	for i := 1; i < len(ss); i++ {
		dt := ss[i].at.Sub(ss[i-1].at).Seconds()
		if dt <= 0 {
			continue
		}
		rates = append(rates, point{ss[i].at, (ss[i].delivered - ss[i-1].delivered) / dt})
		errs = append(errs, point{ss[i].at, (ss[i].failed - ss[i-1].failed) / dt})
	}
	if n := len(ss); n > 1 {
		first, last := ss[0], ss[n-1]
		d.Window = last.at.Sub(first.at).Round(time.Second)
		d.Rate = fmt.Sprintf("%.2f/s", rates[len(rates)-1].v)
		if p := quantile(0.5, first.latency, last.latency); !math.IsNaN(p) {
			d.P50 = fmtSeconds(p)
		}
		if p := quantile(0.95, first.latency, last.latency); !math.IsNaN(p) {
			d.P95 = fmtSeconds(p)
		}
	}
	d.RateChart = lineChart("Pushes delivered per second", rates, "#2b6cb0")
	d.ErrorChart = lineChart("Failed pushes per second", errs, "#c53030")
	c.render(w, http.StatusOK, "deliveries", page{Title: "Deliveries", Nav: "deliveries", Session: sess, Data: d})
}

func fmtSeconds(s float64) string {
	return time.Duration(s * float64(time.Second)).Round(100 * time.Microsecond).String()
}

type point struct {
	t time.Time
	v float64
}

// lineChart draws points as an inline SVG line chart, on the server: no
// script and no chart library reach the browser. Every value in it is a
// number formatted here, never input.
func lineChart(title string, pts []point, color string) template.HTML {
	const w, h, left, bottom, top = 640.0, 200.0, 48.0, 24.0, 24.0
	var b strings.Builder
	fmt.Fprintf(&b, `<svg class="chart" role="img" viewBox="0 0 %.0f %.0f" width="%.0f" height="%.0f" xmlns="http://www.w3.org/2000/svg">`, w, h, w, h)
	fmt.Fprintf(&b, `<title>%s</title>`, template.HTMLEscapeString(title))
	fmt.Fprintf(&b, `<text x="%.0f" y="16" class="chart-title">%s</text>`, left, template.HTMLEscapeString(title))
	maxV := 0.0
	for _, p := range pts {
		maxV = math.Max(maxV, p.v)
	}
	if maxV == 0 {
		maxV = 1
	}
	maxV = niceCeil(maxV)
	plotW, plotH := w-left-8, h-top-bottom
	for i := 0; i <= 4; i++ {
		y := top + plotH*float64(i)/4
		fmt.Fprintf(&b, `<line x1="%.0f" x2="%.0f" y1="%.1f" y2="%.1f" class="grid"/>`, left, w-8, y, y)
		fmt.Fprintf(&b, `<text x="%.0f" y="%.1f" class="axis" text-anchor="end">%s</text>`, left-4, y+4, fmtNum(maxV*float64(4-i)/4))
	}
	if len(pts) < 2 {
		fmt.Fprintf(&b, `<text x="%.0f" y="%.0f" class="axis">collecting samples…</text>`, left+8, top+plotH/2)
	} else {
		t0, t1 := pts[0].t, pts[len(pts)-1].t
		span := t1.Sub(t0).Seconds()
		if span <= 0 {
			span = 1
		}
		var path strings.Builder
		for i, p := range pts {
			x := left + plotW*p.t.Sub(t0).Seconds()/span
			y := top + plotH*(1-p.v/maxV)
			if i == 0 {
				fmt.Fprintf(&path, "M%.1f %.1f", x, y)
			} else {
				fmt.Fprintf(&path, " L%.1f %.1f", x, y)
			}
		}
		fmt.Fprintf(&b, `<path d="%s" fill="none" stroke="%s" stroke-width="2"/>`, path.String(), color)
		fmt.Fprintf(&b, `<text x="%.0f" y="%.0f" class="axis">%s</text>`, left, h-6, t0.UTC().Format("15:04:05"))
		fmt.Fprintf(&b, `<text x="%.0f" y="%.0f" class="axis" text-anchor="end">%s UTC</text>`, w-8, h-6, t1.UTC().Format("15:04:05"))
	}
	b.WriteString(`</svg>`)
	return template.HTML(b.String()) //nolint:gosec // built from numbers and escaped strings only
}

func niceCeil(v float64) float64 {
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if v <= m*p {
			return m * p
		}
	}
	return 10 * p
}

func fmtNum(v float64) string {
	if v == math.Trunc(v) {
		return fmt.Sprintf("%.0f", v)
	}
	return fmt.Sprintf("%.2g", v)
}
