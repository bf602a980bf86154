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
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/mailpush/mailpush"
	"github.com/mailpush/mailpush/api"
	"github.com/mailpush/mailpush/appconfig"
	"github.com/mailpush/mailpush/autodiscover"
	"github.com/mailpush/mailpush/console"
	"github.com/mailpush/mailpush/directory"
	"github.com/mailpush/mailpush/dovecot"
	"github.com/mailpush/mailpush/ews"
	"github.com/mailpush/mailpush/gate"
	"github.com/mailpush/mailpush/graph"
	"github.com/mailpush/mailpush/pipeline"
	"github.com/mailpush/mailpush/postgres"
	"github.com/mailpush/mailpush/registrar"
	"github.com/mailpush/mailpush/seal"
	"github.com/mailpush/mailpush/smime"
	"github.com/mailpush/mailpush/sqlite"
	"github.com/mailpush/mailpush/subscription"

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

	Store    mailpush.Store
	Keys     *seal.Keyring
	Pipeline *pipeline.Pipeline
	EWS      *ews.Source
	// EWSEngine keeps the EWS subscriptions alive (Check, CheckHosts).
	EWSEngine *subscription.Engine
	// Graph is the Microsoft Graph source, when a tenant has a Graph app;
	// GraphEngine renews its subscriptions.
	Graph       *graph.Source
	GraphEngine *subscription.Engine
	resolvers   pipeline.SourceResolvers // the pipeline's, made before the sources
	// GateRegistry is the ActiveSync gate's device registry (always on);
	// Gate decides for gate.tenant (nil when no tenant is configured).
	GateRegistry *gate.Registry
	Gate         *gate.Gate
	Dovecot      *dovecot.Source
	Registrar    *registrar.Service
	// Directories are the tenants' directories by tenant name (only those
	// that configure tenants.<name>.directory).
	Directories map[string]*directory.Directory
	SMIME       *smime.Service // nil when no tenant configures smime
	// AppConfigs expands managed app configuration from the tenants'
	// directories (appDirs: the directory blocks with the app
	// configuration's filter and attributes; closed by Close).
	AppConfigs *appconfig.Service

	appDirs   []*directory.Directory
	providers *providers
	nodeID    string
	cluster   *cluster
	keysWatch keysWatch // keys.go
	listener  net.Listener
	server    *http.Server
	console   *console.Console
	pprof     *http.Server
	pprofAddr string
	// gateTenantID is the ID of gate.tenant while the gate is on.
	gateTenantID string
	// gateDecisions keeps the gate's last decisions for the console.
	gateDecisions *console.DecisionLog
	// gateRulesMu orders the application of stored rule versions
	// (gaterules.go); gateRulesChanged tells the other nodes (cluster.go).
	gateRulesMu      sync.Mutex
	gateRulesVersion int64
	gateRulesChanged func(ctx context.Context)
	logOutput        io.Writer // where Logger writes
	closed           bool
}

// NewMain returns a Main that logs to logOutput, which must accept
// concurrent writes (the gate's audit lines are written in batches beside
// the other lines; an *os.File does).
func NewMain(cfg Config, logOutput io.Writer) *Main {
	m := &Main{Config: cfg, Clock: mailpush.SystemClock{}, logOutput: logOutput}
	m.Logger = slog.New(m.logHandler(logOutput))
	return m
}

// logHandler formats log records as log.format and log.level say, to w.
func (m *Main) logHandler(w io.Writer) slog.Handler {
	level := map[string]slog.Level{"debug": slog.LevelDebug, "info": slog.LevelInfo, "warn": slog.LevelWarn, "error": slog.LevelError}[m.Config.Log.Level]
	opts := &slog.HandlerOptions{Level: level}
	if m.Config.Log.Format == "json" {
		return slog.NewJSONHandler(w, opts)
	}
	return slog.NewTextHandler(w, opts)
}

