package gate

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"time"

	"github.com/mailpush/mailpush"
)

// Routes registers the reverse-proxy endpoints (docs/gate.md) on mux. /gate/auth
// answers any method: nginx's auth_request subrequest and Traefik forward
// the original method, others send GET.
func (g *Gate) Routes(mux *http.ServeMux) {
	mux.HandleFunc("GET /services/ActiveSync/Version", g.version)
	mux.HandleFunc("GET /services/ActiveSync/Authorize", g.authorize)
	mux.HandleFunc("/gate/auth", g.forwardAuth)
}

func (g *Gate) version(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Write([]byte("mailpush-gate " + mailpush.Version + "\n"))
}

// Proxy is what one kind of reverse proxy tells the gate, and in which
// headers. The gate reads the original request's facts only from these: a
// header of another proxy's naming is not believed (and, when it disagrees,
// denies, since it can only have come from the client).
type Proxy struct {
	Name string
	// URI and Method are the headers that carry the original request target
	// and method; empty for netscaler, whose callout carries parameters.
	URI, Method string
}

// Proxies are the values of gate.proxy. X-Forwarded-For, Authorization,
// User-Agent and MS-ASProtocolVersion are read from every proxy except
// netscaler (whose callout has ip=, user=, agent= and version=).
var Proxies = map[string]Proxy{
	"nginx":     {Name: "nginx", URI: "X-Original-URI", Method: "X-Original-Method"},
	"haproxy":   {Name: "haproxy", URI: "X-Original-URI", Method: "X-Original-Method"},
	"caddy":     {Name: "caddy", URI: "X-Forwarded-Uri", Method: "X-Forwarded-Method"},
	"traefik":   {Name: "traefik", URI: "X-Forwarded-Uri", Method: "X-Forwarded-Method"},
	"netscaler": {Name: "netscaler"},
}

// uriHeaders and methodHeaders are every name a proxy uses: a copy under the
// other name that differs from the configured one is a client's forgery.
var (
	uriHeaders    = []header{newHeader("X-Original-URI"), newHeader("X-Forwarded-Uri")}
	methodHeaders = []header{newHeader("X-Original-Method"), newHeader("X-Forwarded-Method")}
	userAgentH    = newHeader("User-Agent")
	authH         = newHeader("Authorization")
	versionH      = newHeader("MS-ASProtocolVersion")
	forwardedH    = newHeader("X-Forwarded-For")
)

// header is a header name with its canonical key, computed once: looking a
// header up by a non-canonical name canonicalises it on every request.
type header struct{ key, name string }

func newHeader(name string) header { return header{http.CanonicalHeaderKey(name), name} }

// request is one callout, read from whichever endpoint.
type request struct {
	uri       string // the original request target
	absolute  bool   // uri may be an absolute URL (the Authorize callout's url=)
	method    string
	userAgent string
	version   string // MS-ASProtocolVersion
	deviceID  string // from the callout's DeviceId parameter, if any
	// user is the authenticated user as the proxy forwards it (the
	// configured header, or the callout's user=); userSet when that source
	// is in use.
	user    string
	userSet bool
	auth    string // the original Authorization header
	client  netip.Addr
}

