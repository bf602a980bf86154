package sqlite

import (
	"context"
	"database/sql"
	"errors"

	"github.com/mailpush/mailpush"
)

// CreateToken stores a tenant's API token.
func (s *Store) CreateToken(ctx context.Context, tok *mailpush.Token) error {
	if tok.CreatedAt.IsZero() {
		tok.CreatedAt = s.clock.Now().UTC()
	}
	_, err := s.w.ExecContext(ctx, `INSERT INTO tokens (id, tenant_id, scope, secret_hash, created_at) VALUES (?, ?, ?, ?, ?)`,
		tok.ID, tok.TenantID, string(tok.Scope), tok.SecretHash, mailpush.UnixMilli(tok.CreatedAt))
	if err != nil {
		if isUnique(err) {
			return mailpush.Errorf(mailpush.EConflict, "a token with this ID already exists")
		}
		if isForeignKey(err) {
			return notFound("tenant")
		}
		return dbError("create token", err)
	}
	return nil
}

// Token returns the token with the given ID. It reads the database every
// time: a revoked token must stop working at once, on every node.
func (s *Store) Token(ctx context.Context, id string) (*mailpush.Token, error) {
	tok, err := scanToken(readQuerier{s}.QueryRowContext(ctx, qTokenByID, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, notFound("token")
	}
	if err != nil {
		return nil, dbError("get token", err)
	}
	return tok, nil
}

const tokenCols = `id, tenant_id, scope, secret_hash, created_at`

// qTokenAndTenant is TokenAndTenant's query, prepared on the reader pool.
const qTokenAndTenant = `SELECT tokens.id, tokens.tenant_id, tokens.scope, tokens.secret_hash, tokens.created_at,
	tenants.id, tenants.name, tenants.allowed_hosts, tenants.max_content, tenants.device_subscribed, tenants.created_at
	FROM tokens JOIN tenants ON tenants.id = tokens.tenant_id WHERE tokens.id = ?`

var _ mailpush.TokenTenantReader = (*Store)(nil)

// TokenAndTenant returns the token with the given ID and its tenant in one
// read (mailpush.TokenTenantReader): every API request authenticates, and
// it reads the database every time so that a revoke takes effect at once.
func (s *Store) TokenAndTenant(ctx context.Context, id string) (*mailpush.Token, *mailpush.Tenant, error) {
	var tok mailpush.Token
	var t mailpush.Tenant
	var kr mailpush.TokenRow
	var tr mailpush.TenantRow
	// Without the request's done channel: for a query whose context has
	// one, database/sql and the driver each start a goroutine to watch it,
	// which cost more than this one-row read by primary key, that waits
	// for nothing.
	err := readQuerier{s}.QueryRowContext(context.WithoutCancel(ctx), qTokenAndTenant, id).
		Scan(append(kr.Dest(&tok), tr.Dest(&t)...)...)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil, notFound("token")
	}
	if err != nil {
		return nil, nil, dbError("get token", err)
	}
	kr.Finish()
	tr.Finish()
	return &tok, &t, nil
}

// qTokenByID is prepared on the reader pool: every API request reads it.
const qTokenByID = `SELECT ` + tokenCols + ` FROM tokens WHERE id = ?`

func scanToken(row interface{ Scan(...any) error }) (*mailpush.Token, error) {
	var tok mailpush.Token
	var r mailpush.TokenRow
	if err := row.Scan(r.Dest(&tok)...); err != nil {
		return nil, err
	}
	r.Finish()
	return &tok, nil
}

// Tokens lists a tenant's tokens, oldest first.
func (s *Store) Tokens(ctx context.Context, tenantID string) ([]*mailpush.Token, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT `+tokenCols+` FROM tokens WHERE tenant_id = ? ORDER BY created_at, id`, tenantID)
	if err != nil {
		return nil, dbError("list tokens", err)
	}
	defer rows.Close()
	var out []*mailpush.Token
	for rows.Next() {
		tok, err := scanToken(rows)
		if err != nil {
			return nil, dbError("list tokens", err)
		}
		out = append(out, tok)
	}
	if err := rows.Err(); err != nil {
		return nil, dbError("list tokens", err)
	}
	return out, nil
}

// DeleteToken revokes a tenant's token.
func (s *Store) DeleteToken(ctx context.Context, tenantID, id string) error {
	res, err := s.w.ExecContext(ctx, `DELETE FROM tokens WHERE tenant_id = ? AND id = ?`, tenantID, id)
	if err != nil {
		return dbError("delete token", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return notFound("token")
	}
	return nil
}
