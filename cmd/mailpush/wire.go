package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/mailpush/mailpush"
	"github.com/mailpush/mailpush/api"
	"github.com/mailpush/mailpush/autodiscover"
	"github.com/mailpush/mailpush/console"
	"github.com/mailpush/mailpush/dovecot"
	"github.com/mailpush/mailpush/ews"
	"github.com/mailpush/mailpush/gate"
	"github.com/mailpush/mailpush/pipeline"
	"github.com/mailpush/mailpush/seal"
	"github.com/mailpush/mailpush/sqlite"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Main is the running program: configuration in, wired services out. The
// end-to-end tests use it exactly as the binary does, with a temporary
// directory and port 0.
type Main struct {
	Config Config
	Logger *slog.Logger
	Clock  mailpush.Clock

	Store    *sqlite.Store
	Keys     *seal.Keyring
	Pipeline *pipeline.Pipeline
	EWS      *ews.Source
	// GateRegistry is the ActiveSync gate's device registry (always on);
	// Gate decides for gate.tenant (nil when no tenant is configured).
	GateRegistry *gate.Registry
	Gate         *gate.Gate
	Dovecot      *dovecot.Source

	providers *providers
	listener  net.Listener
	server    *http.Server
	console   *console.Console
	// gateTenantID is the ID of gate.tenant while the gate is on.
	gateTenantID string
	closed       bool
}

// NewMain returns a Main that logs to logOutput.
func NewMain(cfg Config, logOutput io.Writer) *Main {
	level := map[string]slog.Level{"debug": slog.LevelDebug, "info": slog.LevelInfo, "warn": slog.LevelWarn, "error": slog.LevelError}[cfg.Log.Level]
	opts := &slog.HandlerOptions{Level: level}
	var h slog.Handler = slog.NewTextHandler(logOutput, opts)
	if cfg.Log.Format == "json" {
		h = slog.NewJSONHandler(logOutput, opts)
	}
	return &Main{Config: cfg, Logger: slog.New(h), Clock: mailpush.SystemClock{}}
}

// openStore opens the keyring and the store (also used by the tenant commands).
func (m *Main) openStore(ctx context.Context) error {
	keys, err := seal.Open(m.Config.KeyDir, m.Clock.Now())
	if err != nil {
		return err
	}
	m.Keys = keys
	store, err := sqlite.Open(ctx, m.Config.Database.Path, keys, m.Clock)
	if err != nil {
		return err
	}
	m.Store = store
	return nil
}

