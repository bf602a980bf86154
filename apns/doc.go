// Package apns delivers pushes to Apple devices through the Apple Push
// Notification service (APNs) HTTP/2 provider API. Client implements
// mailpush.Pusher.
//
// Choices, briefly:
//
//   - github.com/sideshow/apns2 builds the requests (headers from the
//     notification, the /3/device path), decodes APNs' answers and signs the
//     provider token. It is small, widely used and does only that, which is
//     why we take it over hand-rolled protocol code.
//   - Token (.p8) authentication by default: one key serves every
//     app of the team, never expires, and needs no yearly renewal. The
//     token.Token of apns2 re-signs its JWT when it is 50 minutes old
//     (token.TokenTimeout): Apple wants a new token between 20 and 60
//     minutes, refuses one older than an hour (ExpiredProviderToken) and
//     answers 429 TooManyProviderTokenUpdates when they change more often.
//     The production and sandbox connections share one token.Token, so the
//     JWT is signed once per period, not once per push or per connection.
//   - Certificate (.p12) authentication beside it, for deployments that
//     only have the app's APNs certificate: LoadP12 reads the Keychain
//     export with software.sslmate.com/src/go-pkcs12 (the maintained
//     PKCS #12 decoder; x/crypto/pkcs12 is frozen and misses modern
//     encryption), TLS presents it, and no provider token is sent. Such a
//     connection may push only to the topics the certificate names.
//   - Many apps, few connections: Topic is a view of a Client for another
//     bundle ID and a default environment, so that tenants whose apps share
//     a team key (or a multi-topic certificate) share its connections.
//   - Connection reuse: Apple asks providers to keep connections open and
//     treats rapid connect/disconnect as an attack. Client holds one
//     apns2.Client per environment, each on its own long-lived net/http
//     transport restricted to HTTP/2: pushes are multiplexed as streams on
//     one pooled connection (a second one opens only when APNs' concurrent
//     stream limit is reached), health-checked with HTTP/2 pings when idle.
//     The first push on a cold endpoint (or after a transport failure)
//     goes alone: net/http would otherwise dial once per waiting request.
//     We replace apns2's x/net transport with the standard library's so
//     that RootCAs, timeouts and an HTTPS proxy from the environment apply.
//   - A thin wrapper around the transport records the Retry-After header
//     and the millisecond timestamp of 410 answers, which apns2 does not
//     expose (it rounds the timestamp to seconds).
//
// Privacy: payloads carry the subject and sender only when the pipeline put
// them in the Push; this package never logs them, nor more than an 8
// character prefix of a device token.
package apns
