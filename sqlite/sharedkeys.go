package sqlite

import (
	"context"
	"time"

	"github.com/mailpush/mailpush"
)

// PutSharedKey stores a key every node must hold, sealed; one already
// stored under (kind, id) is kept.
func (s *Store) PutSharedKey(ctx context.Context, kind, id string, value []byte, notAfter time.Time) error {
	sealed, err := s.codec.SealSharedKey(kind, id, value)
	if err != nil {
		return err
	}
	if _, err := s.w.ExecContext(ctx, `INSERT INTO shared_keys (kind, id, value_sealed, not_after, created_at) VALUES (?, ?, ?, ?, ?) ON CONFLICT (kind, id) DO NOTHING`,
		kind, id, sealed, mailpush.UnixMilli(notAfter), mailpush.UnixMilli(s.clock.Now())); err != nil {
		return dbError("put shared key", err)
	}
	return nil
}

// SharedKeys lists the kind's keys that have not ended, opened.
func (s *Store) SharedKeys(ctx context.Context, kind string, now time.Time) ([]mailpush.SharedKey, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT id, value_sealed, not_after FROM shared_keys WHERE kind = ? AND not_after > ? ORDER BY not_after, id`, kind, mailpush.UnixMilli(now))
	if err != nil {
		return nil, dbError("shared keys", err)
	}
	defer rows.Close()
	keys, err := s.codec.ScanSharedKeys(kind, rows)
	if err != nil {
		return nil, dbError("shared keys", err)
	}
	return keys, nil
}

// DeleteSharedKeys removes the kind's keys that ended before the time.
func (s *Store) DeleteSharedKeys(ctx context.Context, kind string, endedBefore time.Time) error {
	if _, err := s.w.ExecContext(ctx, `DELETE FROM shared_keys WHERE kind = ? AND not_after < ?`, kind, mailpush.UnixMilli(endedBefore)); err != nil {
		return dbError("delete shared keys", err)
	}
	return nil
}
