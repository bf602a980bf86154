package postgres

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/mailpush/mailpush"
)

const gateDeviceCols = `tenant_id, device_id, user_hash, device_type, state, last_seen, created_at, updated_at`

// PutGateDevice creates or replaces a gate device, keeping its creation time
// and last-seen time.
func (s *Store) PutGateDevice(ctx context.Context, d *mailpush.GateDevice) error {
	now := s.clock.Now().UTC()
	var created, lastSeen int64
	err := s.pool.QueryRow(ctx, `INSERT INTO gate_devices (`+gateDeviceCols+`) VALUES ($1, $2, $3, $4, $5, 0, $6, $6)
		ON CONFLICT (tenant_id, device_id) DO UPDATE SET user_hash = excluded.user_hash, device_type = excluded.device_type,
			state = excluded.state, updated_at = excluded.updated_at
		RETURNING created_at, last_seen`,
		d.TenantID, d.DeviceID, d.UserHash, d.DeviceType, string(d.State), mailpush.UnixMilli(now)).Scan(&created, &lastSeen)
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
	d, err := scanGateDevice(s.pool.QueryRow(ctx, `SELECT `+gateDeviceCols+` FROM gate_devices WHERE tenant_id = $1 AND device_id = $2`, tenantID, deviceID))
	if errors.Is(err, pgx.ErrNoRows) {
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
	tag, err := s.pool.Exec(ctx, `DELETE FROM gate_devices WHERE tenant_id = $1 AND device_id = $2`, tenantID, deviceID)
	if err != nil {
		return dbError("delete gate device", err)
	}
	if tag.RowsAffected() == 0 {
		return notFound("gate device")
	}
	return nil
}

// TouchGateDevices records last-seen times in one statement (two arrays
// unnested side by side). A time never moves backwards.
func (s *Store) TouchGateDevices(ctx context.Context, tenantID string, seen map[string]time.Time) error {
	if len(seen) == 0 {
		return nil
	}
	ids := make([]string, 0, len(seen))
	times := make([]int64, 0, len(seen))
	for id, t := range seen {
		ids = append(ids, id)
		times = append(times, mailpush.UnixMilli(t))
	}
	_, err := s.pool.Exec(ctx, `UPDATE gate_devices g SET last_seen = v.t FROM unnest($2::text[], $3::bigint[]) AS v(id, t)
		WHERE g.tenant_id = $1 AND g.device_id = v.id AND g.last_seen < v.t`, tenantID, ids, times)
	if err != nil {
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
	var n int
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `DELETE FROM registrations WHERE tenant_id = $1 AND activesync_device_hash = $2 RETURNING mailbox_id`, tenantID, hash)
		if err != nil {
			return err
		}
		mailboxes, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return err
		}
		n = len(mailboxes)
		for _, id := range mailboxes {
			if err := s.deactivateIfEmpty(ctx, tx, id); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return 0, dbError("delete registrations", err)
	}
	return n, nil
}

// deactivateIfEmpty makes a mailbox without registrations inactive: the
// source then ends its subscription at the next notification.
func (s *Store) deactivateIfEmpty(ctx context.Context, tx pgx.Tx, mailboxID string) error {
	_, err := tx.Exec(ctx, `UPDATE mailboxes SET status = $1, updated_at = $2 WHERE id = $3 AND NOT EXISTS (SELECT 1 FROM registrations WHERE mailbox_id = $3)`,
		string(mailpush.StatusInactive), s.now(), mailboxID)
	return err
}
