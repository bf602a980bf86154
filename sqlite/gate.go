package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"strings"
	"time"

	"github.com/mailpush/mailpush"
)

const gateDeviceCols = `tenant_id, device_id, user_hash, device_type, state, last_seen, created_at, updated_at`

// qGateDevice is the gate's lookup of a device on a cache miss, prepared at
// Open: parsing it cost more than running it.
const qGateDevice = `SELECT ` + gateDeviceCols + ` FROM gate_devices WHERE tenant_id = ? AND device_id = ?`

// PutGateDevice creates or replaces a gate device, keeping its creation time
// and last-seen time.
func (s *Store) PutGateDevice(ctx context.Context, d *mailpush.GateDevice) error {
	now := s.clock.Now().UTC()
	var created, lastSeen int64
	err := s.w.QueryRowContext(ctx, `INSERT INTO gate_devices (`+gateDeviceCols+`) VALUES (?, ?, ?, ?, ?, 0, ?, ?)
		ON CONFLICT (tenant_id, device_id) DO UPDATE SET user_hash = excluded.user_hash, device_type = excluded.device_type,
			state = excluded.state, updated_at = excluded.updated_at
		RETURNING created_at, last_seen`,
		d.TenantID, d.DeviceID, d.UserHash, d.DeviceType, string(d.State), mailpush.UnixMilli(now), mailpush.UnixMilli(now)).Scan(&created, &lastSeen)
	if err != nil {
		if isForeignKey(err) {
			return notFound("tenant")
		}
		return dbError("put gate device", err)
	}
	d.CreatedAt, d.UpdatedAt, d.LastSeen = mailpush.FromUnixMilli(created), now, mailpush.FromUnixMilli(lastSeen)
	return nil
}

// GateDevice returns a tenant's gate device.
func (s *Store) GateDevice(ctx context.Context, tenantID, deviceID string) (*mailpush.GateDevice, error) {
	d, err := scanGateDevice(readQuerier{s}.QueryRowContext(ctx, qGateDevice, tenantID, deviceID))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, notFound("gate device")
	}
	if err != nil {
		return nil, dbError("get gate device", err)
	}
	return d, nil
}

// scanGateDevice reads one row of gateDeviceCols.
func scanGateDevice(row interface{ Scan(...any) error }) (*mailpush.GateDevice, error) {
	var d mailpush.GateDevice
	var state string
	var last, created, updated int64
	if err := row.Scan(&d.TenantID, &d.DeviceID, &d.UserHash, &d.DeviceType, &state, &last, &created, &updated); err != nil {
		return nil, err
	}
	d.State = mailpush.DeviceState(state)
	d.LastSeen, d.CreatedAt, d.UpdatedAt = mailpush.FromUnixMilli(last), mailpush.FromUnixMilli(created), mailpush.FromUnixMilli(updated)
	return &d, nil
}

// DeleteGateDevice removes a gate device.
func (s *Store) DeleteGateDevice(ctx context.Context, tenantID, deviceID string) error {
	res, err := s.w.ExecContext(ctx, `DELETE FROM gate_devices WHERE tenant_id = ? AND device_id = ?`, tenantID, deviceID)
	if err != nil {
		return dbError("delete gate device", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return notFound("gate device")
	}
	return nil
}

// TouchGateDevices records last-seen times in one transaction. A time never
// moves backwards.
func (s *Store) TouchGateDevices(ctx context.Context, tenantID string, seen map[string]time.Time) error {
	if len(seen) == 0 {
		return nil
	}
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return dbError("touch gate devices", err)
	}
	defer tx.Rollback()
	stmt, err := tx.PrepareContext(ctx, `UPDATE gate_devices SET last_seen = ? WHERE tenant_id = ? AND device_id = ? AND last_seen < ?`)
	if err != nil {
		return dbError("touch gate devices", err)
	}
	defer stmt.Close()
	for id, t := range seen {
		if _, err := stmt.ExecContext(ctx, mailpush.UnixMilli(t), tenantID, id, mailpush.UnixMilli(t)); err != nil {
			return dbError("touch gate devices", err)
		}
	}
	if err := tx.Commit(); err != nil {
		return dbError("touch gate devices", err)
	}
	return nil
}

// DeleteRegistrationsByActiveSyncDevice removes the registrations linked to
// an ActiveSync DeviceId; mailboxes left without registrations become
// inactive, as with DeleteRegistration.
func (s *Store) DeleteRegistrationsByActiveSyncDevice(ctx context.Context, tenantID string, hash []byte) (int, error) {
	if len(hash) == 0 {
		return 0, nil
	}
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return 0, dbError("delete registrations", err)
	}
	defer tx.Rollback()
	rows, err := tx.QueryContext(ctx, `DELETE FROM registrations WHERE tenant_id = ? AND activesync_device_hash = ? RETURNING mailbox_id`, tenantID, hash)
	if err != nil {
		return 0, dbError("delete registrations", err)
	}
	var mailboxes []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return 0, dbError("delete registrations", err)
		}
		mailboxes = append(mailboxes, id)
	}
	if err := rows.Close(); err != nil {
		return 0, dbError("delete registrations", err)
	}
	for _, id := range mailboxes {
		if err := s.deactivateIfEmpty(ctx, tx, id); err != nil {
			return 0, dbError("delete registrations", err)
		}
	}
	if err := tx.Commit(); err != nil {
		return 0, dbError("delete registrations", err)
	}
	return len(mailboxes), nil
}

// deactivateIfEmpty makes a mailbox without registrations inactive: the
// source then ends its subscription at the next notification.
func (s *Store) deactivateIfEmpty(ctx context.Context, tx *sql.Tx, mailboxID string) error {
	_, err := tx.ExecContext(ctx, `UPDATE mailboxes SET status = ?, updated_at = ? WHERE id = ? AND NOT EXISTS (SELECT 1 FROM registrations WHERE mailbox_id = ?)`,
		string(mailpush.StatusInactive), s.now(), mailboxID, mailboxID)
	return err
}

func isForeignKey(err error) bool {
	return err != nil && strings.Contains(err.Error(), "FOREIGN KEY constraint failed")
}
