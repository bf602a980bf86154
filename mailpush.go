// Package mailpush holds the domain of the mailpush server: tenants, mailboxes,
// device registrations, the events that mail servers report and the pushes that
// reach devices, the one error type of the API, and the small interfaces that
// connect the adapter packages.
//
// Data flows one way: a source (ews, graph, dovecot) turns a mail server's
// notification into an Event; the pipeline fans it out to every active device
// of the mailbox as a Push; a provider (apns, fcm) delivers it. Adapter packages
// import this package, never each other; cmd/mailpush alone wires them.
package mailpush

import (
	"context"
)

// Version is the server version, set at build time with
// -ldflags "-X github.com/mailpush/mailpush.Version=…".
var Version = "0.1.0-dev"

// EventSink receives the events that sources produce. The pipeline is the
// production sink; it returns once the event is safely accepted.
type EventSink interface {
	HandleEvent(ctx context.Context, ev Event) error
}

// MailboxEventSink is an EventSink that also moves the event's mailbox
// (sequence, badge, last event) in the write that accepts the event, so
// that a source acknowledges after one commit instead of two.
type MailboxEventSink interface {
	EventSink
	// HandleMailboxEvent applies record to the event's mailbox and, when
	// record reports news, accepts the event with the mailbox's new
	// sequence (OutboxEvent.Record). When it returns nil both are durable.
	HandleMailboxEvent(ctx context.Context, ev Event, record func(*Mailbox) (news bool)) error
}

// ResolvingSink is an EventSink that also accepts an event whose badge and
// content are not known yet (HandleUnresolvedEvent): durable before the
// mail server is answered, completed after by the source's resolver in the
// pipeline's workers, so a slow mail server never slows the answer. The
// EWS and Graph sources write to one.
type ResolvingSink interface {
	EventSink
	HandleUnresolvedEvent(ctx context.Context, ev Event) error
}

// ResolvingMailboxSink is a ResolvingSink that moves the event's mailbox in
// the write that accepts the event, resolved or not (MailboxEventSink): the
// EWS source answers Exchange after one commit for the mailbox's sequence,
// watermark and last event and the event row together.
type ResolvingMailboxSink interface {
	ResolvingSink
	MailboxEventSink
	// HandleUnresolvedMailboxEvent is HandleMailboxEvent for an event
	// whose badge and content are not known yet (HandleUnresolvedEvent).
	HandleUnresolvedMailboxEvent(ctx context.Context, ev Event, record func(*Mailbox) (news bool)) error
}

// CredentialVerifier checks a user's own credentials against the tenant's
// mail server (Dovecot: an IMAP LOGIN) without keeping them: a per-user
// proof that the holder of an app token may register that address in
// service mode.
type CredentialVerifier interface {
	VerifyCredentials(ctx context.Context, t *Tenant, address string, creds Credentials) error
}
