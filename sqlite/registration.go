package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/mailpush/mailpush"
	"github.com/mailpush/mailpush/internal/sqlstore"
)

const mailboxCols = sqlstore.MailboxCols

const registrationCols = `id, tenant_id, mailbox_id, platform, environment, token_sealed, content_key, content, status, created_at, updated_at, expires_at, activesync_device_hash`

// qActiveRegistrations is prepared once at Open: the pipeline runs it for
// every event, and parsing it cost more than running it.
const qActiveRegistrations = `SELECT ` + registrationCols + ` FROM registrations WHERE mailbox_id = ? AND status IN (?, ?) ORDER BY created_at, id`

const (
	// Counts kept by triggers (migration 0022): no registration is read.
	qMailboxAudience = `SELECT live_registrations, content_registrations > 0 FROM mailboxes WHERE id = ?`
)

type scanner interface{ Scan(dest ...any) error }

type querier interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

// scanMailbox scans mailboxCols, then the columns that follow them into
// extra.
func (s *Store) scanMailbox(row scanner, extra ...any) (*mailpush.Mailbox, error) {
	var m mailpush.Mailbox
	var src, mode, status string
	var sub sql.NullString
	var last, created, updated int64
	var address []byte
	if err := row.Scan(append([]any{&m.ID, &m.TenantID, &m.AddressHash, &src, &mode, &m.ServerURL, &sub, &m.Watermark, &m.Badge, &m.Seq, &status, &last, &created, &updated, &address}, extra...)...); err != nil {
		return nil, err
	}
	m.Source, m.Mode, m.Status = mailpush.Source(src), mailpush.Mode(mode), mailpush.Status(status)
	m.SubscriptionID = sub.String
	m.StoredAddress = s.codec.OpenAddress(m.ID, address)
	m.LastEventAt, m.CreatedAt, m.UpdatedAt = mailpush.FromUnixMilli(last), mailpush.FromUnixMilli(created), mailpush.FromUnixMilli(updated)
	return &m, nil
}

func (s *Store) scanRegistration(row scanner) (*mailpush.Registration, error) {
	var r mailpush.Registration
	var platform, env, content, status string
	var sealed []byte
	var created, updated, expires int64
	if err := row.Scan(&r.ID, &r.TenantID, &r.MailboxID, &platform, &env, &sealed, &r.Device.ContentKey, &content, &status, &created, &updated, &expires, &r.Device.ActiveSyncDeviceHash); err != nil {
		return nil, err
	}
	tok, err := s.codec.OpenToken(sealed)
	if err != nil {
		return nil, fmt.Errorf("registration %s: %w", r.ID, err)
	}
	r.Device.Token = tok
	r.Device.Platform, r.Device.Environment = mailpush.Platform(platform), mailpush.Environment(env)
	r.Content, r.Status = mailpush.ContentMode(content), mailpush.Status(status)
	r.CreatedAt, r.UpdatedAt, r.ExpiresAt = mailpush.FromUnixMilli(created), mailpush.FromUnixMilli(updated), mailpush.FromUnixMilli(expires)
	return &r, nil
}

// Register stores reg for its mailbox, creating the mailbox when needed.
// check runs inside the group's transaction (mailpush.Join): what it reads
// there comes from the writer's own page cache, where a read before the
// write was a read transaction of its own on the reader pool.
func (s *Store) Register(ctx context.Context, reg *mailpush.Registration, mb *mailpush.Mailbox, check func(mailpush.Join) error) (*mailpush.Mailbox, error) {
	now := s.clock.Now().UTC()
	sealed, tokenHash, err := s.codec.SealToken(reg.Device.Token)
	if err != nil {
		return nil, err
	}
	// Concurrent registrations share a transaction (group commit); the
	// caller's reg and mb change only once its write is committed. The
	// write may run again (groupedRegistration): each run starts from reg
	// and mb as given, and only the committed run's results are kept.
	r, m := *reg, *mb
	var stored *mailpush.Mailbox
	err = s.groupedRegistration(ctx, func(ctx context.Context, tx *sql.Tx) error {
		var err error
		r = *reg
		stored, err = s.registerTx(ctx, tx, &r, &m, sealed, tokenHash, now, check)
		return err
	})
	if err != nil {
		return nil, err
	}
	*reg = r
	return stored, nil
}

