package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"time"

	"github.com/mailpush/mailpush"
)

// LeaseOAuthGrant finds (or creates) the grant of seed's refresh token and
// takes its refresh lease when due and free, in one write transaction (the
// one writer connection serialises them).
func (s *Store) LeaseOAuthGrant(ctx context.Context, seed mailpush.OAuthGrant, holder string, until time.Time, due func(mailpush.OAuthGrant) bool) (mailpush.OAuthGrant, error) {
	tokKey := s.codec.OAuthTokenKey(seed.TokenURL, seed.ClientID, seed.RefreshToken)
	now := s.now()
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return mailpush.OAuthGrant{}, dbError("lease oauth grant", err)
	}
	defer tx.Rollback()
	g := seed
	var sealed []byte
	var leaseHolder string
	var leaseUntil int64
	find := func() error {
		return tx.QueryRowContext(ctx, `SELECT g.grant_key, g.sealed, g.version, g.lease_holder, g.lease_until
			FROM oauth_grant_tokens t JOIN oauth_grants g ON g.grant_key = t.grant_key WHERE t.token_key = ?`, tokKey).
			Scan(&g.Key, &sealed, &g.Version, &leaseHolder, &leaseUntil)
	}
	err = find()
	if errors.Is(err, sql.ErrNoRows) {
		g.Key = tokKey
		if sealed, err = s.codec.SealOAuth(g); err != nil {
			return mailpush.OAuthGrant{}, err
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO oauth_grants (grant_key, sealed, version, used_at) VALUES (?, ?, 1, ?) ON CONFLICT (grant_key) DO NOTHING`, tokKey, sealed, now); err != nil {
			return mailpush.OAuthGrant{}, dbError("create oauth grant", err)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO oauth_grant_tokens (token_key, grant_key) VALUES (?, ?) ON CONFLICT (token_key) DO NOTHING`, tokKey, tokKey); err != nil {
			return mailpush.OAuthGrant{}, dbError("create oauth grant", err)
		}
		err = find()
	}
	if err != nil {
		return mailpush.OAuthGrant{}, dbError("lease oauth grant", err)
	}
	if err := s.codec.OpenOAuth(&g, sealed); err != nil {
		return mailpush.OAuthGrant{}, err
	}
	if due(g) && (leaseHolder == "" || leaseUntil <= now) {
		g.Leased = true
		_, err = tx.ExecContext(ctx, `UPDATE oauth_grants SET lease_holder = ?, lease_until = ?, used_at = ? WHERE grant_key = ?`, holder, mailpush.UnixMilli(until), now, g.Key)
	} else {
		_, err = tx.ExecContext(ctx, `UPDATE oauth_grants SET used_at = ? WHERE grant_key = ?`, now, g.Key)
	}
	if err != nil {
		return mailpush.OAuthGrant{}, dbError("lease oauth grant", err)
	}
	if err := tx.Commit(); err != nil {
		return mailpush.OAuthGrant{}, dbError("lease oauth grant", err)
	}
	return g, nil
}

// SaveOAuthGrant stores a refresh's tokens if holder still holds the lease.
func (s *Store) SaveOAuthGrant(ctx context.Context, g mailpush.OAuthGrant, holder string) (mailpush.OAuthGrant, error) {
	sealed, err := s.codec.SealOAuth(g)
	if err != nil {
		return g, err
	}
	now := s.now()
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return g, dbError("save oauth grant", err)
	}
	defer tx.Rollback()
	res, err := tx.ExecContext(ctx, `UPDATE oauth_grants SET sealed = ?, version = version + 1, lease_holder = '', lease_until = 0, used_at = ?
		WHERE grant_key = ? AND version = ? AND lease_holder = ?`, sealed, now, g.Key, g.Version, holder)
	if err != nil {
		return g, dbError("save oauth grant", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return g, mailpush.Errorf(mailpush.EConflict, "the OAuth grant's refresh lease was lost (it ran out and another node took it)")
	}
	tokKey := s.codec.OAuthTokenKey(g.TokenURL, g.ClientID, g.RefreshToken)
	if _, err := tx.ExecContext(ctx, `UPDATE oauth_grant_tokens SET superseded_at = ? WHERE grant_key = ? AND superseded_at = 0 AND token_key <> ?`, now, g.Key, tokKey); err != nil {
		return g, dbError("save oauth grant", err)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO oauth_grant_tokens (token_key, grant_key) VALUES (?, ?) ON CONFLICT (token_key) DO NOTHING`, tokKey, g.Key); err != nil {
		return g, dbError("save oauth grant", err)
	}
	if err := tx.Commit(); err != nil {
		return g, dbError("save oauth grant", err)
	}
	g.Version++
	g.Leased = false
	return g, nil
}

// ReleaseOAuthGrant ends holder's lease without a change.
func (s *Store) ReleaseOAuthGrant(ctx context.Context, g mailpush.OAuthGrant, holder string) error {
	if _, err := s.w.ExecContext(ctx, `UPDATE oauth_grants SET lease_holder = '', lease_until = 0 WHERE grant_key = ? AND lease_holder = ?`, g.Key, holder); err != nil {
		return dbError("release oauth grant", err)
	}
	return nil
}

// DeleteOAuthGrant forgets a grant and its refresh tokens (cascade).
func (s *Store) DeleteOAuthGrant(ctx context.Context, g mailpush.OAuthGrant) error {
	if _, err := s.w.ExecContext(ctx, `DELETE FROM oauth_grants WHERE grant_key = ?`, g.Key); err != nil {
		return dbError("delete oauth grant", err)
	}
	return nil
}

// DeleteIdleOAuthGrants deletes idle grants and long-superseded refresh tokens.
func (s *Store) DeleteIdleOAuthGrants(ctx context.Context, before, supersededBefore time.Time, limit int) (int, error) {
	res, err := s.w.ExecContext(ctx, `DELETE FROM oauth_grants WHERE grant_key IN (SELECT grant_key FROM oauth_grants WHERE used_at < ? LIMIT ?)`, mailpush.UnixMilli(before), limit)
	if err != nil {
		return 0, dbError("delete idle oauth grants", err)
	}
	if _, err := s.w.ExecContext(ctx, `DELETE FROM oauth_grant_tokens WHERE token_key IN (SELECT token_key FROM oauth_grant_tokens WHERE superseded_at > 0 AND superseded_at < ? AND token_key <> grant_key LIMIT ?)`, mailpush.UnixMilli(supersededBefore), limit); err != nil {
		return 0, dbError("delete superseded oauth refresh tokens", err)
	}
	n, _ := res.RowsAffected()
	return int(n), nil
}
