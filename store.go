package mailpush

import (
	"context"
	"errors"
	"time"
)

// The store is split into the roles its users need: an adapter takes the
// narrowest role that serves it (the gate a GateStore, the subscription
// engine a MailboxStore, the pipeline the Outbox), so what a package can
// touch is visible in its types and a test fake implements only that.
// Implementations: sqlite (embedded default) and postgres (multi-node);
// both pass storetest.Run, which exercises every role.
//
// Lookups of a missing object return an *Error with code ENotFound, never
// (nil, nil). Lookups scoped by tenant treat another tenant's object as missing.
type Store interface {
	TenantStore
	RegistrationStore
	MailboxStore
	GateStore
	GateRuleStore
	MigrationStore
	// Outbox is the durable push queue (see Outbox).
	Outbox

	// AdminReader and AuditLog serve the admin console (admin.go).
	AdminReader
	AuditLog
	ConsoleSessionStore
	SharedKeyStore
	// OAuthGrantStore shares the EWS OAuth refreshes (oauthgrant.go).
	OAuthGrantStore

	// Ping reports whether the store can answer.
	Ping(ctx context.Context) error
	Close() error
}

// TenantStore keeps tenants and their API tokens (the API, the CLI, the console).
type TenantStore interface {
	CreateTenant(ctx context.Context, t *Tenant) error
	Tenant(ctx context.Context, id string) (*Tenant, error)
	TenantByName(ctx context.Context, name string) (*Tenant, error)
	UpdateTenant(ctx context.Context, t *Tenant) error
	// Tenants lists every tenant by name.
	Tenants(ctx context.Context) ([]*Tenant, error)
	// DeleteTenant removes a tenant with everything that is its own:
	// registrations, mailboxes, gate devices, queued pushes and dead letters.
	DeleteTenant(ctx context.Context, id string) error

	// CreateToken stores a tenant's API token (its ID and secret hash are
	// set; CreatedAt is set when zero).
	CreateToken(ctx context.Context, tok *Token) error
	// Token returns the token with the given ID, of any tenant.
	Token(ctx context.Context, id string) (*Token, error)
	// Tokens lists a tenant's tokens, oldest first.
	Tokens(ctx context.Context, tenantID string) ([]*Token, error)
	// DeleteToken revokes a tenant's token; it stops working at once.
	DeleteToken(ctx context.Context, tenantID, id string) error
}

// RegistrationStore keeps device registrations (the registrar, the sources).
type RegistrationStore interface {
	// Register stores reg for the mailbox of (mb.TenantID, mb.AddressHash,
	// mb.Source), creating the mailbox from mb when there is none yet. It
	// returns the stored mailbox (which may be an existing one: then mb's
	// mutable fields are not applied) and sets reg.MailboxID. A registration of
	// the same device token for the same mailbox is replaced, keeping its ID.
	// When check is not nil, Register calls it inside its write transaction
	// with what it found there, before writing; an error from check
	// refuses the registration, writes nothing and is returned as is. check
	// may be called more than once, each time in a new transaction (a store
	// that commits concurrent registrations together runs one again after
	// another's failure rolled it back): what the last call saw is what was
	// committed.
	Register(ctx context.Context, reg *Registration, mb *Mailbox, check func(Join) error) (*Mailbox, error)
	Registration(ctx context.Context, tenantID, id string) (*Registration, error)
	// UpdateRegistration applies fn to the registration inside a transaction.
	// If fn returns an error nothing is written and that error is returned.
	UpdateRegistration(ctx context.Context, tenantID, id string, fn func(*Registration) error) (*Registration, error)
	DeleteRegistration(ctx context.Context, tenantID, id string) error
	// ActiveRegistrations lists a mailbox's registrations with status active
	// or pending.
	ActiveRegistrations(ctx context.Context, mailboxID string) ([]*Registration, error)
	// MailboxAudience summarizes the mailbox's active and pending
	// registrations without loading them (no token is opened): what a source
	// needs to decide about an event before it acknowledges it.
	MailboxAudience(ctx context.Context, mailboxID string) (Audience, error)
	// CountRegistrations counts a tenant's registrations with status active
	// or pending (for its quota).
	CountRegistrations(ctx context.Context, tenantID string) (int, error)
	// SetCallbackURL keeps the callback URL that a device-subscribed
	// registration was given (sealed at rest: it is a capability), so that
	// reading the registration returns the same URL; CallbackURL returns it
	// (ENotFound when there is none). It goes when the registration goes.
	SetCallbackURL(ctx context.Context, tenantID, registrationID, url string) error
	CallbackURL(ctx context.Context, tenantID, registrationID string) (string, error)
}

