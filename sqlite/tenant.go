package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"strings"

	"github.com/mailpush/mailpush"
)

// CreateTenant stores a new tenant; its ID is generated when empty.
func (s *Store) CreateTenant(ctx context.Context, t *mailpush.Tenant) error {
	if t.ID == "" {
		t.ID = mailpush.NewID()
	}
	if t.CreatedAt.IsZero() {
		t.CreatedAt = s.clock.Now().UTC()
	}
	_, err := s.w.ExecContext(ctx, `INSERT INTO tenants (id, name, allowed_hosts, max_content, device_subscribed, created_at) VALUES (?, ?, ?, ?, ?, ?)`,
		t.ID, t.Name, strings.Join(t.AllowedHosts, "\n"), string(t.MaxContent), t.DeviceSubscribed, mailpush.UnixMilli(t.CreatedAt))
	if err != nil {
		if isUnique(err) {
			return mailpush.Errorf(mailpush.EConflict, "a tenant named %q already exists", t.Name)
		}
		return dbError("create tenant", err)
	}
	return nil
}

const tenantCols = `id, name, allowed_hosts, max_content, device_subscribed, created_at`

// qTenantByID is prepared on the reader pool: every API request reads its
// token's tenant. qTenantByName likewise: every Dovecot notification reads
// its tenant before it is acknowledged, and preparing the statement again
// for each took a few dozen allocations through the driver's C allocator,
// whose process-wide lock the fan-out's device reads hold most of the time
// under load (docs/PERFORMANCE.md, sixth pass).
const (
	qTenantByID   = `SELECT ` + tenantCols + ` FROM tenants WHERE id = ?`
	qTenantByName = `SELECT ` + tenantCols + ` FROM tenants WHERE name = ?`
)

// Tenant returns the tenant with the given ID.
func (s *Store) Tenant(ctx context.Context, id string) (*mailpush.Tenant, error) {
	return s.tenantWhere(ctx, "id = ?", id)
}

// TenantByName returns the tenant with the given name.
func (s *Store) TenantByName(ctx context.Context, name string) (*mailpush.Tenant, error) {
	return s.tenantWhere(ctx, "name = ?", name)
}

func (s *Store) tenantWhere(ctx context.Context, where string, arg any) (*mailpush.Tenant, error) {
	var t mailpush.Tenant
	var tr mailpush.TenantRow
	err := readQuerier{s}.QueryRowContext(ctx, `SELECT `+tenantCols+` FROM tenants WHERE `+where, arg).Scan(tr.Dest(&t)...)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, notFound("tenant")
	}
	if err != nil {
		return nil, dbError("get tenant", err)
	}
	tr.Finish()
	return &t, nil
}

// UpdateTenant stores a tenant's name and policy.
func (s *Store) UpdateTenant(ctx context.Context, t *mailpush.Tenant) error {
	res, err := s.w.ExecContext(ctx, `UPDATE tenants SET name = ?, allowed_hosts = ?, max_content = ?, device_subscribed = ? WHERE id = ?`,
		t.Name, strings.Join(t.AllowedHosts, "\n"), string(t.MaxContent), t.DeviceSubscribed, t.ID)
	if err != nil {
		return dbError("update tenant", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return notFound("tenant")
	}
	return nil
}

// Tenants lists every tenant by name.
func (s *Store) Tenants(ctx context.Context) ([]*mailpush.Tenant, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT id FROM tenants ORDER BY name`)
	if err != nil {
		return nil, dbError("list tenants", err)
	}
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return nil, dbError("list tenants", err)
		}
		ids = append(ids, id)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, dbError("list tenants", err)
	}
	// One scan function for every tenant read (tenantWhere); tenants are few.
	out := make([]*mailpush.Tenant, 0, len(ids))
	for _, id := range ids {
		t, err := s.Tenant(ctx, id)
		if err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	return out, nil
}

// tenantOwned lists the tables whose rows belong to a tenant, children
// before parents, for DeleteTenant.
var tenantOwned = []string{"outbox_events", "outbox", "outbox_dead", "gate_devices", "gate_rules", "registrations", "mailboxes", "tokens"}

// DeleteTenant removes a tenant and every row that is its own, in one
// transaction.
func (s *Store) DeleteTenant(ctx context.Context, id string) error {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return dbError("delete tenant", err)
	}
	defer tx.Rollback()
	for _, table := range tenantOwned {
		if _, err := tx.ExecContext(ctx, `DELETE FROM `+table+` WHERE tenant_id = ?`, id); err != nil {
			return dbError("delete tenant: "+table, err)
		}
	}
	res, err := tx.ExecContext(ctx, `DELETE FROM tenants WHERE id = ?`, id)
	if err != nil {
		return dbError("delete tenant", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return notFound("tenant")
	}
	if err := tx.Commit(); err != nil {
		return dbError("delete tenant", err)
	}
	return nil
}
