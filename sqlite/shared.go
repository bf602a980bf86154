package sqlite

import (
	"context"
	"database/sql"
	"errors"

	"github.com/mailpush/mailpush"
	"github.com/mailpush/mailpush/internal/sqlstore"
)

// sharedTx runs internal/sqlstore's shared statements in one write
// transaction, wrapped as the store's other writes are.
func (s *Store) sharedTx(ctx context.Context, op string, fn func(sqlstore.Tx) error) error {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return dbError(op, err)
	}
	defer tx.Rollback()
	if err := fn(sqlTx{tx}); err != nil {
		var me *mailpush.Error
		if errors.As(err, &me) {
			return err
		}
		return dbError(op, err)
	}
	if err := tx.Commit(); err != nil {
		return dbError(op, err)
	}
	return nil
}

// sqlTx is a database/sql transaction as internal/sqlstore's Tx.
type sqlTx struct{ tx *sql.Tx }

func (t sqlTx) Exec(ctx context.Context, query string, args ...any) (int64, error) {
	res, err := t.tx.ExecContext(ctx, query, args...)
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

func (t sqlTx) QueryRow(ctx context.Context, query string, args ...any) sqlstore.Row {
	return sqlRow{t.tx.QueryRowContext(ctx, query, args...)}
}

type sqlRow struct{ r *sql.Row }

func (r sqlRow) Scan(dest ...any) error {
	err := r.r.Scan(dest...)
	if errors.Is(err, sql.ErrNoRows) {
		return sqlstore.ErrNoRows
	}
	return err
}
