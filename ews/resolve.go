package ews

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/mailpush/mailpush"
)

// maxPendingFetches bounds the fetch plans waiting in memory for their
// event's Resolve; when it is reached, plans older than pendingFetchTTL are
// forgotten (their event's mailbox went away before the claim), and if none
// is, a new event resolves with the credential cache alone (no content).
//
// One mailbox keeps at most maxPendingPerMailbox plans: a newer plan pushes
// out its oldest (that event resolves from the credential cache alone, and
// the newer fetch reads the current unread count anyway). So the holder of
// one callback URL, flooding its notifications, cannot fill the table and
// take the fetches of every other mailbox; and a full table is swept at
// most once per pendingFetchSweep, not on every notification.
const (
	maxPendingFetches    = 100_000
	maxPendingPerMailbox = 16
	pendingFetchTTL      = time.Hour
	pendingFetchSweep    = time.Minute
)

// fetchPlan is what Resolve must read from Exchange for one stored event.
// It lives in memory only: it holds the notification's credentials, which
// never go to the database.
type fetchPlan struct {
	creds  cachedCreds
	itemID string // the newest new message, for its subject and sender ("" none)
	missed bool   // events were missed: count the unread again, whatever came
	at     time.Time
}

// pendingFetches holds the fetch plans by mailbox and event sequence, from
// the notification that stored the event until its Resolve (which may run
// concurrently for several events of one mailbox).
type pendingFetches struct {
	mu    sync.Mutex
	n     int
	m     map[string]map[int64]fetchPlan
	swept time.Time // the last sweep of a full table
}

func (p *pendingFetches) put(mailboxID string, seq int64, f fetchPlan) {
	p.mu.Lock()
	defer p.mu.Unlock()
	byseq := p.m[mailboxID]
	if _, ok := byseq[seq]; ok {
		byseq[seq] = f
		return
	}
	if len(byseq) >= maxPendingPerMailbox {
		oldest := seq
		for s := range byseq {
			oldest = min(oldest, s)
		}
		if oldest == seq {
			return // older than every plan kept: the newer ones fetch for it
		}
		p.remove(mailboxID, oldest)
		byseq = p.m[mailboxID]
	}
	if p.n >= maxPendingFetches && f.at.Sub(p.swept) >= pendingFetchSweep {
		p.swept = f.at
		for id, plans := range p.m {
			for s, old := range plans {
				if f.at.Sub(old.at) > pendingFetchTTL {
					p.remove(id, s)
				}
			}
		}
	}
	if p.n >= maxPendingFetches {
		return
	}
	if p.m == nil {
		p.m = map[string]map[int64]fetchPlan{}
	}
	if byseq == nil {
		byseq = map[int64]fetchPlan{}
		p.m[mailboxID] = byseq
	}
	p.n++
	byseq[seq] = f
}

// take returns the plan of the mailbox's event seq and forgets it.
func (p *pendingFetches) take(mailboxID string, seq int64) (fetchPlan, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	f, ok := p.m[mailboxID][seq]
	p.remove(mailboxID, seq)
	return f, ok
}

// drop forgets the plan of an event that was not stored after all.
func (p *pendingFetches) drop(mailboxID string, seq int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.remove(mailboxID, seq)
}

func (p *pendingFetches) remove(mailboxID string, seq int64) {
	byseq := p.m[mailboxID]
	if _, ok := byseq[seq]; !ok {
		return
	}
	delete(byseq, seq)
	p.n--
	if len(byseq) == 0 {
		delete(p.m, mailboxID)
	}
}

// event reduces a summary to the event the notification stores, and says
// what is left to fetch: nothing when the notification carried the unread
// count and no new message whose content may be shown, or when mailpush
// may not read the mailbox (device-subscribed mode). Nothing here calls
// Exchange or reads a registration: the notification is answered once the
// event is durable, and Resolve fetches the rest.
func (s *Source) event(mb *mailpush.Mailbox, c cachedCreds, sum summary) (mailpush.Event, *fetchPlan) {
	ev := mailpush.Event{TenantID: mb.TenantID, MailboxID: mb.ID, Kind: mailpush.EventChanged, Badge: sum.badge, At: s.Clock.Now()}
	if sum.newMail {
		ev.Kind = mailpush.EventNewMail
	}
	if s.mayRead(mb, c) && (ev.Badge == mailpush.NoBadge || sum.missed || sum.newest != "") {
		return ev, &fetchPlan{creds: c, itemID: sum.newest, missed: sum.missed, at: s.Clock.Now()}
	}
	if sum.missed && !sum.newMail && ev.Badge == mailpush.NoBadge {
		ev.Kind = mailpush.EventResync // no count to trust: the device syncs
	}
	return ev, nil
}

