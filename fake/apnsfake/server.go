// Package apnsfake is a fake Apple Push Notification service: a real HTTP/2
// server over TLS on 127.0.0.1 that checks requests the way APNs does (path,
// method, device token, ES256 provider token, topic, push type, priority,
// headers, payload) and records what it accepts. It authenticates providers
// both ways Apple does: an ES256 provider token of a key it trusts (AddKey),
// or a TLS client certificate issued by its own CA (IssueCertificate), whose
// topics bound the apns-topic. Tests and the load tool
// point the apns package at it, trusting CertPool.
//
// Where Apple documents an answer the fake gives the same status and reason.
// It is stricter than Apple in two places, to catch client bugs early: it
// rejects a background push whose payload carries alert, badge or sound, and
// a request that is not HTTP/2. Those answers use reasons Apple does not
// document (ReasonBadPayload, ReasonHTTP2Required).
//
// The fake is meant for loopback use by trusted clients: it caches every
// provider token it has seen and bounds nothing else.
package apnsfake

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v4"

	"github.com/mailpush/mailpush"
)

// Reasons the fake answers with. All but the last two are Apple's.
const (
	ReasonBadCollapseID          = "BadCollapseId"
	ReasonBadDeviceToken         = "BadDeviceToken"
	ReasonBadExpirationDate      = "BadExpirationDate"
	ReasonBadMessageID           = "BadMessageId"
	ReasonBadPriority            = "BadPriority"
	ReasonInvalidPushType        = "InvalidPushType"
	ReasonMissingDeviceToken     = "MissingDeviceToken"
	ReasonMissingTopic           = "MissingTopic"
	ReasonPayloadEmpty           = "PayloadEmpty"
	ReasonTopicDisallowed        = "TopicDisallowed"
	ReasonExpiredProviderToken   = "ExpiredProviderToken"
	ReasonInvalidProviderToken   = "InvalidProviderToken"
	ReasonMissingProviderToken   = "MissingProviderToken"
	ReasonBadPath                = "BadPath"
	ReasonMethodNotAllowed       = "MethodNotAllowed"
	ReasonUnregistered           = "Unregistered"
	ReasonPayloadTooLarge        = "PayloadTooLarge"
	ReasonTooManyRequests        = "TooManyRequests"
	ReasonInternalServerError    = "InternalServerError"
	ReasonServiceUnavailable     = "ServiceUnavailable"
	ReasonDeviceTokenNotForTopic = "DeviceTokenNotForTopic"

	// ReasonBadPayload is the fake's answer to a payload that is not a JSON
	// object with an "aps" object, or a background push with alert, badge or
	// sound. Apple documents no reason for these.
	ReasonBadPayload = "BadPayload"
	// ReasonHTTP2Required answers (with 505) a request that is not HTTP/2.
	// Apple refuses such clients during the TLS handshake.
	ReasonHTTP2Required = "HTTP2Required"
)

// Limits that APNs enforces.
const (
	MaxPayload     = 4096 // bytes, every push type but voip
	MaxVoIPPayload = 5120 // bytes, voip
	MaxCollapseID  = 64   // bytes
	// ProviderTokenLifetime is how long APNs accepts a provider token after
	// its iat.
	ProviderTokenLifetime = time.Hour
)

// pushTypes are the apns-push-type values Apple accepts.
var pushTypes = map[string]bool{
	"alert": true, "background": true, "location": true, "voip": true,
	"complication": true, "fileprovider": true, "mdm": true,
	"liveactivity": true, "pushtotalk": true, "widgets": true, "controls": true,
}

// Options configure a Server. The zero value is usable.
type Options struct {
	Logger *slog.Logger   // nil discards
	Clock  mailpush.Clock // nil is the system clock; judges token age and stamps Push.At
	// RetryAfter is sent, in whole seconds rounded up, with injected 429 and
	// 503 answers. Zero sends no Retry-After (Apple documents none).
	RetryAfter time.Duration
	// MaxRecorded bounds the pushes kept for Pushes, PushesFor and WaitFor:
	// beyond it the oldest are forgotten (Accepted still counts them). Zero
	// keeps every push, which suits tests; a load run should set it.
	MaxRecorded int
	// OnAccept, when set, is called with every push the fake accepts, before
	// it answers (a load generator measures delivery latency with it).
	OnAccept func(Push)
}

