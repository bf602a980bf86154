// Package graphfake is a faithful fake of the parts of Microsoft Graph and
// Entra ID that mailpush uses, as a real HTTPS server on loopback: the token
// endpoint (client credentials with a secret or a signed client assertion),
// the tenant's JWKS and user tokens signed with it, subscriptions on
// users/{id}/mailFolders('inbox')/messages with expiry, renewal and
// deletion, the validation handshake on both notification URLs (creation
// refused when it fails), change notifications batched per notification URL,
// lifecycle events, Graph's slow/drop rule applied to the listener's
// answers, and 429 with Retry-After on demand. Tests drive it with Go
// methods or its control API (/control/…); its timers run on the injected
// clock.
package graphfake

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v4"

	"github.com/mailpush/mailpush"
)

// Graph's documented limits that the fake enforces.
const (
	MaxLifetime       = 10080 * time.Minute // messages
	MaxRichLifetime   = 1440 * time.Minute  // messages with resource data
	ValidationTimeout = 10 * time.Second
	SlowAnswer        = 3 * time.Second // an answer slower than this counts as slow
	SlowRatio         = 0.10            // of the answers in the window: the endpoint is slow
	DropRatio         = 0.15            // … and notifications are dropped
	Window            = 10 * time.Minute
)

// Options configure the fake.
type Options struct {
	TenantID string         // the Entra tenant; default a fixed GUID
	Clock    mailpush.Clock // nil is the system clock
	Logger   *slog.Logger
	// HTTPClient posts notifications; nil trusts nothing but plain HTTP and
	// the system roots.
	HTTPClient *http.Client
	// BeforeAnswer, when set, is called with every new subscription after
	// it exists (its notifications flow) and before its creation is
	// answered: as on Graph, where the first notification may beat the
	// answer to the creation.
	BeforeAnswer func(Subscription)
}

// Server is the fake.
type Server struct {
	before func(Subscription)
	tenant string
	clock  mailpush.Clock
	log    *slog.Logger
	hc     *http.Client
	ts     *httptest.Server
	key    *rsa.PrivateKey // signs user tokens (the tenant's JWKS)
	kid    string

	mu         sync.Mutex
	changed    chan struct{}
	apps       map[string]app // client ID → credentials
	tokens     map[string]issued
	users      map[string]*user // lower-cased address → mailbox
	subs       map[string]*Subscription
	subSeq     int
	msgSeq     int
	failures   []failure
	answers    []answer // the listener's answers in the window
	deliveries []Delivery
	requests   map[string]int
	holds      map[string]chan struct{} // Hold: requests of the op wait for it to close
	held       map[string]int           // requests that waited in a Hold, by op
	wg         sync.WaitGroup
	closed     bool
}

type issued struct {
	exp      time.Time
	clientID string
}

type app struct {
	secret string
	cert   *x509.Certificate
}

type user struct {
	address  string
	id       string
	messages []*message
}

type message struct {
	ID, Subject, FromName, FromAddress string
	IsRead                             bool
}

// Subscription is a subscription as the fake keeps it.
type Subscription struct {
	ID                       string    `json:"id"`
	Resource                 string    `json:"resource"`
	ChangeType               string    `json:"changeType"`
	NotificationURL          string    `json:"notificationUrl"`
	LifecycleNotificationURL string    `json:"lifecycleNotificationUrl"`
	ClientState              string    `json:"clientState"`
	ExpirationDateTime       time.Time `json:"expirationDateTime"`
	Renewals                 int       `json:"renewals"`
	IncludeResourceData      bool      `json:"includeResourceData,omitempty"`
	EncryptionCertificate    string    `json:"encryptionCertificate,omitempty"`
	EncryptionCertificateID  string    `json:"encryptionCertificateId,omitempty"`
	user                     string
	appID                    string
}

// Delivery is one notification POST and the listener's answer.
type Delivery struct {
	URL           string        `json:"-"`
	Lifecycle     bool          `json:"lifecycle"`
	Notifications int           `json:"notifications"`
	Status        int           `json:"status"`
	Took          time.Duration `json:"took"`
	Dropped       bool          `json:"dropped"` // not sent: the endpoint is over the drop ratio
}

