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
		t.ID = newID()
	}
	if t.CreatedAt.IsZero() {
		t.CreatedAt = s.clock.Now().UTC()
	}
	_, err := s.w.ExecContext(ctx, `INSERT INTO tenants (id, name, allowed_hosts, max_content, created_at) VALUES (?, ?, ?, ?, ?)`,
		t.ID, t.Name, strings.Join(t.AllowedHosts, "\n"), string(t.MaxContent), ms(t.CreatedAt))
	if err != nil {
		if isUnique(err) {
			return mailpush.Errorf(mailpush.EConflict, "a tenant named %q already exists", t.Name)
		}
		return dbError("create tenant", err)
	}
	return nil
}

const tenantCols = `id, name, allowed_hosts, max_content, created_at`

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
	var hosts, content string
	var created int64
	err := s.r.QueryRowContext(ctx, `SELECT `+tenantCols+` FROM tenants WHERE `+where, arg).
		Scan(&t.ID, &t.Name, &hosts, &content, &created)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, notFound("tenant")
	}
	if err != nil {
		return nil, dbError("get tenant", err)
	}
	if hosts != "" {
		t.AllowedHosts = strings.Split(hosts, "\n")
	}
	t.MaxContent = mailpush.ContentMode(content)
	t.CreatedAt = fromMS(created)
	return &t, nil
}

// UpdateTenant stores a tenant's name and policy.
func (s *Store) UpdateTenant(ctx context.Context, t *mailpush.Tenant) error {
	res, err := s.w.ExecContext(ctx, `UPDATE tenants SET name = ?, allowed_hosts = ?, max_content = ? WHERE id = ?`,
		t.Name, strings.Join(t.AllowedHosts, "\n"), string(t.MaxContent), t.ID)
	if err != nil {
		return dbError("update tenant", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return notFound("tenant")
	}
	return nil
}
