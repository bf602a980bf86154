package graph

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/oauth2"

	"github.com/mailpush/mailpush"
)

// Paths of the notification URLs: path + <sealed token>.
const (
	NotifyPath    = "/graph/notify/"
	LifecyclePath = "/graph/lifecycle/"
)

// Defaults of the Source.
const (
	// DefaultLifetime of a subscription: Graph allows at most 10,080
	// minutes for messages (1,440 with resource data). Renewal comes at
	// about half of it.
	DefaultLifetime  = 3 * 24 * time.Hour
	DefaultQueueSize = 10_000
	DefaultWorkers   = 16
	maxAttempts      = 3
	retryDue         = time.Minute // a failed renewal is tried again after this
)

// Source watches Microsoft 365 Inboxes through Graph change notifications,
// as each tenant's Entra ID app (service mode: the app subscribes, never a
// user). One subscription per mailbox, shared by all its devices. It is the
// mailpush.Watcher for source "graph", the handler of both notification
// URLs, and the mailpush.Healer that the subscription engine calls to renew.
type Source struct {
	Store  mailpush.Store
	Sealer mailpush.CallbackSealer
	Hasher mailpush.AddressHasher // derives each subscription's clientState
	// Sink is the pipeline: a change notification is stored unresolved
	// before the 202 and completed by Resolve after the claim.
	Sink   mailpush.ResolvingSink
	Engine mailpush.SubscriptionEngine
	// Apps are the tenants' Entra ID apps, by tenant name.
	Apps map[string]*App
	// HTTP reaches the token endpoint, the JWKS and Graph (the app-only
	// token is added on top of it).
	HTTP      *http.Client
	PublicURL string // this service's base URL as Graph reaches it
	Lifetime  time.Duration
	QueueSize int // notifications waiting for their fetch, at most
	Workers   int // fetches in flight
	Logger    *slog.Logger
	Clock     mailpush.Clock
	Metrics   *Metrics // nil: none
	// Certs, when set, turns on rich notifications: subscriptions include
	// the message's subject, sender and read state, encrypted to Certs'
	// certificate (lifetime then at most 1,440 minutes), so no fetch is
	// needed for the content.
	Certs *Certs
	// Addresses tells the addresses of EWS mailboxes that this process
	// knows (the EWS source), for the cut-over to Graph (migrate.go).
	Addresses AddressBook

	st state
}

var (
	_ mailpush.Watcher = (*Source)(nil)
	_ mailpush.Healer  = (*Source)(nil)
)

type state struct {
	once   sync.Once
	mu     sync.Mutex
	apps   map[string]*tenantApp // by Entra tenant name key: mailpush tenant name
	queue  chan job
	cancel context.CancelFunc
	wg     sync.WaitGroup
	// The tenants' migrations from EWS (migrate.go), by tenant ID.
	migrations map[string]*migrationJob
	jobCancels []context.CancelFunc
	jobs       sync.WaitGroup
}

type tenantApp struct {
	app    *App
	client *Client
	keys   *keySet
}

func (s *Source) init() *state {
	s.st.once.Do(func() {
		s.st.apps = map[string]*tenantApp{}
		s.st.migrations = map[string]*migrationJob{}
		s.st.queue = make(chan job, orInt(s.QueueSize, DefaultQueueSize))
	})
	return &s.st
}

func orInt(v, def int) int {
	if v <= 0 {
		return def
	}
	return v
}

// maxRichLifetime is Graph's 1,440 minutes with resource data, less a margin.
const maxRichLifetime = 1430 * time.Minute

func (s *Source) lifetime() time.Duration {
	l := s.Lifetime
	if l <= 0 {
		l = DefaultLifetime
	}
	if s.Certs != nil {
		l = min(l, maxRichLifetime)
	}
	return l
}

// RenewAfter is when a subscription is due for renewal: half its lifetime
// (the subscription engine's DueAfter).
func (s *Source) RenewAfter() time.Duration { return s.lifetime() / 2 }

// app returns the tenant's app with its client, made on first use.
func (s *Source) app(tenantName string) (*tenantApp, error) {
	st := s.init()
	st.mu.Lock()
	defer st.mu.Unlock()
	if ta, ok := st.apps[tenantName]; ok {
		return ta, nil
	}
	a, ok := s.Apps[tenantName]
	if !ok {
		return nil, mailpush.Errorf(mailpush.EUnsupported, "the tenant has no Microsoft Graph app configured")
	}
	hc := s.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	ts, err := a.TokenSource(context.Background(), hc)
	if err != nil {
		return nil, mailpush.WrapError(mailpush.EInternal, "the tenant's Graph app is misconfigured", err)
	}
	ta := &tenantApp{app: a,
		client: &Client{BaseURL: a.baseURL(), HTTP: &http.Client{Timeout: 30 * time.Second, Transport: &oauth2.Transport{Source: ts, Base: hc.Transport}}},
		keys:   &keySet{url: a.JWKSURL(), hc: hc, clock: s.Clock}}
	st.apps[tenantName] = ta
	return ta, nil
}