type answer struct {
	at   time.Time
	slow bool
}

type failure struct {
	op         string
	status     int
	retryAfter int
}

// New starts the fake on an HTTPS loopback address.
func New(opts Options) *Server {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	s := &Server{before: opts.BeforeAnswer, tenant: opts.TenantID, clock: opts.Clock, log: opts.Logger, hc: opts.HTTPClient, key: key, kid: "fake-key-1",
		changed: make(chan struct{}), apps: map[string]app{}, tokens: map[string]issued{}, users: map[string]*user{},
		subs: map[string]*Subscription{}, requests: map[string]int{}}
	if s.tenant == "" {
		s.tenant = "9a8b7c6d-0000-4000-8000-000000000001"
	}
	if s.clock == nil {
		s.clock = mailpush.SystemClock{}
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.hc == nil {
		s.hc = &http.Client{Timeout: 30 * time.Second}
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /{tenant}/oauth2/v2.0/token", s.handleToken)
	mux.HandleFunc("GET /{tenant}/discovery/v2.0/keys", s.handleKeys)
	mux.HandleFunc("POST /v1.0/subscriptions", s.authed("create", s.handleCreate))
	mux.HandleFunc("PATCH /v1.0/subscriptions/{id}", s.authed("renew", s.handleRenew))
	mux.HandleFunc("DELETE /v1.0/subscriptions/{id}", s.authed("delete", s.handleDelete))
	mux.HandleFunc("GET /v1.0/users/{user}", s.authed("user", s.handleUser))
	mux.HandleFunc("GET /v1.0/users/{user}/mailFolders/inbox", s.authed("inbox", s.handleInbox))
	mux.HandleFunc("GET /v1.0/users/{user}/messages/{id}", s.authed("message", s.handleMessage))
	s.controlRoutes(mux)
	s.ts = httptest.NewUnstartedServer(mux)
	s.ts.Config.ErrorLog = slog.NewLogLogger(s.log.Handler(), slog.LevelDebug)
	s.ts.StartTLS()
	return s
}

// Close stops the server and waits for its deliveries.
func (s *Server) Close() {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.ts.Close()
	s.wg.Wait()
}

// TenantID is the fake's Entra tenant.
func (s *Server) TenantID() string { return s.tenant }

// Authority is the base URL of the token endpoint and JWKS
// (Authority()/{tenant}/oauth2/v2.0/token).
func (s *Server) Authority() string { return s.ts.URL }

// GraphURL is the Graph base URL (…/v1.0).
func (s *Server) GraphURL() string { return s.ts.URL + "/v1.0" }

// Certificate is the server's self-signed TLS certificate.
func (s *Server) Certificate() *x509.Certificate { return s.ts.Certificate() }

// HTTPClient trusts the server.
func (s *Server) HTTPClient() *http.Client { return s.ts.Client() }

func (s *Server) notifyLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// WaitFor returns when cond holds, checking after every change.
func (s *Server) WaitFor(ctx context.Context, cond func(*Server) bool) error {
	for {
		s.mu.Lock()
		ch := s.changed
		s.mu.Unlock()
		if cond(s) {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("graphfake: WaitFor: %w", ctx.Err())
		}
	}
}

// AddApp registers an app that authenticates with a client secret, or with
// a client assertion signed by cert's key (cert not nil).
func (s *Server) AddApp(clientID, secret string, cert *x509.Certificate) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.apps[clientID] = app{secret: secret, cert: cert}
}

// AddUser adds a mailbox; its object ID is derived from the address.
func (s *Server) AddUser(address string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	u := &user{address: address, id: fmt.Sprintf("00000000-0000-4000-8000-%012d", len(s.users)+1)}
	s.users[strings.ToLower(address)] = u
	return u.id
}

// UserToken returns an Entra ID token for the user, issued by the fake's
// tenant for audience (the app's client ID), valid for ttl; mutate may
// change its claims (to forge one).
func (s *Server) UserToken(address, audience string, ttl time.Duration, mutate func(jwt.MapClaims)) string {
	now := s.clock.Now()
	c := jwt.MapClaims{
		"iss": s.ts.URL + "/" + s.tenant + "/v2.0", "aud": audience, "tid": s.tenant,
		"iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(ttl).Unix(),
		"preferred_username": address, "oid": "user-" + strings.ToLower(address), "ver": "2.0",
	}
	if mutate != nil {
		mutate(c)
	}
	tok := jwt.NewWithClaims(jwt.SigningMethodRS256, c)
	tok.Header["kid"] = s.kid
	signed, err := tok.SignedString(s.key)
	if err != nil {
		panic(err)
	}
	return signed
}

func (s *Server) handleKeys(w http.ResponseWriter, r *http.Request) {
	e := big.NewInt(int64(s.key.E)).Bytes()
	writeJSON(w, http.StatusOK, map[string]any{"keys": []map[string]string{{
		"kty": "RSA", "use": "sig", "kid": s.kid,
		"n": base64.RawURLEncoding.EncodeToString(s.key.N.Bytes()), "e": base64.RawURLEncoding.EncodeToString(e),
	}}})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

func graphError(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, map[string]any{"error": map[string]string{"code": code, "message": msg}})
}

// handleToken is the client-credentials grant of the v2.0 token endpoint.
func (s *Server) handleToken(w http.ResponseWriter, r *http.Request) {
	s.count("token")
	if r.PathValue("tenant") != s.tenant {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "invalid_request", "error_description": "AADSTS90002: Tenant not found."})
		return
	}
	if err := r.ParseForm(); err != nil || r.PostForm.Get("grant_type") != "client_credentials" {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "unsupported_grant_type"})
		return
	}
	id := r.PostForm.Get("client_id")
	s.mu.Lock()
	a, ok := s.apps[id]
	s.mu.Unlock()
	if !ok {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "unauthorized_client", "error_description": "AADSTS700016: Application not found in the directory."})
		return
	}
	if !strings.HasSuffix(r.PostForm.Get("scope"), "/.default") {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "invalid_scope"})
		return
	}
	switch {
	case a.secret != "" && r.PostForm.Get("client_secret") == a.secret:
	case a.cert != nil && r.PostForm.Get("client_assertion_type") == "urn:ietf:params:oauth:client-assertion-type:jwt-bearer":
		if err := s.checkAssertion(r.PostForm.Get("client_assertion"), id, a.cert); err != nil {
			writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "invalid_client", "error_description": "AADSTS700027: " + err.Error()})
			return
		}
	default:
		writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "invalid_client", "error_description": "AADSTS7000215: Invalid client secret provided."})
		return
	}
	b := make([]byte, 24)
	rand.Read(b)
	tok := base64.RawURLEncoding.EncodeToString(b)
	s.mu.Lock()
	s.tokens[tok] = issued{exp: s.clock.Now().Add(time.Hour), clientID: id}
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, map[string]any{"token_type": "Bearer", "expires_in": 3599, "access_token": tok})
}

