package ews

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"time"

	"github.com/mailpush/mailpush"
)

// CallbackPath is where notifications arrive: CallbackPath + <sealed token>.
const CallbackPath = "/ews/notify/"

// Source watches Exchange Inboxes over EWS push subscriptions. It is the
// mailpush.Watcher for source "ews" and the http.Handler of the callback URLs.
//
// The callback URL's token is sealed by Sealer and names the tenant and the
// mailbox. In sealed mode it also carries the user's credentials and the EWS
// URL: they then exist only in that URL, which Exchange keeps, and in memory
// while a notification is handled, never in the database or a log.
type Source struct {
	Store mailpush.Store
	// Rules decide which registration a notification may bind, activate
	// or reach (package registrar).
	Rules  mailpush.RegistrationRules
	Sealer mailpush.CallbackSealer
	// Sink is the pipeline: the event and the mailbox's move (sequence,
	// watermark, last event) are one write; an event still to be fetched
	// from Exchange is stored unresolved and completed by Resolve after
	// the answer.
	Sink   mailpush.ResolvingMailboxSink
	Client *Client
	// PublicURL is this service's base URL as Exchange reaches it.
	PublicURL string
	// StatusFrequency is the minutes between Exchange's status events.
	StatusFrequency int
	Logger          *slog.Logger
	Clock           mailpush.Clock

	// Engine keeps the subscriptions alive (package subscription): it calls
	// Heal for the silent ones, and Source asks it for places within its
	// limits and tells it what it heard.
	Engine              mailpush.SubscriptionEngine
	CredentialCacheSize int // mailboxes whose credentials stay in memory; 0: the default

	// FetchRate and FetchBurst bound the GetFolder/GetItem calls that
	// notifications trigger, per mailbox (per minute, and at once;
	// fetchlimit.go); 0 means the defaults.
	FetchRate  float64
	FetchBurst int
	// CallbackMaxAge is how long a callback URL is honoured after it was
	// issued (retire.go); 0 means DefaultCallbackMaxAge, negative never ends.
	CallbackMaxAge time.Duration

	// ServiceAccounts are the tenants' EWS service accounts (holding the
	// ApplicationImpersonation role), by tenant name: registrations of such
	// a tenant without sealed credentials use service mode.
	ServiceAccounts map[string]mailpush.Credentials
	// TokenAuthorities are the OAuth authorities (https URL prefixes) whose
	// token endpoints sealed refresh tokens may name, by tenant name
	// (config tenants.<name>.ews.oauthAuthorities). A tokenUrl elsewhere
	// is refused before any request: the refresh token would go there.
	TokenAuthorities map[string][]string

	st state
}

var _ mailpush.Watcher = (*Source)(nil)

