// Package fcmfake is a fake Firebase Cloud Messaging: a fake Google OAuth2
// token endpoint and a fake FCM HTTP v1 send endpoint, each a real HTTPS
// server on 127.0.0.1. The token endpoint checks the service-account JWT
// assertion (RS256 signature by a key it trusts, issuer, audience, scope,
// lifetime) and issues opaque access tokens; the send endpoint accepts only
// tokens it issued, for a project the service account belongs to, and checks
// the message as FCM does (one token target of the FCM alphabet, string data
// values, Android priority, size). Errors use FCM's body with a FcmError
// errorCode. Tests inject failures, latency and a token endpoint that is down.
package fcmfake

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v4"
)

// MaxPayload is FCM's message size limit, in bytes.
const MaxPayload = 4096

// Message is one message the fake accepted.
type Message struct {
	Project     string
	Token       string
	Data        map[string]string
	Title, Body string
	Priority    string
	CollapseKey string
	At          time.Time
}

type fault struct {
	n          int
	status     int
	code       string
	retryAfter int
}

// Server is a running fake FCM with its token endpoint.
type Server struct {
	fcm, oauth *httptest.Server

	mu           sync.Mutex
	accounts     map[string]*rsa.PublicKey // service-account email -> key
	projects     map[string]map[string]bool
	issued       map[string]issued // access token -> who and until when
	unregistered map[string]bool
	fault        fault
	tokenDown    bool
	latency      time.Duration
	requests     int
	tokenCalls   int
	messages     []Message
	changed      chan struct{}
}

type issued struct {
	email string
	until time.Time
}

// New starts the fake.
func New() *Server {
	s := &Server{accounts: map[string]*rsa.PublicKey{}, projects: map[string]map[string]bool{}, issued: map[string]issued{},
		unregistered: map[string]bool{}, changed: make(chan struct{})}
	s.oauth = httptest.NewUnstartedServer(http.HandlerFunc(s.serveToken))
	s.oauth.StartTLS()
	s.fcm = httptest.NewUnstartedServer(http.HandlerFunc(s.serveSend))
	s.fcm.EnableHTTP2 = true
	s.fcm.StartTLS()
	return s
}

// Close stops both servers.
func (s *Server) Close() { s.fcm.Close(); s.oauth.Close() }

// URL is the FCM endpoint (for fcm.Config.Endpoint).
func (s *Server) URL() string { return s.fcm.URL }

// TokenURL is the OAuth2 token endpoint.
func (s *Server) TokenURL() string { return s.oauth.URL + "/token" }

// Certificates are the two servers' certificates, to trust.
func (s *Server) Certificates() []*x509.Certificate {
	return []*x509.Certificate{s.fcm.Certificate(), s.oauth.Certificate()}
}

// NewServiceAccount makes a service account of project, trusted by the
// fake, and returns its JSON key file (with token_uri pointing at the fake).
func (s *Server) NewServiceAccount(project string) ([]byte, error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	email := fmt.Sprintf("mailpush-%s@%s.iam.gserviceaccount.com", randomHex(4), project)
	s.mu.Lock()
	s.accounts[email] = &key.PublicKey
	if s.projects[project] == nil {
		s.projects[project] = map[string]bool{}
	}
	s.projects[project][email] = true
	s.mu.Unlock()
	return json.Marshal(map[string]string{
		"type": "service_account", "project_id": project, "private_key_id": randomHex(20),
		"private_key":  string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})),
		"client_email": email, "client_id": "1", "token_uri": s.TokenURL(),
	})
}

// SetUnregistered makes pushes to token answer 404 UNREGISTERED.
func (s *Server) SetUnregistered(token string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.unregistered[token] = true
}

// FailNext makes the next n sends answer status with errorCode (and a
// Retry-After of retryAfter seconds when positive).
func (s *Server) FailNext(n, status int, errorCode string, retryAfter int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fault = fault{n, status, errorCode, retryAfter}
}

// SetTokenEndpointDown makes the token endpoint answer 503 (down) or work.
func (s *Server) SetTokenEndpointDown(down bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tokenDown = down
}

// SetLatency delays every send answer by d.
func (s *Server) SetLatency(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.latency = d
}

// Messages returns the accepted messages, oldest first.
func (s *Server) Messages() []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Message(nil), s.messages...)
}

// Requests counts the send requests answered.
func (s *Server) Requests() int { s.mu.Lock(); defer s.mu.Unlock(); return s.requests }

