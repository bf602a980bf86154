package mailpush

import (
	"context"
	"time"
)

// HealOutcome is what a source did with one mailbox whose subscription the
// subscription engine found due (silent, expiring or removed).
type HealOutcome int

// The outcomes of Healer.Heal.
const (
	HealNothing      HealOutcome = iota // nothing needed after all
	HealResubscribed                    // made again or renewed by mailpush
	HealAsked                           // the devices were asked to check in
	HealFailed                          // not healed; the next sweep tries again
)

// Healer is a source's part of the subscription engine: it heals one
// mailbox whose subscription is due, by renewing it, making it again, or
// asking the mailbox's devices to check in. The engine decides which
// mailboxes, when, and how many at once; the source knows how.
type Healer interface {
	Heal(ctx context.Context, mb *Mailbox) HealOutcome
}

// SubscriptionEngine is what a source asks of the engine that keeps its
// subscriptions alive (package subscription): places within the per-host and
// per-account limits for the requests it starts on its own, a host's request
// for a pause, and the notifications it heard (for the host-level rule).
type SubscriptionEngine interface {
	// Acquire waits for a place for one request to host on behalf of
	// account; release must be called once.
	Acquire(ctx context.Context, host, account string) (release func(), err error)
	// Busy records that host asked for a pause of d before the next request.
	Busy(host string, d time.Duration)
	// Heard records a notification of mailboxID from host at at.
	Heard(host, mailboxID string, at time.Time)
	// Pace waits for the next start slot at the engine's rate, shared
	// with its own heals (a migration's subscription writes take them too).
	Pace(ctx context.Context) error
}

// String names an outcome for people (the admin console).
func (o HealOutcome) String() string {
	switch o {
	case HealResubscribed:
		return "resubscribed (renewed or made again)"
	case HealAsked:
		return "devices asked to check in"
	case HealFailed:
		return "failed: tried again when due"
	}
	return "nothing needed"
}

// HealRecord is one heal of the subscription engine, running or ended, as
// the admin console lists it: the mailbox by ID (never its address), why it
// was healed and how it ended.
type HealRecord struct {
	MailboxID string
	TenantID  string
	Reason    string
	Started   time.Time
	Ended     time.Time // zero while running
	Outcome   HealOutcome
}