// Watch sets up the Exchange side of a mailbox. Sealed mode subscribes now,
// with the credentials inside the callback URL. Device-subscribed mode only
// returns a callback URL for the registration's app to subscribe with; the
// URL names the registration, and only a notification through it activates
// that registration (and binds its subscription to the mailbox): a device
// proves it may see a mailbox only by subscribing on Exchange itself.
func (s *Source) Watch(ctx context.Context, t *mailpush.Tenant, mb *mailpush.Mailbox, reg *mailpush.Registration, creds mailpush.Credentials) (mailpush.WatchResult, error) {
	s.init()
	asked := mb.Mode
	if mb.Mode == mailpush.ModeDeviceSubscribed && creds.Empty() {
		if _, ok := s.ServiceAccounts[t.Name]; ok {
			mb.Mode = mailpush.ModeService
		}
	}
	if mb.Mode == mailpush.ModeSealed && creds.TokenURL != "" && !AllowedTokenURL(creds.TokenURL, s.TokenAuthorities[t.Name]) {
		return mailpush.WatchResult{}, mailpush.Errorf(mailpush.EForbidden,
			"sealed credentials name a tokenUrl outside the tenant's OAuth authorities (tenants.%s.ews.oauthAuthorities): the refresh token is never sent there", t.Name)
	}
	if mb.Mode == mailpush.ModeSealed && creds.Refreshable() {
		// Refresh now if the access token is missing or about to expire,
		// so that the callback URL carries the newest refresh token.
		cur, err := s.Client.Fresh(ctx, creds)
		if err != nil {
			s.Logger.Warn("OAuth refresh failed at registration", "mailbox", mb.ID, "err", err)
			return mailpush.WatchResult{}, err
		}
		creds = cur
	}
	var id *Identity
	if creds.HasIdentity() {
		if mb.Mode != mailpush.ModeSealed {
			return mailpush.WatchResult{}, mailpush.Errorf(mailpush.EInvalid, "a client identity signs in as the user: it needs mode sealed, not %s", mb.Mode)
		}
		// Opened and checked before any request. Only the opened identity
		// stays, in memory: the callback URL names it by its fingerprint.
		// The registrar prepared it (PrepareCredentials): the costly key
		// derivation of a PKCS#12 ran there, within its bounds, and this
		// opens PEM.
		opened, err := OpenIdentity(creds, s.Clock.Now())
		if err != nil {
			s.Logger.Info("client identity refused at registration", "mailbox", mb.ID, "code", mailpush.ErrorCode(err), "why", mailpush.ErrorMessage(err))
			return mailpush.WatchResult{}, err
		}
		id, creds = opened, mailpush.Credentials{}
	}
	tok := mailpush.CallbackToken{TenantID: mb.TenantID, MailboxID: mb.ID, IssuedAt: s.Clock.Now().Unix()}
	cached := cachedCreds{serverURL: mb.ServerURL, address: mb.Address}
	switch mb.Mode {
	case mailpush.ModeSealed:
		// The address stays with the credentials: every request names the
		// address's own Inbox, so Exchange itself refuses credentials that
		// cannot open it.
		cached.creds, cached.identity = sealable(creds), id
	case mailpush.ModeService:
		if cached.address == "" {
			if c, ok := s.st.creds.get(mb.ID); ok {
				cached.address = c.address
			}
		}
	}
	if mb.Mode != mailpush.ModeDeviceSubscribed {
		tok.ServerURL, tok.Credentials, tok.Address, tok.Identity = cached.serverURL, cached.creds, cached.address, cached.identity.fingerprint()
	} else {
		tok.RegistrationID = reg.ID
	}
	sealed, err := s.Sealer.SealCallback(tok)
	if err != nil && tok.Credentials.Refreshable() {
		// The refresh token lives in the URL: a provider's (or an app's)
		// oversized one is the caller's to fix, before any request.
		return mailpush.WatchResult{}, mailpush.WrapError(mailpush.EBadSealed,
			"sealed credentials: the refreshToken, tokenUrl and clientId are too long together to travel in a callback URL", err)
	}
	if err != nil {
		return mailpush.WatchResult{}, mailpush.WrapError(mailpush.EInternal, "cannot seal the callback token", err)
	}
	callback := s.PublicURL + CallbackPath + sealed

	if mb.Mode == mailpush.ModeDeviceSubscribed {
		stored, err := s.Store.UpdateMailbox(ctx, mb.ID, func(m *mailpush.Mailbox) error {
			if m.Mode == mailpush.ModeSealed && m.Status != mailpush.StatusInactive {
				// Never let a registration without credentials replace a
				// subscription made with a user's credentials.
				return mailpush.Errorf(mailpush.EConflict, "this mailbox is watched with a user's sealed credentials: register with mailbox.sealedCredentials")
			}
			if m.Mode != mailpush.ModeDeviceSubscribed || m.Status == mailpush.StatusInactive {
				m.Mode, m.Status, m.SubscriptionID, m.Watermark = mailpush.ModeDeviceSubscribed, mailpush.StatusPending, "", ""
			}
			// A check-in restarts the health clock: the app is subscribing now.
			m.LastEventAt = s.Clock.Now()
			return nil
		})
		if err != nil {
			return mailpush.WatchResult{}, err
		}
		// The registration stays pending until its own subscription reaches
		// the callback URL; a check-in of an active device keeps it active.
		status := mailpush.StatusPending
		if reg.Status == mailpush.StatusActive && stored.Status == mailpush.StatusActive {
			status = mailpush.StatusActive
		}
		return mailpush.WatchResult{CallbackURL: callback, Status: status}, nil
	}

	ep, err := s.endpoint(ctx, mb, cached)
	if err != nil {
		return mailpush.WatchResult{}, err
	}
	if mb.Mode == mailpush.ModeSealed {
		// Sealed credentials are a user's: before anything changes for the
		// mailbox's other registrations, Exchange must confirm that they
		// open this address's Inbox (the owner's or a delegate's). A
		// refusal changes nothing: the current subscription keeps running.
		if _, err := s.Client.GetInboxUnread(ctx, ep); err != nil {
			s.Logger.Warn("sealed credentials refused for the mailbox", "mailbox", mb.ID, "err", err)
			return mailpush.WatchResult{}, subscribeError(err)
		}
		if cached.identity != nil {
			// The new subscription's first notification may arrive before
			// Subscribe returns; its URL names this identity, which must
			// be in memory by then.
			cached.keyID = keyIDOf(sealed)
			s.st.creds.put(mb.ID, cached)
		}
	}
	// Forget the old subscription first, so that its next notification is
	// answered Unsubscribe, then subscribe anew.
	if _, err := s.Store.UpdateMailbox(ctx, mb.ID, func(m *mailpush.Mailbox) error {
		m.Mode, m.ServerURL, m.Status, m.SubscriptionID = mb.Mode, mb.ServerURL, mailpush.StatusPending, ""
		return nil
	}); err != nil {
		return mailpush.WatchResult{}, err
	}
	res, err := s.Client.Subscribe(ctx, ep, SubscribeRequest{
		Folder: "inbox", StatusFrequency: s.StatusFrequency, URL: callback,
	})
	if err != nil {
		s.Logger.Warn("subscribe failed", "mailbox", mb.ID, "mode", mb.Mode, "err", err)
		return mailpush.WatchResult{}, subscribeError(err)
	}
	now := s.Clock.Now()
	if _, err := s.Store.UpdateMailbox(ctx, mb.ID, func(m *mailpush.Mailbox) error {
		m.SubscriptionID, m.Watermark, m.Status, m.LastEventAt = res.SubscriptionID, res.Watermark, mailpush.StatusActive, now
		return nil
	}); err != nil {
		return mailpush.WatchResult{}, err
	}
	cached.keyID = keyIDOf(sealed)
	s.st.creds.put(mb.ID, cached)
	// Only the registration being watched becomes active (the API does it):
	// the mailbox's other pending registrations must prove themselves, each
	// with its own credentials or its own subscription.
	s.Logger.Info("subscribed", "mailbox", mb.ID, "mode", mb.Mode)
	out := mailpush.WatchResult{Status: mailpush.StatusActive}
	if mb.Mode != asked {
		out.Mode = mb.Mode
	}
	return out, nil
}

