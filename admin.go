package mailpush

import (
	"context"
	"time"
)

// AuditEntry is one change an administrator made (through the admin
// console): who, when, to what. Actors are named by sign-in method and ID
// ("oidc:<sub>", "token:<id>"), targets by IDs or keyed hashes, never by a
// mailbox address or a secret.
type AuditEntry struct {
	ID       int64
	At       time.Time
	Actor    string
	TenantID string // the tenant the change was made in; "" for server-wide
	Action   string // e.g. gate.block, deadletter.retry, tenant.update
	Target   string
	Detail   string
}

// AuditLog keeps the audited actions.
type AuditLog interface {
	AppendAudit(ctx context.Context, e *AuditEntry) error
	// AuditEntries lists the newest entries first; tenantID "" lists all.
	AuditEntries(ctx context.Context, tenantID string, limit int) ([]AuditEntry, error)
}

// SourceHealth sums up the subscriptions (mailboxes) of one source in one
// status: how many, how many are overdue (no event since the time asked
// about), and the newest event.
type SourceHealth struct {
	Source      Source
	Status      Status
	Mailboxes   int
	Overdue     int
	LastEventAt time.Time
}

// AdminReader is what the admin console reads beside the Store: lists that
// the request paths never need.
type AdminReader interface {
	// SubscriptionHealth groups the mailboxes of tenantID ("" for every
	// tenant) by source and status; Overdue counts those whose last event
	// is before overdueBefore.
	SubscriptionHealth(ctx context.Context, tenantID string, overdueBefore time.Time) ([]SourceHealth, error)
	// GateDevices lists up to limit of a tenant's gate devices, most
	// recently changed first.
	GateDevices(ctx context.Context, tenantID string, limit int) ([]*GateDevice, error)
	// DropDeadLetter deletes one dead letter of a tenant.
	DropDeadLetter(ctx context.Context, tenantID, pushID string) error
}