func (s *Server) checkAssertion(raw, clientID string, cert *x509.Certificate) error {
	var c jwt.RegisteredClaims
	_, err := jwt.ParseWithClaims(raw, &c, func(t *jwt.Token) (any, error) { return cert.PublicKey, nil },
		jwt.WithValidMethods([]string{"RS256", "PS256"}))
	if err != nil {
		return fmt.Errorf("client assertion: %w", err)
	}
	if c.Issuer != clientID || c.Subject != clientID || !c.VerifyAudience(s.ts.URL+"/"+s.tenant+"/oauth2/v2.0/token", true) {
		return fmt.Errorf("client assertion: wrong iss, sub or aud")
	}
	return nil
}

func (s *Server) count(op string) {
	s.mu.Lock()
	s.requests[op]++
	s.mu.Unlock()
}

// Requests returns how many requests of op (token, create, renew, delete,
// user, inbox, message) the fake answered.
func (s *Server) Requests(op string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.requests[op]
}

// FailNext makes the next request of op answer status (429 with
// Retry-After seconds when retryAfter > 0).
func (s *Server) FailNext(op string, status, retryAfter int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failures = append(s.failures, failure{op: op, status: status, retryAfter: retryAfter})
}

// Hold makes the requests of op wait, counted but not yet handled (a
// creation: not yet validated nor made), until release is called; a
// request whose client goes away meanwhile is dropped unhandled. Tests use
// it to act while mailpush waits for Graph.
func (s *Server) Hold(op string) (release func()) {
	ch := make(chan struct{})
	s.mu.Lock()
	if s.holds == nil {
		s.holds, s.held = map[string]chan struct{}{}, map[string]int{}
	}
	s.holds[op] = ch
	s.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			s.mu.Lock()
			if s.holds[op] == ch {
				delete(s.holds, op)
			}
			s.mu.Unlock()
			close(ch)
		})
	}
}

