package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/mailpush/mailpush"
)

// The event tier's statements, prepared once at Open (the writer's in
// outboxStatements, the reader's Recipients query on the reader pool).
const (
	qEventNewer    = `SELECT count(*) FROM outbox_events WHERE mailbox_id = ? AND class = ? AND seq > ?`
	qEventCoalesce = `DELETE FROM outbox_events WHERE mailbox_id = ? AND class = ? AND seq <= ? AND due_at <= ?`
	qEventInsert   = `INSERT INTO outbox_events (event_id, tenant_id, mailbox_id, kind, class, badge, seq, content, unresolved, due_at, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`
	// The walk in id order skips events that are leased and events behind
	// a leased event of their mailbox (order per mailbox); "+due_at" keeps
	// SQLite off any due_at order, as in qClaim.
	qEventClaim = `SELECT o.id, o.event_id, o.tenant_id, o.mailbox_id, o.kind, o.badge, o.seq, o.content, o.unresolved, o.attempts, o.created_at
		FROM outbox_events o
		WHERE +o.due_at <= ?
		AND NOT EXISTS (SELECT 1 FROM outbox_events e WHERE e.mailbox_id = o.mailbox_id AND e.id < o.id AND e.due_at > ?)
		ORDER BY o.id LIMIT ?`
	qEventLease  = `UPDATE outbox_events SET due_at = ?, attempts = attempts + 1 WHERE id IN (SELECT value FROM json_each(?))`
	qEventDelete = `DELETE FROM outbox_events WHERE id IN (SELECT value FROM json_each(?))`
	// qEventFanned raises the fanned-out sequence of the mailboxes of the
	// events settled (before they are deleted): one write per event, none
	// per device.
	qEventFanned = `UPDATE mailboxes SET fanned_seq = s.seq
		FROM (SELECT mailbox_id AS id, max(seq) AS seq FROM outbox_events WHERE id IN (SELECT value FROM json_each(?)) GROUP BY 1) AS s
		WHERE mailboxes.id = s.id AND mailboxes.fanned_seq < s.seq`
	// qEnqueueState stores a device push with its queue state (a retry, a
	// push held behind its device's earlier one).
	qEnqueueState = `INSERT INTO outbox (push_id, tenant_id, registration_id, mailbox_id, kind, badge, seq, collapse_id, content, attempts, due_at, last_error, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`
	qDeadInsert   = `INSERT INTO outbox_dead (push_id, tenant_id, registration_id, mailbox_id, kind, seq, attempts, reason, created_at, dead_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`
	// qRecipients reads the devices of a batch's mailboxes in one query;
	// "held" is whether the registration has device pushes queued. No
	// ORDER BY: SQLite would copy every row, sealed token included, into a
	// temporary b-tree to sort it (40 % of the query); Recipients sorts
	// the rows' pointers by mailbox instead.
	qRecipients = `SELECT r.id, r.tenant_id, r.mailbox_id, r.platform, r.environment, r.token_sealed, r.content_key, r.content, max(r.last_seq, m.fanned_seq), r.updated_at,
		CASE r.status WHEN 'active' THEN 0 ELSE r.left_active_at END,
		EXISTS (SELECT 1 FROM outbox o WHERE o.registration_id = r.id)
		FROM registrations r JOIN mailboxes m ON m.id = r.mailbox_id
		WHERE r.mailbox_id IN (SELECT value FROM json_each(?))
		AND (r.status = 'active' OR r.status = 'pending' AND r.left_active_at >= ?)`
)

var eventStatements = []string{qEventNewer, qEventCoalesce, qEventInsert, qEventClaim, qEventLease, qEventDelete, qEventFanned, qEnqueueState, qDeadInsert}

// EnqueueEvents stores events in one transaction, coalescing those whose
// pushes would all be badges (or all syncs) with the queued, unclaimed ones
// of their mailbox.
func (s *Store) EnqueueEvents(ctx context.Context, events []*mailpush.OutboxEvent) error {
	if len(events) == 0 {
		return nil
	}
	// In the store's group commit: the acknowledgement of a notification
	// shares its commit with the mailbox updates of the others arriving
	// at the same moment.
	return s.grouped(ctx, func(ctx context.Context, tx *sql.Tx) error {
		return s.enqueueEventsTx(ctx, tx, events)
	})
}

