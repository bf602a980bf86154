package postgres

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"

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
	_, err := s.pool.Exec(ctx, `INSERT INTO tenants (id, name, allowed_hosts, max_content, device_subscribed, created_at) VALUES ($1, $2, $3, $4, $5, $6)`,
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
	var tr mailpush.TenantRow
	err := s.pool.QueryRow(ctx, `SELECT `+tenantCols+` FROM tenants WHERE `+where, arg).Scan(tr.Dest(&t)...)
	if errors.Is(err, pgx.ErrNoRows) {
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
	tag, err := s.pool.Exec(ctx, `UPDATE tenants SET name = $1, allowed_hosts = $2, max_content = $3, device_subscribed = $4 WHERE id = $5`,
		t.Name, strings.Join(t.AllowedHosts, "\n"), string(t.MaxContent), t.DeviceSubscribed, t.ID)
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

// CreateToken stores a tenant's API token.
func (s *Store) CreateToken(ctx context.Context, tok *mailpush.Token) error {
	if tok.CreatedAt.IsZero() {
		tok.CreatedAt = s.clock.Now().UTC()
	}
	_, err := s.pool.Exec(ctx, `INSERT INTO tokens (`+tokenCols+`) VALUES ($1, $2, $3, $4, $5)`,
		tok.ID, tok.TenantID, string(tok.Scope), tok.SecretHash, mailpush.UnixMilli(tok.CreatedAt))
	switch {
	case isUnique(err):
		return mailpush.Errorf(mailpush.EConflict, "a token with this ID already exists")
	case isForeignKey(err):
		return notFound("tenant")
	case err != nil:
		return dbError("create token", err)
	}
	return nil
}

const tokenCols = `id, tenant_id, scope, secret_hash, created_at`

func scanToken(row pgx.Row) (*mailpush.Token, error) {
	var tok mailpush.Token
	var r mailpush.TokenRow
	if err := row.Scan(r.Dest(&tok)...); err != nil {
		return nil, err
	}
	r.Finish()
	return &tok, nil
}

// Token returns the token with the given ID. It reads the database every
// time: a revoked token must stop working at once, on every node.
func (s *Store) Token(ctx context.Context, id string) (*mailpush.Token, error) {
	tok, err := scanToken(s.pool.QueryRow(ctx, `SELECT `+tokenCols+` FROM tokens WHERE id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, notFound("token")
	}
	if err != nil {
		return nil, dbError("get token", err)
	}
	return tok, nil
}

var _ mailpush.TokenTenantReader = (*Store)(nil)

// TokenAndTenant returns the token with the given ID and its tenant in one
// round trip (mailpush.TokenTenantReader): every API request authenticates,
// and it reads the database every time so that a revoke takes effect at
// once, on every node.
func (s *Store) TokenAndTenant(ctx context.Context, id string) (*mailpush.Token, *mailpush.Tenant, error) {
	var tok mailpush.Token
	var t mailpush.Tenant
	var kr mailpush.TokenRow
	var tr mailpush.TenantRow
	err := s.pool.QueryRow(ctx, `SELECT tokens.id, tokens.tenant_id, tokens.scope, tokens.secret_hash, tokens.created_at,
		tenants.id, tenants.name, tenants.allowed_hosts, tenants.max_content, tenants.device_subscribed, tenants.created_at
		FROM tokens JOIN tenants ON tenants.id = tokens.tenant_id WHERE tokens.id = $1`, id).
		Scan(append(kr.Dest(&tok), tr.Dest(&t)...)...)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil, notFound("token")
	}
	if err != nil {
		return nil, nil, dbError("get token", err)
	}
	kr.Finish()
	tr.Finish()
	return &tok, &t, nil
}

// Tokens lists a tenant's tokens, oldest first.
func (s *Store) Tokens(ctx context.Context, tenantID string) ([]*mailpush.Token, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+tokenCols+` FROM tokens WHERE tenant_id = $1 ORDER BY created_at, id`, tenantID)
	if err != nil {
		return nil, dbError("list tokens", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (*mailpush.Token, error) { return scanToken(r) })
	if err != nil {
		return nil, dbError("list tokens", err)
	}
	return out, nil
}

// DeleteToken revokes a tenant's token.
func (s *Store) DeleteToken(ctx context.Context, tenantID, id string) error {
	tag, err := s.pool.Exec(ctx, `DELETE FROM tokens WHERE tenant_id = $1 AND id = $2`, tenantID, id)
	if err != nil {
		return dbError("revoke token", err)
	}
	if tag.RowsAffected() == 0 {
		return notFound("token")
	}
	return nil
}

// Tenants lists every tenant by name.
func (s *Store) Tenants(ctx context.Context) ([]*mailpush.Tenant, error) {
	rows, err := s.pool.Query(ctx, `SELECT id FROM tenants ORDER BY name`)
	if err != nil {
		return nil, dbError("list tenants", err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
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
	return s.inTx(ctx, "delete tenant", func(tx pgx.Tx) error {
		for _, table := range tenantOwned {
			if _, err := tx.Exec(ctx, `DELETE FROM `+table+` WHERE tenant_id = $1`, id); err != nil {
				return fmt.Errorf("%s: %w", table, err)
			}
		}
		tag, err := tx.Exec(ctx, `DELETE FROM tenants WHERE id = $1`, id)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return notFound("tenant")
		}
		return nil
	})
}
