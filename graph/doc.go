// Package graph watches Microsoft 365 mailboxes through Microsoft Graph
// change notifications: since October 2026 EWS is blocked in Exchange
// Online, so for Microsoft 365 tenants this is the source, beside ews for
// Exchange Server.
//
// Mailpush subscribes as each tenant's Entra ID app (app-only tokens from
// the client-credentials grant, with a client secret or a certificate's
// signed client assertion, through golang.org/x/oauth2/clientcredentials;
// see App.TokenSource for why not MSAL), with plain REST and typed structs
// (Client): the Graph SDK's build cost buys nothing for six calls.
//
// One subscription per mailbox, on users/{address}/mailFolders('inbox')/messages
// (created, updated, deleted), shared by all its devices and deleted when
// the last registration goes (Unwatch). Both URLs carry a sealed token
// naming the tenant, the mailbox and its address; lifecycleNotificationUrl
// is always set. Each subscription's
// clientState is derived from the mailbox and a nonce stored in
// Mailbox.Watermark with the service's address key (nothing secret is
// stored) and compared in constant time on every notification. For Graph,
// Mailbox.LastEventAt is when the subscription was last created or renewed
// (Graph sends no status events): the subscription engine finds it due at
// half its lifetime and calls Heal, paced at the configured rate.
//
// Who may register: an app-scope registration carries the user's Entra ID
// token for the tenant's app (mailbox.userToken), checked against the
// authority's JWKS (signature, issuer, audience, expiry) and whose
// preferred_username, upn or email must be the mailbox's address; without
// one, only a backend-scope token may register (the API enforces it).
//
// Acknowledge before fetching: a notification POST is checked (known
// subscription of the URL's mailbox, clientState), each mailbox's changes
// in it become one unresolved event stored durably by the pipeline
// (HandleUnresolvedEvent: the outbox's event row), and only then is the POST
// answered 202. The pipeline calls Resolve after its claim, which fetches
// unreadItemCount and the newest message's subject and sender: a slow Graph
// never slows the answer Graph times.
//
// What Resolve needs is in the store, because in a cluster the node that
// claims an event is seldom the one that took its notification: the ID of
// the message a new-mail event is about travels in the event's row
// (Event.Ref, sealed with its subject and sender: it belongs to that event,
// and the row is written anyway), and the mailbox's address in the
// mailbox's row (Mailbox.StoredAddress, sealed with the store's field
// cipher and bound to the mailbox's ID; it belongs to the mailbox, and
// renewals that must recreate a subscription and the cut-over from EWS need
// it without any event). The address is written when the mailbox is
// created (the registration carries it) or when its subscription is made;
// a mailbox registered before addresses were kept learns it from its next
// notification's URL token, in the update of the mailbox that the
// notification makes anyway: one write per event stays one write. Only a
// mailbox that has neither (registered before, and silent since) resolves
// as a background push, the device fetching for itself. Lifecycle events that
// need work (reauthorizationRequired renews, subscriptionRemoved recreates)
// go to a bounded in-memory queue and its workers; "missed" is an unresolved
// event like a change (the badge is resynchronised).
//
// Rich notifications (Certs set): subscriptions include the message's
// subject, sender and read state, encrypted to a certificate that mailpush
// makes (RSA 2048, 90 days, replaced 30 days before its end and sent to
// Graph with the next renewal; previous keys kept until their end). The
// certificate and its key are kept in the store (SharedKeyStore, sealed
// with the field key), not in one node's key directory: Graph sends a
// notification to whichever node the balancer picks, and that node must
// open what was encrypted to a certificate any node made (Certs). A batch's validationTokens are
// checked (the tenant's JWKS, issuer its STS, audience our app, azp Graph's
// change-notification app) and each dataSignature (HMAC-SHA256) is verified
// before the data is decrypted; content that fails is not used and the
// message is fetched instead. Subscriptions then last at most 1,440 minutes.
//
// The cut-over from EWS (migrate.go, `mailpush tenant migrate NAME --to
// graph`, docs/migrate.md) runs in the server as a background job per
// tenant: per EWS mailbox whose address is stored (Mailbox.StoredAddress;
// for a mailbox registered before addresses were kept, what this process
// learnt from its last notification: Addresses, the EWS source's memory,
// until its next notification stores it) and whose user Graph knows, the Graph
// subscription is created and validated first, then the registrations move
// in one store transaction (same IDs), then the badge is pushed; the
// inactive EWS mailbox's subscription is answered Unsubscribe at its next
// notification. Creations take the engine's paced slots (Pace).
//
// Unknown subscriptions, another mailbox's subscription and a wrong
// clientState are ignored with a log line and no push, never an error that
// Graph would retry forever. A validation request is answered only while
// mailpush itself is creating a subscription for the URL's mailbox. That
// creating state is in the store (Mailbox.Watermark: the nonce and the
// creation's deadline), not in the creating node's memory: in a cluster the
// validation and the first notification reach any node.
package graph
