package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/mailpush/mailpush"
	"github.com/mailpush/mailpush/internal/sqlstore"
)

const mailboxCols = sqlstore.MailboxCols

const registrationCols = `id, tenant_id, mailbox_id, platform, environment, token_sealed, content_key, content, status, created_at, updated_at, expires_at, activesync_device_hash`

// querier is what both the pool and a transaction offer.
type querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

func (s *Store) scanMailbox(row pgx.Row) (*mailpush.Mailbox, error) {
	var m mailpush.Mailbox
	var src, mode, status string
	var sub *string
	var last, created, updated int64
	var address []byte
	if err := row.Scan(&m.ID, &m.TenantID, &m.AddressHash, &src, &mode, &m.ServerURL, &sub, &m.Watermark, &m.Badge, &m.Seq, &status, &last, &created, &updated, &address); err != nil {
		return nil, err
	}
	m.Source, m.Mode, m.Status = mailpush.Source(src), mailpush.Mode(mode), mailpush.Status(status)
	m.StoredAddress = s.codec.OpenAddress(m.ID, address)
	if sub != nil {
		m.SubscriptionID = *sub
	}
	m.LastEventAt, m.CreatedAt, m.UpdatedAt = mailpush.FromUnixMilli(last), mailpush.FromUnixMilli(created), mailpush.FromUnixMilli(updated)
	return &m, nil
}

func (s *Store) scanRegistration(row pgx.Row) (*mailpush.Registration, error) {
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
// Both writes are upserts, so two nodes registering the same mailbox or
// device at once end with one row each instead of a unique violation. check
// runs in the same transaction, on what it reads before the writes
// (mailpush.Join).
func (s *Store) Register(ctx context.Context, reg *mailpush.Registration, mb *mailpush.Mailbox, check func(mailpush.Join) error) (*mailpush.Mailbox, error) {
	now := s.clock.Now().UTC()
	sealed, tokenHash, err := s.codec.SealToken(reg.Device.Token)
	if err != nil {
		return nil, err
	}
	var stored *mailpush.Mailbox
	var refused error // check's answer, returned as it is
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if check != nil {
			if refused = s.checkJoinTx(ctx, tx, mb, tokenHash, check); refused != nil {
				return refused
			}
		}
		var err error
		if stored, err = s.ensureMailboxTx(ctx, tx, mb, now); err != nil {
			return err
		}
		reg.TenantID, reg.MailboxID = stored.TenantID, stored.ID
		reg.UpdatedAt = now
		id := reg.ID
		if id == "" {
			id = mailpush.NewID()
		}
		var created int64
		if err := tx.QueryRow(ctx, `INSERT INTO registrations (id, tenant_id, mailbox_id, platform, environment, token_sealed, token_hash, content_key, content, status, created_at, updated_at, expires_at, activesync_device_hash)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11, $12, $13)
			ON CONFLICT (mailbox_id, token_hash) DO UPDATE SET platform = excluded.platform, environment = excluded.environment,
				token_sealed = excluded.token_sealed, content_key = excluded.content_key, content = excluded.content, status = excluded.status,
				updated_at = excluded.updated_at, expires_at = excluded.expires_at, activesync_device_hash = excluded.activesync_device_hash
			RETURNING id, created_at`,
			id, reg.TenantID, reg.MailboxID, string(reg.Device.Platform), string(reg.Device.Environment), sealed, tokenHash,
			reg.Device.ContentKey, string(reg.Content), string(reg.Status), mailpush.UnixMilli(now), mailpush.UnixMilli(reg.ExpiresAt), reg.Device.ActiveSyncDeviceHash).
			Scan(&reg.ID, &created); err != nil {
			return fmt.Errorf("store registration: %w", err)
		}
		reg.CreatedAt = mailpush.FromUnixMilli(created)
		return nil
	})
	if refused != nil {
		return nil, refused
	}
	if err != nil {
		return nil, dbError("register", err)
	}
	return stored, nil
}

