package apns

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sideshow/apns2/token"

	"github.com/mailpush/mailpush"
)

// Transport limits. A push normally takes tens of milliseconds; these only
// bound the pathological cases. The caller's context bounds each push too.
const (
	dialTimeout      = 10 * time.Second
	handshakeTimeout = 10 * time.Second
	requestTimeout   = 30 * time.Second // whole push, when ctx has no earlier deadline
	pingAfterIdle    = 30 * time.Second // HTTP/2 ping when a connection has been silent this long
	pingTimeout      = 15 * time.Second // close the connection when the ping gets no answer
	writeTimeout     = 15 * time.Second // close the connection when writes stall
	expiration       = 24 * time.Hour   // APNs stores an undeliverable push this long
	maxCollapseID    = 64               // bytes
	maxErrorBody     = 4 << 10          // APNs error bodies are a few dozen bytes
)

// Reasons that this package acts on.
const (
	reasonBadDeviceToken         = "BadDeviceToken"
	reasonDeviceTokenNotForTopic = "DeviceTokenNotForTopic"
	reasonExpiredProviderToken   = "ExpiredProviderToken"
)

// ErrClosed is returned by Push after Close.
var ErrClosed = errors.New("apns: client closed")

// Client sends pushes to APNs. It is safe for concurrent use; make one per
// process (per app topic) and keep it: it holds the connections.
type Client struct {
	topic      string
	token      *token.Token // shared by both endpoints
	log        *slog.Logger
	production *endpoint
	sandbox    *endpoint
	closed     atomic.Bool
	auth       atomic.Pointer[bearer] // the authorization header of the token's current JWT
}

type endpoint struct {
	name      string
	scheme    string // "https"
	host      string // host[:port] of the URL
	prefix    string // path before the device token, "/3/device/" under the URL's path
	transport *http.Transport
	// net/http dials one connection per waiting request while none is up:
	// a burst of pushes on a cold endpoint would open dozens of
	// connections to APNs, which Apple treats as abuse. So the first push
	// (and the first after a transport failure) goes alone; up marks that
	// a connection answered.
	dial sync.Mutex
	up   atomic.Bool
}

// New returns a Client for cfg. It connects lazily, on the first push to
// each environment.
func New(cfg Config) (*Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.ProductionURL == "" {
		cfg.ProductionURL = DefaultProductionURL
	}
	if cfg.SandboxURL == "" {
		cfg.SandboxURL = DefaultSandboxURL
	}
	var tok *token.Token
	if cfg.Certificate == nil {
		key, err := parseKey(cfg.PrivateKey)
		if err != nil {
			return nil, fmt.Errorf("apns: Config.PrivateKey %w", err)
		}
		// One token for both environments: it is re-signed every 50 minutes
		// (token.TokenTimeout), inside Apple's 20-60 minute window. Signing it
		// now surfaces a key that cannot sign, which GenerateIfExpired would
		// otherwise swallow on every push.
		tok = &token.Token{AuthKey: key, KeyID: cfg.KeyID, TeamID: cfg.TeamID}
		if _, err := tok.Generate(); err != nil {
			return nil, fmt.Errorf("apns: sign provider token: %w", err)
		}
	}
	c := &Client{topic: cfg.Topic, token: tok, log: cfg.Logger}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	var err error
	if c.production, err = newEndpoint("production", cfg.ProductionURL, cfg.Certificate, cfg.RootCAs); err != nil {
		return nil, err
	}
	if c.sandbox, err = newEndpoint("sandbox", cfg.SandboxURL, cfg.Certificate, cfg.RootCAs); err != nil {
		return nil, err
	}
	return c, nil
}

// newEndpoint makes the connection pool of one environment. With a
// certificate, TLS presents it (and the client sends no provider token).
func newEndpoint(name, base string, cert *tls.Certificate, roots *x509.CertPool) (*endpoint, error) {
	u, err := url.Parse(strings.TrimSuffix(base, "/"))
	if err != nil {
		return nil, fmt.Errorf("apns: %s URL: %w", name, err)
	}
	dialer := &net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second}
	var protocols http.Protocols
	protocols.SetHTTP2(true) // HTTP/2 only: APNs speaks nothing else
	t := &http.Transport{
		Proxy:               http.ProxyFromEnvironment,
		DialContext:         dialer.DialContext,
		TLSClientConfig:     tlsConfig(roots, cert),
		TLSHandshakeTimeout: handshakeTimeout,
		Protocols:           &protocols,
		HTTP2: &http.HTTP2Config{
			SendPingTimeout:  pingAfterIdle,
			PingTimeout:      pingTimeout,
			WriteByteTimeout: writeTimeout,
		},
		// APNs answers are a few bytes of JSON at most: asking for gzip
		// would only add an accept-encoding field to every push.
		DisableCompression: true,
		// IdleConnTimeout stays zero: the connection is kept open for as
		// long as APNs and the pings allow, as Apple asks.
	}
	return &endpoint{name: name, scheme: u.Scheme, host: u.Host, prefix: u.Path + "/3/device/", transport: t}, nil
}

