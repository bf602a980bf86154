package mailpush

import (
	"context"
	"sync"
	"time"
)

// Outbox is the durable queue between the sources and the providers. It has
// two tiers (the pipeline package doc has the whole design):
//
//   - Events: one row per accepted event, whatever the number of devices of
//     its mailbox. A source acknowledges the mail server once the event row
//     is durable; the pipeline claims events in batches, fans each out to the
//     mailbox's active devices in memory and sends. An event leaves the
//     outbox in the same transaction that records what its fan-out left
//     behind, so a crash in the middle of a fan-out sends the whole event
//     again (at least once).
//   - Device pushes: one row per push that carries state the event row
//     cannot: a retry after a failure, a push held behind an earlier one of
//     its device (order), a push waiting for a rate limit. When every device
//     answers 200, the event tier writes nothing per device.
//
// Rows are claimed with a lease: a claimed row is invisible to other claims
// until the lease ends, and a process that dies while holding it simply lets
// it run out. This is what lets a PostgreSQL store claim with
// FOR UPDATE SKIP LOCKED from several nodes; SQLite has one writer and
// batches instead.
type Outbox interface {
	// EnqueueEvents stores events in one transaction. An event whose every
	// push would be a badge (or every push a sync) replaces the queued,
	// unclaimed events of the same mailbox and class with a lower or equal
	// sequence, and is not stored when one with a higher sequence is queued
	// (coalescing). Subject and sender are stored sealed.
	EnqueueEvents(ctx context.Context, events []*OutboxEvent) error
	// ClaimEvents leases up to limit events due at now, oldest first, until
	// now+lease, counting one more attempt on each. An event is not claimed
	// while an older event of its mailbox is leased, so a mailbox's events
	// are fanned out in order.
	ClaimEvents(ctx context.Context, now time.Time, limit int, lease time.Duration) ([]*OutboxEvent, error)
	// Recipients lists the registrations of the given mailboxes that are
	// active, or pending but active at since or later (LeftActiveAt), with
	// their push tokens opened, grouped by mailbox (in no particular order
	// within one: a device's pushes are ordered by event, not by device),
	// and for each whether device pushes of it are queued (then new pushes
	// queue behind them).
	Recipients(ctx context.Context, mailboxIDs []string, since time.Time) ([]*Recipient, error)
	// SettleEvents records a fanned-out batch in one transaction (the
	// events leave the outbox and raise their mailboxes' fanned-out
	// sequence; delivered sequences are raised; device pushes and dead
	// letters are written) and, when limit > 0, claims the next batch of
	// events in the same transaction, as ClaimEvents would.
	SettleEvents(ctx context.Context, st EventSettlement, now time.Time, limit int, lease time.Duration) ([]*OutboxEvent, error)

	// EnqueuePushes stores pushes in one transaction. A badge or sync push
	// replaces the pushes of the same kind for the same registration that
	// are still queued with a lower or equal sequence (coalescing). Push
	// content (subject, sender, sealed content) is stored encrypted; the
	// device is not stored: it is read from the registration when the push
	// is claimed, so a push to a deactivated registration is never sent.
	EnqueuePushes(ctx context.Context, pushes []*Push) error
	// ClaimPushes leases up to limit pushes that are due at now, oldest
	// first, until now+lease, counting one more attempt on each. A push is
	// not claimed while an older push of its registration is leased or
	// waiting for a retry, so a device's pushes are sent in order even with
	// several claims in flight. Pushes of registrations that are gone or
	// inactive are deleted instead.
	ClaimPushes(ctx context.Context, now time.Time, limit int, lease time.Duration) ([]*QueuedPush, error)
	// SettlePushes records what became of claimed pushes, in one transaction.
	SettlePushes(ctx context.Context, settlements []PushSettlement) error
	// SettleAndClaim is SettlePushes then ClaimPushes in one transaction
	// (one commit instead of two; limit 0 claims nothing). The claim sees
	// the settlement; a failure leaves both undone (the settled pushes stay
	// leased and are sent again after the lease: at least once).
	SettleAndClaim(ctx context.Context, settlements []PushSettlement, now time.Time, limit int, lease time.Duration) ([]*QueuedPush, error)
	// OutboxDepth counts the queued events and device pushes (leased or not).
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

// OutboxEvent is an accepted event in the outbox, waiting for its fan-out.
type OutboxEvent struct {
	OutboxID int64
	// ID is unique; the IDs of the event's pushes derive from it (PushID), so
	// a fan-out sent again after a crash carries the same apns-id.
	ID    string
	Event Event // Subject and Sender in clear in memory, sealed at rest
	// Unresolved marks an event stored before its badge and content were
	// known (a source that acknowledges before fetching from the mail
	// server): the pipeline's Resolver completes it after the claim, before
	// the fan-out. It never carries credentials.
	Unresolved bool
	Attempts   int       // including the one this claim starts
	CreatedAt  time.Time // when the event was accepted
	// Record, when set, moves the event's mailbox with the event, in the
	// transaction that stores it (one write for both, so a source's
	// acknowledgement waits for one commit): EnqueueEvents reads the
	// mailbox, calls Record on it, writes it back and stores the event
	// with the mailbox's sequence as Event.Seq, only when Record reports
	// news. A mailbox that is gone stores nothing. Record may run more than
	// once (a transaction tried again), each time on a fresh read.
	Record func(*Mailbox) (news bool)
}

// Recipient is one active device of a mailbox, as the fan-out needs it.
type Recipient struct {
	RegistrationID string
	TenantID       string
	MailboxID      string
	Device         Device // token opened
	Content        ContentMode
	// LastSeq is the highest sequence delivered to it so far: the higher of
	// its mailbox's last fanned-out event and what the device tier
	// delivered to it.
	LastSeq   int64
	UpdatedAt time.Time // when the registration last changed
	// LeftActiveAt is zero for an active registration; for a pending one,
	// when it stopped being active: it still gets the pushes of events
	// accepted before then (they were decided while it was active).
	LeftActiveAt time.Time
	// Held: device pushes of this registration are queued (a retry, a rate
	// limit): the event's push must queue behind them, not overtake them.
	Held bool
	// Unreadable is why the stored token cannot be used (damaged, or sealed
	// with a key the service no longer has); then Device.Token is empty and
	// the push goes to the dead letters.
	Unreadable string
}

// EventSettlement is what a batch of fanned-out events leaves behind.
type EventSettlement struct {
	Events []int64 // OutboxIDs of the events fanned out: they leave the outbox
	// Delivered raises registrations' last sequences (SettleDone with
	// RegistrationID and Seq); the events' own sequences count for every
	// device of their mailbox without it.
	Delivered []PushSettlement
	Queue     []DevicePush // pushes that must wait: stored as device pushes
	Dead      []DeadLetter // pushes given up on
}

// DevicePush is a push stored in the device tier, with its queue state.
type DevicePush struct {
	Push     *Push
	DueAt    time.Time
	Attempts int    // already made
	Reason   string // why it waits (provider status, rate limit, order)
}

// CoalesceClass is the kind of every push the event becomes, when all are of
// one kind that coalesces (PushBadge or PushSync): a newer event of the same
// mailbox and class makes it redundant. It is empty for an event that may
// become an alert, and for an unresolved one.
func (e *OutboxEvent) CoalesceClass() PushKind {
	ev := &e.Event
	switch {
	case e.Unresolved || ev.Kind == EventNewMail && ev.Subject != "":
		return ""
	case ev.Kind == EventResync || ev.Badge == NoBadge:
		return PushSync
	}
	return PushBadge
}

// SharedPayload holds a provider's encoding of a payload that several pushes
// carry (see Push.Shared). The zero value is ready; a nil one builds every
// time.
type SharedPayload struct {
	mu     sync.Mutex
	bodies map[string][]byte // by provider
}

// Payload returns the provider's payload, building it on first use. A build
// that fails is not kept (each push then reports the error).
func (s *SharedPayload) Payload(provider string, build func() ([]byte, error)) ([]byte, error) {
	if s == nil {
		return build()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if b, ok := s.bodies[provider]; ok {
		return b, nil
	}
	b, err := build()
	if err != nil {
		return nil, err
	}
	if s.bodies == nil {
		s.bodies = map[string][]byte{}
	}
	s.bodies[provider] = b
	return b, nil
}