// mayRead reports, from memory alone, whether mailpush reads mb's Inbox
// with c: only in sealed mode (the user's credentials) and service mode
// (the tenant's service account, impersonating the address).
func (s *Source) mayRead(mb *mailpush.Mailbox, c cachedCreds) bool {
	switch {
	case c.serverURL == "":
		return false
	case mb.Mode == mailpush.ModeSealed:
		return !c.creds.Empty() || c.identity != nil
	case mb.Mode == mailpush.ModeService:
		return c.address != "" && len(s.ServiceAccounts) > 0
	}
	return false
}

// Resolve completes an event that a notification stored before fetching
// (the pipeline calls it after its claim, in its workers): the Inbox's
// unread count from GetFolder when the notification carried none or events
// were missed, and, for new mail when the tenant and some device of the
// mailbox allow content, the newest message's subject and sender from
// GetItem. Both go through the per-mailbox fetch limit. A failed fetch is
// logged and the event goes on with what the notification said (a
// background push when that was no count). The credentials are only in
// memory: after a restart an event resolves with the badge it was stored
// with, unless a later notification brought them back.
func (s *Source) Resolve(ctx context.Context, oe *mailpush.OutboxEvent) error {
	st := s.init()
	ev := &oe.Event
	plan, ok := st.pending.take(ev.MailboxID, ev.Seq)
	if !ok {
		if plan.creds, ok = st.creds.get(ev.MailboxID); !ok {
			return nil
		}
	}
	mb, err := s.Store.Mailbox(ctx, ev.MailboxID)
	if mailpush.ErrorCode(err) == mailpush.ENotFound {
		return nil
	}
	if err != nil {
		return err // the lease runs out and the event is claimed again
	}
	log := s.Logger.With("mailbox", mb.ID)
	ep, err := s.endpoint(ctx, mb, plan.creds)
	readable := err == nil && s.mayRead(mb, plan.creds)
	if (ev.Badge == mailpush.NoBadge || plan.missed) && readable && s.mayFetch(mb, "GetFolder") {
		if unread, err := s.Client.GetInboxUnread(ctx, ep); refusedIdentity(ep, err) {
			return s.forgetIdentity(ctx, mb, "Exchange refused the client certificate (revoked?)")
		} else if err != nil {
			log.Warn("GetFolder failed: pushing without a fresh count", "err", err)
		} else {
			ev.Badge = unread
		}
	}
	if plan.missed && ev.Kind != mailpush.EventNewMail && ev.Badge == mailpush.NoBadge {
		ev.Kind = mailpush.EventResync // no count to trust: the device syncs
	}
	if ev.Kind != mailpush.EventNewMail || plan.itemID == "" || !readable {
		return nil
	}
	if want, err := s.wantsContent(ctx, mb); err != nil || !want {
		return err
	}
	if !s.mayFetch(mb, "GetItem") {
		return nil
	}
	items, err := s.Client.GetItems(ctx, ep, []string{plan.itemID})
	if refusedIdentity(ep, err) {
		return s.forgetIdentity(ctx, mb, "Exchange refused the client certificate (revoked?)")
	}
	if err != nil {
		log.Warn("GetItem failed: pushing the badge without content", "err", err)
		return nil
	}
	if len(items) > 0 {
		ev.Subject, ev.Sender = items[0].Subject, items[0].FromName
		if ev.Sender == "" {
			ev.Sender = items[0].FromAddress
		}
	}
	return nil
}

// refusedIdentity reports whether Exchange refused the client identity
// of ep (a revoked certificate): only its device can give another, so the
// event goes on without what it could not fetch and the devices are asked
// to check in.
func refusedIdentity(ep Endpoint, err error) bool {
	return ep.Identity != nil && errors.Is(err, ErrUnauthorized)
}

// wantsContent reports whether a push of mb may carry a subject: the
// tenant's content policy allows it and some device of the mailbox shows
// it (counted, not loaded).
func (s *Source) wantsContent(ctx context.Context, mb *mailpush.Mailbox) (bool, error) {
	t, err := s.Store.Tenant(ctx, mb.TenantID)
	if mailpush.ErrorCode(err) == mailpush.ENotFound {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if t.MaxContent.Rank() <= mailpush.ContentBadge.Rank() {
		return false, nil
	}
	a, err := s.Store.MailboxAudience(ctx, mb.ID)
	return a.WantsContent, err
}
