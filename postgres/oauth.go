package postgres

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/mailpush/mailpush"
	"github.com/mailpush/mailpush/internal/sqlstore"
)

// LeaseOAuthGrant finds (or creates) the grant of seed's refresh token and
// takes its refresh lease when due and free. The grant's row is locked
// (FOR UPDATE) only for this short transaction, never across the refresh
// itself: the lease is what keeps other nodes away from the token
// endpoint meanwhile (package ews says why).
func (s *Store) LeaseOAuthGrant(ctx context.Context, seed mailpush.OAuthGrant, holder string, until time.Time, due func(mailpush.OAuthGrant) bool) (mailpush.OAuthGrant, error) {
	var g mailpush.OAuthGrant
	err := s.inTx(ctx, "lease oauth grant", func(tx pgx.Tx) (err error) {
		g, err = sqlstore.LeaseOAuthGrant(ctx, sharedTx{tx}, s.codec, seed, holder, mailpush.UnixMilli(until), s.now(), due, " FOR UPDATE OF g")
		return err
	})
	return g, err
}

// SaveOAuthGrant stores a refresh's tokens if holder still holds the lease.
func (s *Store) SaveOAuthGrant(ctx context.Context, g mailpush.OAuthGrant, holder string) (mailpush.OAuthGrant, error) {
	out := g
	err := s.inTx(ctx, "save oauth grant", func(tx pgx.Tx) (err error) {
		out, err = sqlstore.SaveOAuthGrant(ctx, sharedTx{tx}, s.codec, g, holder, s.now())
		return err
	})
	return out, err
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
