// Package registrar owns the registration lifecycle and every rule of trust
// about it: who may create, check in and delete a registration, what each
// mode must prove before its device gets a push, which registration may bind
// or change a mailbox's subscription, and to which registrations a source's
// event fans out. The HTTP API is a thin translation of Service; the sources
// ask it (through the root package's small interfaces) instead of reading
// and writing registrations themselves. It imports the domain only.
//
// The rules, in one place:
//
//   - An app token (it ships inside every app, so anyone holds it) creates
//     only registrations that prove themselves: sealed credentials (a
//     password, an OAuth token, or a client identity for Exchange's
//     certificate-based authentication, source ews only) that open the
//     very mailbox named (Exchange itself checks it), or a
//     device-subscribed callback (its pushes are then confined to it), or a
//     per-user proof in service mode (Dovecot: the user's IMAP password,
//     checked by an IMAP LOGIN, then forgotten). Service mode without a
//     per-user proof needs a backend token.
//   - Credentials go only to the server URL of the same request (checked
//     against the tenant's allowed hosts) or one autodiscovered for it, never
//     to a URL another registration stored.
//   - No registration changes what another receives unless it is proven at
//     least as strongly: a device-subscribed registration can neither join
//     nor replace a subscription made with sealed credentials, and its
//     notifications reach only itself.
//   - A refused request changes nothing: a new registration is taken back,
//     or the device's previous one restored.
//   - Quotas bound the registrations of a tenant and of a mailbox. They are
//     decided inside the registration's write transaction (Store.Register's
//     check), on what that transaction finds: concurrent registrations
//     cannot all pass a quota that only one of them fits, and the check
//     costs no read of its own.
//   - A token bucket per tenant and scope bounds the create and check-in
//     calls, checked before anything else, and the costly opening of client
//     identities is bounded per tenant and in total, before anything is
//     stored (limits.go), so that one tenant's app token cannot flood the
//     server or starve other tenants.
package registrar

import (
	"context"
	"crypto/hmac"
	"log/slog"
	"net/mail"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mailpush/mailpush"
)

// Default quotas.
const (
	DefaultMaxPerTenant  = 100_000 // live registrations per tenant
	DefaultMaxPerMailbox = 20      // live registrations (devices) per mailbox
)

// Keys is what the service needs of the keyring.
type Keys interface {
	mailpush.CredentialOpener
	mailpush.AddressHasher
}

// Service is the registration lifecycle.
type Service struct {
	Store    mailpush.Store
	Keys     Keys
	Watchers map[mailpush.Source]mailpush.Watcher
	// Verifiers check a user's own credentials for service mode (the
	// per-user proof that lets an app token register there).
	Verifiers map[mailpush.Source]mailpush.CredentialVerifier
	// Autodiscover finds the EWS URL when a registration has none; nil
	// means ewsUrl is required.
	Autodiscover mailpush.EWSLocator
	// ServiceMode reports whether a tenant watches a source with its own
	// service identity (an EWS service account, its Dovecot): registrations
	// without sealed credentials then use service mode.
	ServiceMode func(t *mailpush.Tenant, src mailpush.Source) bool
	// Platforms lists the push platforms a tenant has credentials for; nil
	// accepts every platform.
	Platforms func(t *mailpush.Tenant) []mailpush.Platform
	// RegistrationTTL is how long a registration lives without a check-in.
	RegistrationTTL time.Duration
	// AllowInsecureEWS permits http:// EWS URLs (tests and labs only).
	AllowInsecureEWS bool
	// Quotas returns a tenant's limits; nil means the defaults.
	Quotas func(t *mailpush.Tenant) Quotas
	// Metrics counts routine events that are not logged at the default
	// level; nil counts nothing.
	Metrics *Metrics
	Logger  *slog.Logger
	Clock   mailpush.Clock

	rates        mailpush.Buckets // registration calls, by tenant and scope (limits.go)
	nodes        atomic.Int32     // live nodes sharing the rates; 0 means 1
	openersOnce  sync.Once
	openersState *openers
}