// Held returns how many requests of op have waited in a Hold so far.
func (s *Server) Held(op string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.held[op]
}

// authed checks the bearer token and applies FailNext.
func (s *Server) authed(op string, h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		s.count(op)
		s.mu.Lock()
		hold := s.holds[op]
		if hold != nil {
			s.held[op]++
			s.notifyLocked()
		}
		s.mu.Unlock()
		if hold != nil {
			select {
			case <-hold:
			case <-r.Context().Done():
				return
			}
		}
		tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		s.mu.Lock()
		iss, known := s.tokens[tok]
		var f *failure
		for i := range s.failures {
			if s.failures[i].op == op {
				ff := s.failures[i]
				f = &ff
				s.failures = append(s.failures[:i], s.failures[i+1:]...)
				break
			}
		}
		now := s.clock.Now()
		s.mu.Unlock()
		if !ok || !known || now.After(iss.exp) {
			graphError(w, http.StatusUnauthorized, "InvalidAuthenticationToken", "Access token is empty or invalid.")
			return
		}
		if f != nil {
			if f.retryAfter > 0 {
				w.Header().Set("Retry-After", strconv.Itoa(f.retryAfter))
			}
			graphError(w, f.status, "TooManyRequests", "Too many requests (injected).")
			return
		}
		h(w, r.WithContext(context.WithValue(r.Context(), appKey{}, iss.clientID)))
	}
}

type appKey struct{}

var resourceRE = regexp.MustCompile(`^users/([^/?]+)/mailFolders\('inbox'\)/messages(\?\$select=[A-Za-z,]+)?$`)

func (s *Server) handleCreate(w http.ResponseWriter, r *http.Request) {
	var in Subscription
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&in); err != nil {
		graphError(w, http.StatusBadRequest, "BadRequest", "Invalid JSON")
		return
	}
	m := resourceRE.FindStringSubmatch(in.Resource)
	now := s.clock.Now()
	switch {
	case m == nil:
		graphError(w, http.StatusBadRequest, "ExtensionError", "Resource not supported by the fake: "+in.Resource)
		return
	case in.ChangeType == "" || in.NotificationURL == "":
		graphError(w, http.StatusBadRequest, "ValidationError", "changeType and notificationUrl are required")
		return
	case in.ExpirationDateTime.After(now.Add(MaxLifetime)) || !in.ExpirationDateTime.After(now):
		graphError(w, http.StatusBadRequest, "ValidationError", "Subscription expiration can only be 10070 minutes in the future.")
		return
	case len(in.ClientState) > 128:
		graphError(w, http.StatusBadRequest, "ValidationError", "clientState exceeds 128 characters")
		return
	case in.IncludeResourceData && in.ExpirationDateTime.After(now.Add(MaxRichLifetime)):
		graphError(w, http.StatusBadRequest, "ValidationError", "Subscription expiration with resource data can only be 1440 minutes in the future.")
		return
	case in.IncludeResourceData && (in.EncryptionCertificate == "" || in.EncryptionCertificateID == ""):
		graphError(w, http.StatusBadRequest, "ValidationError", "encryptionCertificate and encryptionCertificateId are required with includeResourceData")
		return
	case in.ExpirationDateTime.Sub(now) > time.Hour && in.LifecycleNotificationURL == "":
		graphError(w, http.StatusBadRequest, "ValidationError", "lifecycleNotificationUrl is required for subscriptions longer than one hour")
		return
	}
	userKey, _ := url.PathUnescape(m[1])
	s.mu.Lock()
	u := s.findUserLocked(userKey)
	s.mu.Unlock()
	if u == nil {
		graphError(w, http.StatusNotFound, "ResourceNotFound", "The user does not exist.")
		return
	}
	// The validation handshake on both URLs; creation fails if either fails.
	for _, target := range []string{in.NotificationURL, in.LifecycleNotificationURL} {
		if target == "" {
			continue
		}
		if err := s.validate(r.Context(), target); err != nil {
			graphError(w, http.StatusBadRequest, "ValidationError", "Subscription validation request failed. "+err.Error())
			return
		}
	}
	s.mu.Lock()
	s.subSeq++
	in.ID = fmt.Sprintf("sub-%04d-%s", s.subSeq, randHex(6))
	in.user = strings.ToLower(u.address)
	in.appID, _ = r.Context().Value(appKey{}).(string)
	sub := in
	s.subs[in.ID] = &sub
	s.notifyLocked()
	s.mu.Unlock()
	if s.before != nil {
		s.before(sub)
	}
	writeJSON(w, http.StatusCreated, sub)
}

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return fmt.Sprintf("%x", b)
}

