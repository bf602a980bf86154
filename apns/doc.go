// Package apns delivers pushes to Apple devices through the Apple Push
// Notification service (APNs) HTTP/2 provider API. Client implements
// mailpush.Pusher.
//
// Choices, briefly:
//
//   - Requests are built here, on the standard library's HTTP/2 transport:
//     the provider API is one POST per push with a handful of headers, and
//     the hot path is worth owning. A push reuses a pooled request (header
//     map and value slices rebuilt in place, shared values such as the
//     bearer header built once per token), sends the payload that the
//     pushes of an event share without copying or re-encoding it, and goes
//     straight to the transport's RoundTrip: no http.Client (whose timeout
//     on a wrapped transport costs a goroutine and a timer per request),
//     no JSON decoder for the empty 200 answer. Only the header fields
//     APNs reads go on the wire: no user-agent, accept-encoding or
//     content-type, and no apns-priority when it is APNs' default of 10
//     (each field is HPACK work on every push). Compared with the
//     github.com/sideshow/apns2 client used before, a push against the fake
//     costs 140 instead of 197 allocations, server side included
//     (BenchmarkPush). From apns2 only the token package remains.
//   - Token (.p8) authentication by default: one key serves every
//     app of the team, never expires, and needs no yearly renewal. The
//     token.Token of github.com/sideshow/apns2 re-signs its JWT when it is 50 minutes old
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
//     long-lived net/http transport per environment, restricted to HTTP/2:
//     pushes are multiplexed as streams on one pooled connection (a second
//     one opens only when APNs' concurrent stream limit is reached),
//     health-checked with HTTP/2 pings when idle. The first push on a cold
//     endpoint (or after a transport failure) goes alone: net/http would
//     otherwise dial once per waiting request. RootCAs, timeouts and an
//     HTTPS proxy from the environment apply.
//   - The answer is read here too: the status, the reason of an error
//     body, the Retry-After header and the millisecond timestamp of a 410.
//
// Privacy: payloads carry the subject and sender only when the pipeline put
// them in the Push; this package never logs them, nor more than an 8
// character prefix of a device token.
package apns