// Quotas bound a tenant's live (active or pending) registrations, and the
// rate of its registration calls (limits.go).
type Quotas struct {
	PerTenant  int // 0: DefaultMaxPerTenant
	PerMailbox int // 0: DefaultMaxPerMailbox
	// Rate bounds the Register and CheckIn calls of app tokens; 0 fields:
	// DefaultRate, DefaultBurst.
	Rate Rate
	// BackendRate bounds those of backend tokens; 0 fields:
	// DefaultBackendRate, DefaultBackendBurst.
	BackendRate Rate
}

var _ mailpush.Registrar = (*Service)(nil)

// Register registers a device for a mailbox. It makes no outbound request
// before the request is checked, and a refused request changes nothing.
func (s *Service) Register(ctx context.Context, t *mailpush.Tenant, req mailpush.RegisterRequest) (*mailpush.RegistrationResult, error) {
	if err := s.takeRate(t, req.Scope); err != nil {
		return nil, err
	}
	dev := req.Device
	if id := req.ActiveSyncDeviceID; id != "" {
		if !mailpush.ValidDeviceID(mailpush.NormalizeDeviceID(id)) {
			return nil, mailpush.Errorf(mailpush.EInvalid, "device.activeSyncDeviceId must be 1 to %d printable characters without spaces or commas", mailpush.MaxDeviceIDLen)
		}
		dev.ActiveSyncDeviceHash = mailpush.ActiveSyncDeviceHash(s.Keys, t.ID, id)
	}
	if err := s.checkPlatform(t, dev.Platform); err != nil {
		return nil, err
	}
	content := mailpush.ContentBadge
	if req.Content != "" {
		if content = req.Content; content.Rank() < 0 {
			return nil, mailpush.Errorf(mailpush.EInvalid, "content must be badge, subject or subject_sender, not %q", req.Content)
		}
	}
	mb, creds, err := s.mailbox(ctx, t, req)
	if err != nil {
		return nil, err
	}
	if _, ok := s.Watchers[mb.Source]; !ok {
		return nil, mailpush.Errorf(mailpush.EUnsupported, "source %q is not enabled on this server", mb.Source)
	}
	if err := s.checkDeviceSubscribed(ctx, t, mb); err != nil {
		return nil, err
	}
	now := s.Clock.Now().UTC()
	reg := &mailpush.Registration{
		Device:    dev,
		Content:   t.CapContent(content),
		Status:    mailpush.StatusPending,
		ExpiresAt: now.Add(s.RegistrationTTL),
	}
	// A source that decides without the mail server answers before the
	// write: the registration, and a new mailbox, are then stored once with
	// their final status (one write, not three).
	admitted, err := s.admit(ctx, t, mb, creds)
	if err != nil {
		return nil, err
	}
	if admitted != nil {
		reg.Status = admitted.Status
		mb.Status, mb.Mode = admitted.Status, chosen(mb.Mode, *admitted)
	}
	// The quotas and a replacement are decided inside the write, on what
	// its transaction finds (checkJoin).
	var previous *mailpush.Registration
	stored, err := s.Store.Register(ctx, reg, mb, func(j mailpush.Join) error {
		var err error
		previous, err = s.checkJoin(t, j)
		return err
	})
	if err != nil {
		return nil, err
	}
	// The request's own address and server URL, never those another
	// registration stored: credentials go only where this request said.
	stored.Address, stored.ServerURL = mb.Address, mb.ServerURL
	var res mailpush.WatchResult
	if admitted != nil && stored.Status == admitted.Status && stored.Mode == mb.Mode {
		res = *admitted
	} else if res, err = s.watch(ctx, t, stored, reg, mb.Mode, creds); err != nil {
		if derr := s.takeBack(ctx, t.ID, reg.ID, previous); derr != nil {
			s.Logger.Error("could not take back a failed registration", "registration", reg.ID, "err", derr)
		}
		return nil, err
	}
	if res.Status == mailpush.StatusActive && reg.Status != mailpush.StatusActive {
		if reg, err = s.Store.UpdateRegistration(ctx, t.ID, reg.ID, func(r *mailpush.Registration) error {
			r.Status = mailpush.StatusActive
			return nil
		}); err != nil {
			return nil, err
		}
	}
	mode := chosen(mb.Mode, res)
	if mode != mailpush.ModeDeviceSubscribed && deviceSubscribedSource(mb.Source) {
		if err := s.dropDeviceSubscribed(ctx, t, mb, dev); err != nil {
			s.Logger.Error("could not remove the device's device-subscribed registration", "registration", reg.ID, "err", err)
		}
	}
	// Routine: counted, logged only at debug (a million registrations must
	// not write a million lines at the default level).
	s.keepCallbackURL(ctx, t, reg.ID, res.CallbackURL)
	s.Metrics.registered()
	s.Logger.Debug("registration created", "tenant", t.Name, "registration", reg.ID, "mailbox", stored.ID, "mode", mode, "platform", dev.Platform, "scope", req.Scope)
	return s.result(reg, mode, res), nil
}