func (s *Server) findUserLocked(key string) *user {
	if u, ok := s.users[strings.ToLower(key)]; ok {
		return u
	}
	for _, u := range s.users {
		if u.id == key {
			return u
		}
	}
	return nil
}

// validate sends the validation request and checks the answer: 200,
// text/plain, the decoded token, within 10 s.
func (s *Server) validate(ctx context.Context, target string) error {
	token := "Validation: Testing client application reachability for subscription Request-Id: " + randHex(8)
	u, err := url.Parse(target)
	if err != nil {
		return err
	}
	q := u.Query()
	q.Set("validationToken", token)
	u.RawQuery = q.Encode()
	ctx, cancel := context.WithTimeout(ctx, ValidationTimeout)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, u.String(), nil)
	req.Header.Set("Content-Type", "text/plain; charset=utf-8")
	res, err := s.hc.Do(req)
	if err != nil {
		return fmt.Errorf("the endpoint did not answer: %w", err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(res.Body, 4096))
	if res.StatusCode != http.StatusOK || !strings.HasPrefix(res.Header.Get("Content-Type"), "text/plain") || string(body) != token {
		return fmt.Errorf("the endpoint answered %d %q without the validation token", res.StatusCode, res.Header.Get("Content-Type"))
	}
	return nil
}

func (s *Server) handleRenew(w http.ResponseWriter, r *http.Request) {
	var in Subscription
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&in); err != nil {
		graphError(w, http.StatusBadRequest, "BadRequest", "Invalid JSON")
		return
	}
	now := s.clock.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	sub, ok := s.liveLocked(r.PathValue("id"), now)
	if !ok {
		graphError(w, http.StatusNotFound, "ResourceNotFound", "The object was not found.")
		return
	}
	if in.ExpirationDateTime.After(now.Add(MaxLifetime)) || !in.ExpirationDateTime.After(now) {
		graphError(w, http.StatusBadRequest, "ValidationError", "Subscription expiration can only be 10070 minutes in the future.")
		return
	}
	if sub.IncludeResourceData && in.ExpirationDateTime.After(now.Add(MaxRichLifetime)) {
		graphError(w, http.StatusBadRequest, "ValidationError", "Subscription expiration with resource data can only be 1440 minutes in the future.")
		return
	}
	if in.EncryptionCertificate != "" {
		sub.EncryptionCertificate, sub.EncryptionCertificateID = in.EncryptionCertificate, in.EncryptionCertificateID
	}
	sub.ExpirationDateTime = in.ExpirationDateTime
	sub.Renewals++
	s.notifyLocked()
	writeJSON(w, http.StatusOK, sub)
}

