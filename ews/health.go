package ews

import (
	"context"
	"errors"
	"math/rand/v2"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mailpush/mailpush"
)

// Defaults of the health monitor and of resubscription.
const (
	DefaultResubscribeRate     = 100     // resubscriptions started per second, at most
	DefaultResubscribeWorkers  = 64      // resubscriptions in flight, at most
	DefaultMaxPerHost          = 32      // requests in flight per Exchange host
	DefaultMaxPerAccount       = 8       // requests in flight per account (EWS allows 27)
	DefaultCredentialCacheSize = 100_000 // mailboxes whose sealed credentials stay in memory
	defaultBusyBackOff         = 5 * time.Second
	staleBatch                 = 500
	maxSubscribeAttempts       = 5
	maxDeferred                = 10_000 // mailboxes with a MoreEvents batch waiting for the rest
)

// state is the Source's in-memory state, made on first use.
type state struct {
	once   sync.Once
	creds  *credCache
	limit  *limiter
	hosts  *hostBook
	mu     sync.Mutex
	next   time.Time          // when the next claim may start (pacing, shared by Check and CheckHosts)
	more   map[string]summary // changes of MoreEvents batches, pushed with the last batch
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func (s *Source) init() *state {
	s.st.once.Do(func() {
		size := s.CredentialCacheSize
		if size <= 0 {
			size = DefaultCredentialCacheSize
		}
		s.st.creds = newCredCache(size)
		s.st.limit = newLimiter(orDefault(s.MaxPerHost, DefaultMaxPerHost), orDefault(s.MaxPerAccount, DefaultMaxPerAccount))
		s.st.more = map[string]summary{}
		s.st.hosts = newHostBook(size)
	})
	return &s.st
}

func orDefault(v, def int) int {
	if v <= 0 {
		return def
	}
	return v
}

func (s *Source) statusFrequency() time.Duration {
	return time.Duration(max(s.StatusFrequency, 1)) * time.Minute
}

// Run starts the health monitor: every HealthInterval (default half the
// StatusFrequency) it runs Check. It returns at once; Close stops it.
func (s *Source) Run(ctx context.Context) {
	st := s.init()
	ctx, cancel := context.WithCancel(ctx)
	st.mu.Lock()
	if st.cancel != nil {
		st.mu.Unlock()
		cancel()
		return // already running
	}
	st.cancel = cancel
	st.mu.Unlock()
	every := s.HealthInterval
	if every <= 0 {
		every = s.statusFrequency() / 2
	}
	st.wg.Add(2)
	go s.every(ctx, every, "health check", s.Check)
	go s.every(ctx, orDefaultDuration(s.HostCheckInterval, DefaultHostCheckInterval), "host check", s.CheckHosts)
}

// every runs check every d until ctx ends; Run owns it (st.wg).
func (s *Source) every(ctx context.Context, d time.Duration, name string, check func(context.Context) (CheckResult, error)) {
	defer s.st.wg.Done()
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if res, err := check(ctx); err != nil && ctx.Err() == nil {
			s.Logger.Error(name+" failed", "err", err)
		} else if res.Stale > 0 {
			s.Logger.Info(name, "stale", res.Stale, "resubscribed", res.Resubscribed, "askedDevices", res.AskedDevices, "failed", res.Failed)
		}
	}
}

// Close stops the health monitor and waits for it. It is safe to call more
// than once, and without Run.
func (s *Source) Close() {
	st := s.init()
	st.mu.Lock()
	cancel := st.cancel
	st.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	st.wg.Wait()
}

// CheckResult counts what one Check did.
type CheckResult struct {
	Stale        int // silent subscriptions found (and claimed)
	Resubscribed int // made again by mailpush (sealed mode, service mode)
	AskedDevices int // devices asked to check in (device-subscribed mode, or no credentials in memory)
	Failed       int // resubscriptions that failed; tried again after another 2×StatusFrequency
}

// Check finds every subscription silent for more than 2×StatusFrequency and
// heals it: sealed mode resubscribes from the last watermark with the
// credentials kept in memory (a fresh subscription on ErrorInvalidWatermark,
// then the badge is recomputed with GetFolder); without them, and in
// device-subscribed mode, the devices get a background push asking them to
// check in and their registrations become pending. Resubscriptions start at
// most ResubscribeRate per second with random spacing, and run within the
// per-host and per-account limits. Check returns when all are done.
func (s *Source) Check(ctx context.Context) (CheckResult, error) {
	s.init()
	before := s.Clock.Now().Add(-2 * s.statusFrequency())
	return s.sweep(ctx, func(jobs chan<- *mailpush.Mailbox) (int, error) { return s.claimStale(ctx, before, jobs) })
}

