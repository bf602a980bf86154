package sqlstore

import (
	"context"
	"errors"

	"github.com/mailpush/mailpush"
)

// LeaseOAuthGrant is mailpush.OAuthGrantStore's LeaseOAuthGrant inside tx:
// it finds (or creates) the grant of seed's refresh token and takes its
// refresh lease until the given time when due and free. lockRow is what
// the store appends to the finding query so that the grant's row stays
// locked to the end of tx (PostgreSQL: " FOR UPDATE OF g"; SQLite's one
// writer needs nothing). Times are Unix milliseconds.
func LeaseOAuthGrant(ctx context.Context, tx Tx, codec mailpush.StoreCodec, seed mailpush.OAuthGrant, holder string, until, now int64, due func(mailpush.OAuthGrant) bool, lockRow string) (mailpush.OAuthGrant, error) {
	tokKey := codec.OAuthTokenKey(seed.TokenURL, seed.ClientID, seed.RefreshToken)
	g := seed
	var sealed []byte
	var leaseHolder string
	var leaseUntil int64
	find := func() error {
		return tx.QueryRow(ctx, `SELECT g.grant_key, g.sealed, g.version, g.lease_holder, g.lease_until
			FROM oauth_grant_tokens t JOIN oauth_grants g ON g.grant_key = t.grant_key WHERE t.token_key = ?`+lockRow, tokKey).
			Scan(&g.Key, &sealed, &g.Version, &leaseHolder, &leaseUntil)
	}
	err := find()
	if errors.Is(err, ErrNoRows) {
		// Two nodes may create it at once: the second insert waits for
		// the first's commit and does nothing, and both then read it.
		g.Key = tokKey
		if sealed, err = codec.SealOAuth(g); err != nil {
			return mailpush.OAuthGrant{}, err
		}
		if _, err := tx.Exec(ctx, `INSERT INTO oauth_grants (grant_key, sealed, version, used_at) VALUES (?, ?, 1, ?) ON CONFLICT (grant_key) DO NOTHING`, tokKey, sealed, now); err != nil {
			return mailpush.OAuthGrant{}, err
		}
		if _, err := tx.Exec(ctx, `INSERT INTO oauth_grant_tokens (token_key, grant_key) VALUES (?, ?) ON CONFLICT (token_key) DO NOTHING`, tokKey, tokKey); err != nil {
			return mailpush.OAuthGrant{}, err
		}
		err = find()
	}
	if err != nil {
		return mailpush.OAuthGrant{}, err
	}
	if err := codec.OpenOAuth(&g, sealed); err != nil {
		return mailpush.OAuthGrant{}, err
	}
	if due(g) && (leaseHolder == "" || leaseUntil <= now) {
		g.Leased = true
		_, err = tx.Exec(ctx, `UPDATE oauth_grants SET lease_holder = ?, lease_until = ?, used_at = ? WHERE grant_key = ?`, holder, until, now, g.Key)
	} else {
		_, err = tx.Exec(ctx, `UPDATE oauth_grants SET used_at = ? WHERE grant_key = ?`, now, g.Key)
	}
	if err != nil {
		return mailpush.OAuthGrant{}, err
	}
	return g, nil
}

// SaveOAuthGrant is mailpush.OAuthGrantStore's SaveOAuthGrant inside tx:
// the refresh's tokens are stored if holder still holds the lease, the
// grant's earlier refresh tokens are marked superseded and the new one
// names the grant.
func SaveOAuthGrant(ctx context.Context, tx Tx, codec mailpush.StoreCodec, g mailpush.OAuthGrant, holder string, now int64) (mailpush.OAuthGrant, error) {
	sealed, err := codec.SealOAuth(g)
	if err != nil {
		return g, err
	}
	n, err := tx.Exec(ctx, `UPDATE oauth_grants SET sealed = ?, version = version + 1, lease_holder = '', lease_until = 0, used_at = ?
		WHERE grant_key = ? AND version = ? AND lease_holder = ?`, sealed, now, g.Key, g.Version, holder)
	if err != nil {
		return g, err
	}
	if n == 0 {
		return g, mailpush.Errorf(mailpush.EConflict, "the OAuth grant's refresh lease was lost (it ran out and another node took it)")
	}
	tokKey := codec.OAuthTokenKey(g.TokenURL, g.ClientID, g.RefreshToken)
	if _, err := tx.Exec(ctx, `UPDATE oauth_grant_tokens SET superseded_at = ? WHERE grant_key = ? AND superseded_at = 0 AND token_key <> ?`, now, g.Key, tokKey); err != nil {
		return g, err
	}
	if _, err := tx.Exec(ctx, `INSERT INTO oauth_grant_tokens (token_key, grant_key) VALUES (?, ?) ON CONFLICT (token_key) DO NOTHING`, tokKey, g.Key); err != nil {
		return g, err
	}
	g.Version++
	g.Leased = false
	return g, nil
}
