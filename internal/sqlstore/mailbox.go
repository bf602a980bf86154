package sqlstore

import (
	"time"

	"github.com/mailpush/mailpush"
)

// MailboxCols are a mailbox row's columns, in the order NewMailboxRow gives
// their values and both stores scan them.
const MailboxCols = `id, tenant_id, address_hash, source, mode, server_url, subscription_id, watermark, badge, seq, status, last_event_at, created_at, updated_at, address_sealed`

// NewMailboxRow prepares mb to be stored as a new row at now: a copy with
// its ID (made when empty), times and stored address set, and the values of
// MailboxCols for the INSERT.
func NewMailboxRow(c mailpush.StoreCodec, mb *mailpush.Mailbox, now time.Time) (*mailpush.Mailbox, []any, error) {
	m := *mb
	if m.ID == "" {
		m.ID = mailpush.NewID()
	}
	m.CreatedAt, m.UpdatedAt = now, now
	address, err := c.NewMailboxAddress(&m)
	if err != nil {
		return nil, nil, err
	}
	return &m, []any{m.ID, m.TenantID, m.AddressHash, string(m.Source), string(m.Mode), m.ServerURL, NullString(m.SubscriptionID), m.Watermark,
		m.Badge, m.Seq, string(m.Status), mailpush.UnixMilli(m.LastEventAt), mailpush.UnixMilli(m.CreatedAt), mailpush.UnixMilli(m.UpdatedAt), address}, nil
}

// NullString is s, or SQL NULL when s is empty.
func NullString(s string) any {
	if s == "" {
		return nil
	}
	return s
}
