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
