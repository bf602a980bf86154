package pipeline

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mailpush/mailpush"
)

// Metrics are the pipeline's Prometheus metrics. Labels carry only bounded,
// non-personal values: provider, push kind, result and the provider's
// reason code; never a token, address, subject or tenant secret.
type Metrics struct {
	enqueuedTotal *prometheus.CounterVec // kind
	enqueuedKinds [3]prometheus.Counter  // badge, sync, alert (kindCounts order)
	events        prometheus.Counter
	pushes        *prometheus.CounterVec   // provider, result, reason
	sendSeconds   *prometheus.HistogramVec // provider: one provider call
	queueSeconds  *prometheus.HistogramVec // provider: enqueue to provider answer
	retries       *prometheus.CounterVec   // provider
	deadTokens    *prometheus.CounterVec   // provider
	deadLetters   prometheus.Counter
	byProvider    map[string]*providerMetrics // the hot path's children, resolved once
}

// providerMetrics are the children every push touches, looked up once:
// WithLabelValues hashes its labels on every call.
type providerMetrics struct {
	delivered   prometheus.Counter
	sendSeconds prometheus.Observer
	queue       prometheus.Observer
}

// NewMetrics registers the pipeline's metrics on reg. depth, when not nil,
// is asked for the outbox depth at each scrape.
func NewMetrics(reg prometheus.Registerer, depth func(ctx context.Context) (int, error)) *Metrics {
	buckets := []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300}
	m := &Metrics{
		enqueuedTotal: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "mailpush_pushes_enqueued_total", Help: "Pushes made by the fan-out of accepted events, by kind."}, []string{"kind"}),
		events:        prometheus.NewCounter(prometheus.CounterOpts{Name: "mailpush_events_accepted_total", Help: "Events written to the outbox (acknowledged to the mail server)."}),
		pushes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "mailpush_pushes_total",
			Help: "Push attempts and their fate, by provider, result (delivered, retry, dead, failed, dropped_token, superseded, rate_limited) and provider reason."},
			[]string{"provider", "result", "reason"}),
		sendSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "mailpush_push_send_seconds", Help: "Duration of one provider call.", Buckets: buckets}, []string{"provider"}),
		queueSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "mailpush_push_enqueue_to_send_seconds",
			Help: "Time from a push entering the outbox to the provider's answer.", Buckets: buckets}, []string{"provider"}),
		retries:     prometheus.NewCounterVec(prometheus.CounterOpts{Name: "mailpush_push_retries_total", Help: "Pushes rescheduled after a temporary failure."}, []string{"provider"}),
		deadTokens:  prometheus.NewCounterVec(prometheus.CounterOpts{Name: "mailpush_dead_tokens_total", Help: "Registrations deactivated because the provider declared the token dead."}, []string{"provider"}),
		deadLetters: prometheus.NewCounter(prometheus.CounterOpts{Name: "mailpush_push_dead_letters_total", Help: "Pushes given up on and moved to the dead letters."}),
	}
	m.byProvider = map[string]*providerMetrics{}
	for _, pv := range []string{"apns", "fcm", "unknown"} {
		m.byProvider[pv] = &providerMetrics{delivered: m.pushes.WithLabelValues(pv, "delivered", ""),
			sendSeconds: m.sendSeconds.WithLabelValues(pv), queue: m.queueSeconds.WithLabelValues(pv)}
	}
	for i, k := range []mailpush.PushKind{mailpush.PushBadge, mailpush.PushSync, mailpush.PushAlert} {
		m.enqueuedKinds[i] = m.enqueuedTotal.WithLabelValues(string(k))
	}
	reg.MustRegister(m.events, m.enqueuedTotal, m.pushes, m.sendSeconds, m.queueSeconds, m.retries, m.deadTokens, m.deadLetters)
	if depth != nil {
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "mailpush_outbox_depth", Help: "Pushes queued in the outbox."}, func() float64 {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			n, err := depth(ctx)
			if err != nil {
				return -1
			}
			return float64(n)
		}))
	}
	return m
}

func provider(p mailpush.Platform) string {
	switch p {
	case mailpush.PlatformIOS:
		return "apns"
	case mailpush.PlatformAndroid:
		return "fcm"
	}
	return "unknown"
}

func (m *Metrics) enqueued(c kindCounts) {
	if m == nil {
		return
	}
	for i, n := range c {
		if n > 0 {
			m.enqueuedKinds[i].Add(float64(n))
		}
	}
}

func (m *Metrics) event() {
	if m == nil {
		return
	}
	m.events.Inc()
}

func (m *Metrics) settledEvents(st mailpush.EventSettlement) {
	if m == nil {
		return
	}
	m.deadLetters.Add(float64(len(st.Dead)))
}

func (m *Metrics) sent(q *mailpush.QueuedPush, took time.Duration, now time.Time) {
	if m == nil {
		return
	}
	pm := m.byProvider[provider(q.Push.Device.Platform)]
	pm.sendSeconds.Observe(took.Seconds())
	if !q.Push.CreatedAt.IsZero() {
		pm.queue.Observe(now.Sub(q.Push.CreatedAt).Seconds())
	}
}

func (m *Metrics) result(q *mailpush.QueuedPush, result, reason string) {
	if m == nil {
		return
	}
	pv := provider(q.Push.Device.Platform)
	if result == "delivered" && reason == "" {
		m.byProvider[pv].delivered.Inc()
		return
	}
	if len(reason) > 64 {
		reason = reason[:64]
	}
	m.pushes.WithLabelValues(pv, result, reason).Inc()
	switch result {
	case "retry":
		m.retries.WithLabelValues(pv).Inc()
	}
}

func (m *Metrics) settled(ss []mailpush.PushSettlement) {
	if m == nil {
		return
	}
	for _, s := range ss {
		if s.Action == mailpush.SettleDead {
			m.deadLetters.Inc()
		}
	}
}

func (m *Metrics) deadToken(p *mailpush.Push) {
	if m == nil {
		return
	}
	m.deadTokens.WithLabelValues(provider(p.Device.Platform)).Inc()
}