func (s *Store) enqueueEventsTx(ctx context.Context, tx *sql.Tx, events []*mailpush.OutboxEvent) error {
	now := s.now()
	newer, err := s.stmt(ctx, tx, qEventNewer)
	if err != nil {
		return dbError("enqueue events", err)
	}
	coalesce, err := s.stmt(ctx, tx, qEventCoalesce)
	if err != nil {
		return dbError("enqueue events", err)
	}
	ins, err := s.stmt(ctx, tx, qEventInsert)
	if err != nil {
		return dbError("enqueue events", err)
	}
	for _, e := range events {
		ev := &e.Event
		if e.Record != nil {
			news, err := s.recordEvent(ctx, tx, e)
			if err != nil {
				return err
			}
			if !news {
				continue
			}
		}
		class := e.CoalesceClass()
		if class != "" {
			var n int
			if err := newer.QueryRowContext(ctx, ev.MailboxID, string(class), ev.Seq).Scan(&n); err != nil {
				return dbError("coalesce events", err)
			}
			if n > 0 {
				continue // a newer event of the class is queued: this one is stale
			}
			if _, err := coalesce.ExecContext(ctx, ev.MailboxID, string(class), ev.Seq, now); err != nil {
				return dbError("coalesce events", err)
			}
		}
		content, err := s.codec.SealContent(mailpush.StoredContent{Subject: ev.Subject, Sender: ev.Sender, Ref: ev.Ref})
		if err != nil {
			return fmt.Errorf("sqlite: enqueue events: %w", err)
		}
		created := mailpush.UnixMilli(e.CreatedAt)
		if created == 0 {
			created = now
		}
		unresolved := 0
		if e.Unresolved {
			unresolved = 1
		}
		if _, err := ins.ExecContext(ctx, e.ID, ev.TenantID, ev.MailboxID, string(ev.Kind), string(class), ev.Badge, ev.Seq, content, unresolved, now, created); err != nil {
			return dbError("enqueue events", err)
		}
	}
	return nil
}

// recordEvent applies e.Record to its mailbox in tx (OutboxEvent.Record)
// and reports whether the event is to be stored.
func (s *Store) recordEvent(ctx context.Context, tx *sql.Tx, e *mailpush.OutboxEvent) (bool, error) {
	m, err := s.mailboxWhere(ctx, txQuerier{s, tx}, "id = ?", e.Event.MailboxID)
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

// SettleEvents records a fanned-out batch and claims the next, in one write
// transaction (one commit, one WAL append for both).
func (s *Store) SettleEvents(ctx context.Context, st mailpush.EventSettlement, now time.Time, limit int, lease time.Duration) ([]*mailpush.OutboxEvent, error) {
	empty := len(st.Events) == 0 && len(st.Delivered) == 0 && len(st.Queue) == 0 && len(st.Dead) == 0
	if empty && limit <= 0 {
		return nil, nil
	}
	release, err := s.order.acquire(ctx, false)
	if err != nil {
		return nil, dbError("settle events", err)
	}
	defer release()
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return nil, dbError("settle events", err)
	}
	defer tx.Rollback()
	if !empty {
		if err := s.settleEventsTx(ctx, tx, st); err != nil {
			return nil, err
		}
	}
	var out []*mailpush.OutboxEvent
	if limit > 0 {
		if out, err = s.claimEventsTx(ctx, tx, now, limit, lease); err != nil {
			return nil, err
		}
	}
	if err := tx.Commit(); err != nil {
		return nil, dbError("settle events", err)
	}
	return out, nil
}

func (s *Store) settleEventsTx(ctx context.Context, tx *sql.Tx, st mailpush.EventSettlement) error {
	now := s.now()
	if len(st.Events) > 0 {
		ids := idList(st.Events)
		if err := s.exec(ctx, tx, qEventFanned, ids); err != nil {
			return dbError("settle events", err)
		}
		if err := s.exec(ctx, tx, qEventDelete, ids); err != nil {
			return dbError("settle events", err)
		}
	}
	if seqs := seqList(st.Delivered); seqs != "" {
		if err := s.exec(ctx, tx, qRaiseSeqs, seqs); err != nil {
			return dbError("settle events", err)
		}
	}
	if len(st.Queue) > 0 {
		q, err := s.enqueueStmts(ctx, tx)
		if err != nil {
			return dbError("settle events", err)
		}
		for _, d := range st.Queue {
			if err := s.enqueueOne(ctx, q, d.Push, mailpush.UnixMilli(d.DueAt), d.Attempts, d.Reason, now); err != nil {
				return err
			}
		}
	}
	for _, d := range st.Dead {
		dead := mailpush.UnixMilli(d.DeadAt)
		if dead == 0 {
			dead = now
		}
		created := mailpush.UnixMilli(d.CreatedAt)
		if created == 0 {
			created = now
		}
		if err := s.exec(ctx, tx, qDeadInsert, d.PushID, d.TenantID, d.RegistrationID, d.MailboxID, string(d.Kind), d.Seq, d.Attempts, d.Reason, created, dead); err != nil {
			return dbError("settle events", err)
		}
	}
	return nil
}

