package gate

import (
	"strings"
	"sync"
	"testing"

	"github.com/mailpush/mailpush"
)

// TestSetRulesTakesEffectAtOnce: rules set at run time decide the very next
// request, in order; invalid rules change nothing; every decision reaches
// OnDecision with the DeviceId hashed (the audit privacy default).
func TestSetRulesTakesEffectAtOnce(t *testing.T) {
	f := newFixture(t, Config{Rules: []Rule{{Name: "lan", Action: "allow", Networks: []string{"127.0.0.0/8"}}}})
	var mu sync.Mutex
	var seen []mailpush.GateDecisionRecord
	f.gate.deps.OnDecision = func(r mailpush.GateDecisionRecord) {
		mu.Lock()
		defer mu.Unlock()
		seen = append(seen, r)
	}
	if code, reason := f.auth(t, uri("dev1")); code != 200 || reason != "allowed by rule lan" {
		t.Fatalf("configured rule: %d %q", code, reason)
	}
	deny := []mailpush.GateRule{
		{Name: "no-iphones", Action: "deny", DeviceTypes: []string{"IPHONE"}},
		{Name: "lan", Action: "allow", Networks: []string{"127.0.0.0/8"}},
	}
	if err := f.gate.SetRules(deny); err != nil {
		t.Fatal(err)
	}
	if code, reason := f.auth(t, uri("dev1")); code != 403 || reason != "denied by rule no-iphones" {
		t.Errorf("after SetRules: %d %q", code, reason)
	}
	err := f.gate.SetRules([]mailpush.GateRule{{Name: "x", Action: "allow", Networks: []string{"10.0.0.0/33"}}, {Name: "y", Action: "maybe", Commands: []string{"Sync"}}})
	if mailpush.ErrorCode(err) != mailpush.EInvalid || !strings.Contains(err.Error(), `rules[0].networks: "10.0.0.0/33"`) || !strings.Contains(err.Error(), `rules[1].action: "maybe"`) {
		t.Errorf("invalid rules: %v", err)
	}
	if code, _ := f.auth(t, uri("dev1")); code != 403 {
		t.Errorf("invalid rules changed the decision: %d", code)
	}
	if err := f.gate.SetRules(nil); err != nil {
		t.Fatal(err)
	}
	if code, reason := f.auth(t, uri("dev1")); code != 403 || reason != "device is not registered: default deny" {
		t.Errorf("no rules: %d %q", code, reason)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != 4 {
		t.Fatalf("OnDecision saw %d decisions, want 4", len(seen))
	}
	want := userID(mailpush.ActiveSyncDeviceHash(hasher{}, "t1", "DEV1"))
	for _, r := range seen {
		if r.Device != want || strings.Contains(r.Device, "DEV1") || r.User == "" || r.DeviceType != "iPhone" || r.At.IsZero() {
			t.Errorf("decision record %+v: want device %s (hashed), a user hash, the type and a time", r, want)
		}
	}
	if !seen[0].Allow || seen[0].Rule != "lan" || seen[1].Allow || seen[1].Rule != "no-iphones" || seen[3].Rule != "" {
		t.Errorf("records: %+v", seen)
	}
}