// forwardAuth serves nginx auth_request, Caddy forward_auth, Traefik
// ForwardAuth and HAProxy's Lua auth request: 200 allows, 403 denies.
func (g *Gate) forwardAuth(w http.ResponseWriter, r *http.Request) {
	in := g.forwardInput(r)
	d, hit := g.decide(r, in)
	setDecisionHeaders(w.Header(), d)
	g.auditLog(r, in, d, hit)
	if d.Allow {
		w.WriteHeader(http.StatusOK)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(http.StatusForbidden)
	w.Write([]byte("Deny: " + d.Reason + "\n"))
}

func (g *Gate) forwardInput(r *http.Request) Input {
	h := r.Header
	fail := func(err error) Input { return Input{Malformed: err} }
	peer, err := g.trustedPeer(r)
	if err != nil {
		return fail(err)
	}
	if g.proxy.URI == "" {
		return fail(invalid("gate.proxy is %s, which asks /services/ActiveSync/Authorize, not /gate/auth", g.proxy.Name))
	}
	req := request{}
	if req.uri, err = agreed(h, g.uriH, uriHeaders); err != nil {
		return fail(err)
	}
	if req.uri == "" {
		return fail(invalid("no %s header: gate.proxy is %s, whose template sets it", g.proxy.URI, g.proxy.Name))
	}
	if req.method, err = agreed(h, g.methodH, methodHeaders); err != nil {
		return fail(err)
	}
	for _, f := range []struct {
		dst *string
		h   header
	}{{&req.userAgent, userAgentH}, {&req.auth, authH}, {&req.version, versionH}} {
		if *f.dst, err = single(h, f.h); err != nil {
			return fail(err)
		}
	}
	if name := g.policy.id.header; name != "" {
		if req.user, err = single(h, g.userH); err != nil {
			return fail(err)
		}
		if req.user == "" {
			return fail(invalid("no %s header: the proxy must forward the user it authenticated (gate.identity.header)", name))
		}
		req.userSet = true
	}
	if req.client, err = g.forwardedFor(peer, h[forwardedH.key]); err != nil {
		return fail(err)
	}
	return g.input(req)
}

// single returns the one value of a header; a repeated header is refused
// (proxies and Exchange may each read a different copy).
func single(h http.Header, name header) (string, error) {
	vs := h[name.key]
	switch len(vs) {
	case 0:
		return "", nil
	case 1:
		return vs[0], nil
	}
	return "", invalid("the %s header is repeated", name.name)
}

// agreed returns the configured header's single value; any other header of
// the family that is present must say the same.
func agreed(h http.Header, name header, family []header) (string, error) {
	v, err := single(h, name)
	if err != nil {
		return "", err
	}
	for _, other := range family {
		if other.key == name.key {
			continue
		}
		for _, o := range h[other.key] {
			if o != v {
				return "", invalid("the %s and %s headers disagree: one of them came from the client", name.name, other.name)
			}
		}
	}
	return v, nil
}

// authorize serves the NetScaler-style callout: always 200, with Allow or
// Deny as the body (or JSON with resultType=json).
func (g *Gate) authorize(w http.ResponseWriter, r *http.Request) {
	in, q := g.authorizeInput(r)
	d, hit := g.decide(r, in)
	g.auditLog(r, in, d, hit)
	setDecisionHeaders(w.Header(), d)
	word := "Deny"
	if d.Allow {
		word = "Allow"
	}
	if q.Get("resultType") == "json" {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(struct {
			Result string `json:"result"`
			Reason string `json:"reason"`
		}{word, d.Reason})
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Write([]byte(word))
}

// authorizeParams are the callout's parameters (without case).
var authorizeParams = map[string]bool{"user": true, "agent": true, "ip": true, "url": true, "deviceid": true, "resulttype": true, "version": true}

func (g *Gate) authorizeInput(r *http.Request) (Input, url.Values) {
	fail := func(err error) Input { return Input{Malformed: err} }
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return fail(invalid("the callout's query is not a valid query string")), url.Values{}
	}
	// One value per parameter, whatever its case: NetScaler's
	// QUERY.VALUE("DeviceId") takes the first of several, and the gate must
	// not judge another copy than the one that travels on.
	seen := map[string]bool{}
	for k, vs := range q {
		lk := strings.ToLower(k)
		if !authorizeParams[lk] {
			return fail(invalid("the callout has a parameter %q it does not define", headerSafe(k))), q
		}
		if len(vs) != 1 || seen[lk] {
			return fail(invalid("the callout repeats its %s parameter", lk)), q
		}
		seen[lk] = true
	}
	peer, err := g.trustedPeer(r)
	if err != nil {
		return fail(err), q
	}
	if g.proxy.Name != "netscaler" {
		return fail(invalid("gate.proxy is %s, which asks /gate/auth, not the Authorize callout", g.proxy.Name)), q
	}
	req := request{userAgent: q.Get("agent"), user: q.Get("user"), userSet: true, deviceID: q.Get("DeviceId"), version: q.Get("version"), client: peer, absolute: true}
	if ip := q.Get("ip"); ip != "" {
		a, err := netip.ParseAddr(ip)
		if err != nil {
			return fail(invalid("the callout's ip parameter is not an IP address")), q
		}
		req.client = a.Unmap()
	}
	if enc := q.Get("url"); enc != "" {
		if req.uri, err = decodeURLParam(enc); err != nil {
			return fail(err), q
		}
	}
	return g.input(req), q
}

func decodeURLParam(enc string) (string, error) {
	if len(enc) > MaxURILen {
		return "", invalid("the url parameter is longer than %d bytes", MaxURILen)
	}
	// NetScaler's B64ENCODE is not URL-escaped, so a '+' arrives as a space;
	// base64 has no spaces, so a space can only have been a '+'.
	enc = strings.ReplaceAll(enc, " ", "+")
	for _, e := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding, base64.RawStdEncoding, base64.RawURLEncoding} {
		if b, err := e.DecodeString(enc); err == nil {
			return string(b), nil
		}
	}
	return "", invalid("the url parameter is not base64")
}

