package mailpush

import (
	"context"
	"time"
)

// OAuthGrant is an OAuth grant (package ews refreshes them, oauth.go) as
// the nodes of a cluster share it: the newest tokens of one lineage of
// refresh tokens. A provider that rotates refresh tokens hands out a new
// one at each refresh; every refresh token the grant ever held names the
// same grant, so that a callback URL still carrying an old one finds the
// newest tokens instead of refreshing (and spending) the old one again.
type OAuthGrant struct {
	TokenURL     string
	ClientID     string
	AccessToken  string
	RefreshToken string
	ExpiresAt    int64 // Unix seconds; 0: unknown

	// Key names the grant in the store (a keyed hash); set by the store.
	Key []byte
	// Version moves at each refresh stored; set by the store.
	Version int64
	// Leased reports that the caller holds the grant's refresh lease; set
	// by the store.
	Leased bool
}

// OAuthGrantStore shares OAuth grants between nodes (package ews,
// oauth.go), so that one grant is refreshed by one node at a time and
// every node then uses the tokens it got. The tokens are sealed at rest
// with the store's FieldCipher, bound to the grant's key; the key is a
// keyed hash of the token URL, the client ID and the grant's first
// refresh token, and each refresh token the grant held is found through
// its own keyed hash.
type OAuthGrantStore interface {
	// LeaseOAuthGrant returns the grant that seed's refresh token belongs
	// to (its current one or an earlier one of its lineage) for seed's
	// token URL and client ID, creating it from seed when the store knows
	// none. When due says the stored tokens need a refresh and no other
	// holder's lease runs, it takes the refresh lease for holder until
	// until and the grant comes back Leased; otherwise the grant comes back
	// as stored, not leased (due tells the caller which case it is). The
	// time of use is recorded either way (idle grants expire: see
	// DeleteIdleOAuthGrants).
	LeaseOAuthGrant(ctx context.Context, seed OAuthGrant, holder string, until time.Time, due func(OAuthGrant) bool) (OAuthGrant, error)
	// SaveOAuthGrant stores refreshed tokens of a grant that holder leased
	// at g.Version, ends the lease and moves the version on; when the
	// refresh token changed, the new one names the grant too. EConflict
	// when the lease is no longer holder's (it ran out and another node
	// took it): nothing is written.
	SaveOAuthGrant(ctx context.Context, g OAuthGrant, holder string) (OAuthGrant, error)
	// ReleaseOAuthGrant ends holder's lease of g without a change (the
	// token endpoint could not be reached); a lease not held is no error.
	ReleaseOAuthGrant(ctx context.Context, g OAuthGrant, holder string) error
	// DeleteOAuthGrant forgets a grant and every refresh token of it (the
	// provider refused it: revoked, consent withdrawn).
	DeleteOAuthGrant(ctx context.Context, g OAuthGrant) error
	// DeleteIdleOAuthGrants deletes up to limit grants not used since
	// before, and up to limit refresh tokens superseded before
	// supersededBefore (but never a grant's first: the grant's key is
	// made from it), and says how many grants went.
	DeleteIdleOAuthGrants(ctx context.Context, before, supersededBefore time.Time, limit int) (int, error)
}