// sweep heals, with ResubscribeWorkers workers, the mailboxes that feed
// claims, and returns when all are done.
func (s *Source) sweep(ctx context.Context, feed func(jobs chan<- *mailpush.Mailbox) (int, error)) (CheckResult, error) {
	workers := orDefault(s.ResubscribeWorkers, DefaultResubscribeWorkers)
	jobs := make(chan *mailpush.Mailbox, workers)
	var resubscribed, asked, failed atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for mb := range jobs {
				switch s.heal(ctx, mb) {
				case healResubscribed:
					resubscribed.Add(1)
				case healAsked:
					asked.Add(1)
				case healFailed:
					failed.Add(1)
				}
			}
		}()
	}
	stale, err := feed(jobs)
	close(jobs)
	wg.Wait()
	return CheckResult{Stale: stale, Resubscribed: int(resubscribed.Load()), AskedDevices: int(asked.Load()), Failed: int(failed.Load())}, err
}

var errNotStale = errors.New("ews: mailbox is no longer stale")

// claimStale feeds jobs with the stale mailboxes, paced, each claimed first
// by moving its LastEventAt to now: another sweep (or node) then leaves it
// alone for 2×StatusFrequency, which is also when a failed attempt is
// retried.
func (s *Source) claimStale(ctx context.Context, before time.Time, jobs chan<- *mailpush.Mailbox) (int, error) {
	n := 0
	for {
		mbs, err := s.Store.StaleMailboxes(ctx, mailpush.SourceEWS, before, staleBatch)
		if err != nil {
			return n, err
		}
		claimed := 0
		for _, mb := range mbs {
			ok, err := s.claim(ctx, mb.ID, before, jobs)
			if err != nil {
				return n, err
			}
			if ok {
				claimed++
				n++
			}
		}
		if len(mbs) < staleBatch || claimed == 0 {
			return n, nil
		}
	}
}

