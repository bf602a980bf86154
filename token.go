package mailpush

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
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
	id := make([]byte, 16)
	rand.Read(id)
	secret := make([]byte, TokenSecretBytes)
	rand.Read(secret)
	s := base64.RawURLEncoding.EncodeToString(secret)
	t := &Token{
		ID:         strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(id)),
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
