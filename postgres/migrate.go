package postgres

import (
	"context"
	"github.com/jackc/pgx/v5"

	"github.com/mailpush/mailpush"
)

// TenantMailboxes lists a tenant's live mailboxes of a source, by ID.
func (s *Store) TenantMailboxes(ctx context.Context, tenantID string, source mailpush.Source, afterID string, limit int) ([]*mailpush.Mailbox, error) {
	if limit <= 0 {
		return nil, mailpush.Errorf(mailpush.EInvalid, "TenantMailboxes: limit must be positive")
	}
	rows, err := s.pool.Query(ctx, `SELECT `+mailboxCols+` FROM mailboxes WHERE tenant_id = $1 AND source = $2 AND status IN ('active', 'pending') AND id > $3 ORDER BY id LIMIT $4`,
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
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var err error
		out, err = s.ensureMailboxTx(ctx, tx, mb, now)
		return err
	})
	if err != nil {
		return nil, dbError("ensure mailbox", err)
	}
	return out, nil
}

// MoveRegistrations moves a mailbox's registrations to another mailbox of
// its tenant and makes the first inactive, in one transaction (both rows
// locked, in ID order so that two moves cannot deadlock).
func (s *Store) MoveRegistrations(ctx context.Context, fromID, toID string) (int, error) {
	var moved int
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `SELECT id, tenant_id FROM mailboxes WHERE id IN ($1, $2) ORDER BY id FOR UPDATE`, fromID, toID)
		if err != nil {
			return err
		}
		tenants := map[string]string{}
		for rows.Next() {
			var id, tenant string
			if err := rows.Scan(&id, &tenant); err != nil {
				rows.Close()
				return err
			}
			tenants[id] = tenant
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		if _, ok := tenants[fromID]; !ok {
			return notFound("mailbox")
		}
		if _, ok := tenants[toID]; !ok {
			return notFound("mailbox")
		}
		if fromID == toID || tenants[fromID] != tenants[toID] {
			return mailpush.Errorf(mailpush.EInvalid, "registrations move only between two mailboxes of one tenant")
		}
		// The moved devices have seen the old mailbox's sequence: the new
		// one's events must come after it, or they would look stale.
		if _, err := tx.Exec(ctx, `UPDATE mailboxes SET seq = f.seq, updated_at = $3 FROM mailboxes f WHERE mailboxes.id = $1 AND f.id = $2 AND mailboxes.seq < f.seq`, toID, fromID, s.now()); err != nil {
			return err
		}
		// A device already on the target keeps its registration there.
		if _, err := tx.Exec(ctx, `DELETE FROM registrations WHERE mailbox_id = $1 AND token_hash IN (SELECT token_hash FROM registrations WHERE mailbox_id = $2)`, fromID, toID); err != nil {
			return err
		}
		tag, err := tx.Exec(ctx, `UPDATE registrations SET mailbox_id = $1, updated_at = $2 WHERE mailbox_id = $3`, toID, s.now(), fromID)
		if err != nil {
			return err
		}
		moved = int(tag.RowsAffected())
		return s.deactivateIfEmpty(ctx, tx, fromID)
	})
	if err != nil {
		return 0, passOrWrap("move registrations", err)
	}
	return moved, nil
}
