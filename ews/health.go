package ews

import (
	"context"
	"errors"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/mailpush/mailpush"
)

// Defaults of healing.
const (
	DefaultCredentialCacheSize = 100_000 // mailboxes whose sealed credentials stay in memory
	defaultBusyBackOff         = 5 * time.Second
	maxSubscribeAttempts       = 5
	maxDeferred                = 10_000 // mailboxes with a MoreEvents batch waiting for the rest
)

// state is the Source's in-memory state, made on first use.
type state struct {
	once  sync.Once
	creds *credCache
	fetch *fetchLimiter // per mailbox (fetchlimit.go)
	// pending are the fetch plans of events stored unresolved (resolve.go)
	pending pendingFetches
	mu      sync.Mutex
	more    map[string]summary // changes of MoreEvents batches, pushed with the last batch
}

func (s *Source) init() *state {
	s.st.once.Do(func() {
		size := s.CredentialCacheSize
		if size <= 0 {
			size = DefaultCredentialCacheSize
		}
		s.st.creds = newCredCache(size)
		s.st.fetch = newFetchLimiter(s.FetchRate, s.FetchBurst)
		s.st.more = map[string]summary{}
	})
	return &s.st
}

// StatusFrequencyDuration is the interval of Exchange's status events: a
// subscription silent for twice as long is dead (the subscription engine's
// DueAfter), and so is a host whose status events are late (its HostRule).
func (s *Source) StatusFrequencyDuration() time.Duration {
	return time.Duration(max(s.StatusFrequency, 1)) * time.Minute
}

var _ mailpush.Healer = (*Source)(nil)

// Heal heals one mailbox whose subscription the subscription engine found
// silent for 2×StatusFrequency (or on a host silent as a whole): sealed mode
// resubscribes from the last watermark with the credentials kept in memory
// (a fresh subscription on ErrorInvalidWatermark, then the badge is
// recomputed with GetFolder), service mode does so as the tenant's service
// account; without them, and in device-subscribed mode, the devices get a
// background push asking them to check in and their registrations become
// pending. Every EWS request runs within the engine's per-host and
// per-account limits.
func (s *Source) Heal(ctx context.Context, mb *mailpush.Mailbox) mailpush.HealOutcome {
	s.init()
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
			return mailpush.HealResubscribed
		}
		if !errors.Is(err, ErrUnauthorized) {
			log.Warn("resubscription failed; trying again later", "err", err)
			return mailpush.HealFailed
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
			return mailpush.HealFailed
		}
		return mailpush.HealResubscribed
	}
	if err := s.askDevices(ctx, mb); err != nil {
		log.Warn("could not ask the devices to check in", "err", err)
		return mailpush.HealFailed
	}
	return mailpush.HealAsked
}

// resubscribe makes the mailbox's subscription again, from its last
// watermark so that Exchange replays what was missed; on
// ErrorInvalidWatermark it subscribes afresh and recomputes the badge.
func (s *Source) resubscribe(ctx context.Context, mb *mailpush.Mailbox, c cachedCreds) error {
	ep, err := s.endpoint(ctx, mb, c)
	if err != nil {
		return err
	}
	if c.creds.Refreshable() {
		// The URL must carry the newest refresh token.
		cur, err := s.Client.Fresh(ctx, c.creds)
		if err != nil {
			return err
		}
		c.creds = sealable(cur)
	}
	serverURL := c.serverURL
	tok := mailpush.CallbackToken{TenantID: mb.TenantID, MailboxID: mb.ID, ServerURL: serverURL, Credentials: c.creds, Identity: c.identity.fingerprint(), Address: c.address, IssuedAt: s.Clock.Now().Unix()}
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
		release, err := s.Engine.Acquire(ctx, host, account)
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
			s.Engine.Busy(host, d)
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
	c.keyID = keyIDOf(sealed) // the URL Exchange now holds (RetireKeys)
	s.st.creds.put(mb.ID, c)
	// Registrations that are pending stay so: a device asked to check in
	// proves itself again with its check-in, and one that never proved
	// anything must not be woken by someone else's subscription.
	s.Logger.Info("resubscribed", "mailbox", mb.ID, "fromWatermark", !fresh)
	if !fresh {
		return nil // Exchange replays the missed events; they carry the badge
	}
	ev := mailpush.Event{TenantID: mb.TenantID, MailboxID: mb.ID, Kind: mailpush.EventResync, Badge: mailpush.NoBadge, At: now}
	release, err := s.Engine.Acquire(ctx, host, account)
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

// askDevices sends the mailbox's active devices a background push that asks
// the app to check in (with fresh sealed credentials, or after subscribing
// again itself) and marks their registrations and the mailbox pending until
// it does. Devices already pending were asked before and get no more
// pushes: the check-in, or the app's own periodic one, renews them.
func (s *Source) askDevices(ctx context.Context, mb *mailpush.Mailbox) error {
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
	return s.Rules.Suspend(ctx, mb.ID)
}

// heard tells the engine of a handled notification, for the host-level rule.
func (s *Source) heard(mb *mailpush.Mailbox, serverURL string, now time.Time) {
	if mb.ServerURL != "" {
		serverURL = mb.ServerURL
	}
	if serverURL != "" {
		s.Engine.Heard(hostOf(serverURL), mb.ID, now)
	}
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
	// Requests name the address's own Inbox (Mailbox): Exchange checks that
	// the credentials may open it.
	ep := Endpoint{URL: c.serverURL, Credentials: c.creds, Identity: c.identity, Affinity: mb.ID, Mailbox: c.address}
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
