package postgres

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/mailpush/mailpush"
)

// LeaseOAuthGrant finds (or creates) the grant of seed's refresh token and
// takes its refresh lease when due and free. The grant's row is locked
// (FOR UPDATE) only for this short transaction, never across the refresh
// itself: the lease is what keeps other nodes away from the token
// endpoint meanwhile (package ews says why).
func (s *Store) LeaseOAuthGrant(ctx context.Context, seed mailpush.OAuthGrant, holder string, until time.Time, due func(mailpush.OAuthGrant) bool) (mailpush.OAuthGrant, error) {
	tokKey := s.codec.OAuthTokenKey(seed.TokenURL, seed.ClientID, seed.RefreshToken)
	now := s.now()
	var out mailpush.OAuthGrant
	err := s.inTx(ctx, "lease oauth grant", func(tx pgx.Tx) error {
		g := seed
		var sealed []byte
		var leaseHolder string
		var leaseUntil int64
		find := func() error {
			return tx.QueryRow(ctx, `SELECT g.grant_key, g.sealed, g.version, g.lease_holder, g.lease_until
				FROM oauth_grant_tokens t JOIN oauth_grants g ON g.grant_key = t.grant_key WHERE t.token_key = $1 FOR UPDATE OF g`, tokKey).
				Scan(&g.Key, &sealed, &g.Version, &leaseHolder, &leaseUntil)
		}
		err := find()
		if errors.Is(err, pgx.ErrNoRows) {
			// Two nodes may create it at once: the second insert waits for
			// the first's commit and does nothing, and both then read it.
			g.Key = tokKey
			if sealed, err = s.codec.SealOAuth(g); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, `INSERT INTO oauth_grants (grant_key, sealed, version, used_at) VALUES ($1, $2, 1, $3) ON CONFLICT (grant_key) DO NOTHING`, tokKey, sealed, now); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, `INSERT INTO oauth_grant_tokens (token_key, grant_key) VALUES ($1, $1) ON CONFLICT (token_key) DO NOTHING`, tokKey); err != nil {
				return err
			}
			err = find()
		}
		if err != nil {
			return err
		}
		if err := s.codec.OpenOAuth(&g, sealed); err != nil {
			return err
		}
		if due(g) && (leaseHolder == "" || leaseUntil <= now) {
			g.Leased = true
			_, err = tx.Exec(ctx, `UPDATE oauth_grants SET lease_holder = $1, lease_until = $2, used_at = $3 WHERE grant_key = $4`, holder, mailpush.UnixMilli(until), now, g.Key)
		} else {
			_, err = tx.Exec(ctx, `UPDATE oauth_grants SET used_at = $1 WHERE grant_key = $2`, now, g.Key)
		}
		out = g
		return err
	})
	return out, err
}

// SaveOAuthGrant stores a refresh's tokens if holder still holds the lease.
func (s *Store) SaveOAuthGrant(ctx context.Context, g mailpush.OAuthGrant, holder string) (mailpush.OAuthGrant, error) {
	sealed, err := s.codec.SealOAuth(g)
	if err != nil {
		return g, err
	}
	now := s.now()
	err = s.inTx(ctx, "save oauth grant", func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `UPDATE oauth_grants SET sealed = $1, version = version + 1, lease_holder = '', lease_until = 0, used_at = $2
			WHERE grant_key = $3 AND version = $4 AND lease_holder = $5`, sealed, now, g.Key, g.Version, holder)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return mailpush.Errorf(mailpush.EConflict, "the OAuth grant's refresh lease was lost (it ran out and another node took it)")
		}
		tokKey := s.codec.OAuthTokenKey(g.TokenURL, g.ClientID, g.RefreshToken)
		if _, err := tx.Exec(ctx, `UPDATE oauth_grant_tokens SET superseded_at = $1 WHERE grant_key = $2 AND superseded_at = 0 AND token_key <> $3`, now, g.Key, tokKey); err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `INSERT INTO oauth_grant_tokens (token_key, grant_key) VALUES ($1, $2) ON CONFLICT (token_key) DO NOTHING`, tokKey, g.Key)
		return err
	})
	if err != nil {
		return g, err
	}
	g.Version++
	g.Leased = false
	return g, nil
}

// ReleaseOAuthGrant ends holder's lease without a change.
func (s *Store) ReleaseOAuthGrant(ctx context.Context, g mailpush.OAuthGrant, holder string) error {
	if _, err := s.pool.Exec(ctx, `UPDATE oauth_grants SET lease_holder = '', lease_until = 0 WHERE grant_key = $1 AND lease_holder = $2`, g.Key, holder); err != nil {
		return dbError("release oauth grant", err)
	}
	return nil
}

// DeleteOAuthGrant forgets a grant and its refresh tokens (cascade).
func (s *Store) DeleteOAuthGrant(ctx context.Context, g mailpush.OAuthGrant) error {
	if _, err := s.pool.Exec(ctx, `DELETE FROM oauth_grants WHERE grant_key = $1`, g.Key); err != nil {
		return dbError("delete oauth grant", err)
	}
	return nil
}

// DeleteIdleOAuthGrants deletes idle grants and long-superseded refresh tokens.
func (s *Store) DeleteIdleOAuthGrants(ctx context.Context, before, supersededBefore time.Time, limit int) (int, error) {
	tag, err := s.pool.Exec(ctx, `DELETE FROM oauth_grants WHERE grant_key IN (SELECT grant_key FROM oauth_grants WHERE used_at < $1 LIMIT $2)`, mailpush.UnixMilli(before), limit)
	if err != nil {
		return 0, dbError("delete idle oauth grants", err)
	}
	if _, err := s.pool.Exec(ctx, `DELETE FROM oauth_grant_tokens WHERE token_key IN (SELECT token_key FROM oauth_grant_tokens WHERE superseded_at > 0 AND superseded_at < $1 AND token_key <> grant_key LIMIT $2)`, mailpush.UnixMilli(supersededBefore), limit); err != nil {
		return 0, dbError("delete superseded oauth refresh tokens", err)
	}
	return int(tag.RowsAffected()), nil
}