// liveLocked returns a subscription that exists and has not expired (an
// expired one is gone, as in Graph).
func (s *Server) liveLocked(id string, now time.Time) (*Subscription, bool) {
	sub, ok := s.subs[id]
	if !ok {
		return nil, false
	}
	if !now.Before(sub.ExpirationDateTime) {
		delete(s.subs, id)
		s.notifyLocked()
		return nil, false
	}
	return sub, true
}

func (s *Server) handleDelete(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.liveLocked(r.PathValue("id"), s.clock.Now()); !ok {
		graphError(w, http.StatusNotFound, "ResourceNotFound", "The object was not found.")
		return
	}
	delete(s.subs, r.PathValue("id"))
	s.notifyLocked()
	w.WriteHeader(http.StatusNoContent)
}

// handleUser answers users/{id or userPrincipalName}: the user's ID and
// address, or Graph's 404 for a user the tenant does not have.
func (s *Server) handleUser(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	u := s.findUserLocked(r.PathValue("user"))
	s.mu.Unlock()
	if u == nil {
		graphError(w, http.StatusNotFound, "Request_ResourceNotFound", "Resource '"+r.PathValue("user")+"' does not exist or one of its queried reference-property objects are not present.")
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"id": u.id, "userPrincipalName": u.address, "mail": u.address})
}

func (s *Server) handleInbox(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	u := s.findUserLocked(r.PathValue("user"))
	unread := 0
	if u != nil {
		for _, m := range u.messages {
			if !m.IsRead {
				unread++
			}
		}
	}
	s.mu.Unlock()
	if u == nil {
		graphError(w, http.StatusNotFound, "ErrorInvalidUser", "The requested user is invalid.")
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"id": "inbox-" + u.id, "displayName": "Inbox", "unreadItemCount": unread})
}

func (s *Server) handleMessage(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	u := s.findUserLocked(r.PathValue("user"))
	if u == nil {
		graphError(w, http.StatusNotFound, "ErrorInvalidUser", "The requested user is invalid.")
		return
	}
	for _, m := range u.messages {
		if m.ID == r.PathValue("id") {
			writeJSON(w, http.StatusOK, map[string]any{"id": m.ID, "subject": m.Subject, "isRead": m.IsRead,
				"from": map[string]any{"emailAddress": map[string]string{"name": m.FromName, "address": m.FromAddress}}})
			return
		}
	}
	graphError(w, http.StatusNotFound, "ErrorItemNotFound", "The specified object was not found in the store.")
}

// Subscriptions returns the live subscriptions.
func (s *Server) Subscriptions() []Subscription {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.clock.Now()
	var out []Subscription
	for id := range s.subs {
		if sub, ok := s.liveLocked(id, now); ok {
			out = append(out, *sub)
		}
	}
	return out
}

// Unread returns the user's unread count.
func (s *Server) Unread(address string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	if u := s.findUserLocked(address); u != nil {
		for _, m := range u.messages {
			if !m.IsRead {
				n++
			}
		}
	}
	return n
}

// Deliver puts a new unread message in the user's Inbox and notifies its
// subscriptions (created); it returns the message ID.
func (s *Server) Deliver(address, subject, fromName, fromAddress string) string {
	s.mu.Lock()
	u := s.findUserLocked(address)
	if u == nil {
		s.mu.Unlock()
		return ""
	}
	s.msgSeq++
	m := &message{ID: fmt.Sprintf("AAMkAG-%06d", s.msgSeq), Subject: subject, FromName: fromName, FromAddress: fromAddress}
	u.messages = append(u.messages, m)
	s.mu.Unlock()
	s.notifyChange(u, "created", m.ID)
	return m.ID
}

// MarkRead marks a message read elsewhere (updated).
func (s *Server) MarkRead(address, id string) {
	s.mu.Lock()
	u := s.findUserLocked(address)
	var found bool
	if u != nil {
		for _, m := range u.messages {
			if m.ID == id {
				m.IsRead, found = true, true
			}
		}
	}
	s.mu.Unlock()
	if found {
		s.notifyChange(u, "updated", id)
	}
}

