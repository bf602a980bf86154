package registrar

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the registrar's counters for routine events: registrations come by
// the thousand, so they are counted, not logged one line each at the
// default level (they are logged at debug).
type Metrics struct {
	createdTotal, deletedTotal prometheus.Counter
	refusedTotal               *prometheus.CounterVec
}

// NewMetrics registers the registrar's metrics on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	regs := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "mailpush_registrations_total",
		Help: "Registrations created (or renewed) and deleted through the device API."}, []string{"action"})
	refused := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "mailpush_registrations_refused_total",
		Help: "Registration calls refused by a tenant's bounds: limit=rate (registrations.rate, backendRate) or openers (client identities being opened)."}, []string{"limit"})
	reg.MustRegister(regs, refused)
	return &Metrics{createdTotal: regs.WithLabelValues("created"), deletedTotal: regs.WithLabelValues("deleted"), refusedTotal: refused}
}

// refused counts a call refused by limit (rate or openers): a flood is
// counted, not logged line by line.
func (m *Metrics) refused(limit string) {
	if m != nil {
		m.refusedTotal.WithLabelValues(limit).Inc()
	}
}

func (m *Metrics) registered() {
	if m != nil {
		m.createdTotal.Inc()
	}
}

func (m *Metrics) deleted() {
	if m != nil {
		m.deletedTotal.Inc()
	}
}
