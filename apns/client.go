package apns

import (
	"bytes"
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

	"github.com/sideshow/apns2"
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
	reasonBadDeviceToken         = apns2.ReasonBadDeviceToken
	reasonDeviceTokenNotForTopic = apns2.ReasonDeviceTokenNotForTopic
	reasonExpiredProviderToken   = apns2.ReasonExpiredProviderToken
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
}

type endpoint struct {
	name      string
	client    *apns2.Client
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
	c.production = newEndpoint("production", cfg.ProductionURL, tok, cfg.Certificate, cfg.RootCAs)
	c.sandbox = newEndpoint("sandbox", cfg.SandboxURL, tok, cfg.Certificate, cfg.RootCAs)
	return c, nil
}

// newEndpoint makes the connection pool of one environment. With a
// certificate, TLS presents it and no provider token is sent (tok is nil).
func newEndpoint(name, host string, tok *token.Token, cert *tls.Certificate, roots *x509.CertPool) *endpoint {
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
		// IdleConnTimeout stays zero: the connection is kept open for as
		// long as APNs and the pings allow, as Apple asks.
	}
	cl := &apns2.Client{}
	if tok != nil {
		cl.Token = tok
	}
	cl.Host = strings.TrimSuffix(host, "/")
	cl.HTTPClient = &http.Client{Transport: recorder{t}, Timeout: requestTimeout}
	return &endpoint{name: name, client: cl, transport: t}
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
	n, err := c.notification(p, topic)
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
	var ex exchange
	resp, err := ep.client.PushWithContext(context.WithValue(ctx, exchangeKey{}, &ex), n)
	if err != nil && ex.status == 0 {
		ep.up.Store(false)
		return mailpush.PushResult{Outcome: mailpush.PushRetry}, fmt.Errorf("apns: push to %s: %w", ep.name, redact(err))
	}
	ep.up.Store(true)
	res := mailpush.PushResult{Status: ex.status, RetryAfter: ex.retryAfter}
	if err == nil {
		// apns2 decoded the answer; ex has the rest.
		res.Status, res.Reason = resp.StatusCode, resp.Reason
	}
	res.Outcome = classify(res.Status, res.Reason)
	if res.Status == http.StatusGone {
		res.InvalidAt = ex.timestamp
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

// notification turns p into an apns2 notification.
func (c *Client) notification(p *mailpush.Push, topic string) (*apns2.Notification, error) {
	// Pushes of one event with the same content share one encoding.
	body, err := p.Shared.Payload("apns", func() ([]byte, error) { return buildPayload(p) })
	if err != nil {
		return nil, err
	}
	n := &apns2.Notification{
		DeviceToken: p.Device.Token,
		Topic:       topic,
		CollapseID:  collapseID(p.CollapseID),
		Payload:     body,
		PushType:    apns2.PushTypeAlert,
		Priority:    apns2.PriorityHigh,
	}
	if isUUID(p.ID) {
		// APNs refuses anything else with BadMessageId; without one it
		// makes its own.
		n.ApnsID = strings.ToLower(p.ID)
	}
	created := p.CreatedAt
	if created.IsZero() {
		created = time.Now()
	}
	n.Expiration = created.Add(expiration)
	switch {
	case p.Kind == mailpush.PushSync:
		// Background pushes must be priority 5 and carry no alert,
		// badge or sound.
		n.PushType, n.Priority = apns2.PushTypeBackground, apns2.PriorityLow
	case p.Kind == mailpush.PushBadge && p.Badge < 0:
		// Nothing for the device to show: let it take its time.
		n.Priority = apns2.PriorityLow
	}
	return n, nil
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

// exchange is what recorder saw of one push's answer beyond what apns2
// reports. Push puts one in the request context.
type exchange struct {
	status     int
	retryAfter time.Duration
	timestamp  time.Time // 410 only, to the millisecond
}

type exchangeKey struct{}

// recorder fills the request's exchange from the response. For an error
// answer it reads the small JSON body and hands apns2 a copy.
type recorder struct{ next http.RoundTripper }

func (rt recorder) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := rt.next.RoundTrip(req)
	ex, _ := req.Context().Value(exchangeKey{}).(*exchange)
	if err != nil || ex == nil {
		return resp, err
	}
	ex.status = resp.StatusCode
	ex.retryAfter = retryAfter(resp.Header.Get("Retry-After"), time.Now())
	if resp.StatusCode == http.StatusOK {
		return resp, nil
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	resp.Body = io.NopCloser(bytes.NewReader(body))
	var e struct {
		Timestamp json.Number `json:"timestamp"`
	}
	if json.Unmarshal(body, &e) == nil {
		if ms, err := e.Timestamp.Int64(); err == nil && ms > 0 {
			ex.timestamp = time.UnixMilli(ms)
		}
	}
	return resp, nil
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
