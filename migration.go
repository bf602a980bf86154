package mailpush

import (
	"context"
	"encoding/hex"
	"time"
)

// Migrator moves a tenant's mailboxes from one source to another while the
// server runs: `mailpush tenant migrate NAME --to graph` (EWS to Microsoft
// Graph, package graph). The server does it, not the CLI: the new
// subscriptions' validation handshakes reach the server's webhooks, and the
// mailboxes' addresses (mailpush stores only keyed hashes) are in the
// server's memory only.
type Migrator interface {
	// StartMigration starts the tenant's migration to source to in the
	// background, or returns the one running (a conflict when it differs
	// in dryRun). Re-running after a run that stopped half-way finishes
	// the rest: what was moved is not moved again.
	StartMigration(ctx context.Context, t *Tenant, to Source, dryRun bool) (*MigrationReport, error)
	// Migration returns the tenant's current or last migration to source
	// since the server started, once it is done or wait has passed.
	Migration(ctx context.Context, t *Tenant, to Source, wait time.Duration) (*MigrationReport, error)
}

// MigrationState says whether a migration still runs.
type MigrationState string

const (
	MigrationRunning MigrationState = "running"
	MigrationDone    MigrationState = "done"
	MigrationFailed  MigrationState = "failed" // stopped by an error (Error says which); run it again
)

// Why a mailbox stays on its old source.
const (
	StayNotInTarget      = "not_in_graph"      // Graph answers 404 for the user
	StayAddressUnknown   = "address_unknown"   // not in memory yet: known again at the mailbox's next EWS notification
	StayDeviceSubscribed = "device_subscribed" // the device subscribed itself: mailpush never learns the address
	StayFailed           = "failed"            // an error; Detail says which
)

// MigrationReport is what a migration did, or in a dry run would do.
// Mailboxes are named by ID (and a short keyed hash of the address), never
// by address.
type MigrationReport struct {
	Tenant     string
	To         Source
	DryRun     bool
	State      MigrationState
	Error      string // why State is failed
	StartedAt  time.Time
	FinishedAt time.Time
	// Mailboxes and Registrations are the tenant's live mailboxes of the
	// old source when the run started, and their live registrations.
	Mailboxes     int
	Registrations int
	// Migrated mailboxes (dry run: that would migrate) and the
	// registrations they took along.
	Migrated           int
	MovedRegistrations int
	// GraphReads are the user lookups (GET users/{id}); GraphWrites the
	// subscriptions created (none in a dry run).
	GraphReads  int
	GraphWrites int
	// Stayed lists the mailboxes that stay on the old source, and why.
	Stayed []MigrationStay
}

// MigrationStay is one mailbox that stays on its old source.
type MigrationStay struct {
	MailboxID string
	AddressID string // a short keyed hash of the address, for correlating with logs
	Reason    string // one of the Stay… constants
	Detail    string
}

// Complete reports whether the migration finished with every mailbox moved.
func (r *MigrationReport) Complete() bool {
	return r.State == MigrationDone && len(r.Stayed) == 0
}

// AddressID is a short printable form of the mailbox's address hash (as
// seal.AddressID): it names a mailbox in a report without its address.
func (m *Mailbox) AddressID() string {
	h := m.AddressHash
	if len(h) > 6 {
		h = h[:6]
	}
	return hex.EncodeToString(h)
}