// TokenRequests counts the token requests answered.
func (s *Server) TokenRequests() int { s.mu.Lock(); defer s.mu.Unlock(); return s.tokenCalls }

// WaitFor blocks until pred holds for the accepted messages or ctx ends.
// pred runs with the lock held and must not call the Server.
func (s *Server) WaitFor(ctx context.Context, pred func([]Message) bool) error {
	for {
		s.mu.Lock()
		ok, ch := pred(s.messages), s.changed
		s.mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("fcmfake: wait for messages: %w", ctx.Err())
		}
	}
}

func (s *Server) serveToken(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.tokenCalls++
	down := s.tokenDown
	s.mu.Unlock()
	oauthError := func(status int, code, desc string) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		json.NewEncoder(w).Encode(map[string]string{"error": code, "error_description": desc})
	}
	if down {
		oauthError(http.StatusServiceUnavailable, "temporarily_unavailable", "token endpoint down (injected)")
		return
	}
	if r.Method != http.MethodPost || r.URL.Path != "/token" {
		oauthError(http.StatusNotFound, "invalid_request", "POST /token")
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	if err := r.ParseForm(); err != nil {
		oauthError(http.StatusBadRequest, "invalid_request", "bad form")
		return
	}
	if r.PostForm.Get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer" {
		oauthError(http.StatusBadRequest, "unsupported_grant_type", "want jwt-bearer")
		return
	}
	claims := jwt.MapClaims{}
	_, err := jwt.NewParser(jwt.WithValidMethods([]string{"RS256"})).ParseWithClaims(r.PostForm.Get("assertion"), claims, func(t *jwt.Token) (any, error) {
		iss, _ := claims["iss"].(string)
		s.mu.Lock()
		defer s.mu.Unlock()
		if k, ok := s.accounts[iss]; ok {
			return k, nil
		}
		return nil, fmt.Errorf("unknown service account %q", iss)
	})
	if err != nil {
		oauthError(http.StatusBadRequest, "invalid_grant", err.Error())
		return
	}
	aud, _ := claims["aud"].(string)
	scope, _ := claims["scope"].(string)
	iat, _ := claims["iat"].(float64)
	exp, _ := claims["exp"].(float64)
	switch {
	case aud != s.TokenURL():
		oauthError(http.StatusBadRequest, "invalid_grant", "aud is not the token URL")
		return
	case !strings.Contains(" "+scope+" ", " https://www.googleapis.com/auth/firebase.messaging "):
		oauthError(http.StatusBadRequest, "invalid_scope", "firebase.messaging scope missing")
		return
	case exp-iat > 3600 || exp <= iat:
		oauthError(http.StatusBadRequest, "invalid_grant", "assertion lifetime over 1h")
		return
	}
	tok := "ya29.fake-" + randomHex(24)
	s.mu.Lock()
	s.issued[tok] = issued{email: claims["iss"].(string), until: time.Now().Add(time.Hour)}
	s.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{"access_token": tok, "token_type": "Bearer", "expires_in": 3600})
}

// fcmError writes FCM's error body.
func fcmError(w http.ResponseWriter, status int, rpcStatus, code, msg string, retryAfter int) {
	type detail struct {
		Type      string `json:"@type"`
		ErrorCode string `json:"errorCode"`
	}
	body := map[string]any{"error": map[string]any{"code": status, "message": msg, "status": rpcStatus,
		"details": []detail{{"type.googleapis.com/google.firebase.fcm.v1.FcmError", code}}}}
	if retryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(retryAfter))
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(body)
}