// Push is one push the fake accepted.
type Push struct {
	Token      string // lower-case hex
	Topic      string
	PushType   string // "alert" when the header was absent
	CollapseID string
	ID         string // apns-id: the client's, or the one the fake made
	Priority   int    // 10 when the header was absent
	Expiration time.Time
	Payload    []byte

	// Decoded from Payload.
	Badge            int // -1 when absent
	ContentAvailable bool
	MutableContent   bool
	AlertTitle       string
	AlertBody        string
	Sound            string
	Enc              string // mp.enc
	Seq              int64  // mp.seq

	At time.Time
}

type providerKey struct {
	teamID string
	pub    *ecdsa.PublicKey
}

type fault struct {
	n      int
	status int
	reason string
}

// Server is a running fake APNs.
type Server struct {
	srv        *httptest.Server
	ca         *clientCA
	log        *slog.Logger
	clock      mailpush.Clock
	retryAfter time.Duration
	maxPushes  int
	onAccept   func(Push)

	mu           sync.Mutex
	keys         map[string]providerKey // by key ID
	topics       map[string]bool
	verified     map[string]int64 // provider token -> iat, for tokens whose signature checked out
	seen         map[string]bool  // every provider token presented
	unregistered map[string]time.Time
	fault        fault
	resets       int // ResetNext
	goaways      int // GoAwayNext
	latency      time.Duration
	requests     int
	accepted     int
	conns        int
	pushes       []Push
	changed      chan struct{} // closed and replaced whenever pushes changes
}

// New starts a fake APNs on 127.0.0.1 with a fresh self-signed certificate.
// It trusts no key and allows no topic until AddKey and AllowTopic.
func New(opts Options) *Server {
	s := &Server{
		log:          opts.Logger,
		clock:        opts.Clock,
		retryAfter:   opts.RetryAfter,
		maxPushes:    opts.MaxRecorded,
		onAccept:     opts.OnAccept,
		keys:         make(map[string]providerKey),
		topics:       make(map[string]bool),
		verified:     make(map[string]int64),
		seen:         make(map[string]bool),
		unregistered: make(map[string]time.Time),
		changed:      make(chan struct{}),
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.clock == nil {
		s.clock = mailpush.SystemClock{}
	}
	ca, err := newClientCA()
	if err != nil {
		panic("apnsfake: " + err.Error()) // only when crypto/rand fails
	}
	s.ca = ca
	s.srv = httptest.NewUnstartedServer(http.HandlerFunc(s.serveHTTP))
	s.srv.EnableHTTP2 = true
	s.srv.TLS = ca.serverTLS()
	// TLS handshake failures (a client that does not trust CertPool) are
	// expected in tests: keep them out of stderr.
	s.srv.Config.ErrorLog = slog.NewLogLogger(s.log.Handler(), slog.LevelDebug)
	s.srv.Config.ConnContext = withConn
	s.srv.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			s.mu.Lock()
			s.conns++
			s.mu.Unlock()
		}
	}
	s.srv.StartTLS()
	return s
}

// URL is the base URL, e.g. https://127.0.0.1:41234, to use as the APNs host.
func (s *Server) URL() string { return s.srv.URL }

// Certificate is the server's self-signed TLS certificate.
func (s *Server) Certificate() *x509.Certificate { return s.srv.Certificate() }

// CertPool holds the server's certificate, for a client's RootCAs.
func (s *Server) CertPool() *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AddCert(s.srv.Certificate())
	return pool
}

// Close shuts the server down, closing its connections.
func (s *Server) Close() { s.srv.Close() }

// AddKey trusts pub as the signing key keyID of team teamID.
func (s *Server) AddKey(teamID, keyID string, pub *ecdsa.PublicKey) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.keys[keyID] = providerKey{teamID: teamID, pub: pub}
	clear(s.verified) // a replaced key must not keep its tokens valid
}

// AllowTopic accepts pushes to topic (a bundle ID).
func (s *Server) AllowTopic(topic string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.topics[topic] = true
}

// SetTokenUnregistered makes pushes to token answer 410 Unregistered with
// at as the timestamp. The zero time makes the token valid again.
func (s *Server) SetTokenUnregistered(token string, at time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if at.IsZero() {
		delete(s.unregistered, strings.ToLower(token))
		return
	}
	s.unregistered[strings.ToLower(token)] = at
}

// FailNext makes the next n requests, valid or not, answer status with
// reason. 410 answers carry the current time as timestamp; 429 and 503
// answers carry Options.RetryAfter.
func (s *Server) FailNext(n, status int, reason string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fault = fault{n: n, status: status, reason: reason}
}

// SetLatency delays every answer by d (zero for none).
func (s *Server) SetLatency(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.latency = d
}

// Pushes returns a copy of the accepted pushes, oldest first (the last
// Options.MaxRecorded of them, if set).
func (s *Server) Pushes() []Push {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Push(nil), s.recordedLocked()...)
}

