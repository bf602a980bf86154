package sqlite

import (
	"context"
	"database/sql"

	"github.com/mailpush/mailpush"
)

// TenantMailboxes lists a tenant's live mailboxes of a source, by ID.
func (s *Store) TenantMailboxes(ctx context.Context, tenantID string, source mailpush.Source, afterID string, limit int) ([]*mailpush.Mailbox, error) {
	if limit <= 0 {
		return nil, mailpush.Errorf(mailpush.EInvalid, "TenantMailboxes: limit must be positive")
	}
	rows, err := s.r.QueryContext(ctx, `SELECT `+mailboxCols+` FROM mailboxes WHERE tenant_id = ? AND source = ? AND status IN ('active', 'pending') AND id > ? ORDER BY id LIMIT ?`,
		tenantID, string(source), afterID, limit)
	if err != nil {
		return nil, dbError("tenant mailboxes", err)
	}
	defer rows.Close()
	var out []*mailpush.Mailbox
	for rows.Next() {
		m, err := s.scanMailbox(rows)
		if err != nil {
			return nil, dbError("tenant mailboxes", err)
		}
		out = append(out, m)
	}
	if err := rows.Err(); err != nil {
		return nil, dbError("tenant mailboxes", err)
	}
	return out, nil
}

// EnsureMailbox finds or creates the mailbox of (tenant, address hash, source).
func (s *Store) EnsureMailbox(ctx context.Context, mb *mailpush.Mailbox) (*mailpush.Mailbox, error) {
	now := s.clock.Now().UTC()
	var out *mailpush.Mailbox
	err := s.grouped(ctx, func(ctx context.Context, tx *sql.Tx) error {
		var err error
		out, err = s.ensureMailboxTx(ctx, tx, mb, now)
		return err
	})
	return out, err
}

// MoveRegistrations moves a mailbox's registrations to another mailbox of
// its tenant and makes the first inactive, in one transaction.
func (s *Store) MoveRegistrations(ctx context.Context, fromID, toID string) (int, error) {
	var moved int
	err := s.grouped(ctx, func(ctx context.Context, tx *sql.Tx) error {
		q := txQuerier{s, tx}
		from, err := s.mailboxWhere(ctx, q, "id = ?", fromID)
		if err != nil {
			return err
		}
		to, err := s.mailboxWhere(ctx, q, "id = ?", toID)
		if err != nil {
			return err
		}
		if from.TenantID != to.TenantID || fromID == toID {
			return mailpush.Errorf(mailpush.EInvalid, "registrations move only between two mailboxes of one tenant")
		}
		now := s.now()
		// The moved devices have seen the old mailbox's sequence: the new
		// one's events must come after it, or they would look stale.
		if _, err := tx.ExecContext(ctx, `UPDATE mailboxes SET seq = ?, updated_at = ? WHERE id = ? AND seq < ?`, from.Seq, now, toID, from.Seq); err != nil {
			return dbError("move registrations", err)
		}
		// A device already on the target keeps its registration there.
		if _, err := tx.ExecContext(ctx, `DELETE FROM registrations WHERE mailbox_id = ? AND token_hash IN (SELECT token_hash FROM registrations WHERE mailbox_id = ?)`, fromID, toID); err != nil {
			return dbError("move registrations", err)
		}
		res, err := tx.ExecContext(ctx, `UPDATE registrations SET mailbox_id = ?, updated_at = ? WHERE mailbox_id = ?`, toID, now, fromID)
		if err != nil {
			return dbError("move registrations", err)
		}
		n, err := res.RowsAffected()
		if err != nil {
			return dbError("move registrations", err)
		}
		moved = int(n)
		if err := s.deactivateIfEmpty(ctx, tx, fromID); err != nil {
			return dbError("move registrations", err)
		}
		return nil
	})
	return moved, err
}