// seqList encodes the sequences of delivered pushes for qRaiseSeqs as
// [["reg-id",seq],...]; "" when there is none.
func seqList(settlements []mailpush.PushSettlement) string {
	seqs := []byte{'['}
	for _, st := range settlements {
		if st.Action != mailpush.SettleDone || st.Seq <= 0 || st.RegistrationID == "" {
			continue
		}
		if len(seqs) > 1 {
			seqs = append(seqs, ',')
		}
		seqs = append(seqs, '[')
		seqs = appendJSONString(seqs, st.RegistrationID)
		seqs = append(seqs, ',')
		seqs = strconv.AppendInt(seqs, st.Seq, 10)
		seqs = append(seqs, ']')
	}
	if len(seqs) == 1 {
		return ""
	}
	return string(append(seqs, ']'))
}

func (s *Store) claimEventsTx(ctx context.Context, tx *sql.Tx, now time.Time, limit int, lease time.Duration) ([]*mailpush.OutboxEvent, error) {
	sel, err := s.stmt(ctx, tx, qEventClaim)
	if err != nil {
		return nil, dbError("claim events", err)
	}
	rows, err := sel.QueryContext(ctx, mailpush.UnixMilli(now), mailpush.UnixMilli(now), limit)
	if err != nil {
		return nil, dbError("claim events", err)
	}
	out := make([]*mailpush.OutboxEvent, 0, limit)
	var claimed []int64
	var unreadable []*mailpush.OutboxEvent
	for rows.Next() {
		e := &mailpush.OutboxEvent{}
		ev := &e.Event
		var kind string
		var content []byte
		var unresolved, created int64
		if err := rows.Scan(&e.OutboxID, &e.ID, &ev.TenantID, &ev.MailboxID, &kind, &ev.Badge, &ev.Seq, &content, &unresolved, &e.Attempts, &created); err != nil {
			rows.Close()
			return nil, dbError("claim events", err)
		}
		ev.Kind, e.Unresolved, e.CreatedAt = mailpush.EventKind(kind), unresolved != 0, mailpush.FromUnixMilli(created)
		ev.At = e.CreatedAt
		c, bad := s.codec.OpenContent(content)
		if bad != "" {
			// It must not stop every event behind it: a dead letter.
			e.Attempts++
			unreadable = append(unreadable, e)
			continue
		}
		ev.Subject, ev.Sender, ev.Ref = c.Subject, c.Sender, c.Ref
		e.Attempts++
		out = append(out, e)
		claimed = append(claimed, e.OutboxID)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, dbError("claim events", err)
	}
	if len(unreadable) > 0 {
		var ids []int64
		for _, e := range unreadable {
			ids = append(ids, e.OutboxID)
			if err := s.exec(ctx, tx, qDeadInsert, e.ID, e.Event.TenantID, "", e.Event.MailboxID, "event", e.Event.Seq, e.Attempts,
				"the stored event content cannot be opened", mailpush.UnixMilli(e.CreatedAt), mailpush.UnixMilli(now)); err != nil {
				return nil, dbError("claim events", err)
			}
		}
		if err := s.exec(ctx, tx, qEventDelete, idList(ids)); err != nil {
			return nil, dbError("claim events", err)
		}
	}
	if len(claimed) > 0 {
		if err := s.exec(ctx, tx, qEventLease, mailpush.UnixMilli(now.Add(lease)), idList(claimed)); err != nil {
			return nil, dbError("claim events", err)
		}
	}
	return out, nil
}

// recipientChunk is how many Recipients one allocation holds.
const recipientChunk = 64

// Recipients reads the active devices of mailboxes in one query, opening
// each push token once.
func (s *Store) Recipients(ctx context.Context, mailboxIDs []string, since time.Time) ([]*mailpush.Recipient, error) {
	if len(mailboxIDs) == 0 {
		return nil, nil
	}
	ids := []byte{'['}
	for i, id := range mailboxIDs {
		if i > 0 {
			ids = append(ids, ',')
		}
		ids = appendJSONString(ids, id)
	}
	ids = append(ids, ']')
	// On the bulk pool (Store.bulk): read prepared qRecipients there.
	rows, err := s.read(ctx, qRecipients, string(ids), max(1, mailpush.UnixMilli(since)))
	if err != nil {
		return nil, dbError("recipients", err)
	}
	defer rows.Close()
	var out []*mailpush.Recipient
	// Allocated once per batch, not once per device: the scan targets
	// (sealed is the driver's own bytes, valid until the next row; the
	// strings are the driver's, not copies) and the recipients, taken from
	// chunks.
	var (
		platform, env, content string
		sealed                 sql.RawBytes
		updated, left          int64
		chunk                  []mailpush.Recipient
	)
	for rows.Next() {
		if len(chunk) == 0 {
			chunk = make([]mailpush.Recipient, recipientChunk)
		}
		r := &chunk[0]
		chunk = chunk[1:]
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
	// Grouped by mailbox, in a stable order.
	slices.SortFunc(out, func(a, b *mailpush.Recipient) int {
		if c := strings.Compare(a.MailboxID, b.MailboxID); c != 0 {
			return c
		}
		return strings.Compare(a.RegistrationID, b.RegistrationID)
	})
	return out, nil
}
