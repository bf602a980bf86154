package postgres

import (
	"context"
	"errors"
	"strings"

	"github.com/jackc/pgx/v5"

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
	_, err := s.pool.Exec(ctx, `INSERT INTO tenants (id, name, token_hash, allowed_hosts, max_content, created_at) VALUES ($1, $2, $3, $4, $5, $6)`,
		t.ID, t.Name, t.TokenHash, strings.Join(t.AllowedHosts, "\n"), string(t.MaxContent), ms(t.CreatedAt))
	if err != nil {
		if isUnique(err) {
			return mailpush.Errorf(mailpush.EConflict, "a tenant named %q already exists", t.Name)
		}
		return dbError("create tenant", err)
	}
	return nil
}

const tenantCols = `id, name, token_hash, allowed_hosts, max_content, created_at`

// Tenant returns the tenant with the given ID.
func (s *Store) Tenant(ctx context.Context, id string) (*mailpush.Tenant, error) {
	return s.tenantWhere(ctx, "id = $1", id)
}

// TenantByName returns the tenant with the given name.
func (s *Store) TenantByName(ctx context.Context, name string) (*mailpush.Tenant, error) {
	return s.tenantWhere(ctx, "name = $1", name)
}

func (s *Store) tenantWhere(ctx context.Context, where string, arg any) (*mailpush.Tenant, error) {
	var t mailpush.Tenant
	var hosts, content string
	var created int64
	err := s.pool.QueryRow(ctx, `SELECT `+tenantCols+` FROM tenants WHERE `+where, arg).
		Scan(&t.ID, &t.Name, &t.TokenHash, &hosts, &content, &created)
	if errors.Is(err, pgx.ErrNoRows) {
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

// UpdateTenant stores a tenant's name, token hash and policy.
func (s *Store) UpdateTenant(ctx context.Context, t *mailpush.Tenant) error {
	tag, err := s.pool.Exec(ctx, `UPDATE tenants SET name = $1, token_hash = $2, allowed_hosts = $3, max_content = $4 WHERE id = $5`,
		t.Name, t.TokenHash, strings.Join(t.AllowedHosts, "\n"), string(t.MaxContent), t.ID)
	if err != nil {
		if isUnique(err) {
			return mailpush.Errorf(mailpush.EConflict, "a tenant named %q already exists", t.Name)
		}
		return dbError("update tenant", err)
	}
	if tag.RowsAffected() == 0 {
		return notFound("tenant")
	}
	return nil
}