// MailboxStore keeps mailboxes and their subscription state (the sources
// and the subscription engine).
type MailboxStore interface {
	Mailbox(ctx context.Context, id string) (*Mailbox, error)
	MailboxBySubscription(ctx context.Context, subscriptionID string) (*Mailbox, error)
	// MailboxByAddress returns the tenant's mailbox of the given source whose
	// address has the given keyed hash (sources that name users by address,
	// such as Dovecot, find their mailbox this way).
	MailboxByAddress(ctx context.Context, tenantID string, addressHash []byte, source Source) (*Mailbox, error)
	// UpdateMailbox applies fn to the mailbox inside a transaction, so that
	// concurrent notifications for one mailbox do not lose each other's writes.
	UpdateMailbox(ctx context.Context, id string, fn func(*Mailbox) error) (*Mailbox, error)
	// StaleMailboxes lists up to limit mailboxes of source, status active or
	// pending, whose LastEventAt is before the given time, oldest first: the
	// subscriptions that a health monitor must look at.
	StaleMailboxes(ctx context.Context, source Source, before time.Time, limit int) ([]*Mailbox, error)
}

// MigrationStore moves a tenant's mailboxes from one source to another
// (`mailpush tenant migrate`: EWS to Microsoft Graph).
type MigrationStore interface {
	// TenantMailboxes lists up to limit of the tenant's mailboxes of source
	// with status active or pending whose ID sorts after afterID, by ID.
	TenantMailboxes(ctx context.Context, tenantID string, source Source, afterID string, limit int) ([]*Mailbox, error)
	// EnsureMailbox returns the mailbox of (mb.TenantID, mb.AddressHash,
	// mb.Source), creating it from mb when there is none (then mb.ID is
	// used when set).
	EnsureMailbox(ctx context.Context, mb *Mailbox) (*Mailbox, error)
	// MoveRegistrations moves every registration of mailbox fromID to
	// mailbox toID of the same tenant in one transaction, keeping their IDs;
	// a device (push token) that toID has already keeps toID's registration
	// and its other one is deleted. toID's sequence is raised to fromID's
	// (the moved devices have seen it: later events must not look stale).
	// fromID is then inactive. It returns how
	// many registrations moved; 0 when fromID had none left (a second run).
	MoveRegistrations(ctx context.Context, fromID, toID string) (int, error)
}

// GateStore keeps the ActiveSync gate's device registry (the gate).
type GateStore interface {
	// PutGateDevice creates or replaces the gate device (d.TenantID,
	// d.DeviceID), keeping its CreatedAt and LastSeen; it sets d's times.
	PutGateDevice(ctx context.Context, d *GateDevice) error
	GateDevice(ctx context.Context, tenantID, deviceID string) (*GateDevice, error)
	DeleteGateDevice(ctx context.Context, tenantID, deviceID string) error
	// TouchGateDevices records when devices were last seen at the gate;
	// devices not in the registry are ignored.
	TouchGateDevices(ctx context.Context, tenantID string, seen map[string]time.Time) error
	// DeleteRegistrationsByActiveSyncDevice removes a tenant's registrations
	// whose Device.ActiveSyncDeviceHash is hash, like DeleteRegistration, and
	// returns how many it removed.
	DeleteRegistrationsByActiveSyncDevice(ctx context.Context, tenantID string, hash []byte) (int, error)
}

