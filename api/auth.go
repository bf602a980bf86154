package api

import (
	"context"
	"encoding/base64"
	"net/http"
	"slices"
	"strings"

	"github.com/mailpush/mailpush"
)

var b64 = base64.RawURLEncoding

type ctxKey int

const (
	tenantKey ctxKey = iota
	scopeKey
)

// scoped authenticates the bearer token and admits the request only when
// the token's scope is one of scopes; it puts the tenant and the scope in
// the request context (tenantFrom, scopeFrom). A wrong or revoked token is
// 401 unauthorized; a valid token of another scope is 403
// insufficient_scope, so that an app token can never administer the tenant.
func (s *Server) scoped(h http.HandlerFunc, scopes ...mailpush.Scope) http.Handler {
	if len(scopes) == 0 {
		panic("api: scoped needs at least one scope")
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t, tok, err := s.authenticate(r)
		if err != nil {
			w.Header().Set("WWW-Authenticate", `Bearer realm="mailpush"`)
			s.writeError(w, r, err)
			return
		}
		if !slices.Contains(scopes, tok.Scope) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="mailpush", error="insufficient_scope"`)
			s.writeError(w, r, mailpush.Errorf(mailpush.EScope, "this request needs a token of scope %s; the token given has scope %s", scopeList(scopes), tok.Scope))
			return
		}
		ctx := context.WithValue(r.Context(), tenantKey, t)
		h(w, r.WithContext(context.WithValue(ctx, scopeKey, tok.Scope)))
	})
}

func scopeList(scopes []mailpush.Scope) string {
	s := make([]string, len(scopes))
	for i, sc := range scopes {
		s[i] = string(sc)
	}
	return strings.Join(s, " or ")
}

// authenticate finds the bearer token and its tenant. The token is read
// from the store on every request: a revoke takes effect at once. The
// secret is compared in constant time with its stored hash.
func (s *Server) authenticate(r *http.Request) (*mailpush.Tenant, *mailpush.Token, error) {
	auth := r.Header.Get("Authorization")
	if auth == "" {
		return nil, nil, mailpush.Errorf(mailpush.EUnauthorized, "missing Authorization: Bearer <tenant API token>")
	}
	scheme, bearer, _ := strings.Cut(auth, " ")
	if !strings.EqualFold(scheme, "Bearer") {
		return nil, nil, mailpush.Errorf(mailpush.EUnauthorized, "Authorization must use the Bearer scheme with the tenant API token")
	}
	return mailpush.VerifyToken(r.Context(), s.Store, bearer)
}

func tenantFrom(ctx context.Context) *mailpush.Tenant {
	return ctx.Value(tenantKey).(*mailpush.Tenant)
}

func scopeFrom(ctx context.Context) mailpush.Scope {
	return ctx.Value(scopeKey).(mailpush.Scope)
}
