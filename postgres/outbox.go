package postgres

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/mailpush/mailpush"
)

// How several nodes share the outbox. Claims take rows with FOR UPDATE SKIP
// LOCKED, so a claim never waits for rows that another node is settling,
// and lease them by moving due_at past now: a node that dies holding a lease
// lets it run out and another node claims the rows again (at least once).
//
// Order (per mailbox for events, per registration for device pushes) needs
// one more thing: a claim must see every earlier claim. Two claims running at
// once in READ COMMITTED could each take a different event of one mailbox,
// each seeing the other's rows as not yet leased. So claims of one tier take
// a transaction-level advisory lock first: claims run one after another (a
// claim is one indexed statement, milliseconds for a batch), while the work
// they hand out — building and sending pushes — runs on every node at once.
const (
	claimEventsLock = 0x6d70_6576 // "mpev"
	claimPushesLock = 0x6d70_7075 // "mppu"
)

// inTx runs fn in a transaction; the store's coded errors pass as they are,
// the database's are wrapped as op.
func (s *Store) inTx(ctx context.Context, op string, fn func(pgx.Tx) error) error {
	if err := pgx.BeginFunc(ctx, s.pool, fn); err != nil {
		return passOrWrap(op, err)
	}
	return nil
}

// sendBatch runs a batch of statements in one round trip and reports the first failure.
func sendBatch(ctx context.Context, tx pgx.Tx, b *pgx.Batch) error {
	if b.Len() == 0 {
		return nil
	}
	return tx.SendBatch(ctx, b).Close()
}

// qEnqueueEvent stores one event unless a newer event of its coalescing
// class is queued, and deletes the older unclaimed ones of the class
// (an empty $5 means the event does not coalesce).
const qEnqueueEvent = `WITH newer AS (
		SELECT 1 FROM outbox_events WHERE $5 <> '' AND mailbox_id = $3 AND class = $5 AND seq > $7 LIMIT 1),
	del AS (
		DELETE FROM outbox_events WHERE $5 <> '' AND mailbox_id = $3 AND class = $5 AND seq <= $7 AND due_at <= $10
		AND NOT EXISTS (SELECT 1 FROM newer))
	INSERT INTO outbox_events (event_id, tenant_id, mailbox_id, kind, class, badge, seq, content, unresolved, due_at, created_at)
	SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11 WHERE NOT EXISTS (SELECT 1 FROM newer)`

// EnqueueEvents stores events in one transaction (one round trip, plus one
// per event that moves its mailbox), coalescing as the Outbox interface
// says. Events with Record lock their mailboxes in mailbox ID order; a
// deadlock with another transaction's locks (a settlement raising several
// mailboxes' fanned-out sequences) is tried again.
func (s *Store) EnqueueEvents(ctx context.Context, events []*mailpush.OutboxEvent) error {
	if len(events) == 0 {
		return nil
	}
	var recorded []*mailpush.OutboxEvent
	for _, e := range events {
		if e.Record != nil {
			recorded = append(recorded, e)
		}
	}
	slices.SortStableFunc(recorded, func(a, b *mailpush.OutboxEvent) int { return strings.Compare(a.Event.MailboxID, b.Event.MailboxID) })
	for attempt := 1; ; attempt++ {
		err := s.inTx(ctx, "enqueue events", func(tx pgx.Tx) error {
			skip := map[*mailpush.OutboxEvent]bool{}
			for _, e := range recorded {
				news, err := s.recordEvent(ctx, tx, e)
				if err != nil {
					return err
				}
				if !news {
					skip[e] = true
				}
			}
			now := s.now()
			b := &pgx.Batch{}
			for _, e := range events {
				if skip[e] {
					continue
				}
				ev := &e.Event
				content, err := s.codec.SealContent(mailpush.StoredContent{Subject: ev.Subject, Sender: ev.Sender, Ref: ev.Ref})
				if err != nil {
					return fmt.Errorf("postgres: enqueue events: %w", err)
				}
				created := mailpush.UnixMilli(e.CreatedAt)
				if created == 0 {
					created = now
				}
				b.Queue(qEnqueueEvent, e.ID, ev.TenantID, ev.MailboxID, string(ev.Kind), string(e.CoalesceClass()), ev.Badge, ev.Seq, content, e.Unresolved, now, created)
			}
			return sendBatch(ctx, tx, b)
		})
		if pgCode(err) != "40P01" || attempt == 3 {
			return err
		}
	}
}