// watch asks the source to (re)subscribe unless the mailbox is already
// watched in the requested mode and no new credentials came with the request.
func (s *Service) watch(ctx context.Context, t *mailpush.Tenant, mb *mailpush.Mailbox, reg *mailpush.Registration, mode mailpush.Mode, creds mailpush.Credentials) (mailpush.WatchResult, error) {
	// Device-subscribed mode always goes to the source: the device needs its
	// callback URL. New sealed credentials always go to the source too, even
	// for a mailbox that is already watched: they are what proves that the
	// device may receive this mailbox's pushes, so the source must try them
	// on the mail server, on the address's own Inbox, before the device is
	// attached.
	if mb.Status == mailpush.StatusActive && mb.Mode == mode && mode != mailpush.ModeDeviceSubscribed && creds.Empty() {
		return mailpush.WatchResult{Status: mailpush.StatusActive}, nil
	}
	mb.Mode = mode
	return s.Watchers[mb.Source].Watch(ctx, t, mb, reg, creds)
}

// admit asks a source that decides without the mail server
// (mailpush.Admitter) for its answer; nil when the source must be asked
// after the write (Watch).
func (s *Service) admit(ctx context.Context, t *mailpush.Tenant, mb *mailpush.Mailbox, creds mailpush.Credentials) (*mailpush.WatchResult, error) {
	a, ok := s.Watchers[mb.Source].(mailpush.Admitter)
	if !ok {
		return nil, nil
	}
	res, err := a.Admit(ctx, t, mb, creds)
	if err != nil {
		return nil, err
	}
	return &res, nil
}

// checkDeviceSubscribed refuses a device-subscribed registration for an
// address watched with a user's sealed credentials: such a registration
// proves nothing about the mailbox, and it would only ever get what its own
// subscription reports (its mailbox is its own), so it is pointless there
// and refused with a clear answer.
func (s *Service) checkDeviceSubscribed(ctx context.Context, t *mailpush.Tenant, mb *mailpush.Mailbox) error {
	if mb.Mode != mailpush.ModeDeviceSubscribed {
		return nil
	}
	watched, err := s.Store.MailboxByAddress(ctx, mb.TenantID, s.Keys.HashAddress(t.ID, mb.Address), mb.Source)
	if err == nil && watched.Mode == mailpush.ModeSealed && watched.Status != mailpush.StatusInactive {
		return mailpush.Errorf(mailpush.EConflict, "this mailbox is watched with a user's sealed credentials: register with mailbox.sealedCredentials")
	}
	if err != nil && mailpush.ErrorCode(err) != mailpush.ENotFound {
		return err
	}
	return nil
}