func (s *Source) appOf(ctx context.Context, tenantID string) (*tenantApp, *mailpush.Tenant, error) {
	t, err := s.Store.Tenant(ctx, tenantID)
	if err != nil {
		return nil, nil, err
	}
	ta, err := s.app(t.Name)
	return ta, t, err
}

// clientState derives a subscription's secret from the mailbox and the
// subscription's nonce with the service's address key: nothing secret is
// stored, and every new subscription has a new one.
func (s *Source) clientState(mb *mailpush.Mailbox, nonce string) string {
	return base64.RawURLEncoding.EncodeToString(s.Hasher.HashAddress(mb.TenantID, "graph-client-state\x00"+mb.ID+"\x00"+nonce))
}

var _ mailpush.CredentialVerifier = (*Source)(nil)

// VerifyCredentials checks the proof of an app-scope registration:
// creds.AccessToken is the user's Entra ID token for the tenant's app; its
// signature (the authority's JWKS), issuer, audience and expiry are checked,
// and its user must be the address. (Without one, the registrar admits only
// backend-scope callers, which vouch for the user.)
func (s *Source) VerifyCredentials(ctx context.Context, t *mailpush.Tenant, address string, creds mailpush.Credentials) error {
	ta, err := s.app(t.Name)
	if err != nil {
		return err
	}
	if creds.AccessToken == "" {
		return mailpush.Errorf(mailpush.EInvalid, "source graph takes mailbox.userToken, the user's Entra ID token for this app")
	}
	c, err := ta.keys.verify(ctx, creds.AccessToken, ta.app.Issuer(), ta.app.ClientID)
	if err != nil {
		s.Logger.Warn("registration refused: user token", "err", err)
		return mailpush.WrapError(mailpush.ECredentials, "mailbox.userToken is not a valid Entra ID token for this app: "+err.Error(), err)
	}
	if !c.userMatches(address) {
		s.Logger.Warn("registration refused: the user token names another user")
		return mailpush.Errorf(mailpush.ECredentials, "mailbox.userToken belongs to another user than mailbox.address")
	}
	return nil
}

// Watch subscribes the mailbox's Inbox as the tenant's app unless a live
// subscription exists, which the registration then shares. The registrar
// has checked the proof (VerifyCredentials, or a backend token) before.
func (s *Source) Watch(ctx context.Context, t *mailpush.Tenant, mb *mailpush.Mailbox, reg *mailpush.Registration, creds mailpush.Credentials) (mailpush.WatchResult, error) {
	ta, err := s.app(t.Name)
	if err != nil {
		return mailpush.WatchResult{}, err
	}
	address := mb.Address
	if address == "" {
		address = mb.StoredAddress // a check-in without it: the stored one
	}
	if address == "" {
		return mailpush.WatchResult{}, mailpush.Errorf(mailpush.EInvalid, "the graph mailbox's subscription must be made again: send mailbox.address with the check-in")
	}
	mb.Mode = mailpush.ModeService
	if mb.Status == mailpush.StatusActive && mb.SubscriptionID != "" {
		return mailpush.WatchResult{Status: mailpush.StatusActive, Mode: mailpush.ModeService}, nil
	}
	if err := s.subscribe(ctx, ta, mb, address); err != nil {
		return mailpush.WatchResult{}, err
	}
	s.resync(ctx, ta, mb.TenantID, mb.ID, address, mailpush.EventChanged)
	return mailpush.WatchResult{Status: mailpush.StatusActive, Mode: mailpush.ModeService}, nil
}

