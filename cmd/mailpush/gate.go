package main

import (
	"context"
	"fmt"
	"github.com/prometheus/client_golang/prometheus"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/mailpush/mailpush"
	"github.com/mailpush/mailpush/console"
	"github.com/mailpush/mailpush/gate"
)

// validateGate checks the gate keys that matter even when the gate is off
// (the registry canonicalises user names with gate.identity) and names the
// proxy when it is on; gate.New checks the rest at start.
func (c *Config) validateGate() []error {
	_, errs := gate.CompileIdentity(c.Gate.Identity)
	if _, ok := gate.Proxies[c.Gate.Proxy]; c.Gate.Tenant != "" && !ok {
		errs = append(errs, fmt.Errorf("config key gate.proxy: %q must be nginx, caddy, traefik, haproxy or netscaler: the reverse proxy that asks the gate (docs/gate.md)", c.Gate.Proxy))
	}
	return errs
}

// newGateRegistry is the device registry, with the gate's user name forms
// and log privacy.
func newGateRegistry(m *Main) *gate.Registry {
	id, _ := gate.CompileIdentity(m.Config.Gate.Identity) // validated by Config.Validate
	return &gate.Registry{Store: m.Store, Hasher: m.Keys, Logger: m.Logger.With("component", "gate"),
		Identity: id, ClearIDs: m.Config.Gate.AuditIdentifiers == "clear"}
}

// gateDecisionsKept is how many recent gate decisions the console lists.
const gateDecisionsKept = 200

// startGate resolves gate.tenant and starts the gate; its routes are mounted
// by Run.
func (m *Main) startGate(ctx context.Context) error {
	t, err := m.Store.TenantByName(ctx, m.Config.Gate.Tenant)
	if err != nil {
		return fmt.Errorf("config key gate.tenant: tenant %q: %w (create it with mailpush tenant add)", m.Config.Gate.Tenant, err)
	}
	deps := gate.Deps{Store: m.Store, Hasher: m.Keys, TenantID: t.ID, Logger: m.Logger.With("component", "gate"), Clock: m.Clock}
	if m.logOutput != nil { // the audit lines in the same format and place as every other line, written in batches
		deps.AuditOutput = m.logOutput
		deps.AuditHandler = func(w io.Writer) slog.Handler {
			return m.logHandler(w).WithAttrs([]slog.Attr{slog.String("component", "gate")})
		}
	}
	if m.Config.Console.on() {
		m.gateDecisions = console.NewDecisionLog(gateDecisionsKept)
		deps.OnDecision = m.gateDecisions.Add
	}
	g, err := gate.New(m.Config.Gate, deps)
	if err != nil {
		return err
	}
	m.Gate, m.gateTenantID = g, t.ID
	if err := m.seedGateRules(ctx); err != nil {
		return err
	}
	m.GateRegistry.OnChange = g.Invalidate
	g.Start()
	m.Logger.Info("ActiveSync gate on", "tenant", t.Name, "mode", m.Config.Gate.Mode, "failMode", m.Config.Gate.FailMode, "rules", len(m.Config.Gate.Rules))
	return nil
}

// runGate is "mailpush gate import FILE --tenant NAME": a bulk import from
// the MDM's CSV export straight into the store, with progress on stderr. A
// running server sees the changes within gate.cacheTtl; for immediate effect
// use POST /api/v1/gate/import.
func runGate(ctx context.Context, args []string, stdout, stderr io.Writer, environ []string) error {
	fs := newFlags("gate import", "gate import FILE --tenant NAME [--config FILE]   (CSV: deviceId,user,deviceType,state)", stdout, stderr)
	path := configFlag(fs, environ)
	tenant := fs.String("tenant", "", "the tenant whose registry receives the devices")
	pos, err := parseFlags(fs, args[1:], "FILE")
	if err != nil {
		return err
	}
	file := pos[0]
	if *tenant == "" {
		return usageError{"gate import: --tenant NAME is required (see mailpush gate import --help)"}
	}
	f, err := os.Open(file)
	if err != nil {
		return fmt.Errorf("gate import: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	m, err := openAdmin(ctx, *path, environ, stderr)
	if err != nil {
		return err
	}
	defer m.Close()
	t, err := m.Store.TenantByName(ctx, *tenant)
	if err != nil {
		return fmt.Errorf("tenant %q: %w", *tenant, err)
	}
	reg := newGateRegistry(m)
	cr := &countingReader{r: f}
	start := time.Now()
	last := start
	report := func(res mailpush.GateImportResult, final bool) {
		pct := 100.0
		if st.Size() > 0 {
			pct = 100 * float64(cr.n) / float64(st.Size())
		}
		fmt.Fprintf(stderr, "\rimported %d devices (%.0f%%), %d push registrations removed", res.Stored, pct, res.Removed)
		if final {
			fmt.Fprintf(stderr, " in %v\n", time.Since(start).Round(time.Millisecond))
		}
	}
	res, err := reg.Import(ctx, t.ID, cr, func(res mailpush.GateImportResult) {
		if now := time.Now(); now.Sub(last) >= 200*time.Millisecond {
			last = now
			report(res, false)
		}
	})
	report(res, true)
	if err != nil {
		return fmt.Errorf("%s: %s", file, mailpush.ErrorMessage(err))
	}
	fmt.Fprintf(stdout, "%d rows, %d devices stored, %d push registrations removed\n", res.Rows, res.Stored, res.Removed)
	return nil
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// registerGateMetrics exposes the gate's counters on /metrics. They carry no
// device, user or address: only totals.
func registerGateMetrics(reg prometheus.Registerer, g *gate.Gate) {
	counter := func(name, help string, v func(gate.Stats) uint64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, func() float64 { return float64(v(g.Stats())) })
	}
	reg.MustRegister(
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "mailpush_gate_decisions_total", Help: "ActiveSync gate decisions, by decision.", ConstLabels: prometheus.Labels{"decision": "allow"}},
			func() float64 { return float64(g.Stats().Allowed) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "mailpush_gate_decisions_total", Help: "ActiveSync gate decisions, by decision.", ConstLabels: prometheus.Labels{"decision": "deny"}},
			func() float64 { return float64(g.Stats().Denied) }),
		counter("mailpush_gate_cache_hits_total", "Gate decisions answered from the device cache.", func(s gate.Stats) uint64 { return s.CacheHits }),
		counter("mailpush_gate_cache_misses_total", "Gate decisions that looked the device up in the store.", func(s gate.Stats) uint64 { return s.CacheMisses }),
		counter("mailpush_gate_last_seen_dropped_total", "Last-seen updates dropped because their queue was full.", func(s gate.Stats) uint64 { return s.LastSeenDropped }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "mailpush_gate_cache_entries", Help: "Devices in the gate's cache."},
			func() float64 { return float64(g.Stats().CacheEntries) }),
	)
}