// checkJoin enforces the quotas on what the registration's write found
// (Store.Register calls it inside its transaction, so concurrent
// registrations cannot pass a quota together). It returns the registration
// this device already has in the mailbox, if active or pending, so that a
// refused request can restore it: such a replacement counts against no
// quota. Nothing here grows with the mailbox's device count: the store
// finds the device's row by its token's hash and keeps the counts.
func (s *Service) checkJoin(t *mailpush.Tenant, j mailpush.Join) (*mailpush.Registration, error) {
	if p := j.Previous; p != nil && (p.Status == mailpush.StatusActive || p.Status == mailpush.StatusPending) {
		return p, nil
	}
	q := s.TenantQuotas(t)
	if j.Mailbox != nil && j.Audience.Registrations >= q.PerMailbox {
		return nil, mailpush.Errorf(mailpush.EQuota, "this mailbox already has %d registrations, the limit per mailbox (registrations.maxPerMailbox): delete one first", q.PerMailbox)
	}
	if j.TenantRegistrations >= q.PerTenant {
		return nil, mailpush.Errorf(mailpush.EQuota, "tenant %s already has %d registrations, its limit (registrations.maxPerTenant)", t.Name, q.PerTenant)
	}
	return nil, nil
}

// TenantQuotas are the registration limits that apply to t, defaults
// filled in (the admin console shows them).
func (s *Service) TenantQuotas(t *mailpush.Tenant) Quotas {
	var q Quotas
	if s.Quotas != nil {
		q = s.Quotas(t)
	}
	if q.PerTenant <= 0 {
		q.PerTenant = DefaultMaxPerTenant
	}
	if q.PerMailbox <= 0 {
		q.PerMailbox = DefaultMaxPerMailbox
	}
	if q.Rate.PerSecond <= 0 {
		q.Rate.PerSecond = DefaultRate
	}
	if q.Rate.Burst <= 0 {
		q.Rate.Burst = DefaultBurst
	}
	if q.BackendRate.PerSecond <= 0 {
		q.BackendRate.PerSecond = DefaultBackendRate
	}
	if q.BackendRate.Burst <= 0 {
		q.BackendRate.Burst = DefaultBackendBurst
	}
	return q
}

// takeBack undoes Register after the source refused: it deletes a new
// registration, or puts back the device's previous one as it was.
func (s *Service) takeBack(ctx context.Context, tenantID, id string, previous *mailpush.Registration) error {
	if previous == nil || previous.ID != id {
		return s.Store.DeleteRegistration(ctx, tenantID, id)
	}
	_, err := s.Store.UpdateRegistration(ctx, tenantID, id, func(r *mailpush.Registration) error {
		r.Device, r.Content, r.Status, r.ExpiresAt = previous.Device, previous.Content, previous.Status, previous.ExpiresAt
		return nil
	})
	return err
}

// Get returns a tenant's registration.
func (s *Service) Get(ctx context.Context, t *mailpush.Tenant, id string) (*mailpush.RegistrationResult, error) {
	reg, err := s.Store.Registration(ctx, t.ID, id)
	if err != nil {
		return nil, err
	}
	mb, err := s.Store.Mailbox(ctx, reg.MailboxID)
	if err != nil {
		return nil, err
	}
	var res mailpush.WatchResult
	if mb.Mode == mailpush.ModeDeviceSubscribed {
		// The URL the create or the last check-in answered with.
		res.CallbackURL, err = s.Store.CallbackURL(ctx, t.ID, id)
		if err != nil && mailpush.ErrorCode(err) != mailpush.ENotFound {
			return nil, err
		}
	}
	return s.result(reg, mb.Mode, res), nil
}

// Delete removes a tenant's registration. When it was the mailbox's last,
// a source that ends subscriptions itself (mailpush.Unwatcher: Graph)
// deletes it now; EWS ends it at its next notification (Unsubscribe).
func (s *Service) Delete(ctx context.Context, t *mailpush.Tenant, id string) error {
	reg, err := s.Store.Registration(ctx, t.ID, id)
	if err != nil {
		return err
	}
	if err := s.Store.DeleteRegistration(ctx, t.ID, id); err != nil {
		return err
	}
	s.Metrics.deleted()
	s.Logger.Debug("registration deleted", "tenant", t.Name, "registration", id)
	if mb, err := s.Store.Mailbox(ctx, reg.MailboxID); err == nil && mb.Status == mailpush.StatusInactive {
		if u, ok := s.Watchers[mb.Source].(mailpush.Unwatcher); ok {
			if err := u.Unwatch(ctx, mb); err != nil {
				// It expires on its own; its notifications are ignored.
				s.Logger.Warn("could not end the subscription of a mailbox without registrations", "mailbox", mb.ID, "err", err)
			}
		}
	}
	return nil
}

