// Package ews speaks the Exchange Web Services (EWS) push-notification
// protocol: it parses the SendNotification requests that Exchange POSTs to a
// listener, writes the listener's answer, and offers a small client for the
// few EWS operations a push service needs (Subscribe, GetFolder for the Inbox
// unread count, GetItem for subject and sender).
//
// Protocol facts this package relies on (EWS, Exchange 2010 SP1 and later):
//
//   - Messages are SOAP 1.1 envelopes (http://schemas.xmlsoap.org/soap/envelope/)
//     with operation elements in the messages namespace
//     (http://schemas.microsoft.com/exchange/services/2006/messages, prefix m)
//     and data elements in the types namespace (…/2006/types, prefix t). The
//     SOAPAction header is the messages namespace followed by "/" and the
//     operation name.
//   - A push subscription is created with m:Subscribe/m:PushSubscriptionRequest
//     whose children must come in schema order: t:FolderIds, t:EventTypes,
//     t:Watermark (optional), t:StatusFrequency (1–1440 minutes), t:URL. The
//     answer carries m:SubscriptionId and m:Watermark.
//   - Exchange then POSTs notifications to the URL, the first one (a StatusEvent)
//     right away, so the listener must be up before Subscribe is called. A
//     notification is soap:Body/m:SendNotification/m:ResponseMessages/
//     m:SendNotificationResponseMessage/m:Notification holding t:SubscriptionId,
//     t:PreviousWatermark, t:MoreEvents and the events in any mix and order:
//     StatusEvent, NewMailEvent, CreatedEvent, DeletedEvent, ModifiedEvent
//     (which may carry t:UnreadCount), MovedEvent, CopiedEvent (with OldItemId,
//     OldFolderId, OldParentFolderId) and FreeBusyChangedEvent, each with
//     t:Watermark, t:TimeStamp, t:ItemId or t:FolderId and t:ParentFolderId.
//     Unknown event elements are skipped so that newer servers stay readable.
//   - The listener answers HTTP 200 with m:SendNotificationResult/
//     m:SubscriptionStatus OK or Unsubscribe. There is no Unsubscribe operation
//     for push subscriptions (EWS's Unsubscribe is for pull subscriptions only):
//     answering Unsubscribe to the next notification is the only way to end one,
//     which is why Client has no Unsubscribe method.
//   - A failed delivery is retried after 30 s, doubling each time, until
//     StatusFrequency minutes are spent; then Exchange drops the subscription.
//     When idle, Exchange sends a StatusEvent every StatusFrequency minutes. A
//     PreviousWatermark that differs from the last watermark seen means events
//     were missed. A stale watermark (older than about 30 days) is refused with
//     ErrorInvalidWatermark.
//   - Errors come either as a response message with ResponseClass="Error" and a
//     ResponseCode, or, for schema and throttling errors, as a SOAP fault whose
//     detail carries the ResponseCode. ErrorServerBusy carries the time to wait
//     in MessageXml as t:Value Name="BackOffMilliseconds". Wrong credentials give
//     HTTP 401 with no SOAP body.
//
// Authentication (auth.go): OAuth bearer tokens (refreshed, oauth.go), client
// certificates (identity.go), Basic, NTLM (through
// github.com/Azure/go-ntlmssp, switched on per host when Exchange offers it,
// with one connection pool per identity because IIS binds NTLM to the
// connection), and a tenant's service account impersonating the mailbox
// (ExchangeImpersonation + X-AnchorMailbox; mode "service"). Each mailbox's
// X-BackEndOverrideCookie is kept in memory so that its requests stay on one
// mailbox server.
//
// Certificate-based authentication (identity.go): a sealed client identity
// (PKCS#12 and password, or PEM key and chain), opened and checked in
// memory by OpenIdentity, is the TLS client certificate of the mailbox's
// requests, over a connection pool and TLS session cache of its own. It is
// too big for a callback URL (docs/SECURITY.md measures it): the URL
// carries its leaf's fingerprint, the identity stays in the credential
// cache, and a notification whose identity is gone (a restart, an
// eviction), expired or refused by Exchange (revoked) asks the devices to
// check in.
//
// OAuth that outlives its first hour (oauth.go): sealed credentials with a
// refresh token, its token endpoint and client ID. The endpoint must lie
// under one of the tenant's OAuth authorities (Source.TokenAuthorities),
// checked before any request. The Client keeps the newest access token per
// identity in memory and refreshes it with golang.org/x/oauth2 a minute
// before it expires (by the injected Clock) and after a 401. When the
// provider rotates the refresh token, the Source subscribes again with a
// new sealed callback URL carrying it (the URL is where the credentials
// live); a refused refresh asks the devices to check in. Callback URLs
// carry the refresh token but not the access token. With several nodes
// (Client.Grants: the PostgreSQL store), memory is the first level only:
// a due refresh goes through the grant the nodes share, sealed in the
// store, under a refresh lease taken before the token endpoint is called,
// so that one node refreshes, the others take its tokens, and no
// rotated-away refresh token is ever sent again (oauth.go says why a
// lease and not a lock held across the call or an optimistic swap); only
// the node that refreshed subscribes again with the new URL.
//
// Subscriptions that heal themselves (health.go). Source.Run starts a monitor
// that every HealthInterval runs Check: a mailbox not heard of (not even a
// StatusEvent) for 2×StatusFrequency has a dead subscription. Check claims it
// (moves LastEventAt to now, so a failed attempt is retried one period later
// and another sweep leaves it alone) and heals it by mode:
//
//   - Sealed mode resubscribes from the last stored watermark, so Exchange
//     replays what was missed; on ErrorInvalidWatermark it subscribes afresh
//     and recomputes the badge with GetFolder. Credentials never go to the
//     database (DESIGN.md's promise), so the ones to resubscribe with come from
//     an in-memory cache filled whenever a callback token is opened (bounded by
//     CredentialCacheSize, never logged or persisted). After a restart the
//     cache is empty: such mailboxes fall back to what device-subscribed mode
//     does.
//   - Device-subscribed mode, and sealed mode without credentials in memory,
//     send the devices a background push asking the app to check in, and mark
//     the registrations and the mailbox pending (a pending device is not woken
//     again). The check-in (api: POST …/checkin → Watch) renews either mode: a
//     new sealed subscription, or the callback URL for the app's own Subscribe.
//
// Who may receive pushes: a registration is active only once it proved that
// its device may see the mailbox. In sealed mode that is credentials Exchange
// accepted for that registration's Watch. In device-subscribed mode the
// callback URL names its registration, and only a notification through that
// URL activates it; the subscription then becomes the mailbox's (a pending
// device's newer subscription replaces an older one, which is answered
// Unsubscribe). Only device-subscribed mailboxes bind a subscription from a
// notification: sealed and service mode learn the ID from Subscribe, so an old
// subscription's late notification cannot take the mailbox back. Nothing
// else — another device's subscription, a resubscription, a check-in without
// credentials — activates a pending registration.
//
// Dead Exchange servers are found faster, per host (hosts.go). The Source
// sees every notification; it keeps in memory, per Exchange host (the EWS
// URL's host), when the host last sent anything and when each of its
// mailboxes did. A live Exchange sends every subscription a notification at
// least every StatusFrequency (a StatusEvent when idle), so a subscription
// silent for StatusFrequency + HostSilence missed its status event. When a
// host with at least HostMinSubscriptions (config ews.hostMinSubscriptions,
// default 20) active subscriptions has sent nothing for HostSilence
// (ews.hostSilence, default 1 min) and at least HostOverdue
// (ews.hostOverdue, default 5) of its subscriptions missed their status
// event that way, the host has lost them all (restarted, or cannot reach
// us): CheckHosts, run every HostCheckInterval (ews.hostCheckInterval,
// default 10 s), claims and heals every active subscription of that host
// at once, through the same pacing and limits as Check. With status events
// spread over the StatusFrequency (mailboxes that subscribed at different
// times) this finds a restart after about HostSilence instead of
// 2×StatusFrequency; at worst (every status event of the host in one burst
// just before the restart) after StatusFrequency + HostSilence. A rule on
// the host's notification rate alone (silence ≫ StatusFrequency / N) was
// rejected: subscriptions made in a burst (a registration wave, a mass
// resubscription at ResubscribeRate) send their status events in a burst
// too, and a healthy host is then silent for most of every StatusFrequency,
// which such a rule would take for death again and again. Hosts with fewer
// subscriptions, and single dead subscriptions on a live host, are left to
// the per-subscription rule. The book is bounded by CredentialCacheSize
// mailboxes and starts empty after a restart (a host's clock starts with
// its first notification).
//
// Resubscriptions start at most ResubscribeRate per second with random
// spacing (no thundering herd after an Exchange restart), at most
// ResubscribeWorkers at once, MaxPerHost per Exchange host and MaxPerAccount
// per account (EWS allows 27 concurrent requests per account; a shared service
// account is one account). ErrorServerBusy pauses the whole host for its
// BackOffMilliseconds before the request is retried.
//
// A notification whose PreviousWatermark differs from the stored watermark
// means missed events: the badge is recomputed (GetFolder in sealed mode, a
// sync push otherwise). A batch with MoreEvents is stored but not pushed:
// its changes are merged into the push of the last batch.
//
// Acknowledge before fetching (resolve.go). A notification is answered as
// soon as its event is durable in the pipeline's outbox; nothing on that
// path calls Exchange or loads the mailbox's registrations (the registrar
// counts them). When the notification carried the Inbox's UnreadCount and
// no new message, or mailpush may not read the mailbox (device-subscribed
// mode), the event is complete and stored as it is. Otherwise it is stored
// unresolved, with the notification's count if any, and a fetch plan (the
// credentials from the callback URL, the new message's ID, whether events
// were missed) stays in memory; the pipeline's resolver workers call
// Resolve after the claim, which makes the GetFolder and GetItem calls
// (within the fetch limit, GetItem only when the tenant's content policy and
// some device allow content). A slow Exchange therefore delays the push, not
// the answer: Exchange's delivery is never held up, and its retries never
// pile up behind our fetches.
//
// One write per notification. The mailbox's move (its sequence and badge,
// the last watermark, the last event time) and the event row are one
// transaction (mailpush.ResolvingMailboxSink: HandleMailboxEvent, or
// HandleUnresolvedMailboxEvent with the fetch plan kept under the sequence
// the transaction gives the event), so the answer waits for one group
// commit, and the watermark moves exactly when its event is stored: a
// failed write leaves both, and Exchange's retry is not mistaken for a
// replay. A notification that changes nothing (a status event) writes the
// mailbox's watermark and last event time alone, also one write. The first
// notification of a subscription binds it and activates the registration
// in writes of their own before the event's, so that the fan-out finds the
// device active.
//
// After kill -9 between the answer and the fetch the event is still in the
// outbox; its plan is not (the credentials never go to disk),
// so it is pushed with the count the notification carried, or as a
// background push, unless a later notification brought the credentials
// back to memory.
//
// Errors returned by this package are *mailpush.Error values with a stable
// code; the Exchange detail, when there is one, is a *ResponseError in the
// chain. Credentials never appear in an error.
package ews