func tlsConfig(roots *x509.CertPool, cert *tls.Certificate) *tls.Config {
	c := &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
	if cert != nil {
		c.Certificates = []tls.Certificate{*cert}
	}
	return c
}

// Close closes the idle connections. Pushes in flight finish; later pushes
// fail with ErrClosed. Close is safe to call more than once.
func (c *Client) Close() {
	c.closed.Store(true)
	c.production.transport.CloseIdleConnections()
	c.sandbox.transport.CloseIdleConnections()
}

// Push sends p to APNs and classifies the answer. A push that cannot be
// built (unknown kind, platform or environment; oversized sealed content) is
// PushFailed with an error; a transport failure is PushRetry with an error;
// any answer from APNs is a result with a nil error. A device token that is
// not hex is dropped (PushDropToken, BadDeviceToken, Status 0) without
// asking APNs. An empty environment means production.
func (c *Client) Push(ctx context.Context, p *mailpush.Push) (mailpush.PushResult, error) {
	return c.push(ctx, p, c.topic)
}

// Topic is a view of a Client that pushes to another app topic (bundle ID)
// on the same connections, with a default environment for devices that
// registered without one. Tenants whose apps share a team's credentials
// share one Client, hence one connection per environment.
type Topic struct {
	Client      *Client
	Topic       string
	Environment mailpush.Environment // for pushes without one; empty: production
}

// Push sends p to APNs for t's topic.
func (t Topic) Push(ctx context.Context, p *mailpush.Push) (mailpush.PushResult, error) {
	if p.Device.Environment == "" && t.Environment != "" {
		cp := *p
		cp.Device.Environment = t.Environment
		p = &cp
	}
	return t.Client.push(ctx, p, t.Topic)
}

func (c *Client) push(ctx context.Context, p *mailpush.Push, topic string) (mailpush.PushResult, error) {
	if c.closed.Load() {
		return mailpush.PushResult{Outcome: mailpush.PushRetry}, ErrClosed
	}
	ep, err := c.endpoint(p.Device.Environment)
	if err != nil {
		return mailpush.PushResult{Outcome: mailpush.PushFailed}, err
	}
	if p.Device.Platform != mailpush.PlatformIOS && p.Device.Platform != "" {
		return mailpush.PushResult{Outcome: mailpush.PushFailed}, fmt.Errorf("apns: push for a %q device", p.Device.Platform)
	}
	if !hexToken(p.Device.Token) {
		// Not hex, so never a valid token; and it would end up in the URL.
		return mailpush.PushResult{Outcome: mailpush.PushDropToken, Reason: reasonBadDeviceToken}, nil
	}
	r, err := c.request(ep, p, topic)
	if err != nil {
		return mailpush.PushResult{Outcome: mailpush.PushFailed}, err
	}

	if !ep.up.Load() {
		ep.dial.Lock()
		if ep.up.Load() {
			ep.dial.Unlock()
		} else {
			defer ep.dial.Unlock() // alone until this push has its answer
		}
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, requestTimeout)
		defer cancel()
	}
	res, err := r.do(ctx, ep.transport)
	if err == nil {
		// Answered: net/http is done with the headers. After a failure
		// its stream may still read them, so the request is not reused.
		requests.Put(r)
	} else {
		ep.up.Store(false)
		return mailpush.PushResult{Outcome: mailpush.PushRetry}, fmt.Errorf("apns: push to %s: %w", ep.name, redact(err))
	}
	ep.up.Store(true)
	res.Outcome = classify(res.Status, res.Reason)
	if res.Status != http.StatusGone {
		res.InvalidAt = time.Time{}
	}
	if res.Reason == reasonExpiredProviderToken && c.token != nil && expireToken(c.token, time.Now()) {
		c.log.WarnContext(ctx, "apns: provider token refused as expired; signing a new one (is the clock right?)")
	}
	c.logResult(ctx, ep, p, res)
	return res, nil
}

func (c *Client) endpoint(env mailpush.Environment) (*endpoint, error) {
	switch env {
	case mailpush.EnvProduction, "": // App Store and TestFlight builds, the common case
		return c.production, nil
	case mailpush.EnvSandbox:
		return c.sandbox, nil
	}
	return nil, fmt.Errorf("apns: unknown environment %q", env)
}

