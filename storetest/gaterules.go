package storetest

import (
	"bytes"
	"context"
	"reflect"
	"testing"

	"github.com/mailpush/mailpush"
)

// testGateRules: a tenant's rule list is stored whole, in order, versioned;
// a write against a stale version changes nothing; tenants are apart; the
// list goes with its tenant.
func testGateRules(t *testing.T, s mailpush.Store, e *env) {
	ctx := context.Background()
	acme, other := mustTenant(t, s, "acme"), mustTenant(t, s, "other")
	_, _, err := s.GateRules(ctx, acme.ID)
	wantCode(t, "rules never stored", err, mailpush.ENotFound)

	hash := e.keys.HashAddress(acme.ID, "alice@example.com")
	first := []mailpush.GateRule{
		{Name: "office", Action: "allow", Networks: []string{"10.0.0.0/8", "192.168.1.0/24"}},
		{Name: "old-ios", Action: "deny", UserHashes: [][]byte{hash}, DeviceTypes: []string{"iphone"}, UserAgent: "iOS/1[0-2]", Commands: []string{"Sync"}, DeviceIDs: []string{"ABC123"}},
	}
	v1, err := s.PutGateRules(ctx, acme.ID, first, 0)
	if err != nil || v1 <= 0 {
		t.Fatalf("PutGateRules(first) = %d, %v", v1, err)
	}
	got, v, err := s.GateRules(ctx, acme.ID)
	if err != nil || v != v1 || !reflect.DeepEqual(got, first) || !bytes.Equal(got[1].UserHashes[0], hash) {
		t.Fatalf("GateRules = %+v, %d, %v; want %+v, %d", got, v, err, first, v1)
	}
	// A second "first write" and a write against an old version both lose.
	_, err = s.PutGateRules(ctx, acme.ID, nil, 0)
	wantCode(t, "second first write", err, mailpush.EConflict)
	second := []mailpush.GateRule{first[1], first[0]}
	v2, err := s.PutGateRules(ctx, acme.ID, second, v1)
	if err != nil || v2 == v1 {
		t.Fatalf("PutGateRules(reordered) = %d, %v", v2, err)
	}
	_, err = s.PutGateRules(ctx, acme.ID, first, v1)
	wantCode(t, "write against a stale version", err, mailpush.EConflict)
	if got, v, _ := s.GateRules(ctx, acme.ID); v != v2 || len(got) != 2 || got[0].Name != "old-ios" {
		t.Errorf("after a lost write: %+v, %d; want the reordered list, version %d", got, v, v2)
	}
	// An empty list is a list (every rule removed), not "never stored".
	v3, err := s.PutGateRules(ctx, acme.ID, []mailpush.GateRule{}, v2)
	if err != nil {
		t.Fatal(err)
	}
	if got, v, err := s.GateRules(ctx, acme.ID); err != nil || v != v3 || len(got) != 0 {
		t.Errorf("after removing every rule: %+v, %d, %v", got, v, err)
	}
	_, _, err = s.GateRules(ctx, other.ID)
	wantCode(t, "another tenant's rules", err, mailpush.ENotFound)
	_, err = s.PutGateRules(ctx, "no-such-tenant", first, 0)
	wantCode(t, "rules of a missing tenant", err, mailpush.ENotFound)

	if err := s.DeleteTenant(ctx, acme.ID); err != nil {
		t.Fatal(err)
	}
	_, _, err = s.GateRules(ctx, acme.ID)
	wantCode(t, "rules of a deleted tenant", err, mailpush.ENotFound)
}