// subscribe creates the mailbox's subscription (the old one, if any, is
// deleted after the new one is live).
func (s *Source) subscribe(ctx context.Context, ta *tenantApp, mb *mailpush.Mailbox, address string) error {
	nonceBytes := make([]byte, 16)
	rand.Read(nonceBytes)
	nonce := hex.EncodeToString(nonceBytes)
	sealed, err := s.Sealer.SealCallback(mailpush.CallbackToken{TenantID: mb.TenantID, MailboxID: mb.ID, Address: address, IssuedAt: s.Clock.Now().Unix()})
	if err != nil {
		return mailpush.WrapError(mailpush.EInternal, "cannot seal the notification URL token", err)
	}
	old := mb.SubscriptionID
	now := s.Clock.Now()
	sub := Subscription{
		ChangeType:               "created,updated,deleted",
		NotificationURL:          s.PublicURL + NotifyPath + sealed,
		LifecycleNotificationURL: s.PublicURL + LifecyclePath + sealed,
		Resource:                 InboxResource(address),
		ExpirationDateTime:       now.Add(s.lifetime()).UTC(),
		ClientState:              s.clientState(mb, nonce),
	}
	if s.Certs != nil {
		id, cert, err := s.Certs.Current()
		if err != nil {
			return mailpush.WrapError(mailpush.EInternal, "cannot make the notification encryption certificate", err)
		}
		sub.IncludeResourceData, sub.EncryptionCertificateID, sub.EncryptionCertificate = true, id, cert
		sub.Resource += "?$select=subject,from,isRead"
	}
	// The nonce and the creation's deadline are stored first: Graph's
	// validation requests and the first notification may beat its answer,
	// and reach any node (creatingNow).
	if _, err := s.Store.UpdateMailbox(ctx, mb.ID, func(m *mailpush.Mailbox) error {
		m.Mode, m.Watermark = mailpush.ModeService, creatingWatermark(nonce, now.Add(creatingFor))
		m.StoredAddress = address // kept for every node (written when new)
		if m.Status == mailpush.StatusInactive {
			m.Status = mailpush.StatusPending
		}
		return nil
	}); err != nil {
		return err
	}
	var created Subscription
	err = s.call(ctx, ta, mb.ID, func(ctx context.Context) error {
		created, err = ta.client.CreateSubscription(ctx, sub)
		return err
	})
	// The creation is over: its ID (on success) and the end of the
	// creating state are stored in one update, so that a node reading the
	// mailbox sees either the creation or its result, never neither.
	settle := func(m *mailpush.Mailbox) {
		if n, _ := parseWatermark(m.Watermark); n == nonce {
			m.Watermark = nonce // a later creation's state is its own to end
		}
	}
	if err != nil {
		s.Store.UpdateMailbox(context.WithoutCancel(ctx), mb.ID, func(m *mailpush.Mailbox) error { settle(m); return nil })
		s.Logger.Warn("Graph subscription failed", "mailbox", mb.ID, "err", err)
		return subscribeError(err)
	}
	if _, err := s.Store.UpdateMailbox(ctx, mb.ID, func(m *mailpush.Mailbox) error {
		m.SubscriptionID, m.Status, m.LastEventAt = created.ID, mailpush.StatusActive, now
		settle(m)
		return nil
	}); err != nil {
		return err
	}
	mb.SubscriptionID, mb.Status, mb.Watermark = created.ID, mailpush.StatusActive, nonce
	s.Logger.Info("Graph subscription created", "mailbox", mb.ID, "expires", created.ExpirationDateTime)
	if old != "" && old != created.ID {
		if err := s.call(ctx, ta, mb.ID, func(ctx context.Context) error { return ta.client.DeleteSubscription(ctx, old) }); err != nil {
			s.Logger.Warn("could not delete the replaced Graph subscription", "mailbox", mb.ID, "err", err)
		}
	}
	return nil
}

func subscribeError(err error) error {
	var ge *Error
	if errors.As(err, &ge) {
		switch {
		case ge.Status == http.StatusTooManyRequests || ge.Status >= 500:
			return mailpush.WrapError(mailpush.EUnavailable, "Microsoft Graph is busy or unavailable: try again later", err)
		case ge.Status == http.StatusUnauthorized || ge.Status == http.StatusForbidden:
			return mailpush.WrapError(mailpush.EUpstream, "Microsoft Graph refused the tenant's app: check its Mail.Read application permission", err)
		}
		return mailpush.WrapError(mailpush.EUpstream, "Microsoft Graph refused the subscription: "+ge.Code, err)
	}
	return mailpush.WrapError(mailpush.EUpstream, "Microsoft Graph could not be reached", err)
}

// call runs one Graph request within the engine's limits (per app, and 4 at
// once per app and mailbox as Graph allows), waiting out a 429's
// Retry-After (for every request of the app) and trying again.
func (s *Source) call(ctx context.Context, ta *tenantApp, mailboxID string, f func(context.Context) error) error {
	host := "graph:" + ta.app.TenantID + "/" + ta.app.ClientID
	for attempt := 1; ; attempt++ {
		release, err := s.Engine.Acquire(ctx, host, mailboxID)
		if err != nil {
			return err
		}
		err = f(ctx)
		release()
		var ge *Error
		if !errors.As(err, &ge) || ge.Status != http.StatusTooManyRequests || attempt == maxAttempts {
			return err
		}
		d := ge.RetryAfter
		if d <= 0 {
			d = 10 * time.Second
		}
		s.Logger.Info("Graph throttled the app: waiting Retry-After", "retryAfter", d)
		s.Engine.Busy(host, d)
	}
}

// Unwatch deletes the mailbox's subscription once its last registration is
// gone.
func (s *Source) Unwatch(ctx context.Context, mb *mailpush.Mailbox) error {
	if mb.SubscriptionID == "" {
		return nil
	}
	ta, _, err := s.appOf(ctx, mb.TenantID)
	if err != nil {
		return err
	}
	if err := s.call(ctx, ta, mb.ID, func(ctx context.Context) error { return ta.client.DeleteSubscription(ctx, mb.SubscriptionID) }); err != nil {
		return err
	}
	_, err = s.Store.UpdateMailbox(ctx, mb.ID, func(m *mailpush.Mailbox) error {
		if m.SubscriptionID == mb.SubscriptionID {
			m.SubscriptionID = ""
		}
		return nil
	})
	s.Logger.Info("Graph subscription deleted: no registration left", "mailbox", mb.ID)
	return err
}