// Run opens everything and starts serving; it returns once the listener is up.
func (m *Main) Run(ctx context.Context) error {
	cfg := m.Config
	if err := m.openStore(ctx); err != nil {
		return err
	}
	if err := m.checkTenantNames(ctx); err != nil {
		return err
	}
	outbound, err := m.outboundClient()
	if err != nil {
		return err
	}
	m.providers, err = newProviders(&cfg, m.Store, outbound.TLSClientConfig.RootCAs, m.Logger)
	if err != nil {
		return err
	}
	if !cfg.APNsEnabled() {
		m.Logger.Warn("APNs is off for tenants without their own: set apns.keyFile (or apns.certFile), apns.teamId, apns.keyId and apns.topic to push to iOS")
	}
	if cfg.FCM.ProjectID == "" {
		m.Logger.Warn("FCM is off for tenants without their own: set fcm.projectId and fcm.credentialsFile to push to Android")
	}
	// One registry per Main, never the global default: tests run several.
	registry := prometheus.NewRegistry()
	registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m.Pipeline = pipeline.New(pipeline.Config{
		Store: m.Store, Route: m.providers.route, SealContent: seal.SealContent,
		Metrics: pipeline.NewMetrics(registry, m.Store.OutboxDepth),
		Logger:  m.Logger.With("component", "pipeline"), Clock: m.Clock,
		Workers: cfg.Push.Workers, BatchSize: cfg.Push.BatchSize, MaxAttempts: cfg.Push.MaxAttempts,
		RetryBase: cfg.Push.RetryBase, RetryMax: cfg.Push.RetryMax, SyncPerHour: cfg.Push.SyncPerHour,
		TenantRate: float64(cfg.Push.TenantRate), TenantBurst: cfg.Push.TenantBurst, Lease: cfg.Push.Lease,
	})
	m.Pipeline.Start()

	m.listener, err = net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("config key listen: %w", err)
	}
	publicURL := cfg.PublicURL
	if publicURL == "" {
		scheme := "http"
		if cfg.TLS.CertFile != "" {
			scheme = "https"
		}
		publicURL = scheme + "://" + m.listener.Addr().String()
	}
	serviceAccounts, err := cfg.ewsServiceAccounts()
	if err != nil {
		return err
	}
	m.EWS = &ews.Source{
		ServiceAccounts: serviceAccounts,
		Store:           m.Store, Sealer: m.Keys, Sink: m.Pipeline,
		Client:          &ews.Client{HTTP: &http.Client{Transport: outbound, Timeout: 30 * time.Second}, UserAgent: "mailpush/" + mailpush.Version},
		PublicURL:       strings.TrimSuffix(publicURL, "/"),
		StatusFrequency: cfg.EWS.StatusFrequency,
		HealthInterval:  cfg.EWS.HealthInterval, ResubscribeRate: float64(cfg.EWS.ResubscribeRate),
		MaxPerHost: cfg.EWS.MaxPerHost, MaxPerAccount: cfg.EWS.MaxPerAccount,
		HostMinSubscriptions: cfg.EWS.HostMinSubscriptions, HostSilence: cfg.EWS.HostSilence,
		HostOverdue: cfg.EWS.HostOverdue, HostCheckInterval: cfg.EWS.HostCheckInterval,
		Logger: m.Logger.With("source", "ews"), Clock: m.Clock,
	}

	m.GateRegistry = &gate.Registry{Store: m.Store, Hasher: m.Keys, Logger: m.Logger.With("component", "gate")}
	if cfg.Gate.Tenant != "" {
		if err := m.startGate(ctx); err != nil {
			return err
		}
	}
	if m.Dovecot, err = m.dovecotSource(); err != nil {
		return err
	}

	m.EWS.Run(context.Background()) // stopped by Close

	srv := &api.Server{
		Store: m.Store, Keys: m.Keys, Logger: m.Logger.With("component", "api"), Clock: m.Clock,
		Watchers:        map[mailpush.Source]mailpush.Watcher{mailpush.SourceEWS: m.EWS, mailpush.SourceDovecot: m.Dovecot},
		RegistrationTTL: cfg.RegistrationTTL,
		Autodiscover: &autodiscover.Client{
			HTTP: &http.Client{Transport: outbound, Timeout: 15 * time.Second,
				CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }},
			Logger: m.Logger.With("component", "autodiscover"), Clock: m.Clock,
		},
		Platforms:        m.providers.platforms,
		AllowInsecureEWS: cfg.EWS.AllowInsecureHTTP,
		Gate:             m.GateRegistry,
	}
	mux := http.NewServeMux()
	srv.Routes(mux)
	mux.Handle("POST "+ews.CallbackPath+"{token}", m.EWS)
	if m.Gate != nil {
		m.Gate.Routes(mux)
		registerGateMetrics(registry, m.Gate)
	}
	mux.Handle("GET /metrics", promhttp.HandlerFor(registry, promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(m.Logger.Handler(), slog.LevelWarn)}))
	mux.Handle("POST "+dovecot.NotifyPath, m.Dovecot)
	mux.Handle("PUT "+dovecot.NotifyPath, m.Dovecot)
	if err := m.startConsole(ctx, mux, publicURL, registry); err != nil {
		return err
	}

	m.server = &http.Server{
		Handler:           logRequests(m.Logger, api.JSONErrors(mux, m.Logger.With("component", "api"))),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       120 * time.Second,
		ErrorLog:          slog.NewLogLogger(m.Logger.Handler(), slog.LevelWarn),
	}
	go func() {
		var err error
		if cfg.TLS.CertFile != "" {
			err = m.server.ServeTLS(m.listener, cfg.TLS.CertFile, cfg.TLS.KeyFile)
		} else {
			err = m.server.Serve(m.listener)
		}
		if err != nil && !errors.Is(err, http.ErrServerClosed) {
			m.Logger.Error("HTTP server stopped", "err", err)
		}
	}()
	m.Logger.Info("mailpush serving", "version", mailpush.Version, "listen", m.listener.Addr().String(), "publicUrl", publicURL,
		"database", cfg.Database.Path, "apns", cfg.APNsEnabled())
	return nil
}