// sealable is what of the credentials goes into a callback URL: with a
// refresh token, not the access token (short-lived, derivable, and long).
func sealable(c mailpush.Credentials) mailpush.Credentials {
	if c.Refreshable() {
		c.AccessToken, c.ExpiresAt = "", 0
	}
	return c
}

func subscribeError(err error) error {
	switch {
	case errors.Is(err, ErrRefresh):
		return err // says what the token endpoint answered
	case errors.Is(err, ErrUnauthorized):
		return mailpush.WrapError(mailpush.ECredentials, "Exchange refused the sealed credentials", err)
	case mailpush.ErrorCode(err) == mailpush.EUnavailable:
		return mailpush.WrapError(mailpush.EUnavailable, "Exchange is busy or unavailable: try again later", err)
	case mailpush.ErrorCode(err) == mailpush.ERedirect:
		return err // names where the redirect pointed
	}
	var re *ResponseError
	if errors.As(err, &re) {
		if re.Code == "ErrorAccessDenied" || re.Code == "ErrorNonExistentMailbox" || re.Code == "ErrorImpersonateUserDenied" {
			return mailpush.WrapError(mailpush.EMailboxDenied, "Exchange says these credentials cannot open mailbox.address's Inbox ("+re.Code+")", err)
		}
		return mailpush.WrapError(mailpush.EUpstream, "Exchange refused the subscription: "+re.Code, err)
	}
	return mailpush.WrapError(mailpush.EUpstream, "Exchange could not be reached at the ewsUrl", err)
}

