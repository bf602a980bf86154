package main

import (
	"context"
	"fmt"
	"reflect"

	"github.com/mailpush/mailpush"
	"github.com/mailpush/mailpush/gate"
)

// Where the gate's rules live: the store holds each tenant's ordered rule
// list (a versioned row, gate_rules), so that rules edited in the admin
// console survive restarts and reach every node; the file's gate.rules only
// seed it on the first start with an empty list. Users in rules are stored
// as keyed hashes (gate.StoredRules), never in clear. A change is applied
// to this node's gate at once and broadcast (cluster.go) so the other nodes
// read the list again; an edit made against an old version fails
// (EConflict) rather than undoing another administrator's change.

// seedGateRules stores the file's rules when the store has none for the
// gate's tenant, then applies the stored ones.
func (m *Main) seedGateRules(ctx context.Context) error {
	id, _ := gate.CompileIdentity(m.Config.Gate.Identity) // validated by gate.New
	file, errs := gate.StoredRules(m.Config.Gate.Rules, id, m.Keys, m.gateTenantID)
	if len(errs) > 0 {
		return errs[0]
	}
	stored, _, err := m.Store.GateRules(ctx, m.gateTenantID)
	switch {
	case mailpush.ErrorCode(err) == mailpush.ENotFound:
		if _, err := m.Store.PutGateRules(ctx, m.gateTenantID, file, 0); err != nil && mailpush.ErrorCode(err) != mailpush.EConflict {
			return fmt.Errorf("gate rules: %w", err) // EConflict: another node seeded them first
		}
	case err != nil:
		return fmt.Errorf("gate rules: %w", err)
	case !reflect.DeepEqual(normalRules(stored), normalRules(file)):
		m.Logger.Warn("gate: the rules stored (edited in the admin console) differ from gate.rules in the file; the stored ones apply (the file only seeds an empty store)", "stored", len(stored), "file", len(file))
	}
	return m.reloadGateRules(ctx)
}

// normalRules makes empty and nil lists compare equal.
func normalRules(rs []mailpush.GateRule) []mailpush.GateRule {
	if len(rs) == 0 {
		return nil
	}
	return rs
}

// reloadGateRules applies the stored rules to this node's gate, unless a
// newer version is applied already (edits and broadcasts may race).
func (m *Main) reloadGateRules(ctx context.Context) error {
	m.gateRulesMu.Lock()
	defer m.gateRulesMu.Unlock()
	rules, version, err := m.Store.GateRules(ctx, m.gateTenantID)
	if err != nil {
		return fmt.Errorf("gate rules: %w", err)
	}
	if version < m.gateRulesVersion {
		return nil
	}
	if err := m.Gate.SetRules(rules); err != nil {
		return fmt.Errorf("gate rules stored for tenant %s: %w", m.gateTenantID, err)
	}
	m.gateRulesVersion = version
	return nil
}

// gateRuleEditor is the console's console.GateRuleEditor.
type gateRuleEditor struct{ m *Main }

func (e gateRuleEditor) GateRules(ctx context.Context) ([]mailpush.GateRule, int64, error) {
	return e.m.Store.GateRules(ctx, e.m.gateTenantID)
}

func (e gateRuleEditor) SetGateRules(ctx context.Context, rules []mailpush.GateRule, version int64) (int64, error) {
	if err := gate.CheckRules(rules); err != nil {
		return 0, err
	}
	v, err := e.m.Store.PutGateRules(ctx, e.m.gateTenantID, rules, version)
	if err != nil {
		return 0, err
	}
	if err := e.m.reloadGateRules(ctx); err != nil {
		return v, err
	}
	if f := e.m.gateRulesChanged; f != nil {
		f(ctx)
	}
	return v, nil
}