// recordEvent applies e.Record to its mailbox, locked, in tx
// (OutboxEvent.Record) and reports whether the event is to be stored.
func (s *Store) recordEvent(ctx context.Context, tx pgx.Tx, e *mailpush.OutboxEvent) (bool, error) {
	m, err := s.mailboxWhere(ctx, tx, "id = $1 FOR UPDATE", e.Event.MailboxID)
	if mailpush.ErrorCode(err) == mailpush.ENotFound {
		return false, nil // gone since the source looked it up
	}
	if err != nil {
		return false, err
	}
	before := m.StoredAddress
	news := e.Record(m)
	if err := s.writeMailbox(ctx, tx, m, before); err != nil {
		return false, err
	}
	if news {
		e.Event.Seq = m.Seq
	}
	return news, nil
}

// ClaimEvents leases the oldest due events.
func (s *Store) ClaimEvents(ctx context.Context, now time.Time, limit int, lease time.Duration) ([]*mailpush.OutboxEvent, error) {
	return s.SettleEvents(ctx, mailpush.EventSettlement{}, now, limit, lease)
}

// SettleEvents records a fanned-out batch and claims the next in one transaction.
func (s *Store) SettleEvents(ctx context.Context, st mailpush.EventSettlement, now time.Time, limit int, lease time.Duration) ([]*mailpush.OutboxEvent, error) {
	empty := len(st.Events) == 0 && len(st.Delivered) == 0 && len(st.Queue) == 0 && len(st.Dead) == 0
	if empty && limit <= 0 {
		return nil, nil
	}
	var out []*mailpush.OutboxEvent
	err := s.inTx(ctx, "settle events", func(tx pgx.Tx) error {
		if !empty {
			if err := s.settleEventsTx(ctx, tx, st); err != nil {
				return err
			}
		}
		if limit > 0 {
			var err error
			out, err = s.claimEventsTx(ctx, tx, now, limit, lease)
			return err
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

func (s *Store) settleEventsTx(ctx context.Context, tx pgx.Tx, st mailpush.EventSettlement) error {
	now := s.now()
	b := &pgx.Batch{}
	if len(st.Events) > 0 {
		// The events' sequences count for every device of their mailboxes
		// (one write per event, none per device).
		b.Queue(`UPDATE mailboxes m SET fanned_seq = s.seq
			FROM (SELECT mailbox_id, max(seq) AS seq FROM outbox_events WHERE id = ANY($1) GROUP BY mailbox_id) s
			WHERE m.id = s.mailbox_id AND m.fanned_seq < s.seq`, st.Events)
		b.Queue(`DELETE FROM outbox_events WHERE id = ANY($1)`, st.Events)
	}
	queueRaiseSeqs(b, st.Delivered)
	for _, d := range st.Queue {
		if err := s.queueEnqueuePush(b, d.Push, mailpush.UnixMilli(d.DueAt), d.Attempts, d.Reason, now); err != nil {
			return err
		}
	}
	for _, d := range st.Dead {
		dead, created := mailpush.UnixMilli(d.DeadAt), mailpush.UnixMilli(d.CreatedAt)
		if dead == 0 {
			dead = now
		}
		if created == 0 {
			created = now
		}
		b.Queue(qDeadInsert, d.PushID, d.TenantID, d.RegistrationID, d.MailboxID, string(d.Kind), d.Seq, d.Attempts, d.Reason, created, dead)
	}
	return sendBatch(ctx, tx, b)
}

const qDeadInsert = `INSERT INTO outbox_dead (push_id, tenant_id, registration_id, mailbox_id, kind, seq, attempts, reason, created_at, dead_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`

// queueRaiseSeqs raises the last delivered sequence of every registration of
// a batch in one statement.
func queueRaiseSeqs(b *pgx.Batch, settlements []mailpush.PushSettlement) {
	var ids []string
	var seqs []int64
	for _, st := range settlements {
		if st.Action == mailpush.SettleDone && st.Seq > 0 && st.RegistrationID != "" {
			ids, seqs = append(ids, st.RegistrationID), append(seqs, st.Seq)
		}
	}
	if len(ids) == 0 {
		return
	}
	b.Queue(`UPDATE registrations r SET last_seq = v.seq
		FROM (SELECT id, max(seq) AS seq FROM unnest($1::text[], $2::bigint[]) AS u(id, seq) GROUP BY id) AS v
		WHERE r.id = v.id AND r.last_seq < v.seq`, ids, seqs)
}

// qClaimEvents leases the oldest due events whose mailbox has no earlier
// event leased, in id order.
const qClaimEvents = `WITH c AS (
		SELECT o.id FROM outbox_events o
		WHERE o.due_at <= $1
		AND NOT EXISTS (SELECT 1 FROM outbox_events e WHERE e.mailbox_id = o.mailbox_id AND e.id < o.id AND e.due_at > $1)
		ORDER BY o.id LIMIT $2
		FOR UPDATE SKIP LOCKED)
	UPDATE outbox_events o SET due_at = $3, attempts = o.attempts + 1 FROM c WHERE o.id = c.id
	RETURNING o.id, o.event_id, o.tenant_id, o.mailbox_id, o.kind, o.badge, o.seq, o.content, o.unresolved, o.attempts, o.created_at`

func (s *Store) claimEventsTx(ctx context.Context, tx pgx.Tx, now time.Time, limit int, lease time.Duration) ([]*mailpush.OutboxEvent, error) {
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, int64(claimEventsLock)); err != nil {
		return nil, err
	}
	rows, err := tx.Query(ctx, qClaimEvents, mailpush.UnixMilli(now), limit, mailpush.UnixMilli(now.Add(lease)))
	if err != nil {
		return nil, err
	}
	out := make([]*mailpush.OutboxEvent, 0, limit)
	var unreadable []*mailpush.OutboxEvent
	for rows.Next() {
		e := &mailpush.OutboxEvent{}
		ev := &e.Event
		var kind string
		var content []byte
		var created int64
		if err := rows.Scan(&e.OutboxID, &e.ID, &ev.TenantID, &ev.MailboxID, &kind, &ev.Badge, &ev.Seq, &content, &e.Unresolved, &e.Attempts, &created); err != nil {
			rows.Close()
			return nil, err
		}
		ev.Kind, e.CreatedAt = mailpush.EventKind(kind), mailpush.FromUnixMilli(created)
		ev.At = e.CreatedAt
		c, bad := s.codec.OpenContent(content)
		if bad != "" {
			// It must not stop every event behind it: a dead letter.
			unreadable = append(unreadable, e)
			continue
		}
		ev.Subject, ev.Sender, ev.Ref = c.Subject, c.Sender, c.Ref
		out = append(out, e)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	b := &pgx.Batch{}
	for _, e := range unreadable {
		b.Queue(qDeadInsert, e.ID, e.Event.TenantID, "", e.Event.MailboxID, "event", e.Event.Seq, e.Attempts,
			"the stored event content cannot be opened", mailpush.UnixMilli(e.CreatedAt), mailpush.UnixMilli(now))
		b.Queue(`DELETE FROM outbox_events WHERE id = $1`, e.OutboxID)
	}
	if err := sendBatch(ctx, tx, b); err != nil {
		return nil, err
	}
	slices.SortFunc(out, func(a, b *mailpush.OutboxEvent) int { return cmpInt64(a.OutboxID, b.OutboxID) })
	return out, nil
}

func cmpInt64(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// Recipients reads the active devices of mailboxes in one query, opening
// each push token once.
func (s *Store) Recipients(ctx context.Context, mailboxIDs []string, since time.Time) ([]*mailpush.Recipient, error) {
	if len(mailboxIDs) == 0 {
		return nil, nil
	}
	rows, err := s.pool.Query(ctx, `SELECT r.id, r.tenant_id, r.mailbox_id, r.platform, r.environment, r.token_sealed, r.content_key, r.content, GREATEST(r.last_seq, m.fanned_seq), r.updated_at,
		CASE r.status WHEN 'active' THEN 0 ELSE r.left_active_at END,
		EXISTS (SELECT 1 FROM outbox o WHERE o.registration_id = r.id)
		FROM registrations r JOIN mailboxes m ON m.id = r.mailbox_id
		WHERE r.mailbox_id = ANY($1)
		AND (r.status = 'active' OR r.status = 'pending' AND r.left_active_at >= $2)
		ORDER BY r.mailbox_id, r.created_at, r.id`, mailboxIDs, max(1, mailpush.UnixMilli(since)))
	if err != nil {
		return nil, dbError("recipients", err)
	}
	defer rows.Close()
	var out []*mailpush.Recipient
	for rows.Next() {
		r := &mailpush.Recipient{}
		var platform, env, content string
		var sealed []byte
		var updated, left int64
		if err := rows.Scan(&r.RegistrationID, &r.TenantID, &r.MailboxID, &platform, &env, &sealed, &r.Device.ContentKey, &content, &r.LastSeq, &updated, &left, &r.Held); err != nil {
			return nil, dbError("recipients", err)
		}
		r.Device.Platform, r.Device.Environment, r.Content, r.UpdatedAt = mailpush.Platform(platform), mailpush.Environment(env), mailpush.ContentMode(content), mailpush.FromUnixMilli(updated)
		r.LeftActiveAt = mailpush.FromUnixMilli(left)
		if tok, err := s.codec.OpenToken(sealed); err != nil {
			r.Unreadable = "the registration's stored push token cannot be opened"
		} else {
			r.Device.Token = tok
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, dbError("recipients", err)
	}
	return out, nil
}

// qEnqueuePush stores one device push unless a newer push of its kind is
// queued for the registration, and deletes the older ones of the kind
// ($11: the kind coalesces).
const qEnqueuePush = `WITH newer AS (
		SELECT 1 FROM outbox WHERE $11 AND registration_id = $3 AND kind = $5 AND seq > $7 LIMIT 1),
	del AS (
		DELETE FROM outbox WHERE $11 AND registration_id = $3 AND kind = $5 AND seq <= $7 AND NOT EXISTS (SELECT 1 FROM newer))
	INSERT INTO outbox (push_id, tenant_id, registration_id, mailbox_id, kind, badge, seq, collapse_id, content, attempts, due_at, last_error, created_at)
	SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $12, $13, $14 WHERE NOT EXISTS (SELECT 1 FROM newer)`

// queueEnqueuePush adds one device push, due at due (Unix ms) with the
// attempts already made, to b.
func (s *Store) queueEnqueuePush(b *pgx.Batch, p *mailpush.Push, due int64, attempts int, reason string, now int64) error {
	content, err := s.codec.SealContent(mailpush.StoredContent{Subject: p.Subject, Sender: p.Sender, Sealed: p.Sealed})
	if err != nil {
		return fmt.Errorf("postgres: enqueue: %w", err)
	}
	created := mailpush.UnixMilli(p.CreatedAt)
	if created == 0 {
		created = now
	}
	coalesces := p.Kind == mailpush.PushBadge || p.Kind == mailpush.PushSync
	b.Queue(qEnqueuePush, p.ID, p.TenantID, p.RegistrationID, p.MailboxID, string(p.Kind), p.Badge, p.Seq, p.CollapseID, content, attempts, coalesces, due, reason, created)
	return nil
}

// EnqueuePushes stores device pushes in one transaction, coalescing badge
// and sync pushes with the queued ones of the same registration.
func (s *Store) EnqueuePushes(ctx context.Context, pushes []*mailpush.Push) error {
	if len(pushes) == 0 {
		return nil
	}
	now := s.now()
	b := &pgx.Batch{}
	for _, p := range pushes {
		if err := s.queueEnqueuePush(b, p, now, 0, "", now); err != nil {
			return err
		}
	}
	return s.inTx(ctx, "enqueue", func(tx pgx.Tx) error { return sendBatch(ctx, tx, b) })
}

// ClaimPushes leases the oldest due device pushes.
func (s *Store) ClaimPushes(ctx context.Context, now time.Time, limit int, lease time.Duration) ([]*mailpush.QueuedPush, error) {
	return s.SettleAndClaim(ctx, nil, now, limit, lease)
}

// SettlePushes applies the fate of claimed pushes in one transaction.
func (s *Store) SettlePushes(ctx context.Context, settlements []mailpush.PushSettlement) error {
	if len(settlements) == 0 {
		return nil
	}
	_, err := s.SettleAndClaim(ctx, settlements, time.Time{}, 0, 0)
	return err
}

// SettleAndClaim settles a batch and claims the next one in one transaction.
func (s *Store) SettleAndClaim(ctx context.Context, settlements []mailpush.PushSettlement, now time.Time, limit int, lease time.Duration) ([]*mailpush.QueuedPush, error) {
	if len(settlements) == 0 && limit <= 0 {
		return nil, nil
	}
	var out []*mailpush.QueuedPush
	err := s.inTx(ctx, "settle", func(tx pgx.Tx) error {
		if err := s.settleTx(ctx, tx, settlements); err != nil {
			return err
		}
		if limit > 0 {
			var err error
			out, err = s.claimTx(ctx, tx, now, limit, lease)
			return err
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// qBury moves a device push to the dead letters (which keep no content and no token).
const qBury = `WITH d AS (DELETE FROM outbox WHERE id = $1 RETURNING push_id, tenant_id, registration_id, mailbox_id, kind, seq, attempts, created_at)
	INSERT INTO outbox_dead (push_id, tenant_id, registration_id, mailbox_id, kind, seq, attempts, reason, created_at, dead_at)
	SELECT push_id, tenant_id, registration_id, mailbox_id, kind, seq, attempts, $2, created_at, $3 FROM d`

var errUnknownAction = errors.New("postgres: settle: unknown action")

func (s *Store) settleTx(ctx context.Context, tx pgx.Tx, settlements []mailpush.PushSettlement) error {
	if len(settlements) == 0 {
		return nil
	}
	now := s.now()
	b := &pgx.Batch{}
	var done []int64
	for _, st := range settlements {
		switch st.Action {
		case mailpush.SettleDone:
			done = append(done, st.OutboxID)
		case mailpush.SettleRetry:
			undo := 0
			if st.Undo {
				undo = 1
			}
			b.Queue(`UPDATE outbox SET due_at = $1, attempts = greatest(0, attempts - $2), last_error = $3 WHERE id = $4`, mailpush.UnixMilli(st.DueAt), undo, st.Reason, st.OutboxID)
		case mailpush.SettleDead:
			b.Queue(qBury, st.OutboxID, st.Reason, now)
		default:
			return fmt.Errorf("%w %d", errUnknownAction, st.Action)
		}
	}
	if len(done) > 0 {
		b.Queue(`DELETE FROM outbox WHERE id = ANY($1)`, done)
	}
	queueRaiseSeqs(b, settlements)
	return sendBatch(ctx, tx, b)
}

// qClaimPushes picks the oldest due device pushes whose registration has no
// earlier push leased or waiting, with the registration's device.
const qClaimPushes = `WITH c AS (
		SELECT o.id FROM outbox o
		WHERE o.due_at <= $1
		AND NOT EXISTS (SELECT 1 FROM outbox e WHERE e.registration_id = o.registration_id AND e.id < o.id AND e.due_at > $1)
		ORDER BY o.id LIMIT $2
		FOR UPDATE SKIP LOCKED)
	SELECT o.id, o.push_id, o.tenant_id, o.registration_id, o.mailbox_id, o.kind, o.badge, o.seq, o.collapse_id, o.content, o.attempts, o.created_at,
		r.platform, r.environment, r.token_sealed, r.content_key, r.status, r.last_seq, r.updated_at
	FROM outbox o JOIN c ON c.id = o.id LEFT JOIN registrations r ON r.id = o.registration_id
	ORDER BY o.id`

func (s *Store) claimTx(ctx context.Context, tx pgx.Tx, now time.Time, limit int, lease time.Duration) ([]*mailpush.QueuedPush, error) {
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, int64(claimPushesLock)); err != nil {
		return nil, err
	}
	rows, err := tx.Query(ctx, qClaimPushes, mailpush.UnixMilli(now), limit)
	if err != nil {
		return nil, err
	}
	var out []*mailpush.QueuedPush
	var claimed, orphans []int64
	type deadRow struct {
		id     int64
		reason string
	}
	var unreadable []deadRow
	for rows.Next() {
		var q mailpush.QueuedPush
		p := &q.Push
		var kind string
		var content, sealed []byte
		var created int64
		var platform, env, status *string
		var lastSeq, updated *int64
		if err := rows.Scan(&q.OutboxID, &p.ID, &p.TenantID, &p.RegistrationID, &p.MailboxID, &kind, &p.Badge, &p.Seq, &p.CollapseID, &content, &q.Attempts, &created,
			&platform, &env, &sealed, &p.Device.ContentKey, &status, &lastSeq, &updated); err != nil {
			rows.Close()
			return nil, err
		}
		if status == nil || mailpush.Status(*status) == mailpush.StatusInactive {
			orphans = append(orphans, q.OutboxID)
			continue
		}
		// A row that cannot be opened goes to the dead letters: it must
		// not stop every other push behind it.
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
		p.Device.Platform, p.Device.Environment, p.Device.Token = mailpush.Platform(*platform), mailpush.Environment(*env), tok
		q.Attempts++
		q.LastSeq, q.RegUpdatedAt = *lastSeq, mailpush.FromUnixMilli(*updated)
		out = append(out, &q)
		claimed = append(claimed, q.OutboxID)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	b := &pgx.Batch{}
	if len(orphans) > 0 {
		b.Queue(`DELETE FROM outbox WHERE id = ANY($1)`, orphans)
	}
	for _, d := range unreadable {
		b.Queue(qBury, d.id, d.reason, mailpush.UnixMilli(now))
	}
	if len(claimed) > 0 {
		b.Queue(`UPDATE outbox SET due_at = $1, attempts = attempts + 1 WHERE id = ANY($2)`, mailpush.UnixMilli(now.Add(lease)), claimed)
	}
	if err := sendBatch(ctx, tx, b); err != nil {
		return nil, err
	}
	return out, nil
}

// OutboxDepth counts the queued events and device pushes.
func (s *Store) OutboxDepth(ctx context.Context) (int, error) {
	var n int
	if err := s.pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM outbox) + (SELECT count(*) FROM outbox_events)`).Scan(&n); err != nil {
		return 0, dbError("outbox depth", err)
	}
	return n, nil
}

// DeadLetters lists the newest dead letters.
func (s *Store) DeadLetters(ctx context.Context, limit int) ([]mailpush.DeadLetter, error) {
	rows, err := s.pool.Query(ctx, `SELECT push_id, tenant_id, registration_id, mailbox_id, kind, seq, attempts, reason, created_at, dead_at FROM outbox_dead ORDER BY id DESC LIMIT $1`, limit)
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
	if err := rows.Err(); err != nil {
		return nil, dbError("dead letters", err)
	}
	return out, nil
}