// registerTx is Register's writes in tx, after check (when not nil) has
// accepted what the transaction finds.
func (s *Store) registerTx(ctx context.Context, tx *sql.Tx, reg *mailpush.Registration, mb *mailpush.Mailbox, sealed, tokenHash []byte, now time.Time, check func(mailpush.Join) error) (*mailpush.Mailbox, error) {
	stored, audience, err := s.findMailboxTx(ctx, tx, mb)
	if err != nil {
		return nil, err
	}
	var previous *mailpush.Registration
	if stored != nil {
		previous, err = s.scanRegistration(s.txStmt(ctx, tx, qFindRegistration).QueryRowContext(ctx, stored.ID, tokenHash))
		if errors.Is(err, sql.ErrNoRows) {
			previous, err = nil, nil
		}
		if err != nil {
			return nil, dbError("find registration", err)
		}
	}
	if check != nil {
		j := mailpush.Join{Mailbox: stored, Audience: audience, Previous: previous}
		if err := s.txStmt(ctx, tx, qCountRegistrations).QueryRowContext(ctx, mb.TenantID).Scan(&j.TenantRegistrations); err != nil {
			if errors.Is(err, sql.ErrNoRows) {
				return nil, notFound("tenant")
			}
			return nil, dbError("count registrations", err)
		}
		if err := check(j); err != nil {
			return nil, err
		}
	}
	if stored == nil {
		if stored, err = s.createMailboxTx(ctx, tx, mb, now); err != nil {
			return nil, err
		}
	}

	reg.TenantID, reg.MailboxID = stored.TenantID, stored.ID
	reg.UpdatedAt = now
	if previous == nil {
		if reg.ID == "" {
			reg.ID = mailpush.NewID()
		}
		reg.CreatedAt = now
		_, err = s.txStmt(ctx, tx, qInsertRegistration).ExecContext(ctx,
			reg.ID, reg.TenantID, reg.MailboxID, string(reg.Device.Platform), string(reg.Device.Environment), sealed, tokenHash,
			reg.Device.ContentKey, string(reg.Content), string(reg.Status), mailpush.UnixMilli(reg.CreatedAt), mailpush.UnixMilli(reg.UpdatedAt), mailpush.UnixMilli(reg.ExpiresAt), reg.Device.ActiveSyncDeviceHash)
	} else {
		reg.ID, reg.CreatedAt = previous.ID, previous.CreatedAt
		_, err = s.txStmt(ctx, tx, qUpdateRegistration).ExecContext(ctx,
			string(reg.Device.Platform), string(reg.Device.Environment), sealed, reg.Device.ContentKey, string(reg.Content), string(reg.Status),
			mailpush.UnixMilli(reg.UpdatedAt), mailpush.UnixMilli(reg.ExpiresAt), reg.Device.ActiveSyncDeviceHash, reg.ID)
	}
	if err != nil {
		return nil, dbError("store registration", err)
	}
	return stored, nil
}

// ensureMailboxTx returns the mailbox of (mb.TenantID, mb.AddressHash,
// mb.Source), creating it from mb when there is none.
func (s *Store) ensureMailboxTx(ctx context.Context, tx *sql.Tx, mb *mailpush.Mailbox, now time.Time) (*mailpush.Mailbox, error) {
	stored, _, err := s.findMailboxTx(ctx, tx, mb)
	if err != nil || stored != nil {
		return stored, err
	}
	return s.createMailboxTx(ctx, tx, mb, now)
}

// findMailboxTx returns the mailbox of (mb.TenantID, mb.AddressHash,
// mb.Source) and its audience (the counts triggers keep on its row), or nil
// when there is none.
func (s *Store) findMailboxTx(ctx context.Context, tx *sql.Tx, mb *mailpush.Mailbox) (*mailpush.Mailbox, mailpush.Audience, error) {
	var a mailpush.Audience
	stored, err := s.scanMailbox(s.txStmt(ctx, tx, qFindMailbox).QueryRowContext(ctx, mb.TenantID, mb.AddressHash, string(mb.Source)), &a.Registrations, &a.WantsContent)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return nil, a, nil
	case err != nil:
		return nil, a, dbError("find mailbox", err)
	}
	return stored, a, nil
}

// createMailboxTx stores mb as a new mailbox.
func (s *Store) createMailboxTx(ctx context.Context, tx *sql.Tx, mb *mailpush.Mailbox, now time.Time) (*mailpush.Mailbox, error) {
	m, args, err := sqlstore.NewMailboxRow(s.codec, mb, now)
	if err != nil {
		return nil, fmt.Errorf("sqlite: create mailbox: %w", err)
	}
	if _, err := s.txStmt(ctx, tx, qInsertMailbox).ExecContext(ctx, args...); err != nil {
		return nil, dbError("create mailbox", err)
	}
	return m, nil
}

