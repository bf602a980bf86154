// Package fcm delivers pushes to Android devices through Firebase Cloud
// Messaging's HTTP v1 API.
//
// Authentication is a Google service account: golang.org/x/oauth2/google
// signs a JWT with the account's key and trades it for an access token at
// the token endpoint (configurable, so tests can use fcmfake), and
// oauth2.ReuseTokenSource keeps it until shortly before it expires. The
// well-kept library does the JWT flow so this package does not.
//
// Messages: badge and sync pushes are data messages of normal priority (the
// app updates its badge or syncs); an alert with plain content is a
// notification message of high priority; an alert whose content is sealed to
// the device is a high-priority data message carrying only ciphertext (the
// app decrypts it and shows the notification), so Google never sees the
// subject. Errors are mapped from the FcmError details' errorCode.
package fcm

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/google"

	"github.com/mailpush/mailpush"
)

// DefaultEndpoint is Google's FCM endpoint.
const DefaultEndpoint = "https://fcm.googleapis.com"

// Scope is the OAuth2 scope for sending messages.
const Scope = "https://www.googleapis.com/auth/firebase.messaging"

// MaxPayload is FCM's limit on a message's data and notification, in bytes.
const MaxPayload = 4096

const maxErrorBody = 16 << 10

// Config configures a Client.
type Config struct {
	ProjectID string
	// Credentials is the service-account JSON key file's contents.
	Credentials []byte
	Endpoint    string // default DefaultEndpoint
	// TokenURL overrides the token_uri of the credentials (tests, proxies).
	TokenURL string
	RootCAs  *x509.CertPool // nil: the system roots
	Logger   *slog.Logger
}

// Client sends pushes to FCM. It is safe for concurrent use; make one per
// project and keep it.
type Client struct {
	url    string
	http   *http.Client
	tokens oauth2.TokenSource
	log    *slog.Logger
}

// New returns a Client. It does not contact Google until the first push.
func New(cfg Config) (*Client, error) {
	if cfg.ProjectID == "" || strings.ContainsAny(cfg.ProjectID, "/?#") {
		return nil, errors.New("fcm: Config.ProjectID must be the Firebase project ID, e.g. my-app-12345")
	}
	if cfg.Endpoint == "" {
		cfg.Endpoint = DefaultEndpoint
	}
	u, err := url.Parse(cfg.Endpoint)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("fcm: Config.Endpoint %q must be an https URL", cfg.Endpoint)
	}
	jc, err := google.JWTConfigFromJSON(cfg.Credentials, Scope)
	if err != nil {
		return nil, fmt.Errorf("fcm: Config.Credentials is not a service-account JSON key: %w", err)
	}
	if cfg.TokenURL != "" {
		jc.TokenURL = cfg.TokenURL
	}
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.TLSClientConfig = &tls.Config{RootCAs: cfg.RootCAs, MinVersion: tls.VersionTLS12}
	t.ForceAttemptHTTP2 = true
	t.MaxIdleConnsPerHost = 64
	hc := &http.Client{Transport: t, Timeout: 30 * time.Second}
	// The token source keeps this context for every token fetch: it only
	// carries the HTTP client.
	tctx := context.WithValue(context.Background(), oauth2.HTTPClient, hc)
	c := &Client{
		url:    strings.TrimSuffix(cfg.Endpoint, "/") + "/v1/projects/" + url.PathEscape(cfg.ProjectID) + "/messages:send",
		http:   hc,
		tokens: oauth2.ReuseTokenSource(nil, jc.TokenSource(tctx)),
		log:    cfg.Logger,
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	return c, nil
}

// Close closes idle connections.
func (c *Client) Close() { c.http.CloseIdleConnections() }

type message struct {
	Token        string            `json:"token"`
	Data         map[string]string `json:"data,omitempty"`
	Notification *notification     `json:"notification,omitempty"`
	Android      android           `json:"android"`
}

type notification struct {
	Title string `json:"title,omitempty"`
	Body  string `json:"body,omitempty"`
}

type android struct {
	Priority    string `json:"priority"`               // "normal" or "high"
	CollapseKey string `json:"collapse_key,omitempty"` // FCM keeps the last per key
	TTL         string `json:"ttl,omitempty"`
}

// Build returns the HTTP v1 request body for p.
func Build(p *mailpush.Push) ([]byte, error) {
	m := message{Token: p.Device.Token, Data: map[string]string{"seq": strconv.FormatInt(p.Seq, 10), "type": string(p.Kind)},
		Android: android{Priority: "normal", CollapseKey: p.CollapseID, TTL: "86400s"}}
	if p.Badge >= 0 {
		m.Data["badge"] = strconv.Itoa(p.Badge)
	}
	switch p.Kind {
	case mailpush.PushBadge, mailpush.PushSync:
	case mailpush.PushAlert:
		m.Android.Priority = "high"
		if p.Sealed != "" {
			m.Data["enc"] = p.Sealed
			break
		}
		m.Notification = &notification{Title: p.Sender, Body: p.Subject}
		if m.Notification.Title == "" && m.Notification.Body == "" {
			m.Notification.Body = "New mail"
		}
	default:
		return nil, fmt.Errorf("fcm: unknown push kind %q", p.Kind)
	}
	if len(m.Android.CollapseKey) > 64 {
		m.Android.CollapseKey = m.Android.CollapseKey[:64]
	}
	for {
		body, err := json.Marshal(struct {
			Message message `json:"message"`
		}{m})
		if err != nil {
			return nil, err
		}
		over := len(body) - MaxPayload - len(m.Token) // the token is not payload
		if over <= 0 {
			return body, nil
		}
		// Shorten the subject, then the sender, on a UTF-8 boundary.
		switch {
		case m.Notification != nil && m.Notification.Body != "":
			m.Notification.Body = truncate(m.Notification.Body, len(m.Notification.Body)-over-8)
		case m.Notification != nil && m.Notification.Title != "":
			m.Notification.Title = truncate(m.Notification.Title, len(m.Notification.Title)-over-8)
		default:
			return nil, fmt.Errorf("fcm: message over %d bytes", MaxPayload)
		}
	}
}

