package main

import (
	"context"
	"crypto/x509"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/mailpush/mailpush"
	"github.com/mailpush/mailpush/apns"
	"github.com/mailpush/mailpush/fcm"
)

// providers holds the push clients of every tenant. Clients are keyed by
// credentials: tenants that share APNs credentials (a team key, or a
// certificate) share one apns.Client, hence one HTTP/2 connection per
// environment, each pushing to its own topic through an apns.Topic view.
type providers struct {
	store mailpush.Store
	log   *slog.Logger

	apns     map[string]*apns.Client // by APNsConfig.credentials
	fcm      map[string]*fcm.Client  // by FCMConfig.credentials
	defaults map[mailpush.Platform]mailpush.Pusher
	byName   map[string]map[mailpush.Platform]mailpush.Pusher // configured tenants

	mu   sync.Mutex
	byID map[string]map[mailpush.Platform]mailpush.Pusher // resolved tenant IDs
}

func newProviders(cfg *Config, store mailpush.Store, roots *x509.CertPool, log *slog.Logger) (*providers, error) {
	p := &providers{store: store, log: log, apns: map[string]*apns.Client{}, fcm: map[string]*fcm.Client{},
		byName: map[string]map[mailpush.Platform]mailpush.Pusher{}, byID: map[string]map[mailpush.Platform]mailpush.Pusher{}}
	var err error
	if p.defaults, err = p.pushers("", cfg.APNs, cfg.FCM, roots); err != nil {
		p.close()
		return nil, err
	}
	for _, name := range cfg.tenantNames() {
		if p.byName[name], err = p.pushers("tenants."+name+".", cfg.TenantAPNs(name), cfg.TenantFCM(name), roots); err != nil {
			p.close()
			return nil, err
		}
	}
	return p, nil
}

// pushers returns the pushers for one effective configuration, making the
// clients it needs that do not exist yet. prefix names the config keys.
func (p *providers) pushers(prefix string, a APNsConfig, f FCMConfig, roots *x509.CertPool) (map[mailpush.Platform]mailpush.Pusher, error) {
	out := map[mailpush.Platform]mailpush.Pusher{}
	if a.enabled() {
		key := a.credentials()
		c := p.apns[key]
		if c == nil {
			var err error
			if c, err = newAPNsClient(prefix+"apns.", a, roots, p.log.With("provider", "apns")); err != nil {
				return nil, err
			}
			p.apns[key] = c
		}
		out[mailpush.PlatformIOS] = apns.Topic{Client: c, Topic: a.Topic, Environment: mailpush.Environment(a.Environment)}
	}
	if f.ProjectID != "" {
		key := f.credentials()
		c := p.fcm[key]
		if c == nil {
			creds, err := os.ReadFile(f.CredentialsFile)
			if err != nil {
				return nil, fmt.Errorf("config key %sfcm.credentialsFile: %w", prefix, err)
			}
			c, err = fcm.New(fcm.Config{ProjectID: f.ProjectID, Credentials: creds, Endpoint: f.Endpoint, TokenURL: f.TokenURL,
				RootCAs: roots, Logger: p.log.With("provider", "fcm")})
			clear(creds)
			if err != nil {
				return nil, fmt.Errorf("config key %sfcm: %w", prefix, err)
			}
			p.fcm[key] = c
		}
		out[mailpush.PlatformAndroid] = c
	}
	return out, nil
}

func newAPNsClient(prefix string, a APNsConfig, roots *x509.CertPool, log *slog.Logger) (*apns.Client, error) {
	cfg := apns.Config{ProductionURL: a.ProductionURL, SandboxURL: a.SandboxURL, Topic: a.Topic, RootCAs: roots, Logger: log}
	if a.CertFile != "" {
		p12, err := os.ReadFile(a.CertFile)
		if err != nil {
			return nil, fmt.Errorf("config key %scertFile: %w", prefix, err)
		}
		password := a.CertPassword
		if a.CertPasswordFile != "" {
			b, err := os.ReadFile(a.CertPasswordFile)
			if err != nil {
				return nil, fmt.Errorf("config key %scertPasswordFile: %w", prefix, err)
			}
			password = strings.TrimRight(string(b), "\r\n")
		}
		if cfg.Certificate, err = apns.LoadP12(p12, password); err != nil {
			return nil, fmt.Errorf("config key %scertFile: %w", prefix, err)
		}
	} else {
		key, err := os.ReadFile(a.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("config key %skeyFile: %w", prefix, err)
		}
		cfg.TeamID, cfg.KeyID, cfg.PrivateKey = a.TeamID, a.KeyID, key
	}
	c, err := apns.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("config key %s…: %w", prefix, err)
	}
	return c, nil
}

// forTenant returns the pushers of the tenant with this ID: its own when
// the configuration names it, otherwise the defaults.
func (p *providers) forTenant(tenantID string) map[mailpush.Platform]mailpush.Pusher {
	if len(p.byName) == 0 {
		return p.defaults
	}
	p.mu.Lock()
	ps, ok := p.byID[tenantID]
	p.mu.Unlock()
	if ok {
		return ps
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	t, err := p.store.Tenant(ctx, tenantID)
	if err != nil {
		p.log.Error("cannot find the tenant of a push; using the default providers", "tenant", tenantID, "err", err)
		return p.defaults
	}
	ps = p.forName(t.Name)
	p.mu.Lock()
	p.byID[tenantID] = ps // tenants are never renamed
	p.mu.Unlock()
	return ps
}

func (p *providers) forName(name string) map[mailpush.Platform]mailpush.Pusher {
	if ps, ok := p.byName[name]; ok {
		return ps
	}
	return p.defaults
}

// route is pipeline.Config.Route.
func (p *providers) route(tenantID string, platform mailpush.Platform) mailpush.Pusher {
	return p.forTenant(tenantID)[platform]
}

// platforms is api.Server.Platforms.
func (p *providers) platforms(t *mailpush.Tenant) []mailpush.Platform {
	var out []mailpush.Platform
	for pl := range p.forName(t.Name) {
		out = append(out, pl)
	}
	slices.Sort(out)
	return out
}

func (p *providers) close() {
	for _, c := range p.apns {
		c.Close()
	}
	for _, c := range p.fcm {
		c.Close()
	}
}