// activeSyncPath is the only path the gate admits, compared without case
// and with an optional trailing slash, as sent: no %-escapes, no dot
// segments, nothing a proxy and Exchange could normalise differently.
const activeSyncPath = "/microsoft-server-activesync"

// input turns a callout into decision input; any defect becomes Malformed.
func (g *Gate) input(req request) Input {
	in := Input{IP: req.client}
	fail := func(err error) Input { return Input{Malformed: err, Query: in.Query, IP: in.IP} }
	if len(req.userAgent) > MaxUserAgentLen || !printable(req.userAgent) {
		return fail(invalid("the User-Agent is not up to %d printable characters", MaxUserAgentLen))
	}
	in.UserAgent = req.userAgent
	if len(req.method) > 16 || !headerName(req.method) && req.method != "" {
		return fail(invalid("the original method is not an HTTP method"))
	}
	in.Options = req.method == "OPTIONS"
	if req.uri == "" && req.deviceID == "" {
		return fail(invalid("no original URI (nor url or DeviceId parameter): the proxy must forward it"))
	}
	if req.uri != "" {
		q, err := parseTarget(req.uri, req.absolute)
		if err != nil {
			return fail(err)
		}
		in.Query = q
		if req.deviceID != "" && !strings.EqualFold(req.deviceID, q.DeviceID) {
			return fail(invalid("the DeviceId parameter contradicts the original URI"))
		}
	} else {
		q, err := Query{DeviceID: req.deviceID}.check()
		if err != nil {
			return fail(err)
		}
		in.Query = q
	}
	in.ProtocolVersion = req.version
	if q := in.Query.ProtocolVersion; q != "" {
		if req.version != "" && req.version != q {
			return fail(invalid("MS-ASProtocolVersion contradicts the base64 query's protocol version"))
		}
		in.ProtocolVersion = q
	}
	if len(in.ProtocolVersion) > 8 {
		return fail(invalid("MS-ASProtocolVersion is not a protocol version"))
	}
	// The authenticated user: the proxy's header (or the callout's user=),
	// and the user in the Authorization header that Exchange will
	// authenticate; when both name a user they must be the same one.
	cred, err := authorizationUser(req.auth)
	if err != nil {
		return fail(err)
	}
	var user string
	switch {
	case req.userSet && req.user != "":
		user = req.user
	case cred.user != "":
		user = cred.user
	}
	canon, err := g.policy.id.Canonical(user)
	if err != nil {
		return fail(err)
	}
	if req.userSet && req.user != "" && cred.user != "" {
		other, err := g.policy.id.Canonical(cred.user)
		if err != nil {
			return fail(err)
		}
		if other != canon {
			return fail(invalid("the Authorization header names another user than the proxy authenticated"))
		}
	}
	switch {
	case canon != "":
		in.UserHash = g.hash(kindUser, canon)
	case cred.challenge:
		in.Creds = CredsChallenge
	case req.auth != "":
		in.Creds = CredsOpaque
	default:
		in.Creds = CredsNone
	}
	// The query's User is the client's claim: it must be the authenticated
	// user when there is one (a bare name matches the user's local part).
	if qu := in.Query.User; qu != "" && canon != "" {
		cq, err := g.policy.id.Canonical(qu)
		if err != nil {
			return fail(err)
		}
		local, _, _ := strings.Cut(canon, "@")
		if cq != canon && !(cq == local && !strings.ContainsAny(qu, `@\`)) {
			return fail(invalid("the query's User is not the authenticated user"))
		}
	}
	in.Query.User = "" // from here on only the hash travels (logs, rules)
	return in
}

// parseTarget reads the original request target: origin form only
// (/Microsoft-Server-ActiveSync?query), or for the Authorize callout's url=
// also an absolute http(s) URL.
func parseTarget(uri string, absolute bool) (Query, error) {
	if len(uri) > MaxURILen || !printable(uri) {
		return Query{}, invalid("the original URI is not up to %d printable characters", MaxURILen)
	}
	target := uri
	if !strings.HasPrefix(uri, "/") {
		lower, rest := asciiLower(uri), ""
		switch {
		case absolute && strings.HasPrefix(lower, "https://"):
			rest = uri[len("https://"):]
		case absolute && strings.HasPrefix(lower, "http://"):
			rest = uri[len("http://"):]
		default:
			return Query{}, invalid("the original URI is not a path (/Microsoft-Server-ActiveSync?…): an absolute URL is refused")
		}
		i := strings.IndexByte(rest, '/')
		if i <= 0 || strings.ContainsAny(rest[:i], `@?#\`) {
			return Query{}, invalid("the original URL has no host and path")
		}
		target = rest[i:]
	}
	path, raw, _ := strings.Cut(target, "?")
	if strings.Contains(raw, "#") || strings.Contains(path, "#") {
		return Query{}, invalid("the original URI has a fragment")
	}
	if !asciiEqualFold(path, activeSyncPath) && !asciiEqualFold(path, activeSyncPath+"/") {
		return Query{}, invalid("the original URI is not /Microsoft-Server-ActiveSync")
	}
	return ParseQuery(raw)
}

// trustedPeer returns the caller's address if it is a trusted proxy: only
// the proxy may ask, since only it knows what the client sent.
func (g *Gate) trustedPeer(r *http.Request) (netip.Addr, error) {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}, invalid("the caller's address cannot be read")
	}
	addr := ap.Addr().Unmap()
	if !g.isTrusted(addr) {
		return addr, invalid("the caller is not a trusted proxy (gate.trustedProxies)")
	}
	return addr, nil
}