func (s *Server) recordedLocked() []Push {
	if s.maxPushes > 0 && len(s.pushes) > s.maxPushes {
		return s.pushes[len(s.pushes)-s.maxPushes:]
	}
	return s.pushes
}

// Accepted counts the pushes accepted since New or Reset.
func (s *Server) Accepted() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.accepted
}

// PushesFor returns the accepted pushes to token, oldest first.
func (s *Server) PushesFor(token string) []Push {
	token = strings.ToLower(token)
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Push
	for _, p := range s.recordedLocked() {
		if p.Token == token {
			out = append(out, p)
		}
	}
	return out
}

// Requests counts the requests answered, accepted or not, since New or Reset.
func (s *Server) Requests() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.requests
}

// Connections counts the client connections accepted since New or Reset.
func (s *Server) Connections() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.conns
}

// TokensSeen counts the distinct provider tokens (JWTs) presented since New
// or Reset, valid or not.
func (s *Server) TokensSeen() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.seen)
}

// Reset forgets the recorded pushes, the accepted, request, connection and
// token counts, the unregistered tokens, the pending failures and the latency.
// Keys and topics stay.
func (s *Server) Reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pushes = nil
	s.accepted = 0
	s.requests = 0
	s.conns = 0
	clear(s.seen)
	clear(s.unregistered)
	s.fault = fault{}
	s.resets, s.goaways = 0, 0
	s.latency = 0
	s.notifyLocked()
}

// WaitFor blocks until pred holds for the accepted pushes (oldest first) or
// ctx ends. pred is called with the server's lock held: it must not call the
// Server. It must not keep the slice either.
func (s *Server) WaitFor(ctx context.Context, pred func([]Push) bool) error {
	for {
		s.mu.Lock()
		ok := pred(s.recordedLocked())
		ch := s.changed
		s.mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("apnsfake: wait for pushes: %w", context.Cause(ctx))
		}
	}
}

func (s *Server) notifyLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// GenerateKey makes a P-256 signing key like the .p8 files Apple hands out:
// the key, and its PKCS #8 PEM ("PRIVATE KEY") encoding.
func GenerateKey() (*ecdsa.PrivateKey, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("apnsfake: generate key: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("apnsfake: encode key: %w", err)
	}
	return key, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// apiError is an APNs error answer.
type apiError struct {
	status    int
	reason    string
	timestamp time.Time // 410 only
}

func reject(status int, reason string) *apiError {
	return &apiError{status: status, reason: reason}
}

func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	id := r.Header.Get("apns-id")
	if id == "" || !isUUID(id) {
		id = newUUID()
	}
	w.Header().Set("apns-id", id)

	if s.connFault(r) {
		return
	}
	s.mu.Lock()
	s.requests++
	latency := s.latency
	var injected *apiError
	if s.fault.n > 0 {
		s.fault.n--
		injected = reject(s.fault.status, s.fault.reason)
		if s.fault.status == http.StatusGone {
			injected.timestamp = s.clock.Now()
		}
	}
	s.mu.Unlock()

	if latency > 0 {
		t := time.NewTimer(latency)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return
		}
	}

	if injected != nil {
		s.answer(w, injected)
		return
	}
	p, e := s.check(r, id)
	if e != nil {
		s.answer(w, e)
		return
	}
	s.mu.Lock()
	s.accepted++
	s.pushes = append(s.pushes, p)
	if s.maxPushes > 0 && len(s.pushes) >= 2*s.maxPushes {
		// Trim in bulk so that each push costs O(1) on average.
		s.pushes = append([]Push(nil), s.pushes[len(s.pushes)-s.maxPushes:]...)
	}
	s.notifyLocked()
	s.mu.Unlock()
	if s.onAccept != nil {
		s.onAccept(p)
	}
	s.log.Debug("apnsfake: push accepted", "token", prefix(p.Token), "type", p.PushType)
	w.WriteHeader(http.StatusOK)
}

