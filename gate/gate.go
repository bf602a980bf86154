package gate

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mailpush/mailpush"
)

// Defaults of Config.
const (
	DefaultCacheTTL  = 10 * time.Second
	DefaultCacheSize = 100_000
	// touchEvery bounds how often one device's last-seen time is written.
	touchEvery = time.Minute
	// touchQueue bounds the last-seen writes waiting for the flusher; when
	// it is full a touch is dropped (last seen is advisory) and counted.
	touchQueue = 4096
	// lookupTimeout bounds a registry lookup: a slow store is a failed one.
	lookupTimeout = 2 * time.Second
)

// Deps are what a Gate needs from outside.
type Deps struct {
	Store    mailpush.GateStore
	Hasher   mailpush.AddressHasher
	TenantID string // the resolved Config.Tenant
	// OnDecision, when set, is told every decision (the admin console's
	// list of recent ones). It runs on the request path: it must not block.
	OnDecision func(mailpush.GateDecisionRecord)
	Logger     *slog.Logger
	Clock      mailpush.Clock
	// AuditHandler and AuditOutput, both set, make the audit log's lines
	// with AuditHandler (the server's log format, over the gate's buffer)
	// and write them to AuditOutput in batches of whole lines (audit.go);
	// AuditOutput must accept concurrent writes, as an *os.File does.
	// Unset, the lines go through Logger, a write each.
	AuditHandler func(io.Writer) slog.Handler
	AuditOutput  io.Writer
}

// Gate decides, for every ActiveSync request a reverse proxy asks about,
// whether it may pass. Start runs its last-seen writer; Close stops it.
type Gate struct {
	deps Deps
	// policy is the configuration's; live is what decides: policy with
	// the rules in force (SetRules swaps it). The identity rules are the
	// configuration's and never change.
	policy  *Policy
	live    atomic.Pointer[Policy]
	cache   *cache
	hashes  *memo // keyed hashes of users, DeviceIds and IPs
	auditor *auditor
	trusted []netip.Prefix
	proxy   Proxy
	// the headers of proxy and of gate.identity.header, canonical
	uriH, methodH, userH header
	audit                string
	// clearIDs: the audit log holds DeviceIds and addresses in clear.
	clearIDs bool

	touches   chan string
	stop      chan struct{}
	done      chan struct{}
	started   atomic.Bool
	closeOnce sync.Once

	allowed, denied, touchDrops atomic.Uint64
}

// New validates cfg and returns a Gate for deps.TenantID.
func New(cfg Config, deps Deps) (*Gate, error) {
	p, err := Compile(cfg, deps.Hasher, deps.TenantID)
	var errs []error
	if err != nil {
		errs = append(errs, err)
	}
	g := &Gate{deps: deps, policy: p, audit: cfg.Audit,
		touches: make(chan string, touchQueue), stop: make(chan struct{}), done: make(chan struct{})}
	if g.audit == "" {
		g.audit = "all"
	}
	if g.audit != "all" && g.audit != "deny" && g.audit != "off" {
		errs = append(errs, errors.New(`config key gate.audit: must be all, deny or off`))
	}
	switch cfg.AuditIdentifiers {
	case "", "hashed":
	case "clear":
		g.clearIDs = true
	default:
		errs = append(errs, errors.New(`config key gate.auditIdentifiers: must be hashed or clear`))
	}
	if px, ok := Proxies[cfg.Proxy]; ok {
		g.proxy = px
		g.uriH, g.methodH, g.userH = newHeader(px.URI), newHeader(px.Method), newHeader(cfg.Identity.Header)
	} else {
		errs = append(errs, errors.New(`config key gate.proxy: must name the reverse proxy that asks the gate: nginx, caddy, traefik, haproxy or netscaler (it says which headers carry the original request)`))
	}
	proxies := cfg.TrustedProxies
	if proxies == nil {
		proxies = []string{"127.0.0.0/8", "::1/128"}
	}
	for _, s := range proxies {
		pfx, err := netip.ParsePrefix(s)
		if err != nil {
			errs = append(errs, errors.New("config key gate.trustedProxies: "+s+" is not a CIDR network such as 127.0.0.1/32"))
			continue
		}
		g.trusted = append(g.trusted, pfx.Masked())
	}
	ttl, size := cfg.CacheTTL, cfg.CacheSize
	if ttl == 0 {
		ttl = DefaultCacheTTL
	}
	if size == 0 {
		size = DefaultCacheSize
	}
	if ttl < 0 || size < 0 {
		errs = append(errs, errors.New("config key gate.cacheTtl / gate.cacheSize: must not be negative"))
	}
	g.cache = newCache(ttl, size)
	g.hashes = newMemo(min(size, 100_000))
	g.auditor = newAuditor(g, deps)
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	g.live.Store(p)
	if g.clearIDs && g.audit != "off" {
		deps.Logger.Warn("gate: the audit log holds ActiveSync DeviceIds and client IP addresses in clear (gate.auditIdentifiers: clear)")
	}
	return g, nil
}

// hashKind is what a remembered hash is of.
type hashKind uint8