// ServeHTTP handles a SendNotification posted to a callback URL. Every
// refusal is a precise 4xx that changes nothing; a notification for a
// mailbox that is gone, or for a subscription that is no longer the
// mailbox's, is answered Unsubscribe, which ends it on Exchange.
func (s *Source) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	tok, err := s.Sealer.OpenCallback(r.PathValue("token"))
	if err != nil && s.answerRetired(w, r, err) {
		return
	}
	if err != nil {
		s.Logger.Warn("notification refused: bad callback token", "err", mailpush.ErrorMessage(err))
		http.Error(w, mailpush.ErrorMessage(err), http.StatusUnauthorized)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxNotificationSize))
	if err != nil {
		var maxErr *http.MaxBytesError
		if errors.As(err, &maxErr) {
			http.Error(w, "SendNotification exceeds 1 MiB", http.StatusRequestEntityTooLarge)
			return
		}
		http.Error(w, "cannot read the request body", http.StatusBadRequest)
		return
	}
	n, err := ParseSendNotification(body)
	if err != nil {
		s.Logger.Warn("notification refused: malformed SendNotification", "mailbox", tok.MailboxID, "err", err)
		http.Error(w, "malformed SendNotification: "+err.Error(), http.StatusBadRequest)
		return
	}
	status, err := s.handle(r.Context(), tok, n)
	if err != nil {
		// Exchange retries a failed delivery: nothing acknowledged is lost.
		s.Logger.Error("notification not handled; Exchange will retry", "mailbox", tok.MailboxID, "err", err)
		http.Error(w, "temporarily unable to handle the notification", http.StatusServiceUnavailable)
		return
	}
	WriteResult(w, status)
}

func (s *Source) handle(ctx context.Context, tok mailpush.CallbackToken, n *Notification) (SubscriptionStatus, error) {
	st := s.init()
	log := s.Logger.With("mailbox", tok.MailboxID)
	// Which registration this notification may bind, activate or reach is
	// the registrar's to decide (package registrar's Admit).
	adm, err := s.Rules.Admit(ctx, tok, n.SubscriptionID)
	if err != nil {
		return "", err
	}
	if adm.Unsubscribe {
		return StatusUnsubscribe, nil
	}
	mb, bind := adm.Mailbox, adm.Bind
	if s.expired(tok) {
		// The engine makes a fresh URL, with these credentials, once the
		// subscription is silent.
		s.remember(mb, tok)
		log.Info("unsubscribing: callback URL older than ews.callbackMaxAge", "issued", time.Unix(tok.IssuedAt, 0).UTC())
		return StatusUnsubscribe, nil
	}
	cached, inMemory := s.remember(mb, tok)
	if mb.Mode == mailpush.ModeSealed && tok.Identity != "" {
		// The client identity lives only in memory: gone (a restart, an
		// eviction) or expired, only the device can give it again.
		why := ""
		switch {
		case !inMemory:
			why = "client identity not in memory (restart or eviction)"
		case s.Clock.Now().After(cached.identity.NotAfter()):
			why = "client certificate expired"
		}
		if why != "" {
			return s.identityLost(ctx, mb, why)
		}
	}
	if mb.Mode == mailpush.ModeSealed && cached.creds.Refreshable() {
		// Refresh before expiry; a refused refresh (revoked, consent
		// withdrawn) ends the subscription: the devices sign in again.
		if _, err := s.Client.Fresh(ctx, cached.creds); err != nil {
			if !errors.Is(err, ErrUnauthorized) {
				return "", err // the token endpoint is down: Exchange retries
			}
			log.Info("OAuth refresh refused: asking the devices to check in", "err", err)
			s.st.creds.drop(mb.ID)
			if err := s.askDevices(ctx, mb); err != nil {
				return "", err
			}
			return StatusUnsubscribe, nil
		}
	}

	sum := summarize(n)
	// Missed events show only within one subscription's chain of watermarks.
	sum.missed = mb.SubscriptionID != "" && mb.SubscriptionID == n.SubscriptionID &&
		mb.Watermark != "" && n.PreviousWatermark != "" && n.PreviousWatermark != mb.Watermark
	if replayed(mb, n) {
		if sum.changed || sum.missed {
			log.Info("notification already handled (its watermark is the mailbox's last): a sign of life only")
		}
		sum = summary{badge: mailpush.NoBadge} // handled before: no fetch, no push (fetchlimit.go)
	}
	if sum.missed {
		sum.changed = true
		log.Info("events were missed (PreviousWatermark differs): recomputing the badge")
	}
	st.mu.Lock()
	if prev, ok := st.more[mb.ID]; ok {
		delete(st.more, mb.ID)
		sum = prev.then(sum)
	}
	deferred := n.MoreEvents && sum.changed && len(st.more) < maxDeferred
	if deferred {
		// Exchange sends the rest at once: push once, with the last batch.
		st.more[mb.ID] = sum
	}
	st.mu.Unlock()
	changed := sum.changed && !deferred
	var (
		ev   mailpush.Event
		plan *fetchPlan // what Resolve fetches after the answer; nil: nothing
	)
	if changed {
		ev, plan = s.event(mb, cached, sum)
	}
	now := s.Clock.Now()
	if bind {
		// The binding and the registration's activation come before the
		// event: its fan-out must find the device active. Once per
		// subscription, so its two extra writes are rare.
		if _, err := s.Store.UpdateMailbox(ctx, mb.ID, func(m *mailpush.Mailbox) error {
			if m.SubscriptionID != mb.SubscriptionID {
				// Another notification bound the mailbox since it was read:
				// fail, so that Exchange retries and the retry sees it.
				return mailpush.Errorf(mailpush.EUnavailable, "the mailbox's subscription changed while this notification was handled")
			}
			m.SubscriptionID, m.Status = n.SubscriptionID, mailpush.StatusActive
			return nil
		}); err != nil {
			return "", err
		}
		// Only the device that subscribed through this URL has proved anything.
		if err := s.Rules.Activate(ctx, adm.Registration); err != nil {
			return "", err
		}
		log.Info("subscription bound", "mode", mb.Mode)
	}
	wm := lastWatermark(n)
	var updated *mailpush.Mailbox // the mailbox as written
	// move is what the notification changes in the mailbox. For a changed
	// mailbox it runs in the transaction that stores the event (one write:
	// the acknowledgement waits for one commit), so the watermark moves
	// only with its event: had the event failed to be stored, Exchange's
	// retry of this notification must not look handled (replayed), or its
	// push would be lost. It may run more than once (a transaction tried
	// again), each time on a fresh read.
	move := func(m *mailpush.Mailbox) bool {
		if m.StoredAddress == "" && cached.address != "" {
			// A mailbox registered before addresses were kept learns its
			// own from its callback URL, in this write (for the cut-over
			// to Graph on any node).
			m.StoredAddress = cached.address
		}
		if wm != "" {
			m.Watermark = wm
		}
		m.LastEventAt = now
		if changed {
			m.Record(ev)
		}
		c := *m
		updated = &c
		return changed
	}
	if changed {
		err = s.store(ctx, ev, plan, move)
	} else {
		_, err = s.Store.UpdateMailbox(ctx, mb.ID, func(m *mailpush.Mailbox) error {
			move(m)
			return nil
		})
	}
	switch {
	case err != nil:
		return "", err
	case updated == nil:
		return "", mailpush.Errorf(mailpush.ENotFound, "the mailbox was deleted while this notification was handled")
	}
	s.heard(mb, tok.ServerURL, now)
	// A status event may have met the refresh.
	s.rotated(ctx, updated, cached, n)
	return StatusOK, nil
}