// MarkReadSilently marks a message read without any notification (as if
// Graph had missed it: a "missed" lifecycle event should follow).
func (s *Server) MarkReadSilently(address, id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if u := s.findUserLocked(address); u != nil {
		for _, m := range u.messages {
			if m.ID == id {
				m.IsRead = true
			}
		}
	}
}

// notifyChange sends the change to every live subscription of the user,
// one POST per notification URL carrying all its subscriptions' notifications.
func (s *Server) notifyChange(u *user, changeType, id string) {
	now := s.clock.Now()
	s.mu.Lock()
	batches := map[string][]map[string]any{}
	apps := map[string]map[string]bool{} // notification URL → app IDs, for validationTokens
	var msg *message
	for _, m := range u.messages {
		if m.ID == id {
			msg = m
		}
	}
	for sid := range s.subs {
		sub, ok := s.liveLocked(sid, now)
		if !ok || sub.user != strings.ToLower(u.address) || !strings.Contains(sub.ChangeType, changeType) {
			continue
		}
		n := map[string]any{
			"subscriptionId": sub.ID, "subscriptionExpirationDateTime": sub.ExpirationDateTime, "changeType": changeType,
			"clientState": sub.ClientState, "tenantId": s.tenant,
			"resource":     "Users/" + u.id + "/Messages/" + id,
			"resourceData": map[string]string{"@odata.type": "#Microsoft.Graph.Message", "@odata.id": "Users/" + u.id + "/Messages/" + id, "id": id},
		}
		if sub.IncludeResourceData && msg != nil {
			if ec, err := encryptFor(sub, msg); err == nil {
				n["encryptedContent"] = ec
				if apps[sub.NotificationURL] == nil {
					apps[sub.NotificationURL] = map[string]bool{}
				}
				apps[sub.NotificationURL][sub.appID] = true
			} else {
				s.log.Warn("graphfake: cannot encrypt resource data", "err", err)
			}
		}
		batches[sub.NotificationURL] = append(batches[sub.NotificationURL], n)
	}
	s.mu.Unlock()
	for target, value := range batches {
		var tokens []string
		for appID := range apps[target] {
			tokens = append(tokens, s.ValidationToken(appID, nil))
		}
		s.postTokens(target, false, value, tokens)
	}
}

// Lifecycle sends a lifecycle event for the subscription to its
// lifecycleNotificationUrl; subscriptionRemoved also removes it.
func (s *Server) Lifecycle(subID, event string) error {
	s.mu.Lock()
	sub, ok := s.liveLocked(subID, s.clock.Now())
	if !ok {
		s.mu.Unlock()
		return fmt.Errorf("graphfake: no subscription %s", subID)
	}
	n := map[string]any{"subscriptionId": sub.ID, "subscriptionExpirationDateTime": sub.ExpirationDateTime,
		"clientState": sub.ClientState, "tenantId": s.tenant, "lifecycleEvent": event, "resource": sub.Resource}
	target := sub.LifecycleNotificationURL
	if event == "subscriptionRemoved" {
		delete(s.subs, subID)
		s.notifyLocked()
	}
	s.mu.Unlock()
	s.post(target, true, []map[string]any{n})
	return nil
}