const (
	kindUser hashKind = iota
	kindDevice
	kindIP
)

// hash is the tenant's keyed hash of a value, remembered.
func (g *Gate) hash(kind hashKind, value string) []byte {
	return g.hashes.get(memoKey{kind, value}, func() []byte {
		switch kind {
		case kindUser:
			return g.deps.Hasher.HashAddress(g.deps.TenantID, value)
		case kindDevice:
			return mailpush.ActiveSyncDeviceHash(g.deps.Hasher, g.deps.TenantID, value)
		}
		return g.deps.Hasher.HashAddress(g.deps.TenantID, "gate-client-ip\x00"+value)
	})
}

// SetRules makes rules the ones that decide, from the next request on
// (the admin console's edits, read from the store). Invalid rules change
// nothing and are reported with an EInvalid error naming the rule.
func (g *Gate) SetRules(rules []mailpush.GateRule) error {
	p, err := g.policy.WithRules(rules)
	if err != nil {
		return err
	}
	g.live.Store(p)
	return nil
}

// Invalidate drops the cached registry answer for a device, so that a
// change takes effect on the next request. Registry.OnChange calls it.
func (g *Gate) Invalidate(tenantID, deviceID string) {
	if tenantID == g.deps.TenantID {
		g.cache.invalidate(mailpush.NormalizeDeviceID(deviceID))
	}
}

// InvalidateAll drops every cached registry answer: a node that may have
// missed changes made on another node (its broadcast connection was lost)
// asks the store again.
func (g *Gate) InvalidateAll() { g.cache.clear() }

// Stats are the gate's counters since start.
type Stats struct {
	Allowed, Denied        uint64
	CacheHits, CacheMisses uint64
	CacheEntries           int
	LastSeenDropped        uint64
}

// Stats returns the counters.
func (g *Gate) Stats() Stats {
	return Stats{Allowed: g.allowed.Load(), Denied: g.denied.Load(), CacheHits: g.cache.hits.Load(), CacheMisses: g.cache.misses.Load(),
		CacheEntries: g.cache.len(), LastSeenDropped: g.touchDrops.Load()}
}

// Start runs the last-seen writer and the audit log's writer until Close.
func (g *Gate) Start() {
	if g.started.CompareAndSwap(false, true) {
		go g.flushLoop()
		g.auditor.start()
	}
}

// Close stops the last-seen writer after a final flush, and the audit
// log's writer after writing every queued line. It is safe to call more
// than once, and without Start.
func (g *Gate) Close() {
	g.closeOnce.Do(func() {
		close(g.stop)
		if !g.started.CompareAndSwap(false, true) { // a later Start does nothing
			<-g.done
		}
		g.auditor.close()
		s := g.Stats()
		g.deps.Logger.Info("gate stopped", "allowed", s.Allowed, "denied", s.Denied, "cacheHits", s.CacheHits, "cacheMisses", s.CacheMisses, "lastSeenDropped", s.LastSeenDropped)
	})
}

func (g *Gate) flushLoop() {
	defer close(g.done)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	seen := map[string]time.Time{}
	flush := func() {
		if len(seen) == 0 {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := g.deps.Store.TouchGateDevices(ctx, g.deps.TenantID, seen); err != nil {
			g.deps.Logger.Warn("gate: could not record last-seen times", "devices", len(seen), "err", err)
		}
		clear(seen)
	}
	for {
		select {
		case id := <-g.touches:
			seen[id] = g.deps.Clock.Now()
		case <-tick.C:
			flush()
		case <-g.stop:
			for {
				select {
				case id := <-g.touches:
					seen[id] = g.deps.Clock.Now()
				default:
					flush()
					return
				}
			}
		}
	}
}

func (g *Gate) touch(e *cacheEntry, now time.Time) {
	if e.dev == nil {
		return
	}
	last := e.touched.Load()
	if now.UnixNano()-last < int64(touchEvery) && last != 0 {
		return
	}
	if !e.touched.CompareAndSwap(last, now.UnixNano()) {
		return
	}
	select {
	case g.touches <- e.dev.DeviceID:
	default:
		g.touchDrops.Add(1)
	}
}

// lookup returns the registry's answer for a device, from the cache when it
// is fresh.
func (g *Gate) lookup(ctx context.Context, id string) (dev *mailpush.GateDevice, hit bool, err error) {
	now := g.deps.Clock.Now()
	e, gen := g.cache.get(id, now) // gen: the generation before the store is asked
	if e != nil {
		g.touch(e, now)
		return e.dev, true, nil
	}
	ctx, cancel := context.WithTimeout(ctx, lookupTimeout)
	defer cancel()
	dev, err = g.deps.Store.GateDevice(ctx, g.deps.TenantID, id)
	if mailpush.ErrorCode(err) == mailpush.ENotFound {
		dev, err = nil, nil
	}
	if err != nil {
		return nil, false, err
	}
	e = g.cache.put(id, dev, gen, now)
	if dev != nil {
		e.touched.Store(0)
		g.touch(e, now)
	}
	return dev, false, nil
}