// CheckIn renews a registration: a rotated push token, fresh sealed
// credentials, a resubscription of a stale or dead subscription.
func (s *Service) CheckIn(ctx context.Context, t *mailpush.Tenant, id string, in mailpush.CheckInRequest) (*mailpush.RegistrationResult, error) {
	if err := s.takeRate(t, in.Scope); err != nil {
		return nil, err
	}
	reg, err := s.Store.Registration(ctx, t.ID, id)
	if err != nil {
		return nil, err
	}
	if in.DeviceToken != "" {
		if in.DeviceToken, err = mailpush.NormalizeDeviceToken(reg.Device.Platform, in.DeviceToken); err != nil {
			return nil, err
		}
	}
	var creds mailpush.Credentials
	if in.SealedCredentials != "" {
		if creds, err = s.Keys.OpenCredentials(in.SealedCredentials); err != nil {
			return nil, err
		}
	}
	mb, err := s.Store.Mailbox(ctx, reg.MailboxID)
	if err != nil {
		return nil, err
	}
	if in.Address != "" {
		addr, err := ParseAddress(in.Address)
		if err != nil {
			return nil, err
		}
		if !hmac.Equal(s.mailboxKey(t.ID, addr, mb.Mode, reg.Device.Token), mb.AddressHash) {
			return nil, mailpush.Errorf(mailpush.EInvalid, "mailbox.address is not the address of this registration's mailbox")
		}
		mb.Address = addr
	}
	mode := mb.Mode
	if !creds.Empty() {
		if mb.Source == mailpush.SourceDovecot {
			return nil, mailpush.Errorf(mailpush.EInvalid, "mailbox.sealedCredentials of a dovecot registration are checked only when it is created")
		}
		if mb.Mode == mailpush.ModeDeviceSubscribed {
			// The stored server URL was given by a registration that proved
			// nothing: credentials never go to it.
			return nil, mailpush.Errorf(mailpush.EConflict, "this mailbox's server URL was not given with credentials: register again with mailbox.ewsUrl and mailbox.sealedCredentials")
		}
		if mb.Address == "" {
			return nil, mailpush.Errorf(mailpush.EInvalid, "mailbox.address is required with mailbox.sealedCredentials: Exchange checks that the credentials open that mailbox")
		}
		if creds, err = s.prepare(ctx, t, mb.Source, creds); err != nil {
			return nil, err
		}
		mode = mailpush.ModeSealed
	}
	if mode == mailpush.ModeDeviceSubscribed && !t.DeviceSubscribed {
		return nil, deviceSubscribedOff(t)
	}
	var res mailpush.WatchResult
	if mb.Status != mailpush.StatusActive || !creds.Empty() || mode == mailpush.ModeDeviceSubscribed {
		watcher, ok := s.Watchers[mb.Source]
		if !ok {
			return nil, mailpush.Errorf(mailpush.EUnsupported, "source %q is not enabled on this server", mb.Source)
		}
		mb.Mode = mode
		if res, err = watcher.Watch(ctx, t, mb, reg, creds); err != nil {
			return nil, err
		}
	} else {
		// A renewal keeps the registration's status: a pending registration
		// becomes active only by proving itself (sealed credentials, or its
		// own subscription in device-subscribed mode), never by a check-in
		// that carries neither. An inactive one (its push token died) was
		// active before, so it proved itself then: the check-in, usually with
		// a rotated token, revives it.
		res.Status = reg.Status
		if reg.Status == mailpush.StatusInactive {
			res.Status = mailpush.StatusActive
		}
	}
	now := s.Clock.Now().UTC()
	reg, err = s.Store.UpdateRegistration(ctx, t.ID, reg.ID, func(r *mailpush.Registration) error {
		if in.DeviceToken != "" {
			r.Device.Token = in.DeviceToken
		}
		r.ExpiresAt = now.Add(s.RegistrationTTL)
		r.Status = res.Status
		return nil
	})
	if err != nil {
		return nil, err
	}
	s.keepCallbackURL(ctx, t, reg.ID, res.CallbackURL)
	return s.result(reg, chosen(mode, res), res), nil
}

