package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"time"

	"github.com/mailpush/mailpush"
)

// The outbox statements, prepared once at Open (see stmtCache).
const (
	qCoalesceNewer  = `SELECT count(*) FROM outbox WHERE registration_id = ? AND kind = ? AND seq > ?`
	qCoalesceDelete = `DELETE FROM outbox WHERE registration_id = ? AND kind = ? AND seq <= ?`
	qClaim          = `SELECT o.id, o.push_id, o.tenant_id, o.registration_id, o.mailbox_id, o.kind, o.badge, o.seq, o.collapse_id, o.content, o.attempts, o.created_at,
		r.platform, r.environment, r.token_sealed, r.content_key, r.status, r.last_seq, r.updated_at
		FROM outbox o LEFT JOIN registrations r ON r.id = o.registration_id
		WHERE +o.due_at <= ?
		AND NOT EXISTS (SELECT 1 FROM outbox e WHERE e.registration_id = o.registration_id AND e.id < o.id AND e.due_at > ?)
		ORDER BY o.id LIMIT ?`
	qLeaseIDs  = `UPDATE outbox SET due_at = ?, attempts = attempts + 1 WHERE id IN (SELECT value FROM json_each(?))`
	qDeleteIDs = `DELETE FROM outbox WHERE id IN (SELECT value FROM json_each(?))`
	// qRaiseSeqs raises the last delivered sequence of every registration
	// of a batch in one statement; its argument is [["reg-id",seq],...].
	qRaiseSeqs = `UPDATE registrations SET last_seq = s.seq
		FROM (SELECT value->>0 AS id, max(value->>1) AS seq FROM json_each(?) GROUP BY 1) AS s
		WHERE registrations.id = s.id AND registrations.last_seq < s.seq`
)

var outboxStatements = append([]string{qCoalesceNewer, qCoalesceDelete, qClaim, qLeaseIDs, qDeleteIDs, qRaiseSeqs}, eventStatements...)

// EnqueuePushes stores pushes in one transaction, coalescing badge and sync
// pushes with the queued ones of the same registration: an older one is
// replaced, and one older than a queued one is not stored.
func (s *Store) EnqueuePushes(ctx context.Context, pushes []*mailpush.Push) error {
	if len(pushes) == 0 {
		return nil
	}
	now := s.now()
	release, err := s.order.acquire(ctx, false)
	if err != nil {
		return dbError("enqueue", err)
	}
	defer release()
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return dbError("enqueue", err)
	}
	defer tx.Rollback()
	q, err := s.enqueueStmts(ctx, tx)
	if err != nil {
		return dbError("enqueue", err)
	}
	for _, p := range pushes {
		if err := s.enqueueOne(ctx, q, p, now, 0, "", now); err != nil {
			return err
		}
	}
	if err := tx.Commit(); err != nil {
		return dbError("enqueue", err)
	}
	return nil
}

// enqueueStatements are the device tier's insert and its coalescing, prepared for one transaction.
type enqueueStatements struct{ newer, del, ins *sql.Stmt }

func (s *Store) enqueueStmts(ctx context.Context, tx *sql.Tx) (q enqueueStatements, err error) {
	if q.del, err = s.stmt(ctx, tx, qCoalesceDelete); err != nil {
		return q, err
	}
	if q.newer, err = s.stmt(ctx, tx, qCoalesceNewer); err != nil {
		return q, err
	}
	q.ins, err = s.stmt(ctx, tx, qEnqueueState)
	return q, err
}

// enqueueOne stores one device push due at due (Unix ms) with the attempts
// already made, coalescing a badge or sync push with the queued ones of its
// registration.
func (s *Store) enqueueOne(ctx context.Context, q enqueueStatements, p *mailpush.Push, due int64, attempts int, reason string, now int64) error {
	if p.Kind == mailpush.PushBadge || p.Kind == mailpush.PushSync {
		// A newer push of the kind is queued: this one is already stale.
		var n int
		if err := q.newer.QueryRowContext(ctx, p.RegistrationID, string(p.Kind), p.Seq).Scan(&n); err != nil {
			return dbError("coalesce", err)
		}
		if n > 0 {
			return nil
		}
		if _, err := q.del.ExecContext(ctx, p.RegistrationID, string(p.Kind), p.Seq); err != nil {
			return dbError("coalesce", err)
		}
	}
	content, err := s.codec.SealContent(mailpush.StoredContent{Subject: p.Subject, Sender: p.Sender, Sealed: p.Sealed})
	if err != nil {
		return fmt.Errorf("sqlite: enqueue: %w", err)
	}
	created := mailpush.UnixMilli(p.CreatedAt)
	if created == 0 {
		created = now
	}
	if _, err := q.ins.ExecContext(ctx, p.ID, p.TenantID, p.RegistrationID, p.MailboxID, string(p.Kind), p.Badge, p.Seq, p.CollapseID, content, attempts, due, reason, created); err != nil {
		return dbError("enqueue", err)
	}
	return nil
}