// request fills a pooled request with p's path, headers and payload.
func (c *Client) request(ep *endpoint, p *mailpush.Push, topic string) (*request, error) {
	// Pushes of one event with the same content share one encoding.
	body, err := p.Shared.Payload("apns", func() ([]byte, error) { return buildPayload(p) })
	if err != nil {
		return nil, err
	}
	r := requests.Get().(*request)
	r.url = url.URL{Scheme: ep.scheme, Host: ep.host, Path: ep.prefix + p.Device.Token}
	r.req.Host = ep.host
	// The body is the push's own: net/http may still read a body after
	// the answer came (a server may answer before reading it all).
	r.req.Body = &payloadBody{b: body}
	r.req.ContentLength = int64(len(body))
	h := r.req.Header
	if c.token != nil {
		h["authorization"] = c.bearer()
	} else {
		delete(h, "authorization")
	}
	r.topic[0] = topic
	h["apns-topic"] = r.topic[:]
	if isUUID(p.ID) {
		// APNs refuses anything else with BadMessageId; without one it
		// makes its own.
		r.id[0] = strings.ToLower(p.ID)
		h["apns-id"] = r.id[:]
	} else {
		delete(h, "apns-id")
	}
	if id := collapseID(p.CollapseID); id != "" {
		r.collapse[0] = id
		h["apns-collapse-id"] = r.collapse[:]
	} else {
		delete(h, "apns-collapse-id")
	}
	created := p.CreatedAt
	if created.IsZero() {
		created = time.Now()
	}
	if exp := created.Add(expiration).Unix(); exp != r.expUnix || r.expiration[0] == "" {
		// The pushes of an event share it: formatted once per run of them.
		r.expUnix, r.expiration[0] = exp, strconv.FormatInt(exp, 10)
	}
	h["apns-expiration"] = r.expiration[:]
	switch {
	case p.Kind == mailpush.PushSync:
		// Background pushes must be priority 5 and carry no alert,
		// badge or sound.
		h["apns-push-type"], h["apns-priority"] = pushTypeBackground, priorityLow
	case p.Kind == mailpush.PushBadge && p.Badge < 0:
		// Nothing for the device to show: let it take its time.
		h["apns-push-type"], h["apns-priority"] = pushTypeAlert, priorityLow
	default:
		// 10 is APNs' default priority: not sending it saves a header
		// field on almost every push.
		h["apns-push-type"] = pushTypeAlert
		delete(h, "apns-priority")
	}
	return r, nil
}

// bearer is the authorization header value of the current provider token,
// built again only when the token is re-signed.
func (c *Client) bearer() []string {
	jwt := c.token.GenerateIfExpired()
	if b := c.auth.Load(); b != nil && b.jwt == jwt {
		return b.value
	}
	b := &bearer{jwt: jwt, value: []string{"bearer " + jwt}}
	c.auth.Store(b)
	return b.value
}

type bearer struct {
	jwt   string
	value []string // shared by every request: never modified
}

// Header values shared by every request: never modified.
var (
	pushTypeAlert      = []string{"alert"}
	pushTypeBackground = []string{"background"}
	priorityLow        = []string{"5"}
	// An empty User-Agent keeps net/http from sending its own: APNs reads
	// none, and every field it does not read costs HPACK work per push.
	noUserAgent = []string{""}
)

// request is one push's HTTP request, reused from push to push (requests):
// its header map and value slices are rebuilt in place, so a push allocates
// little beyond what net/http itself does. A request goes back to the pool
// only once APNs answered, when net/http has written its headers.
type request struct {
	req        http.Request
	url        url.URL
	topic      [1]string
	id         [1]string
	collapse   [1]string
	expiration [1]string
	expUnix    int64
	errBody    [maxErrorBody]byte
}

var requests = sync.Pool{New: func() any {
	r := &request{}
	r.req = http.Request{Method: http.MethodPost, URL: &r.url, Proto: "HTTP/2.0", ProtoMajor: 2,
		Header: http.Header{"User-Agent": noUserAgent}}
	// A request sent again on a new connection (GOAWAY) reads its body anew.
	r.req.GetBody = func() (io.ReadCloser, error) {
		return &payloadBody{b: r.req.Body.(*payloadBody).b}, nil
	}
	return r
}}

// payloadBody is a request body over a payload shared by the pushes of an
// event: reading it does not consume the payload.
type payloadBody struct {
	b   []byte
	off int
}

func (p *payloadBody) Read(b []byte) (int, error) {
	if p.off >= len(p.b) {
		return 0, io.EOF
	}
	n := copy(b, p.b[p.off:])
	p.off += n
	return n, nil
}

func (p *payloadBody) Close() error { return nil }