// openStore opens the keyring and the store (also used by the tenant commands).
func (m *Main) openStore(ctx context.Context) error {
	keys, err := seal.Open(m.Config.KeyDir, m.Clock.Now())
	if err != nil {
		return err
	}
	m.Keys = keys
	var store mailpush.Store
	if db := m.Config.Database; db.Driver == "postgres" {
		store, err = postgres.Open(ctx, postgres.Config{URL: db.URL, Schema: db.Schema, MaxConns: int32(db.MaxConns), Logger: m.Logger.With("component", "postgres")}, keys, m.Clock)
	} else {
		store, err = sqlite.Open(ctx, db.Path, keys, m.Clock)
	}
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
	m.nodeID = cfg.NodeID
	if m.nodeID == "" {
		m.nodeID = defaultNodeID(cfg.Listen)
	}
	// Metrics: the gatherer serves registry; collectors register on reg,
	// which labels every series with the node when nodes share a database.
	var reg prometheus.Registerer = registry
	if cfg.Database.Driver == "postgres" {
		reg = prometheus.WrapRegistererWith(prometheus.Labels{"node": m.nodeID}, registry)
	}
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m.Pipeline = pipeline.New(pipeline.Config{
		Store: m.Store, Route: m.providers.route, SealContent: seal.SealContent,
		Metrics: pipeline.NewMetrics(reg, m.Store.OutboxDepth),
		Logger:  m.Logger.With("component", "pipeline"), Clock: m.Clock,
		Workers: cfg.Push.Workers, BatchSize: cfg.Push.BatchSize, MaxAttempts: cfg.Push.MaxAttempts,
		RetryBase: cfg.Push.RetryBase, RetryMax: cfg.Push.RetryMax, SyncPerHour: cfg.Push.SyncPerHour,
		TenantRate: float64(cfg.Push.TenantRate), TenantBurst: cfg.Push.TenantBurst, Lease: cfg.Push.Lease,
		Resolver: &m.resolvers,
	})
	m.resolvers.Mailboxes, m.resolvers.Logger = m.Store, m.Logger.With("component", "pipeline")

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
	// OAuth grants are shared through the database only by a cluster,
	// where two nodes could otherwise spend one refresh token twice
	// (package ews, oauth.go). One node refreshes alone, and keeps the
	// tokens in memory only: nothing of a user's credentials on disk.
	var grants mailpush.OAuthGrantStore
	if cfg.Database.Driver == "postgres" {
		grants = m.Store
	}
	m.EWS = &ews.Source{
		ServiceAccounts:  serviceAccounts,
		TokenAuthorities: cfg.ewsOAuthAuthorities(),
		Store:            m.Store, Sealer: m.Keys, Sink: m.Pipeline,
		Client:          &ews.Client{HTTP: &http.Client{Transport: outbound, Timeout: 30 * time.Second}, UserAgent: "mailpush/" + mailpush.Version, Clock: m.Clock, Grants: grants},
		PublicURL:       strings.TrimSuffix(publicURL, "/"),
		StatusFrequency: cfg.EWS.StatusFrequency,
		FetchRate:       float64(cfg.EWS.FetchRate), FetchBurst: cfg.EWS.FetchBurst, CallbackMaxAge: cfg.EWS.CallbackMaxAge,
		Logger: m.Logger.With("source", "ews"), Clock: m.Clock,
	}
	// The engine that keeps the EWS subscriptions alive: silent for
	// 2×StatusFrequency means dead; so does a host whose status events are late.
	m.EWSEngine = &subscription.Engine{
		Store: m.Store, Source: mailpush.SourceEWS, Healer: m.EWS,
		Logger: m.Logger.With("source", "ews", "component", "subscription"), Clock: m.Clock,
		DueAfter: 2 * m.EWS.StatusFrequencyDuration(),
		Interval: cfg.EWS.HealthInterval, Rate: float64(cfg.EWS.ResubscribeRate),
		MaxPerHost: cfg.EWS.MaxPerHost, MaxPerAccount: cfg.EWS.MaxPerAccount,
		HostRule: subscription.HostRule{
			MinSubscriptions: orDefault(cfg.EWS.HostMinSubscriptions, subscription.DefaultHostMinSubscriptions),
			Silence:          orDefault(cfg.EWS.HostSilence, subscription.DefaultHostSilence),
			Overdue:          orDefault(cfg.EWS.HostOverdue, subscription.DefaultHostOverdue),
			Frequency:        m.EWS.StatusFrequencyDuration(),
		},
		HostCheckInterval: cfg.EWS.HostCheckInterval,
	}
	m.EWS.Engine = m.EWSEngine

	m.GateRegistry = newGateRegistry(m)
	if cfg.Gate.Tenant != "" {
		if err := m.startGate(ctx); err != nil {
			return err
		}
	}
	if m.Dovecot, err = m.dovecotSource(outbound.TLSClientConfig); err != nil {
		return err
	}

	if m.Directories, err = cfg.openDirectories(m.Logger.With("component", "directory"), m.Clock); err != nil {
		return fmt.Errorf("config key %w", err)
	}
	if m.SMIME, err = m.openSMIME(outbound); err != nil {
		return err
	}
	if m.AppConfigs, m.appDirs, err = cfg.openAppConfigs(publicURL, m.Logger.With("component", "directory"), m.Clock); err != nil {
		return err
	}

	if _, shared := m.Store.(*postgres.Store); shared {
		m.EWSEngine.HostRuleElsewhere = true // the cluster's leader runs it
	}
	m.EWSEngine.Run(context.Background()) // stopped by Close
	m.watchKeys()                         // stopped by Close
	watchers := map[mailpush.Source]mailpush.Watcher{mailpush.SourceEWS: m.EWS, mailpush.SourceDovecot: m.Dovecot}
	if err := m.startGraph(&cfg, outbound, strings.TrimSuffix(publicURL, "/"), registry); err != nil {
		return err
	}
	verifiers := map[mailpush.Source]mailpush.CredentialVerifier{mailpush.SourceDovecot: m.Dovecot}
	if m.Graph != nil {
		watchers[mailpush.SourceGraph], verifiers[mailpush.SourceGraph] = m.Graph, m.Graph
	}

	m.Registrar = &registrar.Service{
		Store: m.Store, Keys: m.Keys, Logger: m.Logger.With("component", "registrar"), Clock: m.Clock,
		Watchers:        watchers,
		Verifiers:       verifiers,
		RegistrationTTL: cfg.RegistrationTTL,
		Autodiscover: &autodiscover.Client{
			HTTP: &http.Client{Transport: outbound, Timeout: 15 * time.Second,
				CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }},
			Logger: m.Logger.With("component", "autodiscover"), Clock: m.Clock,
		},
		ServiceMode: func(t *mailpush.Tenant, src mailpush.Source) bool {
			_, ok := serviceAccounts[t.Name]
			return src == mailpush.SourceEWS && ok
		},
		Platforms:        m.providers.platforms,
		AllowInsecureEWS: cfg.EWS.AllowInsecureHTTP,
		Quotas:           cfg.quotas,
		Metrics:          registrar.NewMetrics(registry),
	}
	// The sources ask the registrar what a notification may change.
	m.EWS.Rules = m.Registrar
	// The sources that acknowledge before fetching complete their events in
	// the pipeline's workers: every one is wired before the pipeline claims
	// the events a previous run left.
	m.resolvers.Set(mailpush.SourceEWS, m.EWS)
	m.Pipeline.Start()
	srv := &api.Server{
		Store: m.Store, Keys: m.Keys, Registrar: m.Registrar,
		Logger: m.Logger.With("component", "api"), Gate: m.GateRegistry,
		AppConfigs: m.AppConfigs, Ready: m.ready,
		Migrator: migrator{cfg: &m.Config, graph: m.Graph},
	}
	if m.SMIME != nil {
		srv.SMIME = m.SMIME
	}
	mux := http.NewServeMux()
	srv.Routes(mux)
	sites, err := cfg.autodiscoverSites(true)
	if err != nil {
		return err
	}
	responder, err := autodiscover.NewResponder(sites, m.Logger.With("component", "autodiscover"))
	if err != nil {
		return err
	}
	responder.Routes(mux)
	mux.Handle("POST "+ews.CallbackPath+"{token}", m.EWS)
	if m.Graph != nil {
		mux.Handle("POST "+graph.NotifyPath+"{token}", m.Graph)
		mux.Handle("POST "+graph.LifecyclePath+"{token}", m.Graph)
	}
	if m.Gate != nil {
		m.Gate.Routes(mux)
		registerGateMetrics(reg, m.Gate)
	}
	mux.Handle("GET /metrics", promhttp.HandlerFor(registry, promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(m.Logger.Handler(), slog.LevelWarn)}))
	mux.Handle("POST "+dovecot.NotifyPath, m.Dovecot)
	mux.Handle("PUT "+dovecot.NotifyPath, m.Dovecot)
	if err := m.startConsole(ctx, mux, publicURL, registry); err != nil {
		return err
	}
	if err := m.startPprof(); err != nil {
		return err
	}

	m.startCluster()

	m.server = &http.Server{
		Handler:           logRequests(m.Logger, api.JSONErrors(mux, m.Logger.With("component", "api"))),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       120 * time.Second,
		ErrorLog:          slog.NewLogLogger(m.Logger.Handler(), slog.LevelWarn),
	}
	if cfg.TLS.CertFile != "" {
		// Loaded now, so that a bad file stops the start with the key named.
		if m.server.TLSConfig, err = cfg.TLS.serverConfig(); err != nil {
			return err
		}
	}
	go func() {
		var err error
		if cfg.TLS.CertFile != "" {
			err = m.server.ServeTLS(m.listener, "", "")
		} else {
			err = m.server.Serve(m.listener)
		}
		if err != nil && !errors.Is(err, http.ErrServerClosed) {
			m.Logger.Error("HTTP server stopped", "err", err)
		}
	}()
	m.Logger.Info("mailpush serving", "version", mailpush.Version, "listen", m.listener.Addr().String(), "publicUrl", publicURL,
		"database", cfg.databaseName(), "apns", cfg.APNsEnabled())
	return nil
}

