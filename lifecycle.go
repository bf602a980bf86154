package mailpush

import "context"

// Registrar is the registration lifecycle and its rules of trust, as the
// device API offers it (package registrar implements it; api translates
// HTTP to it). Every method is scoped to the caller's tenant.
type Registrar interface {
	Register(ctx context.Context, t *Tenant, req RegisterRequest) (*RegistrationResult, error)
	CheckIn(ctx context.Context, t *Tenant, id string, req CheckInRequest) (*RegistrationResult, error)
	Get(ctx context.Context, t *Tenant, id string) (*RegistrationResult, error)
	Delete(ctx context.Context, t *Tenant, id string) error
}

// RegisterRequest is a new registration as the caller asked for it.
type RegisterRequest struct {
	Scope              Scope // of the caller's token
	Device             Device
	ActiveSyncDeviceID string
	Address            string
	Source             Source
	EWSURL             string
	SealedCredentials  string
	// UserToken is the user's Entra ID token for the tenant's app (source
	// graph): the proof of a service-mode registration, checked in memory.
	UserToken string
	Content   ContentMode // empty: badge
}

// CheckInRequest is a check-in; every field is optional.
type CheckInRequest struct {
	Scope             Scope  // of the caller's token
	DeviceToken       string // a rotated push token, already validated
	SealedCredentials string
	// Address lets a service-mode subscription be renewed after a restart
	// (mailpush keeps only its hash), and names the mailbox that new sealed
	// credentials must open.
	Address string
}

// RegistrationResult is a registration as its caller sees it.
type RegistrationResult struct {
	Registration *Registration
	Mode         Mode
	CallbackURL  string // device-subscribed mode: for the app's own Subscribe
	Status       Status
}

// RegistrationRules is what a source asks of the registration lifecycle
// when a mail server reports, so that every rule of trust about which
// registration a notification may bind, activate or reach lives in one
// place (package registrar implements it). Sources keep only their own
// bookkeeping (watermarks, sequences, the subscription on the mail server).
type RegistrationRules interface {
	// Admit decides what a notification for subscriptionID, arriving
	// through a callback URL that carried tok, may change.
	Admit(ctx context.Context, tok CallbackToken, subscriptionID string) (Admission, error)
	// Activate makes a pending registration active: its own subscription
	// reached the callback URL made for it.
	Activate(ctx context.Context, reg *Registration) error
	// Suspend makes a mailbox's active registrations pending: its
	// subscription died and only their devices can renew it.
	Suspend(ctx context.Context, mailboxID string) error
}

// Admission is the registrar's answer about one notification.
type Admission struct {
	// Unsubscribe: answer Unsubscribe and change nothing (the mailbox is
	// gone, the subscription is not the mailbox's, …; the registrar logged
	// why).
	Unsubscribe bool
	Mailbox     *Mailbox
	// Registration is the registration a device-subscribed callback URL was
	// made for; nil for sealed and service mode.
	Registration *Registration
	// Bind: the notification's subscription becomes the mailbox's (a
	// device-subscribed registration's own subscription reached it first),
	// and Registration is activated once the source recorded it.
	Bind bool
}
