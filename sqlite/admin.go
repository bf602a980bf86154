package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/mailpush/mailpush"
)

// AppendAudit records an administrator's change.
func (s *Store) AppendAudit(ctx context.Context, e *mailpush.AuditEntry) error {
	if e.At.IsZero() {
		e.At = s.clock.Now().UTC()
	}
	res, err := s.w.ExecContext(ctx, `INSERT INTO audit_log (at, actor, tenant_id, action, target, detail) VALUES (?, ?, ?, ?, ?, ?)`,
		mailpush.UnixMilli(e.At), e.Actor, e.TenantID, e.Action, e.Target, e.Detail)
	if err != nil {
		return dbError("append audit", err)
	}
	e.ID, _ = res.LastInsertId()
	return nil
}

// AuditEntries lists the newest audit entries first.
func (s *Store) AuditEntries(ctx context.Context, tenantID string, limit int) ([]mailpush.AuditEntry, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT id, at, actor, tenant_id, action, target, detail FROM audit_log
		WHERE ? = '' OR tenant_id = ? ORDER BY id DESC LIMIT ?`, tenantID, tenantID, limit)
	if err != nil {
		return nil, dbError("audit entries", err)
	}
	defer rows.Close()
	var out []mailpush.AuditEntry
	for rows.Next() {
		var e mailpush.AuditEntry
		var at int64
		if err := rows.Scan(&e.ID, &at, &e.Actor, &e.TenantID, &e.Action, &e.Target, &e.Detail); err != nil {
			return nil, dbError("audit entries", err)
		}
		e.At = mailpush.FromUnixMilli(at)
		out = append(out, e)
	}
	return out, rows.Err()
}

// SubscriptionHealth groups mailboxes by source and status.
func (s *Store) SubscriptionHealth(ctx context.Context, tenantID string, overdueBefore time.Time) ([]mailpush.SourceHealth, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT source, status, count(*), coalesce(sum(last_event_at < ?), 0), coalesce(max(last_event_at), 0)
		FROM mailboxes WHERE ? = '' OR tenant_id = ? GROUP BY source, status ORDER BY source, status`, mailpush.UnixMilli(overdueBefore), tenantID, tenantID)
	if err != nil {
		return nil, dbError("subscription health", err)
	}
	defer rows.Close()
	var out []mailpush.SourceHealth
	for rows.Next() {
		var h mailpush.SourceHealth
		var src, status string
		var last int64
		if err := rows.Scan(&src, &status, &h.Mailboxes, &h.Overdue, &last); err != nil {
			return nil, dbError("subscription health", err)
		}
		h.Source, h.Status = mailpush.Source(src), mailpush.Status(status)
		if last > 0 {
			h.LastEventAt = mailpush.FromUnixMilli(last)
		}
		out = append(out, h)
	}
	return out, rows.Err()
}

// GateDevices lists a tenant's gate devices, most recently changed first.
func (s *Store) GateDevices(ctx context.Context, tenantID string, limit int) ([]*mailpush.GateDevice, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT `+gateDeviceCols+` FROM gate_devices WHERE tenant_id = ? ORDER BY updated_at DESC, device_id LIMIT ?`, tenantID, limit)
	if err != nil {
		return nil, dbError("list gate devices", err)
	}
	defer rows.Close()
	var out []*mailpush.GateDevice
	for rows.Next() {
		d, err := scanGateDevice(rows)
		if err != nil {
			return nil, dbError("list gate devices", err)
		}
		out = append(out, d)
	}
	return out, rows.Err()
}

// DropDeadLetter deletes one of a tenant's dead letters.
func (s *Store) DropDeadLetter(ctx context.Context, tenantID, pushID string) error {
	res, err := s.w.ExecContext(ctx, `DELETE FROM outbox_dead WHERE tenant_id = ? AND push_id = ?`, tenantID, pushID)
	if err != nil {
		return dbError("drop dead letter", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return notFound("dead letter")
	}
	return nil
}

// SetCallbackURL keeps a registration's callback URL, sealed.
func (s *Store) SetCallbackURL(ctx context.Context, tenantID, registrationID, url string) error {
	sealed, err := s.codec.Cipher.SealField([]byte(url))
	if err != nil {
		return err
	}
	_, err = s.w.ExecContext(ctx, `INSERT INTO registration_callbacks (registration_id, tenant_id, url_sealed)
		SELECT id, tenant_id, ? FROM registrations WHERE id = ? AND tenant_id = ?
		ON CONFLICT (registration_id) DO UPDATE SET url_sealed = excluded.url_sealed`, sealed, registrationID, tenantID)
	if err != nil {
		return dbError("set callback URL", err)
	}
	return nil
}

// CallbackURL returns a registration's callback URL.
func (s *Store) CallbackURL(ctx context.Context, tenantID, registrationID string) (string, error) {
	var sealed []byte
	err := s.r.QueryRowContext(ctx, `SELECT url_sealed FROM registration_callbacks WHERE registration_id = ? AND tenant_id = ?`, registrationID, tenantID).Scan(&sealed)
	if errors.Is(err, sql.ErrNoRows) {
		return "", notFound("callback URL")
	}
	if err != nil {
		return "", dbError("callback URL", err)
	}
	url, err := s.codec.Cipher.OpenField(sealed)
	if err != nil {
		return "", fmt.Errorf("callback URL of registration %s: %w", registrationID, err)
	}
	return string(url), nil
}

// DueSubscriptions counts the live mailboxes silent since each time.
func (s *Store) DueSubscriptions(ctx context.Context, tenantID string, source mailpush.Source, before []time.Time) ([]int, error) {
	out := make([]int, len(before))
	for i, b := range before {
		err := s.r.QueryRowContext(ctx, `SELECT count(*) FROM mailboxes WHERE source = ? AND status IN ('active', 'pending') AND last_event_at < ? AND (? = '' OR tenant_id = ?)`,
			string(source), mailpush.UnixMilli(b), tenantID, tenantID).Scan(&out[i])
		if err != nil {
			return nil, dbError("due subscriptions", err)
		}
	}
	return out, nil
}
