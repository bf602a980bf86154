package console

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"net/http"
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

// session is one signed-in administrator, as a request sees it.
type session struct {
	CSRF     string
	actor    string // for the audit log: "oidc:<hash>" or "token:<id>"
	Display  string // shown in the page header (email or "admin of <tenant>")
	tenantID string // "" for an operator of every tenant
	tokenID  string // the admin token a token sign-in used
}

// sessions are kept in the store (mailpush.ConsoleSessionStore), so that
// every node of a cluster accepts them, found by the SHA-256 of the cookie
// value: the store never holds a cookie. The idle and absolute timeouts are
// checked against the stored times on every request.
type sessions struct {
	store  mailpush.ConsoleSessionStore
	clock  mailpush.Clock
	idle   time.Duration
	maxAge time.Duration
}

func randomString() string {
	b := make([]byte, 32)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// key is how a cookie value is stored: only its hash, so that a copy of the
// database does not hand out live sessions.
func key(cookie string) []byte {
	h := sha256.Sum256([]byte(cookie))
	return h[:]
}

// csrfToken is the session's CSRF token, derived from the cookie: a page
// carries it, and it does not reveal the cookie. A cross-site form has
// neither.
func csrfToken(cookie string) string {
	h := sha256.Sum256([]byte("mailpush console csrf\x00" + cookie))
	return base64.RawURLEncoding.EncodeToString(h[:])
}

// create stores a new session and returns the cookie value.
func (s *sessions) create(ctx context.Context, sess *session) (string, error) {
	cookie := randomString()
	now := s.clock.Now()
	err := s.store.CreateConsoleSession(ctx, &mailpush.ConsoleSession{IDHash: key(cookie), Actor: sess.actor, Display: sess.Display,
		TenantID: sess.tenantID, TokenID: sess.tokenID, CreatedAt: now, LastSeen: now}, now.Add(-s.idle), now.Add(-s.maxAge))
	if err != nil {
		return "", err
	}
	sess.CSRF = csrfToken(cookie)
	return cookie, nil
}

// get returns the live session of a cookie value and marks it used; nil
// when there is none (never was, expired, signed out, or the store failed:
// a console that cannot read its store has nothing to show).
func (s *sessions) get(ctx context.Context, cookie string) *session {
	if cookie == "" || len(cookie) > 100 {
		return nil
	}
	now := s.clock.Now()
	cs, err := s.store.TouchConsoleSession(ctx, key(cookie), now, now.Add(-s.idle), now.Add(-s.maxAge))
	if err != nil {
		return nil
	}
	return &session{CSRF: csrfToken(cookie), actor: cs.Actor, Display: cs.Display, tenantID: cs.TenantID, tokenID: cs.TokenID}
}

func (s *sessions) delete(ctx context.Context, cookie string) error {
	return s.store.DeleteConsoleSession(ctx, key(cookie))
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
	sess := c.sessions.get(r.Context(), ck.Value)
	if sess != nil && sess.tokenID != "" {
		if _, err := c.cfg.Store.Token(r.Context(), sess.tokenID); err != nil {
			if mailpush.ErrorCode(err) == mailpush.ENotFound {
				c.sessions.delete(r.Context(), ck.Value)
			}
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
