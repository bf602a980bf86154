package gate

import (
	"encoding/base64"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/netip"
	"net/url"
	"strings"

	"github.com/mailpush/mailpush"
)

// Routes registers the reverse-proxy endpoints of API.md on mux. /gate/auth
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

// request is one callout, read from whichever endpoint.
type request struct {
	uri       string // the original request URI (path?query)
	method    string
	userAgent string
	user      string // from the callout's user parameter, if any
	deviceID  string // from the callout's DeviceId parameter, if any
	auth      string // the original Authorization header (only the user is read)
	forwarded string // X-Forwarded-For, or Authorize's ip=
	peer      string // r.RemoteAddr
}

// forwardAuth serves nginx auth_request, Caddy forward_auth, Traefik
// ForwardAuth and HAProxy: 200 allows, 403 denies.
func (g *Gate) forwardAuth(w http.ResponseWriter, r *http.Request) {
	h := r.Header
	uri := h.Get("X-Original-URI")
	if uri == "" {
		uri = h.Get("X-Forwarded-Uri")
	}
	in := g.input(r, request{uri: uri, method: h.Get("X-Forwarded-Method"), userAgent: h.Get("User-Agent"),
		auth: h.Get("Authorization"), forwarded: h.Get("X-Forwarded-For"), peer: r.RemoteAddr})
	d, hit := g.decide(r, in)
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Mailpush-Decision", decisionWord(d))
	w.Header().Set("X-Mailpush-Reason", headerSafe(d.Reason))
	g.auditLog(r, in, d, hit)
	if d.Allow {
		w.WriteHeader(http.StatusOK)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(http.StatusForbidden)
	w.Write([]byte("Deny: " + d.Reason + "\n"))
}

// authorize serves the NetScaler-style callout: always 200, with Allow or
// Deny as the body (or JSON with resultType=json).
func (g *Gate) authorize(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	req := request{userAgent: q.Get("agent"), user: q.Get("user"), deviceID: q.Get("DeviceId"), forwarded: q.Get("ip"), peer: r.RemoteAddr,
		method: r.Header.Get("X-Forwarded-Method"), auth: r.Header.Get("Authorization")}
	var in Input
	if enc := q.Get("url"); enc != "" {
		raw, err := decodeURLParam(enc)
		if err != nil {
			in.Malformed = err
		}
		req.uri = raw
	}
	if in.Malformed == nil {
		in = g.input(r, req)
	}
	d, hit := g.decide(r, in)
	g.auditLog(r, in, d, hit)
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Mailpush-Decision", decisionWord(d))
	w.Header().Set("X-Mailpush-Reason", headerSafe(d.Reason))
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

func decodeURLParam(enc string) (string, error) {
	if len(enc) > MaxURILen {
		return "", invalid("the url parameter is longer than %d bytes", MaxURILen)
	}
	for _, e := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding, base64.RawStdEncoding, base64.RawURLEncoding} {
		if b, err := e.DecodeString(enc); err == nil {
			return string(b), nil
		}
	}
	return "", invalid("the url parameter is not base64")
}

// input turns a callout into decision input; any defect becomes Malformed.
func (g *Gate) input(r *http.Request, req request) Input {
	var in Input
	fail := func(err error) Input { return Input{Malformed: err, Query: in.Query, IP: in.IP} }
	ip, err := g.clientIP(req.peer, req.forwarded)
	if err != nil {
		return fail(err)
	}
	in.IP = ip
	if len(req.userAgent) > MaxUserAgentLen || !printable(req.userAgent) {
		return fail(invalid("the User-Agent is not up to %d printable characters", MaxUserAgentLen))
	}
	in.UserAgent = req.userAgent
	if req.uri == "" && req.deviceID == "" {
		return fail(invalid("no X-Original-URI or X-Forwarded-Uri header (nor url or DeviceId parameter): the proxy must forward the original URI"))
	}
	if req.uri != "" {
		if len(req.uri) > MaxURILen || !printable(req.uri) {
			return fail(invalid("the original URI is not up to %d printable characters", MaxURILen))
		}
		path, raw := req.uri, ""
		if u, err := url.Parse(req.uri); err == nil {
			path, raw = u.Path, u.RawQuery
		} else {
			return fail(invalid("the original URI cannot be parsed"))
		}
		if !strings.EqualFold(strings.TrimSuffix(path, "/"), "/Microsoft-Server-ActiveSync") {
			return fail(invalid("the original URI is not /Microsoft-Server-ActiveSync"))
		}
		q, err := ParseQuery(raw)
		if err != nil {
			return fail(err)
		}
		in.Query = q
		if req.deviceID != "" && mailpush.NormalizeDeviceID(req.deviceID) != q.DeviceID {
			return fail(invalid("the DeviceId parameter contradicts the original URI"))
		}
	} else {
		q, err := Query{DeviceID: req.deviceID}.check()
		if err != nil {
			return fail(err)
		}
		in.Query = q
	}
	if len(req.method) > 16 || !printable(req.method) {
		return fail(invalid("X-Forwarded-Method is not an HTTP method"))
	}
	basic, err := BasicUser(req.auth)
	if err != nil {
		return fail(err)
	}
	if len(req.user) > MaxUserLen || !printable(req.user) {
		return fail(invalid("the user parameter is not up to %d printable characters", MaxUserLen))
	}
	// The query's User, else the callout's user parameter, else Basic auth.
	user := in.Query.User
	for _, u := range []string{req.user, basic} {
		if user == "" {
			user = u
		}
	}
	if user = strings.TrimSpace(user); user != "" {
		in.UserHash = g.deps.Hasher.HashAddress(g.deps.TenantID, user)
	}
	in.Query.User = "" // from here on only the hash travels (logs, rules)
	return in
}

// clientIP believes forwarded addresses only from trusted proxies; a
// forwarded address from anyone else is a forgery and is refused.
func (g *Gate) clientIP(peer, forwarded string) (netip.Addr, error) {
	ap, err := netip.ParseAddrPort(peer)
	if err != nil {
		return netip.Addr{}, invalid("the caller's address cannot be read")
	}
	addr := ap.Addr().Unmap()
	if forwarded == "" {
		return addr, nil
	}
	if !g.isTrusted(addr) {
		return addr, invalid("X-Forwarded-For (or ip=) came from %s, which is not a trusted proxy (gate.trustedProxies)", addr)
	}
	if len(forwarded) > MaxHeaderLen {
		return addr, invalid("X-Forwarded-For is longer than %d bytes", MaxHeaderLen)
	}
	// Walk from the right: the last address not of a trusted proxy is the client.
	parts := strings.Split(forwarded, ",")
	var client netip.Addr
	for i := len(parts) - 1; i >= 0; i-- {
		a, err := netip.ParseAddr(strings.TrimSpace(parts[i]))
		if err != nil {
			return addr, invalid("X-Forwarded-For is not a list of IP addresses")
		}
		client = a.Unmap()
		if !g.isTrusted(client) {
			break
		}
	}
	return client, nil
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
	d := g.policy.Decide(in)
	if d.Allow {
		g.allowed.Add(1)
	} else {
		g.denied.Add(1)
	}
	if in.StoreErr != nil {
		g.deps.Logger.Warn("gate: device registry unavailable", "deviceId", in.Query.DeviceID, "decision", decisionWord(d), "err", in.StoreErr)
	}
	return d, hit
}

// auditLog writes one line per decision: never the password, and the user
// only as a hash prefix.
func (g *Gate) auditLog(r *http.Request, in Input, d Decision, hit bool) {
	if g.audit == "off" || (g.audit == "deny" && d.Allow) {
		return
	}
	attrs := []slog.Attr{
		slog.String("decision", decisionWord(d)), slog.String("reason", d.Reason),
		slog.String("deviceId", headerSafe(in.Query.DeviceID)), slog.String("deviceType", headerSafe(in.Query.DeviceType)),
		slog.String("cmd", in.Query.Cmd), slog.String("user", userID(in.UserHash)), slog.Bool("cached", hit),
	}
	if d.Rule != "" {
		attrs = append(attrs, slog.String("rule", d.Rule))
	}
	if in.IP.IsValid() {
		attrs = append(attrs, slog.String("ip", in.IP.String()))
	}
	g.deps.Logger.LogAttrs(r.Context(), slog.LevelInfo, "gate decision", attrs...)
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