// dovecotSource builds the Dovecot source from the tenants' dovecot settings.
func (m *Main) dovecotSource() (*dovecot.Source, error) {
	var tenants []dovecot.Tenant
	for name, tc := range m.Config.Tenants {
		d := tc.Dovecot
		if d == nil {
			continue
		}
		pass := d.Password
		if d.PasswordFile != "" {
			b, err := os.ReadFile(d.PasswordFile)
			if err != nil {
				return nil, fmt.Errorf("config key tenants.%s.dovecot.passwordFile: %w", name, err)
			}
			if pass = strings.TrimRight(string(b), "\r\n"); pass == "" {
				return nil, fmt.Errorf("config key tenants.%s.dovecot.passwordFile: %s is empty", name, d.PasswordFile)
			}
		}
		mapping := dovecot.UserMapping(d.UserMapping)
		if mapping == "" {
			mapping = dovecot.MapAddress
		}
		tenants = append(tenants, dovecot.Tenant{Name: name, Username: d.Username, Password: pass, UserMapping: mapping, Domain: d.Domain})
	}
	return dovecot.New(dovecot.Config{
		Store: m.Store, Hasher: m.Keys, Sink: m.Pipeline, Tenants: tenants,
		Logger: m.Logger.With("source", "dovecot"), Clock: m.Clock,
	})
}

// URL is the base URL the server listens on.
func (m *Main) URL() string {
	scheme := "http"
	if m.Config.TLS.CertFile != "" {
		scheme = "https"
	}
	return scheme + "://" + m.listener.Addr().String()
}

// Close stops serving, lets queued pushes go out, and closes everything. It
// is safe to call more than once.
func (m *Main) Close() error {
	if m.closed {
		return nil
	}
	m.closed = true
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var errs []error
	if m.server != nil {
		errs = append(errs, m.server.Shutdown(ctx))
	}
	if m.console != nil {
		m.console.Close()
	}
	if m.EWS != nil {
		m.EWS.Close()
	}
	if m.Pipeline != nil {
		errs = append(errs, m.Pipeline.Shutdown(ctx))
	}
	if m.Gate != nil {
		m.Gate.Close()
	}
	if m.providers != nil {
		m.providers.close()
	}
	if m.Store != nil {
		errs = append(errs, m.Store.Close())
	}
	return errors.Join(errs...)
}

func (m *Main) outboundClient() (*http.Transport, error) {
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool()
	}
	if m.Config.CAFile != "" {
		pem, err := os.ReadFile(m.Config.CAFile)
		if err != nil {
			return nil, fmt.Errorf("config key caFile: %w", err)
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("config key caFile: %s holds no PEM certificate", m.Config.CAFile)
		}
	}
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	t.MaxIdleConnsPerHost = 32
	return t, nil
}

// AddTenant creates a tenant and returns its first API token, of scope
// app: the one to build into the mail app.
func (m *Main) AddTenant(ctx context.Context, name string, hosts []string, maxContent mailpush.ContentMode) (string, error) {
	if name == "" || len(name) > 64 || strings.ContainsAny(name, " \t\r\n") {
		return "", fmt.Errorf("tenant name must be 1 to 64 characters without spaces")
	}
	if maxContent == "" {
		maxContent = mailpush.ContentBadge // the most private
	}
	t := &mailpush.Tenant{Name: name, AllowedHosts: hosts, MaxContent: maxContent}
	if err := m.Store.CreateTenant(ctx, t); err != nil {
		return "", err
	}
	tok, bearer := mailpush.NewToken(t.ID, mailpush.ScopeApp)
	if err := m.Store.CreateToken(ctx, tok); err != nil {
		return "", fmt.Errorf("tenant %s was created but its token was not (run mailpush token add --tenant %s --scope app): %w", name, name, err)
	}
	return bearer, nil
}