// ClaimPushes leases the oldest due pushes. It walks the table in id order
// ("+due_at" keeps SQLite off the due_at index, which would make it sort
// every due row to find the oldest: quadratic in a backlog), skipping the
// rows that are not due (in flight or waiting to be retried), and stops at
// limit.
func (s *Store) ClaimPushes(ctx context.Context, now time.Time, limit int, lease time.Duration) ([]*mailpush.QueuedPush, error) {
	if limit <= 0 {
		return nil, nil
	}
	release, err := s.order.acquire(ctx, false)
	if err != nil {
		return nil, dbError("claim", err)
	}
	defer release()
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return nil, dbError("claim", err)
	}
	defer tx.Rollback()
	out, err := s.claimTx(ctx, tx, now, limit, lease)
	if err != nil {
		return nil, err
	}
	if err := tx.Commit(); err != nil {
		return nil, dbError("claim", err)
	}
	return out, nil
}

// SettleAndClaim settles a batch and claims the next one in one write
// transaction: what SettlePushes then ClaimPushes would do, for one commit
// (one WAL append) instead of two. The claim sees the settlement, so a
// registration's next push can be claimed as soon as the earlier one is
// settled, and a failure leaves both undone (the settled pushes stay leased
// and are sent again after the lease: at least once).
func (s *Store) SettleAndClaim(ctx context.Context, settlements []mailpush.PushSettlement, now time.Time, limit int, lease time.Duration) ([]*mailpush.QueuedPush, error) {
	release, err := s.order.acquire(ctx, false)
	if err != nil {
		return nil, dbError("settle", err)
	}
	defer release()
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return nil, dbError("settle", err)
	}
	defer tx.Rollback()
	if err := s.settleTx(ctx, tx, settlements); err != nil {
		return nil, err
	}
	var out []*mailpush.QueuedPush
	if limit > 0 {
		if out, err = s.claimTx(ctx, tx, now, limit, lease); err != nil {
			return nil, err
		}
	}
	if err := tx.Commit(); err != nil {
		return nil, dbError("settle", err)
	}
	return out, nil
}

// claimTx is ClaimPushes in tx.
func (s *Store) claimTx(ctx context.Context, tx *sql.Tx, now time.Time, limit int, lease time.Duration) ([]*mailpush.QueuedPush, error) {
	sel, err := s.stmt(ctx, tx, qClaim)
	if err != nil {
		return nil, dbError("claim", err)
	}
	rows, err := sel.QueryContext(ctx, mailpush.UnixMilli(now), mailpush.UnixMilli(now), limit)
	if err != nil {
		return nil, dbError("claim", err)
	}
	var out []*mailpush.QueuedPush
	var claimed, orphans []int64
	var unreadable []deadRow
	for rows.Next() {
		var q mailpush.QueuedPush
		p := &q.Push
		var kind string
		var content, sealed []byte
		var created int64
		var platform, env, status sql.NullString
		var lastSeq, updated sql.NullInt64
		if err := rows.Scan(&q.OutboxID, &p.ID, &p.TenantID, &p.RegistrationID, &p.MailboxID, &kind, &p.Badge, &p.Seq, &p.CollapseID, &content, &q.Attempts, &created,
			&platform, &env, &sealed, &p.Device.ContentKey, &status, &lastSeq, &updated); err != nil {
			rows.Close()
			return nil, dbError("claim", err)
		}
		if !status.Valid || mailpush.Status(status.String) == mailpush.StatusInactive {
			orphans = append(orphans, q.OutboxID)
			continue
		}
		// A row that cannot be opened (damaged, or sealed with a key this
		// service no longer has) goes to the dead letters: it must not stop
		// every other push behind it.
		tok, err := s.codec.OpenToken(sealed)
		if err != nil {
			unreadable = append(unreadable, deadRow{q.OutboxID, "the registration's stored push token cannot be opened"})
			continue
		}
		c, bad := s.codec.OpenContent(content)
		if bad != "" {
			unreadable = append(unreadable, deadRow{q.OutboxID, bad})
			continue
		}
		p.Subject, p.Sender, p.Sealed = c.Subject, c.Sender, c.Sealed
		p.Kind = mailpush.PushKind(kind)
		p.CreatedAt = mailpush.FromUnixMilli(created)
		p.Device.Platform, p.Device.Environment, p.Device.Token = mailpush.Platform(platform.String), mailpush.Environment(env.String), tok
		q.Attempts++
		q.LastSeq, q.RegUpdatedAt = lastSeq.Int64, mailpush.FromUnixMilli(updated.Int64)
		out = append(out, &q)
		claimed = append(claimed, q.OutboxID)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, dbError("claim", err)
	}
	if len(orphans) > 0 {
		if err := s.exec(ctx, tx, qDeleteIDs, idList(orphans)); err != nil {
			return nil, dbError("claim", err)
		}
	}
	for _, d := range unreadable {
		if err := s.bury(ctx, tx, d.id, d.reason, now); err != nil {
			return nil, dbError("claim", err)
		}
	}
	if len(claimed) > 0 {
		if err := s.exec(ctx, tx, qLeaseIDs, mailpush.UnixMilli(now.Add(lease)), idList(claimed)); err != nil {
			return nil, dbError("claim", err)
		}
	}
	return out, nil
}