// Register's statements, prepared once at Open (registerStatements).
const (
	qFindMailbox        = `SELECT ` + mailboxCols + `, live_registrations, content_registrations > 0 FROM mailboxes WHERE tenant_id = ? AND address_hash = ? AND source = ?`
	qInsertMailbox      = `INSERT INTO mailboxes (` + mailboxCols + `) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`
	qFindRegistration   = `SELECT ` + registrationCols + ` FROM registrations WHERE mailbox_id = ? AND token_hash = ?`
	qInsertRegistration = `INSERT INTO registrations (id, tenant_id, mailbox_id, platform, environment, token_sealed, token_hash, content_key, content, status, created_at, updated_at, expires_at, activesync_device_hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`
	qUpdateRegistration = `UPDATE registrations SET platform = ?, environment = ?, token_sealed = ?, content_key = ?, content = ?, status = ?, updated_at = ?, expires_at = ?, activesync_device_hash = ? WHERE id = ?`
)

// The updates' statements, prepared once too: parsing them was a sixth of
// a registration's CPU.
const (
	qMailboxByID           = `SELECT ` + mailboxCols + ` FROM mailboxes WHERE id = ?`
	qUpdateMailbox         = `UPDATE mailboxes SET mode = ?, server_url = ?, subscription_id = ?, watermark = ?, badge = ?, seq = ?, status = ?, last_event_at = ?, updated_at = ?, address_sealed = coalesce(?, address_sealed) WHERE id = ?`
	qRegistrationByID      = `SELECT ` + registrationCols + ` FROM registrations WHERE id = ? AND tenant_id = ?`
	qUpdateRegistrationAll = `UPDATE registrations SET platform = ?, environment = ?, token_sealed = ?, token_hash = ?, content_key = ?, content = ?, status = ?, updated_at = ?, expires_at = ?, activesync_device_hash = ? WHERE id = ?`
)

var registerStatements = []string{qFindMailbox, qInsertMailbox, qFindRegistration, qInsertRegistration, qUpdateRegistration, qCountRegistrations,
	qMailboxByID, qUpdateMailbox, qRegistrationByID, qUpdateRegistrationAll}

// txQuerier runs a transaction's queries through the statements prepared at
// Open (others are prepared in the transaction, as tx.QueryContext would).
type txQuerier struct {
	s  *Store
	tx *sql.Tx
}

func (q txQuerier) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	st, err := q.s.stmt(ctx, q.tx, query)
	if err != nil {
		return q.tx.QueryRowContext(ctx, query, args...)
	}
	return st.QueryRowContext(ctx, args...)
}

// readQuerier runs queries on the reader pool through the statements
// prepared at Open when there is one.
type readQuerier struct{ s *Store }

func (q readQuerier) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	q.s.cache.mu.Lock()
	st, ok := q.s.cache.reads[query]
	q.s.cache.mu.Unlock()
	if !ok {
		return q.s.r.QueryRowContext(ctx, query, args...)
	}
	return st.QueryRowContext(ctx, args...)
}

func (q readQuerier) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	return q.s.read(ctx, query, args...)
}

// qMailboxByAddress is MailboxByAddress's query, prepared on the reader pool:
// the registrar asks it on every registration.
const qMailboxByAddress = `SELECT ` + mailboxCols + ` FROM mailboxes WHERE tenant_id = ? AND address_hash = ? AND source = ?`

func (q txQuerier) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	st, err := q.s.stmt(ctx, q.tx, query)
	if err != nil {
		return nil, err
	}
	return st.QueryContext(ctx, args...)
}

// Registration returns a tenant's registration.
func (s *Store) Registration(ctx context.Context, tenantID, id string) (*mailpush.Registration, error) {
	return s.registration(ctx, readQuerier{s}, tenantID, id)
}

func (s *Store) registration(ctx context.Context, q querier, tenantID, id string) (*mailpush.Registration, error) {
	r, err := s.scanRegistration(q.QueryRowContext(ctx, `SELECT `+registrationCols+` FROM registrations WHERE id = ? AND tenant_id = ?`, id, tenantID))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, notFound("registration")
	}
	if err != nil {
		return nil, dbError("get registration", err)
	}
	return r, nil
}

