package postgres

import (
	"context"
	"encoding/json"
	"errors"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/mailpush/mailpush"
)

// GateRules returns a tenant's stored gate rules and their version.
func (s *Store) GateRules(ctx context.Context, tenantID string) ([]mailpush.GateRule, int64, error) {
	var version int64
	var doc string
	err := s.pool.QueryRow(ctx, `SELECT version, rules FROM gate_rules WHERE tenant_id = $1`, tenantID).Scan(&version, &doc)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, 0, notFound("gate rules")
	}
	if err != nil {
		return nil, 0, dbError("gate rules", err)
	}
	var rules []mailpush.GateRule
	if err := json.Unmarshal([]byte(doc), &rules); err != nil {
		return nil, 0, dbError("gate rules", err)
	}
	return rules, version, nil
}

// PutGateRules replaces a tenant's gate rules if their version is still
// version (0: none stored yet).
func (s *Store) PutGateRules(ctx context.Context, tenantID string, rules []mailpush.GateRule, version int64) (int64, error) {
	doc, err := json.Marshal(rules)
	if err != nil {
		return 0, err
	}
	now := mailpush.UnixMilli(s.clock.Now())
	var tag pgconn.CommandTag
	if version == 0 {
		tag, err = s.pool.Exec(ctx, `INSERT INTO gate_rules (tenant_id, version, rules, updated_at) VALUES ($1, 1, $2, $3) ON CONFLICT (tenant_id) DO NOTHING`, tenantID, string(doc), now)
	} else {
		tag, err = s.pool.Exec(ctx, `UPDATE gate_rules SET version = version + 1, rules = $1, updated_at = $2 WHERE tenant_id = $3 AND version = $4`, string(doc), now, tenantID, version)
	}
	if err != nil {
		if isForeignKey(err) {
			return 0, notFound("tenant")
		}
		return 0, dbError("put gate rules", err)
	}
	if tag.RowsAffected() == 0 {
		return 0, mailpush.Errorf(mailpush.EConflict, "the gate rules were changed meanwhile (by another administrator or node): reload and try again")
	}
	return version + 1, nil
}