// Heal renews a subscription that reached half its lifetime (the engine
// found it due); one that Graph no longer has is made again when the
// mailbox's address is stored, else its devices are asked to check in.
func (s *Source) Heal(ctx context.Context, mb *mailpush.Mailbox) mailpush.HealOutcome {
	log := s.Logger.With("mailbox", mb.ID)
	ta, _, err := s.appOf(ctx, mb.TenantID)
	if err != nil {
		log.Warn("cannot renew: no Graph app", "err", err)
		return mailpush.HealFailed
	}
	if mb.SubscriptionID != "" {
		exp := s.Clock.Now().Add(s.lifetime())
		var certID, cert string
		if s.Certs != nil {
			// A rotated certificate reaches Graph with the renewal.
			if certID, cert, err = s.Certs.Current(); err != nil {
				log.Warn("cannot make the notification encryption certificate", "err", err)
				return mailpush.HealFailed
			}
		}
		err := s.call(ctx, ta, mb.ID, func(ctx context.Context) error {
			_, err := ta.client.RenewSubscription(ctx, mb.SubscriptionID, exp, cert, certID)
			return err
		})
		if err == nil {
			return mailpush.HealResubscribed
		}
		if !IsStatus(err, http.StatusNotFound) {
			log.Warn("renewal failed; trying again soon", "err", err)
			s.dueSoon(ctx, mb.ID)
			return mailpush.HealFailed
		}
		log.Info("Graph no longer has the subscription: making it again")
	}
	return s.recreate(ctx, ta, mb, mb.StoredAddress)
}

// dueSoon makes a mailbox whose renewal failed due again after retryDue,
// not after another half lifetime (the subscription would expire first).
func (s *Source) dueSoon(ctx context.Context, mailboxID string) {
	back := s.RenewAfter() - retryDue
	s.Store.UpdateMailbox(ctx, mailboxID, func(m *mailpush.Mailbox) error {
		m.LastEventAt = s.Clock.Now().Add(-back)
		return nil
	})
}

func (s *Source) recreate(ctx context.Context, ta *tenantApp, mb *mailpush.Mailbox, address string) mailpush.HealOutcome {
	if address == "" {
		if err := s.askDevices(ctx, mb); err != nil {
			s.Logger.Warn("could not ask the devices to check in", "mailbox", mb.ID, "err", err)
			return mailpush.HealFailed
		}
		return mailpush.HealAsked
	}
	if err := s.subscribe(ctx, ta, mb, address); err != nil {
		s.dueSoon(ctx, mb.ID)
		return mailpush.HealFailed
	}
	s.resync(ctx, ta, mb.TenantID, mb.ID, address, mailpush.EventChanged)
	return mailpush.HealResubscribed
}

// askDevices sends the devices a background push asking them to check in
// (with the address, so that the subscription can be made again) and marks
// their registrations pending.
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
	if err := s.emit(ctx, mailpush.Event{TenantID: mb.TenantID, MailboxID: mb.ID, Kind: mailpush.EventResync, Badge: mailpush.NoBadge, At: s.Clock.Now()}); err != nil {
		return err
	}
	for _, r := range regs {
		if _, err := s.Store.UpdateRegistration(ctx, r.TenantID, r.ID, func(r *mailpush.Registration) error {
			if r.Status == mailpush.StatusActive {
				r.Status = mailpush.StatusPending
			}
			return nil
		}); err != nil {
			return err
		}
	}
	return nil
}

// emit stores the event's sequence (and badge) and hands it to the sink.
func (s *Source) emit(ctx context.Context, ev mailpush.Event) error {
	updated, err := s.Store.UpdateMailbox(ctx, ev.MailboxID, func(m *mailpush.Mailbox) error {
		m.Record(ev)
		return nil
	})
	if err != nil {
		return err
	}
	ev.Seq = updated.Seq
	return s.Sink.HandleEvent(ctx, ev)
}

// resync pushes the Inbox's unread count (kind says what happened), or a
// sync signal when Graph cannot tell it.
func (s *Source) resync(ctx context.Context, ta *tenantApp, tenantID, mailboxID, address string, kind mailpush.EventKind) {
	ev := mailpush.Event{TenantID: tenantID, MailboxID: mailboxID, Kind: mailpush.EventResync, Badge: mailpush.NoBadge, At: s.Clock.Now()}
	var unread int
	err := s.call(ctx, ta, mailboxID, func(ctx context.Context) error {
		var err error
		unread, err = ta.client.InboxUnread(ctx, address)
		return err
	})
	if err != nil {
		s.Logger.Warn("unreadItemCount failed: pushing a sync signal", "mailbox", mailboxID, "err", err)
	} else {
		ev.Kind, ev.Badge = kind, unread
	}
	if err := s.emit(ctx, ev); err != nil {
		s.Logger.Error("cannot hand the event on", "mailbox", mailboxID, "err", err)
	}
}

