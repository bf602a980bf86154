// Package console is mailpush's admin console, served at /admin/: HTML
// rendered on the server with html/template, its stylesheet embedded, no
// script at all. It shows tenants (tokens by scope, content policy, allowed
// hosts), registrations found by address (the address is turned into its
// keyed hash and never shown or stored), subscription health per source,
// deliveries (rates, latency and errors drawn as SVG on the server), dead
// letters (retry or drop), and the ActiveSync gate (decisions, devices to
// block, allow or wipe, rules in order). Every change is written to the
// audit log.
//
// Sign-in is OpenID Connect (any compliant provider; fake/oidcfake in tests)
// or, as the fallback, a tenant token of scope admin. Who may do what:
//
//   - an OIDC sign-in is an operator of the whole server, admitted when the
//     provider vouches for a subject or email listed in the configuration;
//   - a token sign-in is an administrator of that token's tenant only: every
//     page and every change is limited to it, and the session ends as soon
//     as the token is revoked.
//
// Sessions live in the store (any node of a cluster accepts them, and a
// restart signs nobody out), found by the SHA-256 of an HttpOnly,
// SameSite=Strict cookie (Secure when served over TLS) holding 256 random
// bits; they end after an idle and an absolute timeout, checked against the
// stored times. Every form carries the session's CSRF token (a hash of the
// cookie, so no node needs to store it), checked in constant time before any change;
// the Origin header, when present, must be this server's. Pages are sent
// with a Content-Security-Policy that allows no script, so that even a
// template mistake could not run an injected one.
package console

import (
	"context"
	"embed"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mailpush/mailpush"
	"github.com/prometheus/client_golang/prometheus"
)

// Store is what the console reads and changes.
type Store interface {
	mailpush.TokenReader
	mailpush.AdminReader
	mailpush.AuditLog
	mailpush.ConsoleSessionStore
	CountRegistrations(ctx context.Context, tenantID string) (int, error)
	Tenants(ctx context.Context) ([]*mailpush.Tenant, error)
	UpdateTenant(ctx context.Context, t *mailpush.Tenant) error
	Tokens(ctx context.Context, tenantID string) ([]*mailpush.Token, error)
	MailboxByAddress(ctx context.Context, tenantID string, addressHash []byte, source mailpush.Source) (*mailpush.Mailbox, error)
	Mailbox(ctx context.Context, id string) (*mailpush.Mailbox, error)
	ActiveRegistrations(ctx context.Context, mailboxID string) ([]*mailpush.Registration, error)
	DeadLetters(ctx context.Context, limit int) ([]mailpush.DeadLetter, error)
	EnqueuePushes(ctx context.Context, pushes []*mailpush.Push) error
}

// GateInfo is what the console shows of the ActiveSync gate of one tenant.
type GateInfo struct {
	TenantID string
	Mode     string
	FailMode string
	// Rules reads and edits the gate's rules, in order.
	Rules GateRuleEditor
	// Decisions returns the allow and deny counts since the start.
	Decisions func() (allowed, denied uint64)
	// Recent holds the last decisions (the gate feeds it); nil: not kept.
	Recent *DecisionLog
}

// EngineState is what the subscriptions page shows of one source's
// subscription engine (package subscription).
type EngineState struct {
	// DueAfter: a subscription silent this long is renewed or healed.
	DueAfter time.Duration
	// Healing returns the heals running on this node and the last ones
	// that ended.
	Healing func() (running, ended []mailpush.HealRecord)
}

// Quotas are the registration limits that apply to a tenant, defaults
// filled in: live registrations per tenant and per mailbox, and the rates
// (per second, and bursts) of its app tokens' and backend tokens'
// registration calls.
type Quotas struct {
	PerTenant, PerMailbox int
	Rate                  float64
	Burst                 int
	BackendRate           float64
	BackendBurst          int
}

// Config holds the console's dependencies.
type Config struct {
	Store  Store
	Hasher mailpush.AddressHasher
	// Registry changes gate devices (block, allow, wipe); nil hides them.
	Registry mailpush.GateRegistry
	// Gate describes the running gate; nil when the gate is off.
	Gate *GateInfo
	// Quotas returns the registration limits of a tenant; nil: not shown.
	Quotas func(t *mailpush.Tenant) Quotas
	// Engines are the subscription engines by source, for renewals due
	// and heals in progress on the subscriptions page.
	Engines map[mailpush.Source]EngineState
	// Metrics is read for the deliveries page (nil: no figures).
	Metrics prometheus.Gatherer
	// OIDC enables OpenID Connect sign-in; nil leaves token sign-in only.
	OIDC *OIDC
	// Secure marks cookies Secure (the server is reached over TLS).
	Secure bool
	// IdleTimeout and MaxAge end a session after inactivity and in any
	// case (defaults 30 minutes and 12 hours).
	IdleTimeout, MaxAge time.Duration
	// SampleEvery is how often delivery figures are sampled for the charts
	// (default 10s); the last 90 samples are kept.
	SampleEvery time.Duration
	Logger      *slog.Logger
	Clock       mailpush.Clock
}

// Console is the admin console's HTTP handler and its background sampler.
type Console struct {
	cfg      Config
	pages    map[string]*template.Template
	sessions *sessions
	samples  *sampler
	static   http.Handler

	started  atomic.Bool
	stopOnce sync.Once
	stop     chan struct{}
	done     chan struct{}
}

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// New builds the console; Start begins sampling, Close stops it.
func New(cfg Config) (*Console, error) {
	if cfg.IdleTimeout == 0 {
		cfg.IdleTimeout = 30 * time.Minute
	}
	if cfg.MaxAge == 0 {
		cfg.MaxAge = 12 * time.Hour
	}
	if cfg.SampleEvery == 0 {
		cfg.SampleEvery = 10 * time.Second
	}
	pages, err := parseTemplates()
	if err != nil {
		return nil, err
	}
	sub, _ := fs.Sub(staticFS, "static")
	return &Console{
		cfg: cfg, pages: pages,
		sessions: &sessions{store: cfg.Store, clock: cfg.Clock, idle: cfg.IdleTimeout, maxAge: cfg.MaxAge},
		samples:  newSampler(90),
		static:   http.StripPrefix("/admin/static/", http.FileServerFS(sub)),
		stop:     make(chan struct{}), done: make(chan struct{}),
	}, nil
}

// Start samples the delivery figures every SampleEvery until Close.
func (c *Console) Start() {
	if !c.started.CompareAndSwap(false, true) {
		return
	}
	ticker, tick := c.cfg.Clock.NewTicker(c.cfg.SampleEvery)
	c.samples.take(c.cfg.Metrics, c.cfg.Clock.Now())
	go func() {
		defer close(c.done)
		defer ticker.Stop()
		for {
			select {
			case <-c.stop:
				return
			case now := <-tick:
				c.samples.take(c.cfg.Metrics, now)
			}
		}
	}()
}

// Close stops the sampler.
func (c *Console) Close() {
	c.stopOnce.Do(func() {
		close(c.stop)
		if c.started.Load() {
			<-c.done
		}
	})
}
