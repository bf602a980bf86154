// Package gate is the ActiveSync access gate: a reverse proxy in front of
// Exchange asks it, for every ActiveSync request, whether the device may
// pass (the job of XenMobile's NetScaler Connector or Workspace ONE's
// Secure Email Gateway). It serves the NetScaler-style callout
// (/services/ActiveSync/Version and /Authorize) and a forward-auth endpoint
// (/gate/auth) for nginx auth_request, Caddy forward_auth, Traefik
// ForwardAuth and HAProxy.
//
// Why it looks the way it does:
//   - A client behind the proxy can send any header. So the gate reads the
//     original request only from the headers the configured proxy sets
//     (Config.Proxy, Proxies), answers only trusted proxies, denies
//     conflicting or repeated copies, takes the client from the right end
//     of all X-Forwarded-For lines, and admits only the exact ActiveSync
//     path and MS-ASHTTP's query parameters: it must never judge a request
//     that Exchange reads differently.
//   - The user is the authenticated one (the proxy's identity header, or
//     the Basic / NTLM / Bearer user that Exchange will serve), never the
//     query's User, compared in one canonical form (Identity).
//   - DeviceIds are ASCII letters and digits compared without ASCII case:
//     a Unicode case or space rule would let look-alikes match.
//   - Proxies do not forward the body to an auth callout, so a decision uses
//     only what the URI and headers say: DeviceId, DeviceType, User, Cmd
//     (from the plain or the base64 query, ParseQuery), User-Agent and the
//     client address. Anything malformed is denied with a reason, never
//     allowed by accident (the fuzz targets assert it).
//   - Policy is XNC-style: ordered rules, first match wins, after the MDM's
//     blocked and wiped states and before the mode (Policy.Decide).
//   - The registry's answer is cached per device for a short TTL, bounded;
//     changes made through Registry invalidate it at once, so a block takes
//     effect on the next request. Other processes' changes (the import
//     command, another node) are seen within the TTL.
//   - Users are hashed with the service's keyed hash as soon as they are
//     read; the password of a Basic header is never copied out. DeviceIds
//     and client addresses reach the audit log hashed unless configured
//     otherwise (Config.AuditIdentifiers).
//   - Last-seen times are written in batches by one goroutine from a bounded
//     queue, at most once a minute per device, so that the request path
//     never waits for a write.
//   - Audit lines are formatted and written by one goroutine too, in
//     batches of whole lines, woken every few hundred decisions rather than
//     per decision (audit.go). Unlike last-seen times they are never
//     dropped: a full queue makes the request wait, and Close writes them
//     all.
package gate