func (s *Server) answer(w http.ResponseWriter, e *apiError) {
	body := struct {
		Reason    string `json:"reason"`
		Timestamp int64  `json:"timestamp,omitempty"`
	}{Reason: e.reason}
	if !e.timestamp.IsZero() {
		body.Timestamp = e.timestamp.UnixMilli()
	}
	if (e.status == http.StatusTooManyRequests || e.status == http.StatusServiceUnavailable) && s.retryAfter > 0 {
		secs := int64((s.retryAfter + time.Second - 1) / time.Second)
		w.Header().Set("Retry-After", strconv.FormatInt(secs, 10))
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(e.status)
	_ = json.NewEncoder(w).Encode(body) // the client may be gone; nothing to do
	s.log.Debug("apnsfake: push rejected", "status", e.status, "reason", e.reason)
}

// check validates r like APNs and returns the push it carries.
func (s *Server) check(r *http.Request, id string) (Push, *apiError) {
	token, ok := strings.CutPrefix(r.URL.Path, "/3/device/")
	if !ok || strings.Contains(token, "/") {
		return Push{}, reject(http.StatusNotFound, ReasonBadPath)
	}
	if r.Method != http.MethodPost {
		return Push{}, reject(http.StatusMethodNotAllowed, ReasonMethodNotAllowed)
	}
	if r.ProtoMajor != 2 {
		return Push{}, reject(http.StatusHTTPVersionNotSupported, ReasonHTTP2Required)
	}
	cert := certificate(r)
	if cert == nil {
		if e := s.authenticate(r.Header.Values("authorization")); e != nil {
			return Push{}, e
		}
	}
	if token == "" {
		return Push{}, reject(http.StatusBadRequest, ReasonMissingDeviceToken)
	}
	if !validDeviceToken(token) {
		return Push{}, reject(http.StatusBadRequest, ReasonBadDeviceToken)
	}
	token = strings.ToLower(token)

	p := Push{Token: token, ID: id, Badge: -1}
	p.Topic = r.Header.Get("apns-topic")
	if cert != nil {
		// Certificate authentication: the certificate says which topics.
		topics := certTopics(cert)
		if p.Topic == "" && len(topics) > 0 {
			p.Topic = topics[0]
		}
		if !slices.Contains(topics, p.Topic) {
			return Push{}, reject(http.StatusBadRequest, ReasonTopicDisallowed)
		}
	} else {
		if p.Topic == "" {
			return Push{}, reject(http.StatusBadRequest, ReasonMissingTopic)
		}
		s.mu.Lock()
		allowed := s.topics[p.Topic]
		s.mu.Unlock()
		if !allowed {
			return Push{}, reject(http.StatusBadRequest, ReasonTopicDisallowed)
		}
	}

	p.PushType = r.Header.Get("apns-push-type")
	if p.PushType == "" {
		p.PushType = "alert"
	}
	if !pushTypes[p.PushType] {
		return Push{}, reject(http.StatusBadRequest, ReasonInvalidPushType)
	}
	p.Priority = 10
	if v := r.Header.Get("apns-priority"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || (n != 1 && n != 5 && n != 10) {
			return Push{}, reject(http.StatusBadRequest, ReasonBadPriority)
		}
		p.Priority = n
	}
	if p.PushType == "background" && p.Priority != 5 {
		return Push{}, reject(http.StatusBadRequest, ReasonBadPriority)
	}
	if v := r.Header.Get("apns-id"); v != "" && !isUUID(v) {
		return Push{}, reject(http.StatusBadRequest, ReasonBadMessageID)
	}
	p.CollapseID = r.Header.Get("apns-collapse-id")
	if len(p.CollapseID) > MaxCollapseID {
		return Push{}, reject(http.StatusBadRequest, ReasonBadCollapseID)
	}
	if v := r.Header.Get("apns-expiration"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			return Push{}, reject(http.StatusBadRequest, ReasonBadExpirationDate)
		}
		if n > 0 {
			p.Expiration = time.Unix(n, 0)
		}
	}

	limit := MaxPayload
	if p.PushType == "voip" {
		limit = MaxVoIPPayload
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, int64(limit)+1))
	if err != nil {
		return Push{}, reject(http.StatusBadRequest, ReasonPayloadEmpty)
	}
	if len(body) > limit {
		return Push{}, reject(http.StatusRequestEntityTooLarge, ReasonPayloadTooLarge)
	}
	if len(body) == 0 {
		return Push{}, reject(http.StatusBadRequest, ReasonPayloadEmpty)
	}
	if e := decodePayload(body, &p); e != nil {
		return Push{}, e
	}
	if p.PushType == "background" && (p.Badge >= 0 || p.AlertTitle != "" || p.AlertBody != "" || p.Sound != "") {
		return Push{}, reject(http.StatusBadRequest, ReasonBadPayload)
	}

	s.mu.Lock()
	at, gone := s.unregistered[token]
	s.mu.Unlock()
	if gone {
		return Push{}, &apiError{status: http.StatusGone, reason: ReasonUnregistered, timestamp: at}
	}
	p.Payload = body
	p.At = s.clock.Now()
	return p, nil
}