// readBody reads a notification POST, bounded.
func readBody(w http.ResponseWriter, r *http.Request) ([]byte, int, string) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxNotificationSize))
	if err != nil {
		var maxErr *http.MaxBytesError
		if errors.As(err, &maxErr) {
			return nil, http.StatusRequestEntityTooLarge, "notification batch exceeds 4 MiB"
		}
		return nil, http.StatusBadRequest, "cannot read the request body"
	}
	return body, 0, ""
}

// validation answers Graph's validation request: the decoded token as
// text/plain, but only for a mailbox whose subscription mailpush is
// creating right now (a handshake for a subscription we never asked for is
// refused, so Graph refuses to create it).
func (s *Source) validation(w http.ResponseWriter, r *http.Request, tok mailpush.CallbackToken, token string) {
	mb, err := s.Store.Mailbox(r.Context(), tok.MailboxID)
	if err != nil && mailpush.ErrorCode(err) != mailpush.ENotFound {
		s.Logger.Error("validation not answered: the store failed; Graph will fail the creation", "mailbox", tok.MailboxID, "err", err)
		http.Error(w, "temporarily unable to answer", http.StatusServiceUnavailable)
		return
	}
	if err != nil || mb.TenantID != tok.TenantID || !s.creatingNow(mb) {
		s.Logger.Warn("validation refused: mailpush is not creating a subscription for this mailbox", "mailbox", tok.MailboxID)
		http.Error(w, "no subscription is being created for this URL", http.StatusForbidden)
		return
	}
	if len(token) > 1024 {
		http.Error(w, "validationToken longer than 1024 characters", http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	io.WriteString(w, token)
}

// ServeHTTP handles both notification URLs: the validation handshake, then
// change and lifecycle notifications. A batch is answered 202 as soon as its
// notifications are queued for the workers that fetch the unread count and
// the message: a slow Graph never slows the acknowledgement. A notification
// for an unknown subscription, another mailbox, or with a wrong clientState
// is ignored with a log line (never an error that Graph would retry).
func (s *Source) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := s.Clock.Now()
	rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
	defer func() { s.Metrics.observe(s.Clock.Now().Sub(start), rec.status >= 500) }()
	s.serve(rec, r, start)
}

// statusRecorder keeps the status of the answer, for the slow-answer ratio.
type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (r *statusRecorder) WriteHeader(code int) {
	r.status = code
	r.ResponseWriter.WriteHeader(code)
}

func (s *Source) serve(w http.ResponseWriter, r *http.Request, start time.Time) {
	tok, err := s.Sealer.OpenCallback(r.PathValue("token"))
	if err != nil {
		s.Logger.Warn("Graph notification refused: bad URL token", "err", mailpush.ErrorMessage(err))
		http.Error(w, mailpush.ErrorMessage(err), http.StatusUnauthorized)
		return
	}
	if v, ok := r.URL.Query()["validationToken"]; ok {
		s.validation(w, r, tok, v[0])
		return
	}
	body, status, msg := readBody(w, r)
	if status != 0 {
		s.Logger.Warn("Graph notification refused", "mailbox", tok.MailboxID, "err", msg)
		http.Error(w, msg, status)
		return
	}
	b, err := ParseBatch(body)
	if err != nil {
		s.Logger.Warn("Graph notification refused: malformed batch", "mailbox", tok.MailboxID, "err", err)
		http.Error(w, "malformed notification batch: "+err.Error(), http.StatusBadRequest)
		return
	}
	ctx := r.Context()
	// Changes (and "missed") become one durable unresolved event per
	// mailbox of the batch; the other lifecycle events (renew, recreate)
	// are work for the in-memory queue.
	var changes []*change
	var work []job
	seen := map[string]*known{} // a batch names few subscriptions, many times
	richOK := s.richTrusted(ctx, tok, b)
	for i := range b.Value {
		n := &b.Value[i]
		j, ok, err := s.accept(ctx, tok, n, seen)
		if err != nil {
			s.Logger.Error("Graph notification not handled; Graph will retry", "mailbox", tok.MailboxID, "err", err)
			http.Error(w, "temporarily unable to handle the notification", http.StatusServiceUnavailable)
			return
		}
		switch {
		case !ok:
		case j.lifecycle == "" || j.lifecycle == LifecycleMissed:
			if richOK && n.EncryptedContent != nil && j.changeType == "created" {
				j.subject, j.sender = s.openContent(n.EncryptedContent, j.mailboxID)
			}
			changes = addChange(changes, j)
		default:
			work = append(work, j)
		}
	}
	if !s.hasRoom(len(work)) {
		s.Logger.Warn("Graph notifications not taken: the lifecycle queue is full; Graph will retry", "mailbox", tok.MailboxID)
		w.Header().Set("Retry-After", "5")
		http.Error(w, "busy", http.StatusServiceUnavailable)
		return
	}
	for _, c := range changes {
		if err := s.store(ctx, c); err != nil {
			s.Logger.Error("Graph notification not stored; Graph will retry", "mailbox", c.mailboxID, "err", err)
			http.Error(w, "temporarily unable to handle the notification", http.StatusServiceUnavailable)
			return
		}
	}
	s.enqueue(work)
	w.WriteHeader(http.StatusAccepted)
	s.Logger.Debug("Graph notifications accepted", "notifications", len(b.Value), "events", len(changes), "took", s.Clock.Now().Sub(start))
}

// change is what a batch's notifications of one mailbox changed.
type change struct {
	tenantID, mailboxID string
	address             string // from the URL's token, for a mailbox that has none stored
	created             bool
	newest              string // the last created message
	subject, sender     string // its content, from a rich notification
}

func addChange(cs []*change, j job) []*change {
	var c *change
	for _, x := range cs {
		if x.mailboxID == j.mailboxID {
			c = x
		}
	}
	if c == nil {
		c = &change{tenantID: j.tenantID, mailboxID: j.mailboxID, address: j.address}
		cs = append(cs, c)
	}
	if j.changeType == "created" {
		c.created = true
		if j.messageID != "" {
			c.newest, c.subject, c.sender = j.messageID, j.subject, j.sender
		}
	}
	return cs
}

// store makes the change durable: the mailbox's sequence moves on and the
// pipeline stores an unresolved event, which Resolve completes later, on
// whichever node claims it. What Resolve needs travels in the store: the
// newest created message's ID in the event (Ref, sealed with its content),
// the address in the mailbox (kept since its registration; a mailbox
// registered before addresses were kept learns it here, in the update
// that runs anyway).
func (s *Source) store(ctx context.Context, c *change) error {
	ev := mailpush.Event{TenantID: c.tenantID, MailboxID: c.mailboxID, Kind: mailpush.EventChanged, Badge: mailpush.NoBadge, At: s.Clock.Now()}
	if c.created {
		ev.Kind = mailpush.EventNewMail
		// Subject and sender are in memory until the pipeline seals them
		// into the event row; the pipeline caps them per registration.
		ev.Subject, ev.Sender, ev.Ref = c.subject, c.sender, c.newest
	}
	updated, err := s.Store.UpdateMailbox(ctx, c.mailboxID, func(m *mailpush.Mailbox) error {
		if m.StoredAddress == "" {
			m.StoredAddress = c.address
		}
		m.Record(ev)
		return nil
	})
	if err != nil {
		return err
	}
	ev.Seq = updated.Seq
	return s.Sink.HandleUnresolvedEvent(ctx, ev)
}

// Resolve completes an event stored before its badge and content were
// known (the pipeline calls it after its claim, on any node): the Inbox's
// unreadItemCount and, for new mail when the tenant allows content, the
// subject and sender of the message the event names (Ref). The address is
// the mailbox's stored one; a mailbox without one (registered before
// addresses were kept, and not heard of since) resolves as a background
// push (NoBadge), and the device fetches for itself.
func (s *Source) Resolve(ctx context.Context, oe *mailpush.OutboxEvent) error {
	ev := &oe.Event
	mb, err := s.Store.Mailbox(ctx, ev.MailboxID)
	if mailpush.ErrorCode(err) == mailpush.ENotFound {
		ev.Badge = mailpush.NoBadge
		return nil
	}
	if err != nil {
		return err // the lease runs out and the event is claimed again
	}
	address := mb.StoredAddress
	if address == "" {
		ev.Badge = mailpush.NoBadge
		return nil
	}
	ta, t, err := s.appOf(ctx, ev.TenantID)
	if err != nil {
		if mailpush.ErrorCode(err) == mailpush.ENotFound || mailpush.ErrorCode(err) == mailpush.EUnsupported {
			ev.Badge = mailpush.NoBadge
			return nil
		}
		return err
	}
	var unread int
	err = s.call(ctx, ta, ev.MailboxID, func(ctx context.Context) error {
		var err error
		unread, err = ta.client.InboxUnread(ctx, address)
		return err
	})
	switch {
	case IsStatus(err, http.StatusNotFound):
		ev.Badge = mailpush.NoBadge
	case err != nil:
		return err // the lease runs out and the event is claimed again
	default:
		ev.Badge = unread
	}
	if ev.Kind != mailpush.EventNewMail || t.MaxContent.Rank() <= mailpush.ContentBadge.Rank() {
		ev.Subject, ev.Sender = "", ""
		return nil
	}
	if ev.Subject != "" || ev.Sender != "" {
		return nil // a rich notification brought them: nothing to fetch
	}
	id := ev.Ref
	if id == "" {
		return nil
	}
	var m *Message
	if err := s.call(ctx, ta, ev.MailboxID, func(ctx context.Context) error {
		var err error
		m, err = ta.client.Message(ctx, address, id)
		return err
	}); err != nil {
		if !IsStatus(err, http.StatusNotFound) {
			s.Logger.Warn("message fetch failed: pushing without content", "mailbox", ev.MailboxID, "err", err)
		}
		return nil
	}
	ev.Subject, ev.Sender = m.Subject, m.Sender()
	return nil
}

// accept checks one notification and turns it into a job; ok is false when
// it is ignored.
func (s *Source) accept(ctx context.Context, tok mailpush.CallbackToken, n *Notification, seen map[string]*known) (job, bool, error) {
	if k, ok := seen[n.SubscriptionID]; ok {
		if k.mb == nil || subtle.ConstantTimeCompare([]byte(n.ClientState), []byte(k.clientState)) != 1 {
			return job{}, false, nil // logged for its first notification
		}
		return k.job(tok, n), true, nil
	}
	k, err := s.lookup(ctx, tok, n)
	if err != nil {
		return job{}, false, err
	}
	seen[n.SubscriptionID] = k
	if k.mb == nil {
		return job{}, false, nil
	}
	if subtle.ConstantTimeCompare([]byte(n.ClientState), []byte(k.clientState)) != 1 {
		s.Logger.Warn("Graph notification ignored: wrong clientState", "mailbox", tok.MailboxID)
		return job{}, false, nil
	}
	return k.job(tok, n), true, nil
}

// known is a subscription of a batch, looked up once: its mailbox (nil
// when its notifications are ignored) and the clientState they must carry.
type known struct {
	mb          *mailpush.Mailbox
	clientState string
}

func (k *known) job(tok mailpush.CallbackToken, n *Notification) job {
	j := job{tenantID: k.mb.TenantID, mailboxID: k.mb.ID, address: tok.Address, lifecycle: n.LifecycleEvent, changeType: n.ChangeType}
	if n.ResourceData != nil {
		j.messageID = n.ResourceData.ID
	}
	return j
}

// lookup finds the mailbox of a notification's subscription, or says (with
// a log line) why its notifications are ignored.
func (s *Source) lookup(ctx context.Context, tok mailpush.CallbackToken, n *Notification) (*known, error) {
	log := s.Logger.With("mailbox", tok.MailboxID)
	mb, err := s.Store.MailboxBySubscription(ctx, n.SubscriptionID)
	if mailpush.ErrorCode(err) == mailpush.ENotFound {
		// A new subscription's first notification may beat Graph's answer
		// to the creation, and reach another node than the one creating it:
		// while any node creates one for the URL's mailbox (the store says
		// so, creatingNow), its clientState, derived from the nonce stored
		// before the creation, is what proves it ours. One read tells both:
		// the creation's end stores the new ID and ends the creating state
		// in one update. The clientState is checked below.
		mb, err = s.Store.Mailbox(ctx, tok.MailboxID)
		if mailpush.ErrorCode(err) == mailpush.ENotFound || err == nil && mb.SubscriptionID != n.SubscriptionID && !s.creatingNow(mb) {
			log.Warn("Graph notification ignored: unknown subscription")
			return &known{}, nil
		}
	}
	if err != nil {
		return nil, err
	}
	if mb.ID != tok.MailboxID || mb.TenantID != tok.TenantID || mb.Source != mailpush.SourceGraph {
		log.Warn("Graph notification ignored: the subscription belongs to another mailbox than its URL")
		return &known{}, nil
	}
	if mb.Status == mailpush.StatusInactive {
		log.Info("Graph notification ignored: no registration left")
		return &known{}, nil
	}
	nonce, _ := parseWatermark(mb.Watermark)
	return &known{mb: mb, clientState: s.clientState(mb, nonce)}, nil
}

// creatingFor bounds the creating state a creation stores: a node that dies
// while creating leaves it, and it ends by itself after this (longer than a
// creation's requests with their Retry-After waits).
const creatingFor = 5 * time.Minute

// A Graph mailbox's Watermark holds its subscription's nonce and, while a
// node creates a subscription, that creation's deadline: "<nonce>" or
// "<nonce>.<deadline in Unix ms>". In the store and not in one node's
// memory, because in a cluster Graph's validation requests and the new
// subscription's first notification reach whichever node the balancer
// picks, not the one that is creating it.
func creatingWatermark(nonce string, until time.Time) string {
	return nonce + "." + strconv.FormatInt(until.UnixMilli(), 10)
}

// parseWatermark splits a Graph mailbox's Watermark; until is zero when no
// creation is under way.
func parseWatermark(w string) (nonce string, until time.Time) {
	nonce, ms, ok := strings.Cut(w, ".")
	if !ok {
		return w, time.Time{}
	}
	n, err := strconv.ParseInt(ms, 10, 64)
	if err != nil {
		return nonce, time.Time{}
	}
	return nonce, time.UnixMilli(n)
}

// creatingNow reports whether some node is creating a subscription for the
// mailbox (as the store says).
func (s *Source) creatingNow(mb *mailpush.Mailbox) bool {
	_, until := parseWatermark(mb.Watermark)
	return s.Clock.Now().Before(until)
}

// job is the work a notification leaves for the workers.
type job struct {
	tenantID, mailboxID, address string
	lifecycle, changeType        string
	messageID                    string
	subject, sender              string // decrypted from a rich notification
}

// hasRoom reports whether the lifecycle queue can take n more jobs.
func (s *Source) hasRoom(n int) bool {
	st := s.init()
	return cap(st.queue)-len(st.queue) >= n
}

// enqueue queues jobs; one that finds the queue full is dropped with a log
// line (hasRoom was asked first; Graph sends the lifecycle event again).
func (s *Source) enqueue(jobs []job) {
	st := s.init()
	for _, j := range jobs {
		select {
		case st.queue <- j:
		default:
			s.Logger.Warn("Graph lifecycle event dropped: the queue is full", "mailbox", j.mailboxID)
		}
	}
}

// Run starts the workers that fetch what notifications left to fetch. It
// returns at once; Close stops them.
func (s *Source) Run(ctx context.Context) {
	st := s.init()
	ctx, cancel := context.WithCancel(ctx)
	st.mu.Lock()
	if st.cancel != nil {
		st.mu.Unlock()
		cancel()
		return
	}
	st.cancel = cancel
	st.mu.Unlock()
	for range orInt(s.Workers, DefaultWorkers) {
		st.wg.Add(1)
		go func() {
			defer st.wg.Done()
			for {
				select {
				case <-ctx.Done():
					return
				case j := <-st.queue:
					s.work(ctx, j)
				}
			}
		}()
	}
}

// Close stops the workers and waits for them.
func (s *Source) Close() {
	st := s.init()
	st.mu.Lock()
	cancel := st.cancel
	jobs := st.jobCancels
	st.jobCancels = nil
	st.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	for _, c := range jobs {
		c()
	}
	st.wg.Wait()
	st.jobs.Wait()
}

func (s *Source) work(ctx context.Context, j job) {
	ta, _, err := s.appOf(ctx, j.tenantID)
	if err != nil {
		s.Logger.Warn("Graph lifecycle event dropped: no app", "mailbox", j.mailboxID, "err", err)
		return
	}
	log := s.Logger.With("mailbox", j.mailboxID)
	mb, err := s.Store.Mailbox(ctx, j.mailboxID)
	if err != nil {
		return
	}
	switch j.lifecycle {
	case LifecycleReauthorizationRequired:
		log.Info("Graph asks for reauthorization: renewing")
		if s.Heal(ctx, mb) == mailpush.HealFailed {
			log.Warn("reauthorization failed")
			return
		}
		s.Store.UpdateMailbox(ctx, mb.ID, func(m *mailpush.Mailbox) error { m.LastEventAt = s.Clock.Now(); return nil })
	case LifecycleSubscriptionRemoved:
		log.Info("Graph removed the subscription: making it again")
		s.recreate(ctx, ta, mb, j.address)
	default:
		log.Info("unknown Graph lifecycle event ignored", "event", j.lifecycle)
	}
}

// richTrusted checks a batch's validationTokens when it carries encrypted
// content: every token must be the tenant's (signature against the
// authority's JWKS, issuer its STS), for our app (audience), from Graph's
// change-notification app (azp/appid), and not expired. Otherwise the
// content is not used (the message is fetched instead).
func (s *Source) richTrusted(ctx context.Context, tok mailpush.CallbackToken, b *Batch) bool {
	rich := false
	for i := range b.Value {
		rich = rich || b.Value[i].EncryptedContent != nil
	}
	if !rich || s.Certs == nil {
		return false
	}
	ta, _, err := s.appOf(ctx, tok.TenantID)
	if err != nil || len(b.ValidationTokens) == 0 || len(b.ValidationTokens) > 16 {
		s.Logger.Warn("rich notification content ignored: no usable validationTokens", "mailbox", tok.MailboxID)
		return false
	}
	for _, raw := range b.ValidationTokens {
		c, err := ta.keys.verify(ctx, raw, "https://sts.windows.net/"+ta.app.TenantID+"/", ta.app.ClientID)
		if err == nil && c.AZP != NotificationAppID && c.AppID != NotificationAppID {
			err = errors.New("not issued to Graph's change-notification app")
		}
		if err != nil {
			s.Logger.Warn("rich notification content ignored: a validationToken is refused", "mailbox", tok.MailboxID, "err", err)
			return false
		}
	}
	return true
}

// openContent decrypts a rich notification's message (signature checked
// first) and returns its subject and sender; empty when it cannot.
func (s *Source) openContent(ec *EncryptedContent, mailboxID string) (subject, sender string) {
	key, ok := s.Certs.Key(ec.EncryptionCertificateID)
	if !ok {
		s.Logger.Warn("rich notification content ignored: encrypted to a certificate we do not hold", "mailbox", mailboxID)
		return "", ""
	}
	plain, err := DecryptContent(ec, key)
	if err != nil {
		s.Logger.Warn("rich notification content ignored", "mailbox", mailboxID, "err", err)
		return "", ""
	}
	var m Message
	if err := json.Unmarshal(plain, &m); err != nil {
		s.Logger.Warn("rich notification content ignored: not a message", "mailbox", mailboxID)
		return "", ""
	}
	return m.Subject, m.Sender()
}
