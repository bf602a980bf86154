package mailpush

import "time"

// EventKind is what happened in a mailbox.
type EventKind string

const (
	EventNewMail EventKind = "new_mail" // a message arrived in the Inbox
	EventChanged EventKind = "changed"  // read state, delete or move changed the Inbox
	EventResync  EventKind = "resync"   // events may have been missed: the device should sync
)

// Event is a source's report about a mailbox, already reduced to what a push
// needs. Subject and Sender are set only when some device of the mailbox may
// receive them; they live in memory only.
type Event struct {
	TenantID  string
	MailboxID string
	Kind      EventKind
	Badge     int // unread count in the Inbox, or NoBadge
	Subject   string
	Sender    string
	// Ref names what a source must fetch to resolve an unresolved event
	// after its claim (Graph: the ID of the message it is about). It is
	// kept sealed with Subject and Sender in the event's row, so that
	// whichever node claims the event finds it.
	Ref string
	Seq int64 // the mailbox sequence after this event; orders pushes
	At  time.Time
}

// PushKind is the kind of notification a device receives.
type PushKind string

const (
	PushBadge PushKind = "badge" // badge only, silent
	PushSync  PushKind = "sync"  // background content-available, priority 5
	PushAlert PushKind = "alert" // visible alert with subject (and sender)
)

// Push is one notification for one device.
type Push struct {
	ID             string // unique; becomes apns-id
	TenantID       string
	RegistrationID string
	MailboxID      string
	Device         Device
	Kind           PushKind
	Badge          int    // NoBadge leaves the badge unchanged
	Subject        string // alert only, plain
	Sender         string // alert only, plain
	Sealed         string // alert content HPKE-sealed to Device.ContentKey; then Subject/Sender are empty
	CollapseID     string // identical for pushes that replace each other
	Seq            int64  // the mailbox sequence this push reflects
	CreatedAt      time.Time
	// Shared, when set, is shared by the pushes of one event that carry the
	// same content (kind, badge, subject, sender; never sealed content): a
	// provider encodes their payload once, not once per device.
	Shared *SharedPayload
}

// PushOutcome classifies a provider's answer.
type PushOutcome int

const (
	PushDelivered PushOutcome = iota // accepted by the provider
	PushDropToken                    // the token is dead: deactivate the registration
	PushRetry                        // temporary failure: retry with backoff
	PushFailed                       // permanent failure of this push (never retried)
)

func (o PushOutcome) String() string {
	switch o {
	case PushDelivered:
		return "delivered"
	case PushDropToken:
		return "dropped_token"
	case PushRetry:
		return "retry"
	case PushFailed:
		return "failed"
	}
	return "unknown"
}

// PushResult is a provider's answer to one push.
type PushResult struct {
	Outcome    PushOutcome
	Status     int           // provider HTTP status, 0 when no answer came
	Reason     string        // provider reason code, e.g. "BadDeviceToken"
	RetryAfter time.Duration // provider's Retry-After, if any
	InvalidAt  time.Time     // APNs 410 timestamp: the token was invalid from then on
}