// SharedKeyStore keeps keys that every node must hold and that mailpush
// makes itself (Graph's rich-notification certificates with their private
// keys: a notification encrypted to a certificate one node made reaches any
// node). The store seals each value with its field cipher, bound to its kind
// and ID (StoreCodec.SealSharedKey).
type SharedKeyStore interface {
	// PutSharedKey stores value under (kind, id) until notAfter; a value
	// already stored under them is kept (two nodes that make one at once
	// keep theirs under their own IDs).
	PutSharedKey(ctx context.Context, kind, id string, value []byte, notAfter time.Time) error
	// SharedKeys lists the kind's keys that have not ended at now, the
	// latest-ending last. A value that cannot be opened (a retired key) is
	// left out.
	SharedKeys(ctx context.Context, kind string, now time.Time) ([]SharedKey, error)
	// DeleteSharedKeys removes the kind's keys that ended before the time.
	DeleteSharedKeys(ctx context.Context, kind string, endedBefore time.Time) error
}

// SharedKey is one of SharedKeyStore's keys, opened.
type SharedKey struct {
	ID       string
	Value    []byte
	NotAfter time.Time
}

// Join is what a registration's write finds in its own transaction before
// it writes (RegistrationStore.Register's check): the registrar decides the
// quotas and a replacement on it. Deciding inside the write, not on reads
// made before it, costs no read of its own (the write finds the mailbox and
// the device's row anyway) and lets no two concurrent registrations pass a
// quota that only one of them fits.
type Join struct {
	// Mailbox is the stored mailbox the registration joins; nil when the
	// write creates it.
	Mailbox *Mailbox
	// Audience is Mailbox's (zero when Mailbox is nil).
	Audience Audience
	// Previous is the device's registration in Mailbox, of any status,
	// that the write replaces; nil when there is none.
	Previous *Registration
	// TenantRegistrations counts the tenant's active and pending
	// registrations (CountRegistrations), those written before in the same
	// transaction included.
	TenantRegistrations int
}

// Audience is what a mailbox's active and pending registrations add up to.
type Audience struct {
	Registrations int
	// WantsContent: some registration may show subject or sender (as
	// WantsContent of the registrations).
	WantsContent bool
}

// FieldCipher protects values that the store must keep but must not keep in
// clear (device push tokens). Hash gives a stable keyed hash for lookups.
// SealBound and OpenBound bind the sealed value to ad (authenticated, not
// stored): a value sealed for one row cannot be opened as another's, so
// rows cannot be swapped.
type FieldCipher interface {
	SealField(plain []byte) ([]byte, error)
	OpenField(sealed []byte) ([]byte, error)
	SealBound(plain, ad []byte) ([]byte, error)
	OpenBound(sealed, ad []byte) ([]byte, error)
	HashField(plain []byte) []byte
}

// Pusher delivers one push to a provider (APNs or FCM). A transport failure
// is reported as PushRetry with a non-nil error.
type Pusher interface {
	Push(ctx context.Context, p *Push) (PushResult, error)
}

// CredentialOpener opens credentials sealed by a device to the service key.
type CredentialOpener interface {
	OpenCredentials(sealed string) (Credentials, error)
}

