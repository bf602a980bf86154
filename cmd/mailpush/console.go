package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/mailpush/mailpush"
	"github.com/mailpush/mailpush/console"
	"github.com/mailpush/mailpush/subscription"
	"github.com/prometheus/client_golang/prometheus"
)

// ConsoleConfig is the console: block: the admin console at /admin/.
type ConsoleConfig struct {
	// Enabled serves /admin/ (default true). Sign-in needs an admin-scope
	// token or an OIDC provider; without either nobody can enter.
	Enabled     *bool         `yaml:"enabled"`
	IdleTimeout time.Duration `yaml:"idleTimeout"` // default 30m
	MaxAge      time.Duration `yaml:"maxAge"`      // default 12h
	// SampleEvery is how often the deliveries page's charts are sampled.
	SampleEvery time.Duration `yaml:"sampleEvery"` // default 10s
	OIDC        struct {
		Issuer           string   `yaml:"issuer"`
		ClientID         string   `yaml:"clientId"`
		ClientSecretFile string   `yaml:"clientSecretFile"`
		RedirectURL      string   `yaml:"redirectUrl"` // default <publicUrl>/admin/oidc/callback
		Admins           []string `yaml:"admins"`      // subjects or verified emails
	} `yaml:"oidc"`
}

func (c *ConsoleConfig) on() bool { return c.Enabled == nil || *c.Enabled }

func (c *Config) validateConsole(bad func(key, format string, args ...any)) {
	k := &c.Console
	if k.SampleEvery != 0 && k.SampleEvery < 100*time.Millisecond {
		bad("console.sampleEvery", "%v is too short: use at least 100ms (default 10s)", k.SampleEvery)
	}
	if k.IdleTimeout < 0 || k.MaxAge < 0 || (k.MaxAge > 0 && k.IdleTimeout > k.MaxAge) {
		bad("console.idleTimeout", "%v must be positive and at most console.maxAge (%v)", k.IdleTimeout, k.MaxAge)
	}
	o := k.OIDC
	if o.Issuer == "" {
		if o.ClientID != "" || len(o.Admins) > 0 {
			bad("console.oidc.issuer", "is required when console.oidc is set (the provider's issuer URL)")
		}
		return
	}
	if !strings.HasPrefix(o.Issuer, "https://") && !strings.HasPrefix(o.Issuer, "http://127.0.0.1") && !strings.HasPrefix(o.Issuer, "http://localhost") {
		bad("console.oidc.issuer", "%q must be an https URL", o.Issuer)
	}
	if o.ClientID == "" || o.ClientSecretFile == "" {
		bad("console.oidc.clientId", "clientId and clientSecretFile are required with an issuer")
	}
	if len(o.Admins) == 0 {
		bad("console.oidc.admins", "is empty: list the subjects or emails that may sign in")
	}
}

// startConsole builds the admin console and mounts it on mux.
func (m *Main) startConsole(ctx context.Context, mux *http.ServeMux, publicURL string, registry prometheus.Gatherer) error {
	cfg := m.Config.Console
	if !cfg.on() {
		return nil
	}
	cc := console.Config{
		Store: m.Store, Hasher: m.Keys, Registry: m.GateRegistry, Metrics: registry,
		Secure:      strings.HasPrefix(publicURL, "https://") || m.Config.TLS.CertFile != "",
		IdleTimeout: cfg.IdleTimeout, MaxAge: cfg.MaxAge, SampleEvery: cfg.SampleEvery,
		Logger: m.Logger.With("component", "console"), Clock: m.Clock,
	}
	if m.Gate != nil {
		cc.Gate = m.gateInfo()
	}
	cc.Engines = map[mailpush.Source]console.EngineState{}
	for src, e := range map[mailpush.Source]*subscription.Engine{mailpush.SourceEWS: m.EWSEngine, mailpush.SourceGraph: m.GraphEngine} {
		if e != nil {
			cc.Engines[src] = console.EngineState{DueAfter: e.DueAfter, Healing: e.Healing}
		}
	}
	cc.Quotas = func(t *mailpush.Tenant) console.Quotas {
		q := m.Registrar.TenantQuotas(t)
		return console.Quotas{PerTenant: q.PerTenant, PerMailbox: q.PerMailbox,
			Rate: q.Rate.PerSecond, Burst: q.Rate.Burst, BackendRate: q.BackendRate.PerSecond, BackendBurst: q.BackendRate.Burst}
	}
	if o := cfg.OIDC; o.Issuer != "" {
		secret, err := os.ReadFile(o.ClientSecretFile)
		if err != nil {
			return fmt.Errorf("config key console.oidc.clientSecretFile: %w", err)
		}
		redirect := o.RedirectURL
		if redirect == "" {
			redirect = strings.TrimSuffix(publicURL, "/") + "/admin/oidc/callback"
		}
		outbound, err := m.outboundClient()
		if err != nil {
			return err
		}
		dctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		defer cancel()
		cc.OIDC, err = console.NewOIDC(dctx, console.OIDCConfig{
			Issuer: o.Issuer, ClientID: o.ClientID, ClientSecret: strings.TrimSpace(string(secret)),
			RedirectURL: redirect, Admins: o.Admins, HTTP: &http.Client{Transport: outbound, Timeout: 15 * time.Second},
		})
		if err != nil {
			return fmt.Errorf("config key console.oidc.issuer: %w", err)
		}
	}
	c, err := console.New(cc)
	if err != nil {
		return err
	}
	c.Routes(mux)
	c.Start()
	m.console = c
	return nil
}

// gateInfo describes the running gate for the console.
func (m *Main) gateInfo() *console.GateInfo {
	g := m.Config.Gate
	info := &console.GateInfo{TenantID: m.gateTenantID, Mode: g.Mode, FailMode: g.FailMode,
		Decisions: func() (uint64, uint64) { s := m.Gate.Stats(); return s.Allowed, s.Denied },
		Rules:     gateRuleEditor{m}, Recent: m.gateDecisions}
	if info.Mode == "" {
		info.Mode = "compliantOnly"
	}
	if info.FailMode == "" {
		info.FailMode = "closed"
	}
	return info
}