// ready is /readyz's check: the database answers and, in a cluster, this
// node's own connections to it (broadcast, leadership) and its heartbeat
// are alive. The error's message says which.
func (m *Main) ready(ctx context.Context) error {
	if err := m.Store.Ping(ctx); err != nil {
		return err
	}
	return m.cluster.ready()
}

// dovecotSource builds the Dovecot source from the tenants' dovecot
// settings; tlsConfig (the outbound roots) checks their IMAP servers.
func (m *Main) dovecotSource(tlsConfig *tls.Config) (*dovecot.Source, error) {
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
		imap := dovecot.IMAP{Address: d.IMAP.Address, TLS: d.IMAP.TLS, TLSConfig: tlsConfig}
		tenants = append(tenants, dovecot.Tenant{Name: name, Username: d.Username, Password: pass, UserMapping: mapping, Domain: d.Domain, IMAP: imap})
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
	m.cluster.close()
	if m.pprof != nil {
		errs = append(errs, m.pprof.Shutdown(ctx))
	}
	if m.console != nil {
		m.console.Close()
	}
	if m.EWSEngine != nil {
		m.EWSEngine.Close()
	}
	m.stopWatchingKeys()
	if m.GraphEngine != nil {
		m.GraphEngine.Close()
		m.Graph.Close()
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
	for _, d := range m.Directories {
		d.Close()
	}
	for _, d := range m.appDirs {
		d.Close()
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

// TenantSettings are what `tenant add` and `tenant set` change; zero
// values leave a setting alone (add: the default).
type TenantSettings struct {
	Hosts      []string
	MaxContent mailpush.ContentMode
	// DeviceSubscribed turns device-subscribed registrations on or off.
	// New tenants have it off: such a registration proves only that its
	// app could POST to its callback URL.
	DeviceSubscribed *bool
}

func (set TenantSettings) apply(t *mailpush.Tenant) {
	if len(set.Hosts) > 0 {
		t.AllowedHosts = set.Hosts
	}
	if set.MaxContent != "" {
		t.MaxContent = set.MaxContent
	}
	if set.DeviceSubscribed != nil {
		t.DeviceSubscribed = *set.DeviceSubscribed
	}
}

// AddTenant creates a tenant and returns its first API token, of scope
// app: the one to build into the mail app.
func (m *Main) AddTenant(ctx context.Context, name string, set TenantSettings) (string, error) {
	if name == "" || len(name) > 64 || strings.ContainsAny(name, " \t\r\n") {
		return "", fmt.Errorf("tenant name must be 1 to 64 characters without spaces")
	}
	t := &mailpush.Tenant{Name: name, MaxContent: mailpush.ContentBadge} // the most private by default
	set.apply(t)
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
		errs = append(errs, fmt.Errorf("config key tenants.%s: no tenant named %q in %s; %s", name, name, m.Config.databaseName(), hint))
	}
	return errors.Join(errs...)
}

// SetTenant changes a tenant's settings.
func (m *Main) SetTenant(ctx context.Context, name string, set TenantSettings) error {
	t, err := m.Store.TenantByName(ctx, name)
	if err != nil {
		return err
	}
	set.apply(t)
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

func orDefault[T int | time.Duration](v, def T) T {
	if v <= 0 {
		return def
	}
	return v
}

// startGraph makes the Graph source and its engine when a tenant has a
// Graph app, and starts them (Close stops them).
func (m *Main) startGraph(cfg *Config, outbound *http.Transport, publicURL string, registry prometheus.Registerer) error {
	apps, err := cfg.graphApps()
	if err != nil || len(apps) == 0 {
		return err
	}
	m.Graph = &graph.Source{
		Store: m.Store, Sealer: m.Keys, Hasher: m.Keys, Sink: m.Pipeline, Apps: apps,
		HTTP:      &http.Client{Transport: outbound, Timeout: 30 * time.Second},
		PublicURL: publicURL, Lifetime: cfg.Graph.SubscriptionLifetime,
		QueueSize: cfg.Graph.QueueSize, Workers: cfg.Graph.Workers,
		Logger: m.Logger.With("source", "graph"), Clock: m.Clock,
		Metrics: graph.NewMetrics(registry, m.Clock, m.Logger.With("source", "graph")),
	}
	if cfg.Graph.RichNotifications {
		m.Graph.Certs = &graph.Certs{Dir: filepath.Join(cfg.KeyDir, "graph-encryption"), Clock: m.Clock}
	}
	// Renewal at half the lifetime, paced: a wave of registrations never
	// becomes a wave of PATCHes. Graph allows 4 requests at once per app and
	// mailbox (the engine's account is the mailbox).
	m.GraphEngine = &subscription.Engine{
		Store: m.Store, Source: mailpush.SourceGraph, Healer: m.Graph,
		Logger: m.Logger.With("source", "graph", "component", "subscription"), Clock: m.Clock,
		DueAfter: m.Graph.RenewAfter(), Interval: time.Minute, Rate: float64(orDefault(cfg.Graph.RenewRate, 20)), MaxPerAccount: 4,
	}
	m.Graph.Engine = m.GraphEngine
	m.Graph.Addresses = m.EWS // the cut-over from EWS (migrate.go)
	m.resolvers.Set(mailpush.SourceGraph, m.Graph)
	m.Graph.Run(context.Background())
	m.GraphEngine.Run(context.Background())
	return nil
}