// keepCallbackURL stores the callback URL a device-subscribed registration
// was just given, so that Get returns the same one. The registration stands
// without it (the app has its URL from this answer), so a failure is logged.
func (s *Service) keepCallbackURL(ctx context.Context, t *mailpush.Tenant, id, url string) {
	if url == "" {
		return
	}
	if err := s.Store.SetCallbackURL(ctx, t.ID, id, url); err != nil {
		s.Logger.Error("could not keep the registration's callback URL", "registration", id, "err", err)
	}
}

// chosen is the mode a watcher settled on: the one asked unless it chose
// another.
func chosen(asked mailpush.Mode, res mailpush.WatchResult) mailpush.Mode {
	if res.Mode != "" {
		return res.Mode
	}
	return asked
}

func (s *Service) result(reg *mailpush.Registration, mode mailpush.Mode, res mailpush.WatchResult) *mailpush.RegistrationResult {
	status := reg.Status
	if res.Status != "" && status != mailpush.StatusInactive {
		status = res.Status
	}
	return &mailpush.RegistrationResult{Registration: reg, Mode: mode, CallbackURL: res.CallbackURL, Status: status}
}

// mailbox validates the mailbox part of a registration and decides its
// mode. It makes no outbound request before the request is checked: a
// server URL outside the tenant's allowed hosts is refused here, before any
// source sees it; autodiscover checks each host before it asks it.
func (s *Service) mailbox(ctx context.Context, t *mailpush.Tenant, req mailpush.RegisterRequest) (*mailpush.Mailbox, mailpush.Credentials, error) {
	var creds mailpush.Credentials
	addr, err := ParseAddress(req.Address)
	if err != nil {
		return nil, creds, err
	}
	switch req.Source {
	case mailpush.SourceEWS, mailpush.SourceGraph, mailpush.SourceDovecot:
	case "":
		return nil, creds, mailpush.Errorf(mailpush.EInvalid, "mailbox.source is required: ews, graph or dovecot")
	default:
		return nil, creds, mailpush.Errorf(mailpush.EInvalid, "mailbox.source must be ews, graph or dovecot, not %q", req.Source)
	}
	if _, ok := s.Watchers[req.Source]; !ok {
		return nil, creds, mailpush.Errorf(mailpush.EUnsupported, "source %q is not enabled on this server", req.Source)
	}
	mb := &mailpush.Mailbox{TenantID: t.ID, Source: req.Source, Badge: mailpush.NoBadge, Status: mailpush.StatusPending, Address: addr}
	if req.Source == mailpush.SourceEWS && req.EWSURL != "" {
		if mb.ServerURL, err = s.checkServerURL(t, req.EWSURL, "mailbox.ewsUrl"); err != nil {
			return nil, creds, err
		}
	} else if req.EWSURL != "" {
		return nil, creds, mailpush.Errorf(mailpush.EInvalid, "mailbox.ewsUrl is only for source ews")
	}
	if req.UserToken != "" && req.Source != mailpush.SourceGraph {
		return nil, creds, mailpush.Errorf(mailpush.EInvalid, "mailbox.userToken is only for source graph")
	}
	if req.Source == mailpush.SourceGraph {
		// mailpush subscribes as the tenant's Entra ID app: the user proves
		// the mailbox with their own Entra ID token, never a password.
		if req.SealedCredentials != "" {
			return nil, creds, mailpush.Errorf(mailpush.EInvalid, "mailbox.sealedCredentials is not for source graph: send mailbox.userToken")
		}
		if len(req.UserToken) > 16<<10 {
			return nil, creds, mailpush.Errorf(mailpush.EInvalid, "mailbox.userToken is longer than 16 KiB")
		}
		creds.AccessToken = req.UserToken
	}
	if req.SealedCredentials != "" {
		if creds, err = s.Keys.OpenCredentials(req.SealedCredentials); err != nil {
			return nil, creds, err
		}
	}
	if creds.HasIdentity() && req.Source != mailpush.SourceEWS {
		// Certificate-based authentication is Exchange's: it maps the
		// certificate to its user. Dovecot's proof is an IMAP password.
		return nil, creds, mailpush.Errorf(mailpush.EInvalid, "a client identity (pkcs12, certificatePem) in mailbox.sealedCredentials is for source ews only")
	}
	// A client identity is opened now, within the per-tenant bound on such
	// work, before anything is stored or sent (limits.go).
	if creds, err = s.prepare(ctx, t, req.Source, creds); err != nil {
		return nil, creds, err
	}
	switch {
	case req.Source == mailpush.SourceDovecot || req.Source == mailpush.SourceGraph || creds.Empty() && s.ServiceMode != nil && s.ServiceMode(t, req.Source):
		mb.Mode = mailpush.ModeService
		if err := s.checkService(ctx, t, req.Scope, mb, creds); err != nil {
			return nil, creds, err
		}
		if req.Source == mailpush.SourceDovecot || req.Source == mailpush.SourceGraph {
			// The user's password or token was a proof only: forgotten now.
			creds = mailpush.Credentials{}
		}
	case !creds.Empty():
		mb.Mode = mailpush.ModeSealed
	default:
		// Only EWS gets here (deviceSubscribedSource).
		mb.Mode = mailpush.ModeDeviceSubscribed
		if !t.DeviceSubscribed {
			return nil, creds, deviceSubscribedOff(t)
		}
	}
	mb.AddressHash = s.mailboxKey(t.ID, addr, mb.Mode, req.Device.Token)
	if req.Source == mailpush.SourceEWS && mb.ServerURL == "" {
		if s.Autodiscover == nil {
			return nil, creds, mailpush.Errorf(mailpush.EUnsupported, "mailbox.ewsUrl is required: autodiscover is off on this server")
		}
		// Autodiscover checks every host against the tenant's list before
		// it sends anything; checkServerURL checks the result again.
		// A client identity is not sent to autodiscover (it would need
		// a TLS pool of its own there too): autodiscover asks without
		// credentials, as its JSON v2 endpoint expects anyway.
		adCreds := creds
		if creds.HasIdentity() {
			adCreds = mailpush.Credentials{}
		}
		raw, err := s.Autodiscover.LocateEWS(ctx, t, addr, adCreds)
		if err != nil {
			return nil, creds, err
		}
		if mb.ServerURL, err = s.checkServerURL(t, raw, "mailbox.ewsUrl"); err != nil {
			return nil, creds, err
		}
	}
	return mb, creds, nil
}

