package mailpush

import (
	"context"
	"time"
)

// Outbox is the durable queue of pushes between the pipeline and the
// providers. A push accepted from a source is in the outbox before the source
// acknowledges the mail server, and leaves it only when a provider answered
// for good, so delivery is at least once across crashes.
//
// Rows are claimed with a lease: a claimed row is invisible to other claims
// until the lease ends, and a process that dies while holding it simply lets
// it run out. This is what lets a PostgreSQL store claim with
// FOR UPDATE SKIP LOCKED from several nodes; SQLite has one writer and
// batches instead.
type Outbox interface {
	// EnqueuePushes stores pushes in one transaction. A badge or sync push
	// replaces the pushes of the same kind for the same registration that
	// are still queued with a lower or equal sequence (coalescing). Push
	// content (subject, sender, sealed content) is stored encrypted; the
	// device is not stored: it is read from the registration when the push
	// is claimed, so a push to a deactivated registration is never sent.
	EnqueuePushes(ctx context.Context, pushes []*Push) error
	// ClaimPushes leases up to limit pushes that are due at now, oldest
	// first, until now+lease, counting one more attempt on each. Pushes of
	// registrations that are gone or inactive are deleted instead.
	ClaimPushes(ctx context.Context, now time.Time, limit int, lease time.Duration) ([]*QueuedPush, error)
	// SettlePushes records what became of claimed pushes, in one transaction.
	SettlePushes(ctx context.Context, settlements []PushSettlement) error
	// OutboxDepth counts the queued pushes (leased or not).
	OutboxDepth(ctx context.Context) (int, error)
	// DeadLetters lists the most recent dead letters, newest first.
	DeadLetters(ctx context.Context, limit int) ([]DeadLetter, error)
}

// QueuedPush is a claimed push: the push with its device filled in from the
// registration, and what the queue knows about it.
type QueuedPush struct {
	OutboxID     int64
	Push         Push
	Attempts     int       // including the one this claim starts
	LastSeq      int64     // highest sequence delivered to the registration so far
	RegUpdatedAt time.Time // when the registration last changed (token re-registered)
}

// SettleAction is what to do with a claimed push.
type SettleAction int

const (
	SettleDone  SettleAction = iota // delivered, dropped or superseded: delete it
	SettleRetry                     // keep it, due again at DueAt
	SettleDead                      // move it to the dead letters with Reason
)

// PushSettlement is the fate of one claimed push.
type PushSettlement struct {
	OutboxID       int64
	Action         SettleAction
	RegistrationID string
	// Seq, when positive on SettleDone, is the sequence now delivered to the
	// registration: it raises the registration's last delivered sequence.
	Seq    int64
	DueAt  time.Time // SettleRetry
	Undo   bool      // SettleRetry: the attempt did not happen (rate limit), do not count it
	Reason string    // SettleRetry, SettleDead: provider status/reason, never content
}

// DeadLetter is a push given up on: permanently refused, or out of
// attempts. It keeps no content and no device token.
type DeadLetter struct {
	PushID         string
	TenantID       string
	RegistrationID string
	MailboxID      string
	Kind           PushKind
	Seq            int64
	Attempts       int
	Reason         string
	CreatedAt      time.Time
	DeadAt         time.Time
}