// rotated subscribes again with a new callback URL when this node's
// refresh made the provider rotate the refresh token the URL carries: the
// URL is the credentials' only lasting home (a rotation read from the
// shared grant is the refreshing node's to carry). Only the mailbox's current subscription triggers it
// (an old one's late notification is about to be answered Unsubscribe).
// A failure is logged: the next notification tries again, and the
// identity's newest tokens stay in memory meanwhile.
func (s *Source) rotated(ctx context.Context, mb *mailpush.Mailbox, c cachedCreds, n *Notification) {
	if mb.Mode != mailpush.ModeSealed || !c.creds.Refreshable() || mb.SubscriptionID != n.SubscriptionID {
		return
	}
	cur, mine := s.Client.Rotated(c.creds)
	if !mine {
		return // not rotated, or by another node, which resubscribes itself
	}
	c.creds = sealable(cur)
	if err := s.resubscribe(ctx, mb, c); err != nil {
		s.Logger.Warn("refresh token rotated but the new callback URL could not be subscribed; retrying at the next notification", "mailbox", mb.ID, "err", err)
		return
	}
	s.Logger.Info("refresh token rotated: subscribed with a new callback URL", "mailbox", mb.ID)
}

// remember keeps a sealed- or service-mode token's credentials in memory
// only, so that a dead subscription can be made again, and returns them.
// A token naming a client identity carries no credentials: the identity
// comes from memory, and inMemory reports whether it is still there.
func (s *Source) remember(mb *mailpush.Mailbox, tok mailpush.CallbackToken) (cached cachedCreds, inMemory bool) {
	cached = cachedCreds{serverURL: tok.ServerURL, creds: tok.Credentials, address: tok.Address, keyID: tok.KeyID}
	if tok.Identity != "" {
		c, ok := s.st.creds.get(mb.ID)
		if !ok || c.identity.fingerprint() != tok.Identity {
			return cached, false
		}
		return c, true
	}
	if tok.ServerURL != "" && (mb.Mode == mailpush.ModeSealed && !tok.Credentials.Empty() || mb.Mode == mailpush.ModeService && tok.Address != "") {
		s.st.creds.put(mb.ID, cached)
	}
	return cached, true
}