// claim waits for its turn (at most ResubscribeRate per second, shared by
// every sweep), then claims the mailbox if it is still live and silent
// since before, and hands it to jobs. It reports whether it did.
func (s *Source) claim(ctx context.Context, mailboxID string, before time.Time, jobs chan<- *mailpush.Mailbox) (bool, error) {
	if err := s.pace(ctx); err != nil {
		return false, err
	}
	now := s.Clock.Now()
	c, err := s.Store.UpdateMailbox(ctx, mailboxID, func(m *mailpush.Mailbox) error {
		if m.Status == mailpush.StatusInactive || !m.LastEventAt.Before(before) {
			return errNotStale
		}
		m.LastEventAt = now
		return nil
	})
	if errors.Is(err, errNotStale) || mailpush.ErrorCode(err) == mailpush.ENotFound {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	select {
	case jobs <- c:
		return true, nil
	case <-ctx.Done():
		return true, ctx.Err()
	}
}

// pace waits for the next start slot: uniform spacing in [0, 2/rate), rate
// on average, never in lock step.
func (s *Source) pace(ctx context.Context) error {
	rate := s.ResubscribeRate
	if rate <= 0 {
		rate = DefaultResubscribeRate
	}
	st := &s.st
	st.mu.Lock()
	at := later(st.next, time.Now())
	st.next = at.Add(time.Duration(rand.Float64() * 2 * float64(time.Second) / rate))
	st.mu.Unlock()
	wait := time.Until(at)
	if wait <= 0 {
		return nil
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

type healOutcome int

const (
	healNothing healOutcome = iota
	healResubscribed
	healAsked
	healFailed
)

func (s *Source) heal(ctx context.Context, mb *mailpush.Mailbox) healOutcome {
	log := s.Logger.With("mailbox", mb.ID, "mode", mb.Mode)
	switch mb.Mode {
	case mailpush.ModeSealed:
		c, ok := s.st.creds.get(mb.ID)
		if !ok {
			log.Info("subscription silent and no credentials in memory: asking the devices to check in")
			break
		}
		err := s.resubscribe(ctx, mb, c)
		if err == nil {
			return healResubscribed
		}
		if !errors.Is(err, ErrUnauthorized) {
			log.Warn("resubscription failed; trying again later", "err", err)
			return healFailed
		}
		s.st.creds.drop(mb.ID)
		log.Info("Exchange refused the credentials in memory: asking the devices to check in")
	case mailpush.ModeService:
		c, ok := s.st.creds.get(mb.ID)
		if !ok {
			log.Info("subscription silent and its address is not in memory: asking the devices to check in")
			break
		}
		if err := s.resubscribe(ctx, mb, c); err != nil {
			log.Warn("resubscription failed; trying again later", "err", err)
			return healFailed
		}
		return healResubscribed
	}
	if err := s.askDevices(ctx, mb); err != nil {
		log.Warn("could not ask the devices to check in", "err", err)
		return healFailed
	}
	return healAsked
}

// resubscribe makes the mailbox's subscription again, from its last
// watermark so that Exchange replays what was missed; on
// ErrorInvalidWatermark it subscribes afresh and recomputes the badge.
func (s *Source) resubscribe(ctx context.Context, mb *mailpush.Mailbox, c cachedCreds) error {
	ep, err := s.endpoint(ctx, mb, c)
	if err != nil {
		return err
	}
	serverURL := c.serverURL
	tok := mailpush.CallbackToken{TenantID: mb.TenantID, MailboxID: mb.ID, ServerURL: serverURL, Credentials: c.creds, Address: c.address, IssuedAt: s.Clock.Now().Unix()}
	sealed, err := s.Sealer.SealCallback(tok)
	if err != nil {
		return mailpush.WrapError(mailpush.EInternal, "cannot seal the callback token", err)
	}
	// Forget the dead subscription first: the new one's first notification
	// may arrive before Subscribe returns, and then binds.
	if _, err := s.Store.UpdateMailbox(ctx, mb.ID, func(m *mailpush.Mailbox) error {
		m.SubscriptionID = ""
		return nil
	}); err != nil {
		return err
	}
	host, account := hostOf(serverURL), accountOf(ep, mb.ID)
	wm, fresh := mb.Watermark, mb.Watermark == ""
	var res SubscribeResult
	for attempt := 1; ; attempt++ {
		release, err := s.st.limit.acquire(ctx, host, account)
		if err != nil {
			return err
		}
		res, err = s.Client.Subscribe(ctx, ep, SubscribeRequest{Folder: "inbox", StatusFrequency: s.StatusFrequency, URL: s.PublicURL + CallbackPath + sealed, Watermark: wm})
		release()
		var re *ResponseError
		if err == nil || !errors.As(err, &re) || attempt == maxSubscribeAttempts {
			if err != nil {
				return err
			}
			break
		}
		switch re.Code {
		case "ErrorInvalidWatermark":
			s.Logger.Info("watermark no longer valid: subscribing afresh", "mailbox", mb.ID)
			wm, fresh = "", true
		case "ErrorServerBusy":
			d := re.BackOff
			if d <= 0 {
				d = defaultBusyBackOff
			}
			s.Logger.Info("Exchange is busy: backing off", "mailbox", mb.ID, "host", host, "backOff", d)
			s.st.limit.busy(host, d)
		default:
			return err
		}
	}
	now := s.Clock.Now()
	updated, err := s.Store.UpdateMailbox(ctx, mb.ID, func(m *mailpush.Mailbox) error {
		m.SubscriptionID, m.Status, m.LastEventAt = res.SubscriptionID, mailpush.StatusActive, now
		if fresh {
			m.Watermark = res.Watermark
		}
		return nil
	})
	if err != nil {
		return err
	}
	// Registrations that are pending stay so: a device asked to check in
	// proves itself again with its check-in, and one that never proved
	// anything must not be woken by someone else's subscription.
	s.Logger.Info("resubscribed", "mailbox", mb.ID, "fromWatermark", !fresh)
	if !fresh {
		return nil // Exchange replays the missed events; they carry the badge
	}
	ev := mailpush.Event{TenantID: mb.TenantID, MailboxID: mb.ID, Kind: mailpush.EventResync, Badge: mailpush.NoBadge, At: now}
	release, err := s.st.limit.acquire(ctx, host, account)
	if err != nil {
		return err
	}
	unread, err := s.Client.GetInboxUnread(ctx, ep)
	release()
	if err != nil {
		s.Logger.Warn("GetFolder failed after a fresh subscription: pushing a sync signal", "mailbox", mb.ID, "err", err)
	} else {
		ev.Kind, ev.Badge = mailpush.EventChanged, unread
	}
	return s.emit(ctx, updated.ID, ev)
}

// emit stores the event's sequence (and badge) and hands it to the sink.
func (s *Source) emit(ctx context.Context, mailboxID string, ev mailpush.Event) error {
	updated, err := s.Store.UpdateMailbox(ctx, mailboxID, func(m *mailpush.Mailbox) error {
		m.Record(ev)
		return nil
	})
	if err != nil {
		return err
	}
	ev.Seq = updated.Seq
	return s.Sink.HandleEvent(ctx, ev)
}

func (s *Source) setStatus(ctx context.Context, regs []*mailpush.Registration, from, to mailpush.Status) error {
	for _, reg := range regs {
		if reg.Status != from {
			continue
		}
		if _, err := s.Store.UpdateRegistration(ctx, reg.TenantID, reg.ID, func(r *mailpush.Registration) error {
			if r.Status == from {
				r.Status = to
			}
			return nil
		}); err != nil {
			return err
		}
	}
	return nil
}

// askDevices sends the mailbox's active devices a background push that asks
// the app to check in (with fresh sealed credentials, or after subscribing
// again itself) and marks their registrations and the mailbox pending until
// it does. Devices already pending were asked before and get no more
// pushes: the check-in, or the app's own periodic one, renews them.
func (s *Source) askDevices(ctx context.Context, mb *mailpush.Mailbox) error {
	regs, err := s.Store.ActiveRegistrations(ctx, mb.ID)
	if err != nil {
		return err
	}
	if _, err := s.Store.UpdateMailbox(ctx, mb.ID, func(m *mailpush.Mailbox) error {
		m.Status, m.SubscriptionID = mailpush.StatusPending, ""
		return nil
	}); err != nil {
		return err
	}
	ev := mailpush.Event{TenantID: mb.TenantID, MailboxID: mb.ID, Kind: mailpush.EventResync, Badge: mailpush.NoBadge, At: s.Clock.Now()}
	if err := s.emit(ctx, mb.ID, ev); err != nil {
		return err
	}
	return s.setStatus(ctx, regs, mailpush.StatusActive, mailpush.StatusPending)
}

// hostOf returns the lower-cased host:port of an EWS URL.
func hostOf(raw string) string {
	if u, err := url.Parse(raw); err == nil {
		return strings.ToLower(u.Host)
	}
	return raw
}

// accountOf names the account whose EWS budget a request uses: the user (or
// service account) that authenticates, else the mailbox.
func accountOf(ep Endpoint, mailboxID string) string {
	if ep.Credentials.Username != "" {
		return "user:" + strings.ToLower(ep.Credentials.Username)
	}
	return "mailbox:" + mailboxID
}

// endpoint is where and as whom mailpush calls EWS for a mailbox: the
// user's own credentials (sealed mode), or the tenant's service account
// impersonating the mailbox (service mode). Requests of one mailbox share
// an affinity cookie.
func (s *Source) endpoint(ctx context.Context, mb *mailpush.Mailbox, c cachedCreds) (Endpoint, error) {
	ep := Endpoint{URL: c.serverURL, Credentials: c.creds, Affinity: mb.ID}
	if mb.Mode == mailpush.ModeService {
		svc, ok := s.serviceAccount(ctx, mb.TenantID)
		if !ok {
			return Endpoint{}, mailpush.Errorf(mailpush.EUnsupported, "the tenant has no EWS service account configured")
		}
		if c.address == "" {
			return Endpoint{}, mailpush.Errorf(mailpush.EInvalid, "service mode needs the mailbox address: send mailbox.address with the check-in")
		}
		ep.Credentials, ep.Impersonate = svc, c.address
	}
	return ep, nil
}

// serviceAccount returns the tenant's EWS service account, if configured.
func (s *Source) serviceAccount(ctx context.Context, tenantID string) (mailpush.Credentials, bool) {
	if len(s.ServiceAccounts) == 0 {
		return mailpush.Credentials{}, false
	}
	t, err := s.Store.Tenant(ctx, tenantID)
	if err != nil {
		return mailpush.Credentials{}, false
	}
	c, ok := s.ServiceAccounts[t.Name]
	return c, ok && !c.Empty()
}