// mailboxKey is the keyed hash that names a registration's stored
// mailbox. A device-subscribed registration gets a mailbox of its own, keyed
// by its address and its device: it proves only that someone could POST to
// its callback URL, so the subscription it binds, the watermark, badge and
// events its notifications report, and the pushes they cause, must reach no
// other registration, and no other registration's may reach it.
func (s *Service) mailboxKey(tenantID, address string, mode mailpush.Mode, deviceToken string) []byte {
	if mode == mailpush.ModeDeviceSubscribed {
		return s.Keys.HashAddress(tenantID, address+"\x00device-subscribed\x00"+deviceToken)
	}
	return s.Keys.HashAddress(tenantID, address)
}

// deviceSubscribedSource reports whether a source's mailboxes can be in
// device-subscribed mode: only EWS lets a device subscribe itself (mailbox
// puts Dovecot and Graph in service mode), so only there can a device have a
// device-subscribed registration to drop, and the lookup for it is skipped
// elsewhere.
func deviceSubscribedSource(src mailpush.Source) bool { return src == mailpush.SourceEWS }

// dropDeviceSubscribed removes the device's device-subscribed registration
// for the address once the device proved itself in a stronger mode: it
// would otherwise get each mail twice.
func (s *Service) dropDeviceSubscribed(ctx context.Context, t *mailpush.Tenant, mb *mailpush.Mailbox, dev mailpush.Device) error {
	own, err := s.Store.MailboxByAddress(ctx, t.ID, s.mailboxKey(t.ID, mb.Address, mailpush.ModeDeviceSubscribed, dev.Token), mb.Source)
	if mailpush.ErrorCode(err) == mailpush.ENotFound {
		return nil
	}
	if err != nil {
		return err
	}
	regs, err := s.Store.ActiveRegistrations(ctx, own.ID)
	if err != nil {
		return err
	}
	for _, r := range regs {
		if r.Device.Token == dev.Token {
			if err := s.Store.DeleteRegistration(ctx, t.ID, r.ID); err != nil && mailpush.ErrorCode(err) != mailpush.ENotFound {
				return err
			}
		}
	}
	return nil
}