// identityLost ends a client-identity subscription whose identity mailpush
// can no longer use: the devices are asked to check in (with the
// identity, sealed again) and the notification is answered Unsubscribe.
func (s *Source) identityLost(ctx context.Context, mb *mailpush.Mailbox, why string) (SubscriptionStatus, error) {
	if err := s.forgetIdentity(ctx, mb, why); err != nil {
		return "", err
	}
	return StatusUnsubscribe, nil
}

// forgetIdentity drops a client identity mailpush can no longer use and
// asks the devices to check in; the mailbox's subscription is forgotten,
// so its next notification is answered Unsubscribe.
func (s *Source) forgetIdentity(ctx context.Context, mb *mailpush.Mailbox, why string) error {
	s.Logger.Info(why+": asking the devices to check in", "mailbox", mb.ID)
	s.st.creds.drop(mb.ID)
	return s.askDevices(ctx, mb)
}

// summary is what a notification (or a run of MoreEvents batches) changed.
type summary struct {
	changed bool   // some event other than a status event
	newMail bool   // a NewMailEvent
	newest  string // the newest new item's ID
	badge   int    // the last Inbox UnreadCount carried, or NoBadge
	missed  bool   // PreviousWatermark showed a gap
}

func summarize(n *Notification) summary {
	sum := summary{badge: mailpush.NoBadge}
	for _, e := range n.Events {
		switch e.Type {
		case StatusEvent, FreeBusyChangedEvent:
			continue
		case NewMailEvent:
			sum.newMail = true
			if e.ItemID != "" {
				sum.newest = e.ItemID
			}
		case ModifiedEvent:
			if e.FolderID != "" && e.UnreadCount >= 0 {
				sum.badge = e.UnreadCount
			}
		}
		sum.changed = true
	}
	return sum
}

// then merges a later summary into an earlier one.
func (a summary) then(b summary) summary {
	out := b
	out.changed = a.changed || b.changed || b.missed
	out.newMail = a.newMail || b.newMail
	out.missed = a.missed || b.missed
	if out.newest == "" {
		out.newest = a.newest
	}
	if out.badge == mailpush.NoBadge {
		out.badge = a.badge
	}
	return out
}

// store makes the event durable with move applied to its mailbox, in one
// write: as it is when nothing is left to fetch, else unresolved, with its
// fetch plan in memory for Resolve. The plan is kept under the sequence
// that move gives the event, inside the transaction, so before the commit
// after which the pipeline may claim the event.
func (s *Source) store(ctx context.Context, ev mailpush.Event, plan *fetchPlan, move func(*mailpush.Mailbox) bool) error {
	if plan == nil {
		return s.Sink.HandleMailboxEvent(ctx, ev, move)
	}
	st := s.init()
	var kept int64 // the sequence the plan is kept under; 0: none
	err := s.Sink.HandleUnresolvedMailboxEvent(ctx, ev, func(m *mailpush.Mailbox) bool {
		if kept != 0 {
			st.pending.drop(ev.MailboxID, kept) // a transaction tried again
			kept = 0
		}
		if !move(m) {
			return false
		}
		kept = m.Seq
		st.pending.put(ev.MailboxID, kept, *plan)
		return true
	})
	if err != nil && kept != 0 {
		st.pending.drop(ev.MailboxID, kept)
	}
	return err
}

func lastWatermark(n *Notification) string {
	for i := len(n.Events) - 1; i >= 0; i-- {
		if n.Events[i].Watermark != "" {
			return n.Events[i].Watermark
		}
	}
	return ""
}