// AddToken makes a new token of the given scope for the named tenant and
// returns its bearer value, which is shown only this once.
func (m *Main) AddToken(ctx context.Context, tenant string, scope mailpush.Scope) (string, error) {
	if !scope.Valid() {
		return "", fmt.Errorf("scope must be app, backend or admin, not %q", scope)
	}
	t, err := m.Store.TenantByName(ctx, tenant)
	if err != nil {
		return "", err
	}
	tok, bearer := mailpush.NewToken(t.ID, scope)
	if err := m.Store.CreateToken(ctx, tok); err != nil {
		return "", err
	}
	return bearer, nil
}

// Tokens lists the named tenant's tokens (without secrets: only their
// hashes are stored).
func (m *Main) Tokens(ctx context.Context, tenant string) ([]*mailpush.Token, error) {
	t, err := m.Store.TenantByName(ctx, tenant)
	if err != nil {
		return nil, err
	}
	return m.Store.Tokens(ctx, t.ID)
}

// RevokeToken deletes one of the named tenant's tokens; requests carrying
// it are refused from then on, on every server sharing the store.
func (m *Main) RevokeToken(ctx context.Context, tenant, id string) error {
	t, err := m.Store.TenantByName(ctx, tenant)
	if err != nil {
		return err
	}
	return m.Store.DeleteToken(ctx, t.ID, id)
}

// checkTenantNames refuses a configuration whose tenants.<name> blocks name
// a tenant that does not exist: a misspelled block would otherwise be
// silently ignored (and its tenant pushed with the defaults).
func (m *Main) checkTenantNames(ctx context.Context) error {
	if len(m.Config.Tenants) == 0 {
		return nil
	}
	ts, err := m.Store.Tenants(ctx)
	if err != nil {
		return err
	}
	var names []string
	for _, t := range ts {
		names = append(names, t.Name)
	}
	var errs []error
	for _, name := range m.Config.tenantNames() {
		if slices.Contains(names, name) {
			continue
		}
		hint := "create it with `mailpush tenant add " + name + "` (in the same working directory or with the same --config)"
		if best := closest(name, names); best != "" {
			hint = "did you mean `tenants." + best + "`?"
		} else if len(names) > 0 {
			hint += "; the tenants are " + strings.Join(names, ", ")
		}
		errs = append(errs, fmt.Errorf("config key tenants.%s: no tenant named %q in %s; %s", name, name, m.Config.Database.Path, hint))
	}
	return errors.Join(errs...)
}

// SetTenant changes a tenant's allowed hosts (when hosts is not empty) and
// content cap (when maxContent is set).
func (m *Main) SetTenant(ctx context.Context, name string, hosts []string, maxContent mailpush.ContentMode) error {
	t, err := m.Store.TenantByName(ctx, name)
	if err != nil {
		return err
	}
	if len(hosts) > 0 {
		t.AllowedHosts = hosts
	}
	if maxContent != "" {
		t.MaxContent = maxContent
	}
	return m.Store.UpdateTenant(ctx, t)
}

// logRequests logs each request's route pattern, never its path: callback
// paths carry sealed tokens.
func logRequests(log *slog.Logger, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		next.ServeHTTP(sw, r)
		log.LogAttrs(r.Context(), slog.LevelDebug, "request", slog.String("method", r.Method), slog.String("route", r.Pattern),
			slog.Int("status", sw.status), slog.Duration("took", time.Since(start)))
	})
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	w.status = code
	w.ResponseWriter.WriteHeader(code)
}