func deviceSubscribedOff(t *mailpush.Tenant) error {
	return mailpush.Errorf(mailpush.EUnsupported, "tenant %s does not accept device-subscribed registrations (mailpush tenant set %s --device-subscribed on): register with mailbox.sealedCredentials", t.Name, t.Name)
}

// checkService admits a service-mode registration: the user proves it
// (their own credentials, checked by the source's verifier and then
// forgotten), or the tenant's backend vouches for the user (a backend
// token). An app token without a proof gets nothing: it ships inside every
// app, so its holder could name anyone's address.
func (s *Service) checkService(ctx context.Context, t *mailpush.Tenant, scope mailpush.Scope, mb *mailpush.Mailbox, creds mailpush.Credentials) error {
	v, ok := s.Verifiers[mb.Source]
	if !creds.Empty() {
		if !ok {
			return mailpush.Errorf(mailpush.EUnsupported, "this server cannot check a user's own credentials for source %s: register without mailbox.sealedCredentials, with a backend token", mb.Source)
		}
		return v.VerifyCredentials(ctx, t, mb.Address, creds)
	}
	if scope == mailpush.ScopeBackend {
		return nil
	}
	how := "a backend token"
	if ok {
		how += ", or the user's own password in mailbox.sealedCredentials"
	}
	return mailpush.Errorf(mailpush.EScope, "a service-mode registration (the tenant's own identity watches the mailbox) needs %s: an app token alone cannot vouch for a user", how)
}

func (s *Service) checkServerURL(t *mailpush.Tenant, raw, field string) (string, error) {
	if len(raw) > 2048 {
		return "", mailpush.Errorf(mailpush.EInvalid, "%s is longer than 2048 characters", field)
	}
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || u.User != nil || u.Fragment != "" {
		return "", mailpush.Errorf(mailpush.EInvalid, "%s must be an absolute https URL without user info, such as https://mail.example.com/EWS/Exchange.asmx", field)
	}
	switch {
	case u.Scheme == "https":
	case u.Scheme == "http" && s.AllowInsecureEWS:
	default:
		return "", mailpush.Errorf(mailpush.EInvalid, "%s must use https (credentials travel to it)", field)
	}
	if !t.URLAllowed(u) {
		return "", mailpush.Errorf(mailpush.EForbidden, "%s host %q (with its port; none means the scheme's default) is not one of the tenant's allowed mail-server hosts", field, u.Host)
	}
	return u.String(), nil
}

// ParseAddress validates a mailbox address: a plain e-mail address.
func ParseAddress(in string) (string, error) {
	if in == "" {
		return "", mailpush.Errorf(mailpush.EInvalid, "mailbox.address is required")
	}
	if len(in) > 320 {
		return "", mailpush.Errorf(mailpush.EInvalid, "mailbox.address is longer than 320 characters")
	}
	a, err := mail.ParseAddress(in)
	if err != nil || a.Name != "" || a.Address != strings.TrimSpace(in) || !strings.Contains(a.Address, "@") {
		return "", mailpush.Errorf(mailpush.EInvalid, "mailbox.address must be a plain e-mail address such as alice@example.com")
	}
	return a.Address, nil
}

// checkPlatform refuses a device whose platform the tenant cannot push to:
// better a clear error at registration than a silent drop later.
func (s *Service) checkPlatform(t *mailpush.Tenant, p mailpush.Platform) error {
	if s.Platforms == nil || slices.Contains(s.Platforms(t), p) {
		return nil
	}
	return mailpush.Errorf(mailpush.EUnsupported, "this server has no push credentials for platform %s of tenant %s", p, t.Name)
}
