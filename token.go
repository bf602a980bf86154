package mailpush

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"strings"
	"time"
)

// Scope is what a tenant's API token may do. Each token has exactly one.
//
// The app token ships inside every copy of the mail app, so anyone can hold
// it: it may only create registrations that prove themselves to the mail
// server (sealed credentials, a device-subscribed callback, a user's proof),
// manage registrations and look up certificates. The backend token stays on
// the tenant's own server, which vouches for its users: it may also create
// service-mode registrations. The admin token is for the MDM and operators:
// the gate's device registry and the tenant's settings.
type Scope string

const (
	ScopeApp     Scope = "app"
	ScopeBackend Scope = "backend"
	ScopeAdmin   Scope = "admin"
)

// Valid reports whether s is one of the three scopes.
func (s Scope) Valid() bool {
	return s == ScopeApp || s == ScopeBackend || s == ScopeAdmin
}

// Token is one API credential of a tenant, "<ID>.<secret>" on the wire. Only
// the SHA-256 of the secret is stored: the secret is 256 random bits, so a
// plain hash cannot be reversed by guessing and needs no slow KDF.
type Token struct {
	ID         string
	TenantID   string
	Scope      Scope
	SecretHash []byte
	CreatedAt  time.Time
}

// TokenSecretBytes is the size of a token's random secret (256 bits).
const TokenSecretBytes = 32

// NewToken makes a token of the given scope for a tenant and returns it with
// the bearer value to hand out once, "<ID>.<secret>".
func NewToken(tenantID string, scope Scope) (*Token, string) {
	secret := make([]byte, TokenSecretBytes)
	rand.Read(secret)
	s := base64.RawURLEncoding.EncodeToString(secret)
	t := &Token{
		ID:         NewID(),
		TenantID:   tenantID,
		Scope:      scope,
		SecretHash: HashTokenSecret(s),
	}
	return t, t.ID + "." + s
}

// HashTokenSecret is how a token's secret is stored and compared.
func HashTokenSecret(secret string) []byte {
	h := sha256.Sum256([]byte(secret))
	return h[:]
}

// SplitToken splits a bearer value "<tokenID>.<secret>". Tokens printed
// before scopes existed were "<tenantID>.<secret>"; their token ID is the
// tenant's ID, so they split the same way.
func SplitToken(tok string) (id, secret string, ok bool) {
	id, secret, ok = strings.Cut(tok, ".")
	return id, secret, ok && id != "" && secret != "" && len(tok) <= 256
}

// TokenReader is what VerifyToken needs of the store.
type TokenReader interface {
	Token(ctx context.Context, id string) (*Token, error)
	Tenant(ctx context.Context, id string) (*Tenant, error)
}

// TokenTenantReader is a TokenReader that reads a token and its tenant in
// one query (one read transaction or round trip instead of two: every API
// request pays it). VerifyToken uses it when the store has it.
type TokenTenantReader interface {
	TokenAndTenant(ctx context.Context, id string) (*Token, *Tenant, error)
}

// VerifyToken checks a bearer value "<id>.<secret>" and returns its tenant
// and token. It is the one place where a token is verified (the API and the
// admin console's token sign-in both use it): the token is read from the
// store each time, so a revoke takes effect at once, and the secret is
// compared in constant time with its stored hash. Every failure is an
// EUnauthorized error that does not say which part was wrong.
func VerifyToken(ctx context.Context, store TokenReader, bearer string) (*Tenant, *Token, error) {
	id, secret, ok := SplitToken(strings.TrimSpace(bearer))
	if !ok {
		return nil, nil, Errorf(EUnauthorized, "the API token is malformed: it is \"<id>.<secret>\" as printed by mailpush tenant add or mailpush token add")
	}
	invalid := Errorf(EUnauthorized, "the API token is not valid")
	var tok *Token
	var t *Tenant
	var err error
	if both, ok := store.(TokenTenantReader); ok {
		tok, t, err = both.TokenAndTenant(ctx, id)
	} else {
		tok, err = store.Token(ctx, id)
	}
	if ErrorCode(err) == ENotFound {
		// Compare anyway so that unknown tokens take as long as wrong secrets.
		subtle.ConstantTimeCompare(HashTokenSecret(secret), make([]byte, sha256.Size))
		return nil, nil, invalid
	}
	if err != nil {
		return nil, nil, err
	}
	if subtle.ConstantTimeCompare(HashTokenSecret(secret), tok.SecretHash) != 1 {
		return nil, nil, invalid
	}
	if t != nil {
		return t, tok, nil
	}
	t, err = store.Tenant(ctx, tok.TenantID)
	if ErrorCode(err) == ENotFound {
		return nil, nil, invalid
	}
	if err != nil {
		return nil, nil, err
	}
	return t, tok, nil
}