// authenticate checks the provider token in the authorization header values.
func (s *Server) authenticate(values []string) *apiError {
	if len(values) == 0 {
		return reject(http.StatusForbidden, ReasonMissingProviderToken)
	}
	scheme, bearer, ok := strings.Cut(values[0], " ")
	if len(values) != 1 || !ok || !strings.EqualFold(scheme, "bearer") || bearer == "" {
		return reject(http.StatusForbidden, ReasonInvalidProviderToken)
	}

	s.mu.Lock()
	s.seen[bearer] = true
	iat, known := s.verified[bearer]
	s.mu.Unlock()

	if !known {
		var err error
		iat, err = s.verify(bearer)
		if err != nil {
			s.log.Debug("apnsfake: provider token refused", "err", err)
			return reject(http.StatusForbidden, ReasonInvalidProviderToken)
		}
		s.mu.Lock()
		s.verified[bearer] = iat
		s.mu.Unlock()
	}
	if s.clock.Now().Sub(time.Unix(iat, 0)) > ProviderTokenLifetime {
		return reject(http.StatusForbidden, ReasonExpiredProviderToken)
	}
	return nil
}

// verify checks an ES256 provider token's key, issuer and signature, and
// returns its iat.
func (s *Server) verify(bearer string) (int64, error) {
	claims := jwt.MapClaims{}
	parser := jwt.NewParser(jwt.WithValidMethods([]string{"ES256"}), jwt.WithoutClaimsValidation())
	_, err := parser.ParseWithClaims(bearer, claims, func(t *jwt.Token) (any, error) {
		kid, _ := t.Header["kid"].(string)
		s.mu.Lock()
		key, ok := s.keys[kid]
		s.mu.Unlock()
		if !ok {
			return nil, fmt.Errorf("unknown key ID %q", kid)
		}
		if iss, _ := claims["iss"].(string); iss != key.teamID {
			return nil, fmt.Errorf("issuer %q is not the team of key %q", iss, kid)
		}
		return key.pub, nil
	})
	if err != nil {
		return 0, err
	}
	iat, ok := claims["iat"].(float64)
	if !ok {
		return 0, errors.New("no iat claim")
	}
	if time.Unix(int64(iat), 0).After(s.clock.Now().Add(time.Minute)) {
		return 0, errors.New("iat in the future")
	}
	return int64(iat), nil
}

// decodePayload checks that body is a JSON object with an "aps" object and
// copies the fields the fake reports into p.
func decodePayload(body []byte, p *Push) *apiError {
	var doc struct {
		APS *struct {
			Alert            json.RawMessage `json:"alert"`
			Badge            *int            `json:"badge"`
			Sound            json.RawMessage `json:"sound"`
			ContentAvailable int             `json:"content-available"`
			MutableContent   int             `json:"mutable-content"`
		} `json:"aps"`
		MP struct {
			Seq int64  `json:"seq"`
			Enc string `json:"enc"`
		} `json:"mp"`
	}
	if err := json.Unmarshal(body, &doc); err != nil || doc.APS == nil {
		return reject(http.StatusBadRequest, ReasonBadPayload)
	}
	a := doc.APS
	if a.Badge != nil {
		p.Badge = *a.Badge
	}
	p.ContentAvailable = a.ContentAvailable == 1
	p.MutableContent = a.MutableContent == 1
	if len(a.Alert) > 0 && string(a.Alert) != "null" {
		var text string
		var alert struct{ Title, Body string }
		switch {
		case json.Unmarshal(a.Alert, &text) == nil:
			p.AlertBody = text
		case json.Unmarshal(a.Alert, &alert) == nil:
			p.AlertTitle, p.AlertBody = alert.Title, alert.Body
		default:
			return reject(http.StatusBadRequest, ReasonBadPayload)
		}
	}
	if len(a.Sound) > 0 && string(a.Sound) != "null" {
		// A critical-alert sound is an object; report its presence.
		if json.Unmarshal(a.Sound, &p.Sound) != nil {
			p.Sound = string(a.Sound)
		}
	}
	p.Seq, p.Enc = doc.MP.Seq, doc.MP.Enc
	return nil
}

// validDeviceToken reports whether t looks like an APNs device token: an
// even number, 64 to 200, of hex digits.
func validDeviceToken(t string) bool {
	if len(t) < 64 || len(t) > 200 || len(t)%2 != 0 {
		return false
	}
	for i := 0; i < len(t); i++ {
		if !isHex(t[i]) {
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
			if !isHex(s[i]) {
				return false
			}
		}
	}
	return true
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// newUUID makes a random (version 4) UUID, as APNs does for a push without
// apns-id.
func newUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%X-%X-%X-%X-%X", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}

func prefix(token string) string {
	if len(token) > 8 {
		return token[:8]
	}
	return token
}