// UpdateRegistration applies fn to a registration in a transaction.
func (s *Store) UpdateRegistration(ctx context.Context, tenantID, id string, fn func(*mailpush.Registration) error) (*mailpush.Registration, error) {
	// Concurrent updates (registrations becoming active) share a
	// transaction.
	var out *mailpush.Registration
	err := s.grouped(ctx, func(ctx context.Context, tx *sql.Tx) error {
		r, err := s.registration(ctx, txQuerier{s, tx}, tenantID, id)
		if err != nil {
			return err
		}
		wasActive := r.Status == mailpush.StatusActive
		if err := fn(r); err != nil {
			return err
		}
		r.ID, r.TenantID = id, tenantID // not changeable
		r.UpdatedAt = s.clock.Now().UTC()
		sealed, tokenHash, err := s.codec.SealToken(r.Device.Token)
		if err != nil {
			return err
		}
		err = s.exec(ctx, tx, qUpdateRegistrationAll,
			string(r.Device.Platform), string(r.Device.Environment), sealed, tokenHash, r.Device.ContentKey,
			string(r.Content), string(r.Status), mailpush.UnixMilli(r.UpdatedAt), mailpush.UnixMilli(r.ExpiresAt), r.Device.ActiveSyncDeviceHash, id)
		if err != nil {
			return dbError("update registration", err)
		}
		if wasActive && r.Status != mailpush.StatusActive {
			// The pushes of events accepted until now were decided while it
			// was active (see Recipients).
			if _, err := tx.ExecContext(ctx, `UPDATE registrations SET left_active_at = ? WHERE id = ?`, mailpush.UnixMilli(r.UpdatedAt), id); err != nil {
				return dbError("update registration", err)
			}
		}
		out = r
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// DeleteRegistration removes a registration. When it was the mailbox's last,
// the mailbox becomes inactive: its subscription is then ended by the source.
func (s *Store) DeleteRegistration(ctx context.Context, tenantID, id string) error {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return dbError("delete registration", err)
	}
	defer tx.Rollback()
	var mailboxID string
	err = tx.QueryRowContext(ctx, `DELETE FROM registrations WHERE id = ? AND tenant_id = ? RETURNING mailbox_id`, id, tenantID).Scan(&mailboxID)
	if errors.Is(err, sql.ErrNoRows) {
		return notFound("registration")
	}
	if err != nil {
		return dbError("delete registration", err)
	}
	if err := s.deactivateIfEmpty(ctx, tx, mailboxID); err != nil {
		return dbError("delete registration", err)
	}
	if err := tx.Commit(); err != nil {
		return dbError("delete registration", err)
	}
	return nil
}

// MailboxAudience counts the mailbox's active and pending registrations and
// whether one may show content, in one indexed read.
func (s *Store) MailboxAudience(ctx context.Context, mailboxID string) (mailpush.Audience, error) {
	var a mailpush.Audience
	rows, err := s.read(ctx, qMailboxAudience, mailboxID)
	if err != nil {
		return a, dbError("mailbox audience", err)
	}
	defer rows.Close()
	if rows.Next() {
		if err := rows.Scan(&a.Registrations, &a.WantsContent); err != nil {
			return a, dbError("mailbox audience", err)
		}
	}
	return a, rows.Err()
}

// ActiveRegistrations lists a mailbox's active and pending registrations.
func (s *Store) ActiveRegistrations(ctx context.Context, mailboxID string) ([]*mailpush.Registration, error) {
	rows, err := s.read(ctx, qActiveRegistrations, mailboxID, string(mailpush.StatusActive), string(mailpush.StatusPending))
	if err != nil {
		return nil, dbError("list registrations", err)
	}
	defer rows.Close()
	var out []*mailpush.Registration
	for rows.Next() {
		r, err := s.scanRegistration(rows)
		if err != nil {
			return nil, dbError("list registrations", err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, dbError("list registrations", err)
	}
	return out, nil
}

// qCountRegistrations is prepared on the reader pool: the quota check runs
// it for every registration of a new mailbox.
const qCountRegistrations = `SELECT live_registrations FROM tenants WHERE id = ?`

// CountRegistrations counts a tenant's active and pending registrations:
// the count that triggers keep on the tenant row (migration 0007).
func (s *Store) CountRegistrations(ctx context.Context, tenantID string) (int, error) {
	var n int
	err := readQuerier{s}.QueryRowContext(ctx, qCountRegistrations, tenantID).Scan(&n)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, notFound("tenant")
	}
	if err != nil {
		return 0, dbError("count registrations", err)
	}
	return n, nil
}

// Mailbox returns a mailbox by ID.
func (s *Store) Mailbox(ctx context.Context, id string) (*mailpush.Mailbox, error) {
	return s.mailboxWhere(ctx, s.r, "id = ?", id)
}

// MailboxBySubscription returns the mailbox bound to a mail-server subscription.
func (s *Store) MailboxBySubscription(ctx context.Context, subscriptionID string) (*mailpush.Mailbox, error) {
	if subscriptionID == "" {
		return nil, notFound("mailbox")
	}
	return s.mailboxWhere(ctx, s.r, "subscription_id = ?", subscriptionID)
}

// MailboxByAddress returns the tenant's mailbox of a source by address hash.
func (s *Store) MailboxByAddress(ctx context.Context, tenantID string, addressHash []byte, source mailpush.Source) (*mailpush.Mailbox, error) {
	return s.mailboxWhere(ctx, readQuerier{s}, "tenant_id = ? AND address_hash = ? AND source = ?", tenantID, addressHash, string(source))
}

func (s *Store) mailboxWhere(ctx context.Context, q querier, where string, args ...any) (*mailpush.Mailbox, error) {
	m, err := s.scanMailbox(q.QueryRowContext(ctx, `SELECT `+mailboxCols+` FROM mailboxes WHERE `+where, args...))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, notFound("mailbox")
	}
	if err != nil {
		return nil, dbError("get mailbox", err)
	}
	return m, nil
}

// UpdateMailbox applies fn to a mailbox in a transaction.
func (s *Store) UpdateMailbox(ctx context.Context, id string, fn func(*mailpush.Mailbox) error) (*mailpush.Mailbox, error) {
	// Concurrent updates (notifications of many mailboxes at once) share a
	// transaction; each runs alone inside it, so one mailbox's updates
	// still see each other.
	var out *mailpush.Mailbox
	err := s.grouped(ctx, func(ctx context.Context, tx *sql.Tx) error {
		m, err := s.mailboxWhere(ctx, txQuerier{s, tx}, "id = ?", id)
		if err != nil {
			return err
		}
		before := m.StoredAddress
		if err := fn(m); err != nil {
			return err
		}
		m.ID = id
		if err := s.writeMailbox(ctx, tx, m, before); err != nil {
			return err
		}
		out = m
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// writeMailbox stores m's changeable fields in tx; its address (sealed)
// only when it is no longer before, the address read (StoreCodec.AddressUpdate).
func (s *Store) writeMailbox(ctx context.Context, tx *sql.Tx, m *mailpush.Mailbox, before string) error {
	m.UpdatedAt = s.clock.Now().UTC()
	address, err := s.codec.AddressUpdate(m, before)
	if err != nil {
		return fmt.Errorf("sqlite: update mailbox: %w", err)
	}
	err = s.exec(ctx, tx, qUpdateMailbox,
		string(m.Mode), m.ServerURL, sqlstore.NullString(m.SubscriptionID), m.Watermark, m.Badge, m.Seq, string(m.Status), mailpush.UnixMilli(m.LastEventAt), mailpush.UnixMilli(m.UpdatedAt), address, m.ID)
	if err != nil {
		if isUnique(err) {
			return mailpush.Errorf(mailpush.EConflict, "subscription is already bound to another mailbox")
		}
		return dbError("update mailbox", err)
	}
	return nil
}

// StaleMailboxes lists live mailboxes of source silent since before.
func (s *Store) StaleMailboxes(ctx context.Context, source mailpush.Source, before time.Time, limit int) ([]*mailpush.Mailbox, error) {
	if limit <= 0 {
		return nil, mailpush.Errorf(mailpush.EInvalid, "StaleMailboxes: limit must be positive")
	}
	// The status list is written as in the partial index so that SQLite uses it.
	rows, err := s.r.QueryContext(ctx, `SELECT `+mailboxCols+` FROM mailboxes WHERE source = ? AND status IN ('active', 'pending') AND last_event_at < ? ORDER BY last_event_at, id LIMIT ?`,
		string(source), mailpush.UnixMilli(before), limit)
	if err != nil {
		return nil, dbError("stale mailboxes", err)
	}
	defer rows.Close()
	var out []*mailpush.Mailbox
	for rows.Next() {
		m, err := s.scanMailbox(rows)
		if err != nil {
			return nil, dbError("stale mailboxes", err)
		}
		out = append(out, m)
	}
	if err := rows.Err(); err != nil {
		return nil, dbError("stale mailboxes", err)
	}
	return out, nil
}
