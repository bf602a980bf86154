package postgres

import (
	"context"
	"errors"
	"github.com/jackc/pgx/v5"
	"time"

	"github.com/mailpush/mailpush"
)

// CreateConsoleSession stores a session and deletes the expired ones.
func (s *Store) CreateConsoleSession(ctx context.Context, cs *mailpush.ConsoleSession, idleBefore, createdBefore time.Time) error {
	sealed, err := s.codec.Cipher.SealField([]byte(cs.Display))
	if err != nil {
		return err
	}
	if _, err := s.pool.Exec(ctx, `DELETE FROM console_sessions WHERE last_seen < $1 OR created_at < $2`, mailpush.UnixMilli(idleBefore), mailpush.UnixMilli(createdBefore)); err != nil {
		return dbError("delete expired console sessions", err)
	}
	_, err = s.pool.Exec(ctx, `INSERT INTO console_sessions (id_hash, actor, display_sealed, tenant_id, token_id, created_at, last_seen) VALUES ($1, $2, $3, $4, $5, $6, $7)`,
		cs.IDHash, cs.Actor, sealed, cs.TenantID, cs.TokenID, mailpush.UnixMilli(cs.CreatedAt), mailpush.UnixMilli(cs.LastSeen))
	if err != nil {
		return dbError("create console session", err)
	}
	return nil
}

// TouchConsoleSession returns a live session and records its use; an
// expired one is deleted.
func (s *Store) TouchConsoleSession(ctx context.Context, idHash []byte, now, idleBefore, createdBefore time.Time) (*mailpush.ConsoleSession, error) {
	cs := &mailpush.ConsoleSession{IDHash: idHash, LastSeen: now}
	var sealed []byte
	var created int64
	err := s.pool.QueryRow(ctx, `UPDATE console_sessions SET last_seen = $1 WHERE id_hash = $2 AND last_seen >= $3 AND created_at >= $4
		RETURNING actor, display_sealed, tenant_id, token_id, created_at`,
		mailpush.UnixMilli(now), idHash, mailpush.UnixMilli(idleBefore), mailpush.UnixMilli(createdBefore)).Scan(&cs.Actor, &sealed, &cs.TenantID, &cs.TokenID, &created)
	if errors.Is(err, pgx.ErrNoRows) {
		if err := s.DeleteConsoleSession(ctx, idHash); err != nil {
			return nil, err
		}
		return nil, notFound("console session")
	}
	if err != nil {
		return nil, dbError("touch console session", err)
	}
	display, err := s.codec.Cipher.OpenField(sealed)
	if err != nil {
		return nil, err
	}
	cs.Display, cs.CreatedAt = string(display), mailpush.FromUnixMilli(created)
	return cs, nil
}

// DeleteConsoleSession ends a session.
func (s *Store) DeleteConsoleSession(ctx context.Context, idHash []byte) error {
	if _, err := s.pool.Exec(ctx, `DELETE FROM console_sessions WHERE id_hash = $1`, idHash); err != nil {
		return dbError("delete console session", err)
	}
	return nil
}