// do sends the request and reads APNs' answer: its status, reason,
// Retry-After and (410) the time the token became invalid.
func (r *request) do(ctx context.Context, rt http.RoundTripper) (mailpush.PushResult, error) {
	resp, err := rt.RoundTrip(r.req.WithContext(ctx))
	if err != nil {
		return mailpush.PushResult{}, err
	}
	defer resp.Body.Close()
	res := mailpush.PushResult{Status: resp.StatusCode}
	if v := resp.Header["Retry-After"]; len(v) > 0 {
		res.RetryAfter = retryAfter(v[0], time.Now())
	}
	if resp.StatusCode == http.StatusOK {
		io.Copy(io.Discard, io.LimitReader(resp.Body, maxErrorBody)) // APNs sends none
		return res, nil
	}
	n, err := io.ReadFull(resp.Body, r.errBody[:])
	if err != nil && err != io.EOF && err != io.ErrUnexpectedEOF {
		return mailpush.PushResult{}, err
	}
	var e struct {
		Reason    string      `json:"reason"`
		Timestamp json.Number `json:"timestamp"`
	}
	if json.Unmarshal(r.errBody[:n], &e) == nil {
		res.Reason = e.Reason
		if ms, err := e.Timestamp.Int64(); err == nil && ms > 0 {
			res.InvalidAt = time.UnixMilli(ms)
		}
	}
	return res, nil
}

// minTokenAge is the youngest provider token that may be replaced: Apple
// answers 429 TooManyProviderTokenUpdates to tokens that change more often
// than every 20 minutes.
const minTokenAge = 20 * time.Minute

// expireToken makes tok be signed again on the next push, unless it is
// younger than minTokenAge, and reports whether it did. APNs refuses a token
// as expired when its clock is ahead of ours by more than the 10 minutes
// left in the token's hour: a token signed now will pass.
func expireToken(tok *token.Token, now time.Time) bool {
	tok.Lock()
	defer tok.Unlock()
	if now.Sub(time.Unix(tok.IssuedAt, 0)) < minTokenAge {
		return false
	}
	tok.IssuedAt = 0
	return true
}

// collapseID returns id if it fits APNs' 64-byte limit. A longer one is
// replaced by its SHA-256 in hex (64 bytes), so that pushes that shared it
// still replace each other while unrelated ones with a common prefix do not.
func collapseID(id string) string {
	if len(id) <= maxCollapseID {
		return id
	}
	sum := sha256.Sum256([]byte(id))
	return hex.EncodeToString(sum[:])
}

// classify maps an APNs status and reason to an outcome (see DESIGN.md).
func classify(status int, reason string) mailpush.PushOutcome {
	switch {
	case status == http.StatusOK:
		return mailpush.PushDelivered
	case status == http.StatusGone: // Unregistered, ExpiredToken
		return mailpush.PushDropToken
	case status == http.StatusBadRequest && (reason == reasonBadDeviceToken || reason == reasonDeviceTokenNotForTopic):
		return mailpush.PushDropToken
	case status == http.StatusTooManyRequests, status >= 500:
		return mailpush.PushRetry
	case status == http.StatusForbidden && reason == reasonExpiredProviderToken:
		// Our token is stale by APNs' clock; the next one may not be.
		return mailpush.PushRetry
	}
	return mailpush.PushFailed
}

func (c *Client) logResult(ctx context.Context, ep *endpoint, p *mailpush.Push, res mailpush.PushResult) {
	if res.Outcome == mailpush.PushDelivered {
		return
	}
	level := slog.LevelDebug // the caller acts on drops and retries
	if res.Outcome == mailpush.PushFailed {
		level = slog.LevelWarn // a permanent refusal: a bug or a misconfiguration
	}
	c.log.LogAttrs(ctx, level, "apns: push not delivered",
		slog.String("env", ep.name),
		slog.String("token", tokenPrefix(p.Device.Token)),
		slog.String("push_id", p.ID),
		slog.Int("status", res.Status),
		slog.String("reason", res.Reason),
		slog.String("outcome", res.Outcome.String()))
}

// redact strips the request URL, which holds the device token, from a
// net/http error.
func redact(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// retryAfter parses a Retry-After value: seconds or an HTTP date.
func retryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	if s, err := strconv.ParseInt(v, 10, 64); err == nil {
		if s > 0 {
			return time.Duration(s) * time.Second
		}
		return 0
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}

func hexToken(t string) bool {
	if t == "" {
		return false
	}
	for i := 0; i < len(t); i++ {
		if !isHexDigit(t[i]) {
			return false
		}
	}
	return true
}

// isUUID reports whether s is a UUID in canonical 8-4-4-4-12 form.
func isUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < len(s); i++ {
		switch i {
		case 8, 13, 18, 23:
			if s[i] != '-' {
				return false
			}
		default:
			if !isHexDigit(s[i]) {
				return false
			}
		}
	}
	return true
}

func isHexDigit(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// tokenPrefix is all of a device token that may be logged.
func tokenPrefix(t string) string {
	if len(t) > 8 {
		return t[:8]
	}
	return t
}
