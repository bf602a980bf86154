package api

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"net/http"
	"strings"

	"github.com/mailpush/mailpush"
)

var b64 = base64.RawURLEncoding

type ctxKey int

const tenantKey ctxKey = 0

// HashTokenSecret is how a tenant token's secret is stored.
func HashTokenSecret(secret string) []byte {
	h := sha256.Sum256([]byte(secret))
	return h[:]
}

// SplitToken splits "<tenantID>.<secret>".
func SplitToken(tok string) (tenantID, secret string, ok bool) {
	tenantID, secret, ok = strings.Cut(tok, ".")
	return tenantID, secret, ok && tenantID != "" && secret != "" && len(tok) <= 256
}

// tenantOnly authenticates the bearer token and puts the tenant in the
// request context. The secret is compared in constant time with its hash.
func (s *Server) tenantOnly(h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t, err := s.authenticate(r)
		if err != nil {
			w.Header().Set("WWW-Authenticate", `Bearer realm="mailpush"`)
			s.writeError(w, r, err)
			return
		}
		h(w, r.WithContext(context.WithValue(r.Context(), tenantKey, t)))
	})
}

func (s *Server) authenticate(r *http.Request) (*mailpush.Tenant, error) {
	auth := r.Header.Get("Authorization")
	if auth == "" {
		return nil, mailpush.Errorf(mailpush.EUnauthorized, "missing Authorization: Bearer <tenant API token>")
	}
	scheme, tok, _ := strings.Cut(auth, " ")
	if !strings.EqualFold(scheme, "Bearer") {
		return nil, mailpush.Errorf(mailpush.EUnauthorized, "Authorization must use the Bearer scheme with the tenant API token")
	}
	id, secret, ok := SplitToken(strings.TrimSpace(tok))
	if !ok {
		return nil, mailpush.Errorf(mailpush.EUnauthorized, "the API token is malformed: it is \"<tenant>.<secret>\" as printed by mailpush tenant add")
	}
	t, err := s.Store.Tenant(r.Context(), id)
	if mailpush.ErrorCode(err) == mailpush.ENotFound {
		// Compare anyway so that unknown tenants take as long as wrong secrets.
		subtle.ConstantTimeCompare(HashTokenSecret(secret), make([]byte, sha256.Size))
		return nil, mailpush.Errorf(mailpush.EUnauthorized, "the API token is not valid")
	}
	if err != nil {
		return nil, err
	}
	if subtle.ConstantTimeCompare(HashTokenSecret(secret), t.TokenHash) != 1 {
		return nil, mailpush.Errorf(mailpush.EUnauthorized, "the API token is not valid")
	}
	return t, nil
}

func tenantFrom(ctx context.Context) *mailpush.Tenant {
	return ctx.Value(tenantKey).(*mailpush.Tenant)
}
