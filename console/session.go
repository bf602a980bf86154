package console

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"net/http"
	"sync"
	"time"

	"github.com/mailpush/mailpush"
)

// cookieName is the session cookie. The __Host- prefix (with Secure, Path=/
// and no Domain) pins it to this origin when served over TLS; without TLS
// the browser refuses the prefix, so the plain name is used.
const (
	cookieName       = "mailpush_admin"
	secureCookieName = "__Host-mailpush_admin"
	// pendingCookie carries an OIDC sign-in's state and nonce key between
	// the redirect to the provider and its return.
	pendingCookie = "mailpush_admin_oidc"
)

// session is one signed-in administrator.
type session struct {
	id        string // the cookie value's SHA-256, as the map key
	CSRF      string
	actor     string // for the audit log: "oidc:<sub>" or "token:<id>"
	Display   string // shown in the page header (email or token ID)
	tenantID  string // "" for an operator of every tenant
	tokenID   string // the admin token a token sign-in used
	created   time.Time
	lastSeen  time.Time
	oidcState string // pending OIDC sign-ins only
	oidcNonce string
}

// sessions keeps sessions in memory, bounded: when full, the oldest is
// dropped (its holder signs in again).
type sessions struct {
	mu      sync.Mutex
	byID    map[string]*session
	clock   mailpush.Clock
	idle    time.Duration
	maxAge  time.Duration
	maxSize int
}

func newSessions(clock mailpush.Clock, idle, maxAge time.Duration, maxSize int) *sessions {
	return &sessions{byID: map[string]*session{}, clock: clock, idle: idle, maxAge: maxAge, maxSize: maxSize}
}

func randomString() string {
	b := make([]byte, 32)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// key is how a cookie value is kept: only its hash is in memory, so that a
// heap dump does not hand out live sessions.
func key(cookie string) string {
	h := sha256.Sum256([]byte(cookie))
	return string(h[:])
}

// create stores a new session and returns the cookie value.
func (s *sessions) create(sess *session) string {
	cookie := randomString()
	now := s.clock.Now()
	sess.id, sess.CSRF, sess.created, sess.lastSeen = key(cookie), randomString(), now, now
	s.mu.Lock()
	defer s.mu.Unlock()
	s.evictLocked(now)
	if len(s.byID) >= s.maxSize {
		var oldest *session
		for _, o := range s.byID {
			if oldest == nil || o.created.Before(oldest.created) {
				oldest = o
			}
		}
		delete(s.byID, oldest.id)
	}
	s.byID[sess.id] = sess
	return cookie
}

func (s *sessions) evictLocked(now time.Time) {
	for id, o := range s.byID {
		if s.expired(o, now) {
			delete(s.byID, id)
		}
	}
}

func (s *sessions) expired(o *session, now time.Time) bool {
	return now.Sub(o.lastSeen) > s.idle || now.Sub(o.created) > s.maxAge
}

// get returns the live session of a cookie value and marks it used; an
// expired one is deleted.
func (s *sessions) get(cookie string) *session {
	if cookie == "" {
		return nil
	}
	now := s.clock.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	o := s.byID[key(cookie)]
	if o == nil {
		return nil
	}
	if s.expired(o, now) {
		delete(s.byID, o.id)
		return nil
	}
	o.lastSeen = now
	cp := *o
	return &cp
}

func (s *sessions) delete(cookie string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.byID, key(cookie))
}

func (c *Console) cookieName() string {
	if c.cfg.Secure {
		return secureCookieName
	}
	return cookieName
}

// setCookie sets an HttpOnly cookie, Secure under TLS. Sessions are
// SameSite=Strict; the pending OIDC cookie must be Lax, or the browser would
// not send it on the identity provider's redirect back (a cross-site
// navigation).
func (c *Console) setCookie(w http.ResponseWriter, name, value string, maxAge time.Duration, sameSite http.SameSite) {
	http.SetCookie(w, &http.Cookie{
		Name: name, Value: value, Path: "/", MaxAge: int(maxAge / time.Second),
		HttpOnly: true, Secure: c.cfg.Secure, SameSite: sameSite,
	})
}

func (c *Console) clearCookie(w http.ResponseWriter, name string) {
	http.SetCookie(w, &http.Cookie{Name: name, Value: "", Path: "/", MaxAge: -1, HttpOnly: true, Secure: c.cfg.Secure, SameSite: http.SameSiteStrictMode})
}

// current returns the request's session, or nil. A session signed in with
// a token ends as soon as that token is revoked (it is looked up on every
// request, as the API does).
func (c *Console) current(r *http.Request) *session {
	ck, err := r.Cookie(c.cookieName())
	if err != nil {
		return nil
	}
	sess := c.sessions.get(ck.Value)
	if sess != nil && sess.tokenID != "" {
		if _, err := c.cfg.Store.Token(r.Context(), sess.tokenID); err != nil {
			c.sessions.delete(ck.Value)
			return nil
		}
	}
	return sess
}

// checkCSRF verifies a state-changing request: the form's csrf field must
// equal the session's token, and a present Origin must be this host.
func checkCSRF(r *http.Request, sess *session) bool {
	if origin := r.Header.Get("Origin"); origin != "" && origin != "null" {
		if origin != "http://"+r.Host && origin != "https://"+r.Host {
			return false
		}
	} else if origin == "null" {
		return false
	}
	got := r.PostFormValue("csrf")
	return got != "" && subtle.ConstantTimeCompare([]byte(got), []byte(sess.CSRF)) == 1
}
