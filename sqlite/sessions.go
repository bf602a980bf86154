package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"time"

	"github.com/mailpush/mailpush"
)

// CreateConsoleSession stores a session and deletes the expired ones.
func (s *Store) CreateConsoleSession(ctx context.Context, cs *mailpush.ConsoleSession, idleBefore, createdBefore time.Time) error {
	sealed, err := s.codec.Cipher.SealField([]byte(cs.Display))
	if err != nil {
		return err
	}
	if _, err := s.w.ExecContext(ctx, `DELETE FROM console_sessions WHERE last_seen < ? OR created_at < ?`, mailpush.UnixMilli(idleBefore), mailpush.UnixMilli(createdBefore)); err != nil {
		return dbError("delete expired console sessions", err)
	}
	_, err = s.w.ExecContext(ctx, `INSERT INTO console_sessions (id_hash, actor, display_sealed, tenant_id, token_id, created_at, last_seen) VALUES (?, ?, ?, ?, ?, ?, ?)`,
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
	err := s.w.QueryRowContext(ctx, `UPDATE console_sessions SET last_seen = ? WHERE id_hash = ? AND last_seen >= ? AND created_at >= ?
		RETURNING actor, display_sealed, tenant_id, token_id, created_at`,
		mailpush.UnixMilli(now), idHash, mailpush.UnixMilli(idleBefore), mailpush.UnixMilli(createdBefore)).Scan(&cs.Actor, &sealed, &cs.TenantID, &cs.TokenID, &created)
	if errors.Is(err, sql.ErrNoRows) {
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
	if _, err := s.w.ExecContext(ctx, `DELETE FROM console_sessions WHERE id_hash = ?`, idHash); err != nil {
		return dbError("delete console session", err)
	}
	return nil
}