// appendJSONString appends v as a JSON string.
func appendJSONString(b []byte, v string) []byte {
	for i := 0; i < len(v); i++ {
		if c := v[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' {
			j, _ := json.Marshal(v)
			return append(b, j...)
		}
	}
	b = append(b, '"')
	b = append(b, v...)
	return append(b, '"')
}

// exec runs a cached statement in tx.
func (s *Store) exec(ctx context.Context, tx *sql.Tx, query string, args ...any) error {
	st, err := s.stmt(ctx, tx, query)
	if err == nil {
		_, err = st.ExecContext(ctx, args...)
	}
	return err
}

// SettlePushes applies the fate of claimed pushes in one transaction: the
// delivered ones go in one DELETE, the registrations' last sequences are
// raised in one UPDATE, retries and dead letters one by one (they are the
// rare case).
func (s *Store) SettlePushes(ctx context.Context, settlements []mailpush.PushSettlement) error {
	if len(settlements) == 0 {
		return nil
	}
	_, err := s.SettleAndClaim(ctx, settlements, time.Time{}, 0, 0)
	return err
}

// settleTx is SettlePushes in tx.
func (s *Store) settleTx(ctx context.Context, tx *sql.Tx, settlements []mailpush.PushSettlement) error {
	if len(settlements) == 0 {
		return nil
	}
	now := s.now()
	var done []int64
	for _, st := range settlements {
		if st.Action == mailpush.SettleDone {
			done = append(done, st.OutboxID)
		}
	}
	if len(done) > 0 {
		if err := s.exec(ctx, tx, qDeleteIDs, idList(done)); err != nil {
			return dbError("settle", err)
		}
	}
	if seqs := seqList(settlements); seqs != "" {
		if err := s.exec(ctx, tx, qRaiseSeqs, seqs); err != nil {
			return dbError("settle", err)
		}
	}
	var err error
	for _, st := range settlements {
		switch st.Action {
		case mailpush.SettleDone:
		case mailpush.SettleRetry:
			undo := 0
			if st.Undo {
				undo = 1
			}
			_, err = tx.ExecContext(ctx, `UPDATE outbox SET due_at = ?, attempts = max(0, attempts - ?), last_error = ? WHERE id = ?`, mailpush.UnixMilli(st.DueAt), undo, st.Reason, st.OutboxID)
		case mailpush.SettleDead:
			err = s.bury(ctx, tx, st.OutboxID, st.Reason, mailpush.FromUnixMilli(now))
		default:
			return fmt.Errorf("sqlite: settle: unknown action %d", st.Action)
		}
		if err != nil {
			return dbError("settle", err)
		}
	}
	return nil
}

// OutboxDepth counts the queued events and device pushes.
func (s *Store) OutboxDepth(ctx context.Context) (int, error) {
	var n int
	if err := s.r.QueryRowContext(ctx, `SELECT (SELECT count(*) FROM outbox) + (SELECT count(*) FROM outbox_events)`).Scan(&n); err != nil {
		return 0, dbError("outbox depth", err)
	}
	return n, nil
}

// DeadLetters lists the newest dead letters.
func (s *Store) DeadLetters(ctx context.Context, limit int) ([]mailpush.DeadLetter, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT push_id, tenant_id, registration_id, mailbox_id, kind, seq, attempts, reason, created_at, dead_at FROM outbox_dead ORDER BY id DESC LIMIT ?`, limit)
	if err != nil {
		return nil, dbError("dead letters", err)
	}
	defer rows.Close()
	var out []mailpush.DeadLetter
	for rows.Next() {
		var d mailpush.DeadLetter
		var kind string
		var created, dead int64
		if err := rows.Scan(&d.PushID, &d.TenantID, &d.RegistrationID, &d.MailboxID, &kind, &d.Seq, &d.Attempts, &d.Reason, &created, &dead); err != nil {
			return nil, dbError("dead letters", err)
		}
		d.Kind, d.CreatedAt, d.DeadAt = mailpush.PushKind(kind), mailpush.FromUnixMilli(created), mailpush.FromUnixMilli(dead)
		out = append(out, d)
	}
	return out, rows.Err()
}

type deadRow struct {
	id     int64
	reason string
}

// bury moves an outbox row to the dead letters (which keep no content and
// no token).
func (s *Store) bury(ctx context.Context, tx *sql.Tx, id int64, reason string, now time.Time) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO outbox_dead (push_id, tenant_id, registration_id, mailbox_id, kind, seq, attempts, reason, created_at, dead_at)
		SELECT push_id, tenant_id, registration_id, mailbox_id, kind, seq, attempts, ?, created_at, ? FROM outbox WHERE id = ?`, reason, mailpush.UnixMilli(now), id)
	if err == nil {
		_, err = tx.ExecContext(ctx, `DELETE FROM outbox WHERE id = ?`, id)
	}
	return err
}