// checkJoinTx reads what a registration joins, in tx, and asks check.
func (s *Store) checkJoinTx(ctx context.Context, tx pgx.Tx, mb *mailpush.Mailbox, tokenHash []byte, check func(mailpush.Join) error) error {
	var j mailpush.Join
	stored, err := s.mailboxWhere(ctx, tx, "tenant_id = $1 AND address_hash = $2 AND source = $3", mb.TenantID, mb.AddressHash, string(mb.Source))
	switch {
	case mailpush.ErrorCode(err) == mailpush.ENotFound:
	case err != nil:
		return err
	default:
		j.Mailbox = stored
		if j.Audience, err = mailboxAudience(ctx, tx, stored.ID); err != nil {
			return err
		}
		j.Previous, err = s.scanRegistration(tx.QueryRow(ctx, `SELECT `+registrationCols+` FROM registrations WHERE mailbox_id = $1 AND token_hash = $2`, stored.ID, tokenHash))
		if errors.Is(err, pgx.ErrNoRows) {
			j.Previous, err = nil, nil
		}
		if err != nil {
			return dbError("find registration", err)
		}
	}
	if j.TenantRegistrations, err = countRegistrations(ctx, tx, mb.TenantID); err != nil {
		return err
	}
	return check(j)
}

// ensureMailboxTx returns the mailbox of (mb.TenantID, mb.AddressHash,
// mb.Source), creating it from mb when there is none (an upsert: two nodes
// creating it at once end with one row).
func (s *Store) ensureMailboxTx(ctx context.Context, tx pgx.Tx, mb *mailpush.Mailbox, now time.Time) (*mailpush.Mailbox, error) {
	_, args, err := sqlstore.NewMailboxRow(s.codec, mb, now)
	if err != nil {
		return nil, fmt.Errorf("create mailbox: %w", err)
	}
	if _, err := tx.Exec(ctx, `INSERT INTO mailboxes (`+mailboxCols+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
		ON CONFLICT (tenant_id, address_hash, source) DO NOTHING`, args...); err != nil {
		return nil, fmt.Errorf("create mailbox: %w", err)
	}
	stored, err := s.scanMailbox(tx.QueryRow(ctx, `SELECT `+mailboxCols+` FROM mailboxes WHERE tenant_id = $1 AND address_hash = $2 AND source = $3`,
		mb.TenantID, mb.AddressHash, string(mb.Source)))
	if err != nil {
		return nil, fmt.Errorf("find mailbox: %w", err)
	}
	return stored, nil
}

// Registration returns a tenant's registration.
func (s *Store) Registration(ctx context.Context, tenantID, id string) (*mailpush.Registration, error) {
	return s.registration(ctx, s.pool, tenantID, id, "")
}

func (s *Store) registration(ctx context.Context, q querier, tenantID, id, lock string) (*mailpush.Registration, error) {
	r, err := s.scanRegistration(q.QueryRow(ctx, `SELECT `+registrationCols+` FROM registrations WHERE id = $1 AND tenant_id = $2`+lock, id, tenantID))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, notFound("registration")
	}
	if err != nil {
		return nil, dbError("get registration", err)
	}
	return r, nil
}

// UpdateRegistration applies fn to a registration in a transaction, the row
// locked so that concurrent updates from several nodes apply one after the other.
func (s *Store) UpdateRegistration(ctx context.Context, tenantID, id string, fn func(*mailpush.Registration) error) (*mailpush.Registration, error) {
	var r *mailpush.Registration
	var fnErr error
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var err error
		if r, err = s.registration(ctx, tx, tenantID, id, " FOR UPDATE"); err != nil {
			return err
		}
		wasActive := r.Status == mailpush.StatusActive
		if fnErr = fn(r); fnErr != nil {
			return fnErr
		}
		r.ID, r.TenantID = id, tenantID // not changeable
		r.UpdatedAt = s.clock.Now().UTC()
		if wasActive && r.Status != mailpush.StatusActive {
			// The pushes of events accepted until now were decided while it
			// was active (see Recipients).
			if _, err := tx.Exec(ctx, `UPDATE registrations SET left_active_at = $1 WHERE id = $2`, mailpush.UnixMilli(r.UpdatedAt), id); err != nil {
				return err
			}
		}
		sealed, tokenHash, err := s.codec.SealToken(r.Device.Token)
		if err != nil {
			return err
		}
		if _, err = tx.Exec(ctx, `UPDATE registrations SET platform = $1, environment = $2, token_sealed = $3, token_hash = $4, content_key = $5, content = $6, status = $7, updated_at = $8, expires_at = $9, activesync_device_hash = $10 WHERE id = $11`,
			string(r.Device.Platform), string(r.Device.Environment), sealed, tokenHash, r.Device.ContentKey,
			string(r.Content), string(r.Status), mailpush.UnixMilli(r.UpdatedAt), mailpush.UnixMilli(r.ExpiresAt), r.Device.ActiveSyncDeviceHash, id); err != nil {
			return dbError("update registration", err)
		}
		return nil
	})
	if fnErr != nil {
		return nil, fnErr
	}
	if err != nil {
		return nil, passOrWrap("update registration", err)
	}
	return r, nil
}

// passOrWrap returns the store's own coded errors (not found, conflict) as
// they are, and wraps the database's.
func passOrWrap(op string, err error) error {
	var me *mailpush.Error
	if errors.As(err, &me) {
		return err
	}
	return dbError(op, err)
}

// DeleteRegistration removes a registration. When it was the mailbox's last,
// the mailbox becomes inactive: its subscription is then ended by the source.
func (s *Store) DeleteRegistration(ctx context.Context, tenantID, id string) error {
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var mailboxID string
		err := tx.QueryRow(ctx, `DELETE FROM registrations WHERE id = $1 AND tenant_id = $2 RETURNING mailbox_id`, id, tenantID).Scan(&mailboxID)
		if errors.Is(err, pgx.ErrNoRows) {
			return notFound("registration")
		}
		if err != nil {
			return err
		}
		return s.deactivateIfEmpty(ctx, tx, mailboxID)
	})
	if err != nil {
		return passOrWrap("delete registration", err)
	}
	return nil
}

// ActiveRegistrations lists a mailbox's active and pending registrations.
func (s *Store) ActiveRegistrations(ctx context.Context, mailboxID string) ([]*mailpush.Registration, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+registrationCols+` FROM registrations WHERE mailbox_id = $1 AND status IN ('active', 'pending') ORDER BY created_at, id`, mailboxID)
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

// MailboxAudience counts the mailbox's active and pending registrations and
// whether one may show content, without loading them.
func (s *Store) MailboxAudience(ctx context.Context, mailboxID string) (mailpush.Audience, error) {
	return mailboxAudience(ctx, s.pool, mailboxID)
}

func mailboxAudience(ctx context.Context, q querier, mailboxID string) (mailpush.Audience, error) {
	var a mailpush.Audience
	err := q.QueryRow(ctx, `SELECT count(*), coalesce(bool_or(content IN ('subject', 'subject_sender')), false)
		FROM registrations WHERE mailbox_id = $1 AND status IN ('active', 'pending')`, mailboxID).Scan(&a.Registrations, &a.WantsContent)
	if err != nil {
		return a, dbError("mailbox audience", err)
	}
	return a, nil
}

// CountRegistrations counts a tenant's active and pending registrations.
func (s *Store) CountRegistrations(ctx context.Context, tenantID string) (int, error) {
	return countRegistrations(ctx, s.pool, tenantID)
}

func countRegistrations(ctx context.Context, q querier, tenantID string) (int, error) {
	var n int
	if err := q.QueryRow(ctx, `SELECT count(*) FROM registrations WHERE tenant_id = $1 AND status IN ('active', 'pending')`, tenantID).Scan(&n); err != nil {
		return 0, dbError("count registrations", err)
	}
	return n, nil
}

// Mailbox returns a mailbox by ID.
func (s *Store) Mailbox(ctx context.Context, id string) (*mailpush.Mailbox, error) {
	return s.mailboxWhere(ctx, s.pool, "id = $1", id)
}

// MailboxBySubscription returns the mailbox bound to a mail-server subscription.
func (s *Store) MailboxBySubscription(ctx context.Context, subscriptionID string) (*mailpush.Mailbox, error) {
	if subscriptionID == "" {
		return nil, notFound("mailbox")
	}
	return s.mailboxWhere(ctx, s.pool, "subscription_id = $1", subscriptionID)
}

// MailboxByAddress returns the tenant's mailbox of a source by address hash.
func (s *Store) MailboxByAddress(ctx context.Context, tenantID string, addressHash []byte, source mailpush.Source) (*mailpush.Mailbox, error) {
	return s.mailboxWhere(ctx, s.pool, "tenant_id = $1 AND address_hash = $2 AND source = $3", tenantID, addressHash, string(source))
}

func (s *Store) mailboxWhere(ctx context.Context, q querier, where string, args ...any) (*mailpush.Mailbox, error) {
	m, err := s.scanMailbox(q.QueryRow(ctx, `SELECT `+mailboxCols+` FROM mailboxes WHERE `+where, args...))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, notFound("mailbox")
	}
	if err != nil {
		return nil, dbError("get mailbox", err)
	}
	return m, nil
}

// UpdateMailbox applies fn to a mailbox in a transaction, the row locked so
// that concurrent notifications handled by several nodes do not lose each
// other's writes.
func (s *Store) UpdateMailbox(ctx context.Context, id string, fn func(*mailpush.Mailbox) error) (*mailpush.Mailbox, error) {
	var m *mailpush.Mailbox
	var fnErr error
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var err error
		if m, err = s.mailboxWhere(ctx, tx, "id = $1 FOR UPDATE", id); err != nil {
			return err
		}
		before := m.StoredAddress
		if fnErr = fn(m); fnErr != nil {
			return fnErr
		}
		m.ID = id
		return s.writeMailbox(ctx, tx, m, before)
	})
	if fnErr != nil {
		return nil, fnErr
	}
	if err != nil {
		return nil, passOrWrap("update mailbox", err)
	}
	return m, nil
}

// writeMailbox stores m's changeable fields in tx (its row locked); its
// address (sealed) only when it is no longer before, the address read
// (StoreCodec.AddressUpdate).
func (s *Store) writeMailbox(ctx context.Context, tx pgx.Tx, m *mailpush.Mailbox, before string) error {
	m.UpdatedAt = s.clock.Now().UTC()
	address, err := s.codec.AddressUpdate(m, before)
	if err != nil {
		return fmt.Errorf("update mailbox: %w", err)
	}
	_, err = tx.Exec(ctx, `UPDATE mailboxes SET mode = $1, server_url = $2, subscription_id = $3, watermark = $4, badge = $5, seq = $6, status = $7, last_event_at = $8, updated_at = $9, address_sealed = coalesce($10, address_sealed) WHERE id = $11`,
		string(m.Mode), m.ServerURL, sqlstore.NullString(m.SubscriptionID), m.Watermark, m.Badge, m.Seq, string(m.Status), mailpush.UnixMilli(m.LastEventAt), mailpush.UnixMilli(m.UpdatedAt), address, m.ID)
	if isUnique(err) {
		return mailpush.Errorf(mailpush.EConflict, "subscription is already bound to another mailbox")
	}
	return err
}

// StaleMailboxes lists live mailboxes of source silent since before.
func (s *Store) StaleMailboxes(ctx context.Context, source mailpush.Source, before time.Time, limit int) ([]*mailpush.Mailbox, error) {
	if limit <= 0 {
		return nil, mailpush.Errorf(mailpush.EInvalid, "StaleMailboxes: limit must be positive")
	}
	rows, err := s.pool.Query(ctx, `SELECT `+mailboxCols+` FROM mailboxes WHERE source = $1 AND status IN ('active', 'pending') AND last_event_at < $2 ORDER BY last_event_at, id LIMIT $3`,
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