// messageHead is how every request body starts: the device token follows.
const messageHead = `{"message":{"token":"`

// requestBody is Build(p), made from the message that the pushes of p's
// event share (Push.Shared: built once, with an empty token) by splicing
// p's token in. A token that JSON would escape is built alone.
func requestBody(p *mailpush.Push) ([]byte, error) {
	if p.Shared == nil || !plainToken(p.Device.Token) {
		return Build(p)
	}
	shared, err := p.Shared.Payload("fcm", func() ([]byte, error) {
		q := *p
		q.Device.Token = ""
		return Build(&q)
	})
	if err != nil {
		return nil, err
	}
	out := make([]byte, 0, len(shared)+len(p.Device.Token))
	out = append(out, messageHead...)
	out = append(out, p.Device.Token...)
	return append(out, shared[len(messageHead):]...), nil
}

// plainToken reports whether t is written as it is in a JSON string (FCM
// registration tokens are letters, digits, '-', '_' and ':').
func plainToken(t string) bool {
	for i := 0; i < len(t); i++ {
		c := t[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == ':' || c == '.') {
			return false
		}
	}
	return true
}

// truncate cuts s to at most n bytes on a rune boundary and marks the cut.
func truncate(s string, n int) string {
	const ellipsis = "…"
	n -= len(ellipsis)
	if n <= 0 {
		return ""
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + ellipsis
}

// Push sends p and classifies FCM's answer.
func (c *Client) Push(ctx context.Context, p *mailpush.Push) (mailpush.PushResult, error) {
	if p.Device.Platform != mailpush.PlatformAndroid {
		return mailpush.PushResult{Outcome: mailpush.PushFailed}, fmt.Errorf("fcm: push for a %q device", p.Device.Platform)
	}
	body, err := requestBody(p)
	if err != nil {
		return mailpush.PushResult{Outcome: mailpush.PushFailed}, err
	}
	tok, err := c.tokens.Token()
	if err != nil {
		// The token endpoint is down or refuses us: try again later.
		return mailpush.PushResult{Outcome: mailpush.PushRetry, Reason: "oauth_token"}, fmt.Errorf("fcm: access token: %w", redact(err))
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.url, bytes.NewReader(body))
	if err != nil {
		return mailpush.PushResult{Outcome: mailpush.PushFailed}, err
	}
	req.Header.Set("Content-Type", "application/json")
	tok.SetAuthHeader(req)
	resp, err := c.http.Do(req)
	if err != nil {
		return mailpush.PushResult{Outcome: mailpush.PushRetry}, fmt.Errorf("fcm: send: %w", redact(err))
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	res := mailpush.PushResult{Status: resp.StatusCode, RetryAfter: retryAfter(resp.Header.Get("Retry-After"), time.Now())}
	if resp.StatusCode == http.StatusOK {
		res.Outcome = mailpush.PushDelivered
		return res, nil
	}
	res.Reason = errorCode(raw)
	res.Outcome = Classify(resp.StatusCode, res.Reason)
	if res.Outcome != mailpush.PushDelivered {
		level := slog.LevelDebug
		if res.Outcome == mailpush.PushFailed {
			level = slog.LevelWarn
		}
		c.log.Log(ctx, level, "fcm: push not delivered", "status", res.Status, "reason", res.Reason, "outcome", res.Outcome.String())
	}
	return res, nil
}

// Classify maps an FCM status and errorCode to an outcome.
func Classify(status int, code string) mailpush.PushOutcome {
	switch code {
	case "UNREGISTERED", "SENDER_ID_MISMATCH":
		return mailpush.PushDropToken
	case "QUOTA_EXCEEDED", "UNAVAILABLE", "INTERNAL":
		return mailpush.PushRetry
	case "INVALID_ARGUMENT", "THIRD_PARTY_AUTH_ERROR", "PERMISSION_DENIED":
		return mailpush.PushFailed
	}
	switch {
	case status == http.StatusOK:
		return mailpush.PushDelivered
	case status == http.StatusTooManyRequests, status >= 500, status == http.StatusUnauthorized:
		// 401: our access token was refused; a new one may not be.
		return mailpush.PushRetry
	}
	return mailpush.PushFailed
}

// errorCode returns the FcmError errorCode of an error body, else the
// google.rpc status.
func errorCode(body []byte) string {
	var e struct {
		Error struct {
			Status  string `json:"status"`
			Details []struct {
				Type      string `json:"@type"`
				ErrorCode string `json:"errorCode"`
			} `json:"details"`
		} `json:"error"`
	}
	if json.Unmarshal(body, &e) != nil {
		return ""
	}
	for _, d := range e.Error.Details {
		if d.ErrorCode != "" {
			return d.ErrorCode
		}
	}
	return e.Error.Status
}

func retryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	if s, err := strconv.ParseInt(v, 10, 64); err == nil && s > 0 {
		return time.Duration(s) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}

// redact drops the URL from net/http errors.
func redact(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}