// rpcStatus is the google.rpc code FCM pairs with an HTTP status.
func rpcStatus(status int) string {
	return map[int]string{400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
		429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE"}[status]
}

func (s *Server) serveSend(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.requests++
	latency := s.latency
	var injected *fault
	if s.fault.n > 0 {
		s.fault.n--
		f := s.fault
		injected = &f
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
	project, ok := strings.CutPrefix(r.URL.Path, "/v1/projects/")
	project, ok2 := strings.CutSuffix(project, "/messages:send")
	if !ok || !ok2 || project == "" || strings.Contains(project, "/") || r.Method != http.MethodPost {
		fcmError(w, 404, "NOT_FOUND", "", "no such method", 0)
		return
	}
	bearer, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	s.mu.Lock()
	who, known := s.issued[bearer]
	member := s.projects[project][who.email]
	s.mu.Unlock()
	if !ok || !known || time.Now().After(who.until) {
		fcmError(w, 401, "UNAUTHENTICATED", "THIRD_PARTY_AUTH_ERROR", "Request had invalid authentication credentials.", 0)
		return
	}
	if !member {
		fcmError(w, 403, "PERMISSION_DENIED", "SENDER_ID_MISMATCH", "Permission denied for this project.", 0)
		return
	}
	if injected != nil {
		fcmError(w, injected.status, rpcStatus(injected.status), injected.code, "injected failure", injected.retryAfter)
		return
	}
	if !strings.HasPrefix(r.Header.Get("Content-Type"), "application/json") {
		fcmError(w, 400, "INVALID_ARGUMENT", "INVALID_ARGUMENT", "Content-Type must be application/json", 0)
		return
	}
	raw, err := io.ReadAll(io.LimitReader(r.Body, 64<<10))
	if err != nil {
		fcmError(w, 400, "INVALID_ARGUMENT", "INVALID_ARGUMENT", "unreadable body", 0)
		return
	}
	var req struct {
		Message *struct {
			Token        string            `json:"token"`
			Topic        string            `json:"topic"`
			Condition    string            `json:"condition"`
			Data         map[string]string `json:"data"`
			Notification *struct {
				Title string `json:"title"`
				Body  string `json:"body"`
			} `json:"notification"`
			Android *struct {
				Priority    string `json:"priority"`
				CollapseKey string `json:"collapse_key"`
				TTL         string `json:"ttl"`
			} `json:"android"`
		} `json:"message"`
	}
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil || req.Message == nil {
		fcmError(w, 400, "INVALID_ARGUMENT", "INVALID_ARGUMENT", "Invalid JSON payload received.", 0)
		return
	}
	m := req.Message
	if m.Token == "" || m.Topic != "" || m.Condition != "" {
		fcmError(w, 400, "INVALID_ARGUMENT", "INVALID_ARGUMENT", "exactly one target (token) is required", 0)
		return
	}
	if !ValidToken(m.Token) {
		fcmError(w, 400, "INVALID_ARGUMENT", "INVALID_ARGUMENT", "The registration token is not a valid FCM registration token", 0)
		return
	}
	msg := Message{Project: project, Token: m.Token, Data: m.Data, At: time.Now()}
	if m.Android != nil {
		switch m.Android.Priority {
		case "", "normal", "high", "NORMAL", "HIGH":
		default:
			fcmError(w, 400, "INVALID_ARGUMENT", "INVALID_ARGUMENT", "android.priority must be normal or high", 0)
			return
		}
		msg.Priority, msg.CollapseKey = strings.ToLower(m.Android.Priority), m.Android.CollapseKey
	}
	if m.Notification != nil {
		msg.Title, msg.Body = m.Notification.Title, m.Notification.Body
	}
	size := len(msg.Title) + len(msg.Body)
	for k, v := range m.Data {
		size += len(k) + len(v)
		if k == "from" || strings.HasPrefix(k, "google.") || strings.HasPrefix(k, "gcm.") {
			fcmError(w, 400, "INVALID_ARGUMENT", "INVALID_ARGUMENT", "reserved data key "+k, 0)
			return
		}
	}
	if size > MaxPayload {
		fcmError(w, 400, "INVALID_ARGUMENT", "INVALID_ARGUMENT", "Message is too big", 0)
		return
	}
	s.mu.Lock()
	gone := s.unregistered[m.Token]
	s.mu.Unlock()
	if gone {
		fcmError(w, 404, "NOT_FOUND", "UNREGISTERED", "Requested entity was not found.", 0)
		return
	}
	s.mu.Lock()
	s.messages = append(s.messages, msg)
	close(s.changed)
	s.changed = make(chan struct{})
	s.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]string{"name": "projects/" + project + "/messages/" + randomHex(8)})
}

// ValidToken reports whether t looks like an FCM registration token: 32 to
// 4096 characters of the URL-safe alphabet FCM uses (letters, digits, '-',
// '_' and ':'). Google documents no length; real tokens are about 150
// characters, and 32 is what mailpush's API accepts.
func ValidToken(t string) bool {
	if len(t) < 32 || len(t) > 4096 {
		return false
	}
	for i := 0; i < len(t); i++ {
		c := t[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == ':') {
			return false
		}
	}
	return true
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}
