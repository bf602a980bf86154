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
	// DueSubscriptions counts, for each time in before, the live (active
	// or pending) mailboxes of tenantID ("" for every tenant) and source
	// whose last event is before it: the renewals that fall due by then.
	DueSubscriptions(ctx context.Context, tenantID string, source Source, before []time.Time) ([]int, error)
	// GateDevices lists up to limit of a tenant's gate devices, most
	// recently changed first.
	GateDevices(ctx context.Context, tenantID string, limit int) ([]*GateDevice, error)
	// DropDeadLetter deletes one dead letter of a tenant.
	DropDeadLetter(ctx context.Context, tenantID, pushID string) error
}

// ConsoleSession is a signed-in administrator of the admin console, kept in
// the store so that every node of a cluster accepts it. It is found by the
// SHA-256 of its cookie: the cookie itself is never stored. Display (an
// OIDC email, say) is sealed at rest.
type ConsoleSession struct {
	IDHash    []byte
	Actor     string // "oidc:<hash>" or "token:<id>"
	Display   string
	TenantID  string // "" for an operator of every tenant
	TokenID   string // the admin token of a token sign-in
	CreatedAt time.Time
	LastSeen  time.Time
}

// ConsoleSessionStore keeps the admin console's sessions.
type ConsoleSessionStore interface {
	// CreateConsoleSession stores a new session, and deletes the sessions
	// that expired (idle since before idleBefore, or created before
	// createdBefore).
	CreateConsoleSession(ctx context.Context, s *ConsoleSession, idleBefore, createdBefore time.Time) error
	// TouchConsoleSession returns the session whose cookie hash is idHash
	// and records now as its last use, if it was used at or after
	// idleBefore and created at or after createdBefore; otherwise it is
	// deleted and the error is ENotFound.
	TouchConsoleSession(ctx context.Context, idHash []byte, now, idleBefore, createdBefore time.Time) (*ConsoleSession, error)
	// DeleteConsoleSession ends a session (sign-out); a missing one is no error.
	DeleteConsoleSession(ctx context.Context, idHash []byte) error
}