// forwardedFor finds the client in X-Forwarded-For: every header line in
// order, joined, walked from the right; the first address that is not a
// trusted proxy is the client (anything to its left is the client's own
// claim). With no header the peer itself is the client.
func (g *Gate) forwardedFor(peer netip.Addr, lines []string) (netip.Addr, error) {
	joined := strings.Join(lines, ",")
	if joined == "" {
		return peer, nil
	}
	if len(joined) > MaxHeaderLen {
		return peer, invalid("X-Forwarded-For is longer than %d bytes", MaxHeaderLen)
	}
	var client netip.Addr
	for rest := joined; ; { // the list from its right end, one address at a time
		i := strings.LastIndexByte(rest, ',')
		a, err := netip.ParseAddr(strings.TrimSpace(rest[i+1:]))
		if err != nil {
			return peer, invalid("X-Forwarded-For is not a list of IP addresses")
		}
		client = a.Unmap()
		if !g.isTrusted(client) || i < 0 {
			return client, nil
		}
		rest = rest[:i]
	}
}

func (g *Gate) isTrusted(a netip.Addr) bool {
	for _, p := range g.trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// decide looks the device up (unless the input is malformed) and applies
// the policy.
func (g *Gate) decide(r *http.Request, in Input) (Decision, bool) {
	hit := false
	if in.Malformed == nil {
		var err error
		in.Device, hit, err = g.lookup(r.Context(), in.Query.DeviceID)
		if err != nil {
			in.StoreErr = err
		}
	}
	d := g.live.Load().Decide(in)
	if d.Allow {
		g.allowed.Add(1)
	} else {
		g.denied.Add(1)
	}
	if f := g.deps.OnDecision; f != nil {
		f(mailpush.GateDecisionRecord{At: g.deps.Clock.Now(), Device: g.deviceLogID(in.Query.DeviceID), DeviceType: headerSafe(in.Query.DeviceType),
			User: userID(in.UserHash), Rule: d.Rule, Allow: d.Allow, Reason: d.Reason})
	}
	if in.StoreErr != nil {
		g.deps.Logger.Warn("gate: device registry unavailable", "deviceId", g.deviceLogID(in.Query.DeviceID), "decision", decisionWord(d), "err", in.StoreErr)
	}
	return d, hit
}

// auditLog hands the decision to the audit log (audit.go), which writes
// one line per decision as gate.audit says.
func (g *Gate) auditLog(r *http.Request, in Input, d Decision, hit bool) {
	if g.audit == "off" || (g.audit == "deny" && d.Allow) || !g.auditor.enabled(r.Context()) {
		return
	}
	g.auditor.log(auditRecord{t: time.Now(), allow: d.Allow, cached: hit, reason: d.Reason, rule: d.Rule,
		cmd: in.Query.Cmd, deviceType: in.Query.DeviceType, deviceID: in.Query.DeviceID, user: in.UserHash, ip: in.IP})
}

// deviceLogID is how a DeviceId appears in logs: a keyed-hash prefix (the
// same one for the same device, so an admin can follow it), or in clear.
func (g *Gate) deviceLogID(id string) string {
	if id == "" || g.clearIDs {
		return headerSafe(id)
	}
	return userID(g.hash(kindDevice, id))
}

// The decision headers' values that do not change, shared by every answer
// (net/http only reads a header's values): a Header.Set is an allocation.
var (
	noStore    = []string{"no-store"}
	allowValue = []string{"allow"}
	denyValue  = []string{"deny"}
)

// setDecisionHeaders sets Cache-Control, X-Mailpush-Decision and
// X-Mailpush-Reason (keys in canonical form).
func setDecisionHeaders(h http.Header, d Decision) {
	h["Cache-Control"] = noStore
	if d.Allow {
		h["X-Mailpush-Decision"] = allowValue
	} else {
		h["X-Mailpush-Decision"] = denyValue
	}
	h["X-Mailpush-Reason"] = []string{headerSafe(d.Reason)}
}

func decisionWord(d Decision) string {
	if d.Allow {
		return "allow"
	}
	return "deny"
}

// headerSafe keeps a value printable ASCII and short, for headers and logs.
func headerSafe(s string) string {
	if len(s) > 200 {
		s = s[:200]
	}
	ok := true
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			ok = false
			break
		}
	}
	if ok {
		return s
	}
	b := []byte(s)
	for i, c := range b {
		if c < 0x20 || c > 0x7e {
			b[i] = '?'
		}
	}
	return string(b)
}