// Inject posts a raw body to a subscription's notification URL (for tests
// of forged or malformed batches) and returns the listener's status.
func (s *Server) Inject(subID string, body []byte) (int, error) {
	s.mu.Lock()
	sub, ok := s.subs[subID]
	s.mu.Unlock()
	if !ok {
		return 0, fmt.Errorf("graphfake: no subscription %s", subID)
	}
	res, err := s.hc.Post(sub.NotificationURL, "application/json", bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	res.Body.Close()
	return res.StatusCode, nil
}

// post delivers one batch (synchronously: the order of a test's steps is
// the order of its notifications), timing the answer for the slow rule.
// An endpoint over the drop ratio gets nothing.
func (s *Server) post(target string, lifecycle bool, value []map[string]any) {
	s.postTokens(target, lifecycle, value, nil)
}

func (s *Server) postTokens(target string, lifecycle bool, value []map[string]any, tokens []string) {
	batch := map[string]any{"value": value}
	if len(tokens) > 0 {
		batch["validationTokens"] = tokens
	}
	body, _ := json.Marshal(batch)
	d := Delivery{URL: target, Lifecycle: lifecycle, Notifications: len(value)}
	if s.SlowRatio() >= DropRatio {
		d.Dropped = true
		s.record(d, false)
		return
	}
	start := time.Now() // the listener's real answer time, whatever the test clock
	res, err := s.hc.Post(target, "application/json", bytes.NewReader(body))
	d.Took = time.Since(start)
	if err == nil {
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		d.Status = res.StatusCode
	}
	s.record(d, true)
}

func (s *Server) record(d Delivery, answered bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.clock.Now()
	if answered {
		s.answers = append(s.answers, answer{at: now, slow: d.Took > SlowAnswer || d.Status < 200 || d.Status > 299})
	}
	s.deliveries = append(s.deliveries, d)
	if len(s.deliveries) > 100_000 {
		s.deliveries = s.deliveries[len(s.deliveries)-50_000:]
	}
	s.notifyLocked()
}

// SlowRatio is the share of the listener's answers in the last 10 minutes
// that were slow (over 3 s) or failed: Graph calls the endpoint slow at
// 10 % and drops its notifications at 15 %.
func (s *Server) SlowRatio() float64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.clock.Now()
	i := 0
	for i < len(s.answers) && now.Sub(s.answers[i].at) > Window {
		i++
	}
	s.answers = s.answers[i:]
	if len(s.answers) == 0 {
		return 0
	}
	slow := 0
	for _, a := range s.answers {
		if a.slow {
			slow++
		}
	}
	return float64(slow) / float64(len(s.answers))
}

// Deliveries returns the notification POSTs so far.
func (s *Server) Deliveries() []Delivery {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Delivery(nil), s.deliveries...)
}

// IssuedTokens returns the app-only access tokens the fake issued (for
// tests that check they were never written down).
func (s *Server) IssuedTokens() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, 0, len(s.tokens))
	for t := range s.tokens {
		out = append(out, t)
	}
	return out
}

// ValidationToken is a validationTokens JWT as Graph sends with rich
// notifications: signed with the tenant's key, issued by its v1 STS for the
// app (audience), by Graph's change-notification app (azp); mutate may
// forge it.
func (s *Server) ValidationToken(appID string, mutate func(jwt.MapClaims)) string {
	now := s.clock.Now()
	c := jwt.MapClaims{"iss": "https://sts.windows.net/" + s.tenant + "/", "aud": appID, "azp": "0bf30f3b-4a52-48df-9a82-234910c4a086",
		"appid": "0bf30f3b-4a52-48df-9a82-234910c4a086", "iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(time.Hour).Unix(), "tid": s.tenant}
	if mutate != nil {
		mutate(c)
	}
	tok := jwt.NewWithClaims(jwt.SigningMethodRS256, c)
	tok.Header["kid"] = s.kid
	signed, _ := tok.SignedString(s.key)
	return signed
}

// encryptFor encrypts the message's resource data to the subscription's
// encryption certificate.
func encryptFor(sub *Subscription, m *message) (map[string]string, error) {
	der, err := base64.StdEncoding.DecodeString(sub.EncryptionCertificate)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	pub, ok := cert.PublicKey.(*rsa.PublicKey)
	if !ok {
		return nil, fmt.Errorf("graphfake: the encryption certificate's key is not RSA")
	}
	plain, _ := json.Marshal(map[string]any{"@odata.type": "#Microsoft.Graph.Message", "id": m.ID, "subject": m.Subject, "isRead": m.IsRead,
		"from": map[string]any{"emailAddress": map[string]string{"name": m.FromName, "address": m.FromAddress}}})
	data, key, sig, err := EncryptContent(plain, pub)
	if err != nil {
		return nil, err
	}
	return map[string]string{"data": data, "dataKey": key, "dataSignature": sig, "encryptionCertificateId": sub.EncryptionCertificateID}, nil
}