// CallbackToken is what a callback URL carries, sealed so that only this
// service can read or forge it. In sealed mode it holds the user's credentials:
// they then live only in the URL that the mail server holds.
type CallbackToken struct {
	TenantID  string `json:"t"`
	MailboxID string `json:"m"`
	ServerURL string `json:"u,omitempty"`
	Address   string `json:"a,omitempty"` // service mode: the mailbox to impersonate
	// RegistrationID names the one registration whose device was given this
	// URL (device-subscribed mode): only a notification through it proves
	// that this device subscribed, so only it activates that registration.
	RegistrationID string      `json:"r,omitempty"`
	Credentials    Credentials `json:"c,omitzero"`
	// Identity names the client identity (CBA) the subscription was made
	// with: the SHA-256 of its leaf certificate, hex. The identity itself
	// is too big for a URL; it stays in the source's memory, and a URL
	// whose identity is gone (a restart) makes the devices check in.
	Identity string `json:"x,omitempty"`
	IssuedAt int64  `json:"i"` // Unix seconds
	// KeyID is the key the token was sealed with, set by OpenCallback;
	// not part of the sealed content.
	KeyID string `json:"-"`
}

// ErrRetiredKey is in the chain of the error for a value sealed with a key
// that was retired (`mailpush keys retire`): it was genuine once, and can no
// longer be opened.
var ErrRetiredKey = errors.New("sealed with a retired key")

// CallbackSealer seals and opens callback tokens.
type CallbackSealer interface {
	SealCallback(tok CallbackToken) (string, error)
	OpenCallback(s string) (CallbackToken, error)
}

// AddressHasher turns a mailbox address into the keyed hash that the store keeps.
type AddressHasher interface {
	HashAddress(tenantID, address string) []byte
}

// WatchResult is what a Watcher reports after setting up a subscription.
type WatchResult struct {
	// CallbackURL is set in device-subscribed mode: the app gives it to the
	// mail server in its own Subscribe.
	CallbackURL string
	// Status is StatusActive when the mail server confirmed the subscription,
	// StatusPending while the first notification is awaited.
	Status Status
	// Mode is the mode the watcher chose when it differs from the one asked
	// (service mode when the tenant has a service account); empty otherwise.
	Mode Mode
}

// Watcher sets up the mail-server side of a mailbox for a registration: a
// subscription made by mailpush (sealed or service mode) or a callback URL
// for the registration's device to use (device-subscribed mode). It updates
// the mailbox in the store itself.
type Watcher interface {
	Watch(ctx context.Context, t *Tenant, mb *Mailbox, reg *Registration, creds Credentials) (WatchResult, error)
}

// Admitter is a Watcher that decides a registration without the mail server
// and without a write (Dovecot: the tenant's Dovecot pushes to mailpush, so
// there is no subscription to make). Admit answers what Watch would, and
// the registrar then stores the registration and a new mailbox with that
// answer in one write instead of three (create pending, mark the mailbox
// watched, mark the registration active). An existing mailbox that is not
// yet watched as asked still goes through Watch.
type Admitter interface {
	Admit(ctx context.Context, t *Tenant, mb *Mailbox, creds Credentials) (WatchResult, error)
}

// CredentialPreparer is a Watcher whose credentials can cost CPU to open (a
// client identity: a PKCS#12's key derivation runs as many iterations as
// its maker chose). PrepareCredentials opens and checks them, and returns
// them in a form that costs next to nothing to open again (the identity as
// PEM), with the same errors Watch would give. The registrar calls it before
// anything is stored or sent, within its per-tenant bound on such work, so
// one tenant's flood of costly identities cannot hold up another's
// registrations (registrar: openers).
type CredentialPreparer interface {
	PrepareCredentials(ctx context.Context, t *Tenant, c Credentials) (Credentials, error)
}

// Unwatcher is a Watcher that ends a mailbox's subscription itself when its
// last registration goes (Graph deletes it; EWS needs no call: its next
// notification is answered Unsubscribe).
type Unwatcher interface {
	Unwatch(ctx context.Context, mb *Mailbox) error
}

// EWSLocator finds a mailbox's EWS URL from its address (autodiscover). The
// URL it returns lies on one of t's allowed hosts, and it sends no request
// to any other host. creds, when not empty, may authenticate the lookup.
type EWSLocator interface {
	LocateEWS(ctx context.Context, t *Tenant, address string, creds Credentials) (string, error)
}
