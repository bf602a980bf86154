package main

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
)

// TestRegistrationQuotas is finding 8 of issue 9: 3,000 registrations went
// in within 11 s, unbounded. Now registrations.maxPerTenant and
// registrations.maxPerMailbox bound them: beyond, 429 quota_exceeded with a
// message naming the limit, and nothing is stored.
func TestRegistrationQuotas(t *testing.T) {
	w := newWorld(t, "info", "registrations: {maxPerTenant: 4, maxPerMailbox: 2}\n")
	token := w.addTenant(t, "acme")
	// Sealed credentials: devices of one user share one mailbox (a
	// device-subscribed registration has a mailbox of its own).
	reg := func(dev int, addr string) (int, map[string]any) {
		w.exchange.AddUser(addr, addr, "pw of "+addr)
		return w.call(t, "POST", "/api/v1/registrations", token, map[string]any{
			"device":  map[string]any{"platform": "ios", "token": deviceToken(dev)},
			"mailbox": map[string]any{"address": addr, "source": "ews", "ewsUrl": w.exchange.URL(), "sealedCredentials": w.sealCredentials(t, addr, "pw of "+addr)},
		})
	}
	for dev := 1; dev <= 2; dev++ {
		if st, body := reg(dev, "alice@example.com"); st != 201 {
			t.Fatalf("device %d: %d %v", dev, st, body)
		}
	}
	if st, body := reg(3, "alice@example.com"); st != 429 || errCode(body) != "quota_exceeded" || !strings.Contains(fmt.Sprint(body), "maxPerMailbox") {
		t.Errorf("3rd device of one mailbox: %d %v, want 429 quota_exceeded naming maxPerMailbox", st, body)
	}
	for dev := 4; dev <= 5; dev++ {
		if st, body := reg(dev, fmt.Sprintf("user%d@example.com", dev)); st != 201 {
			t.Fatalf("device %d: %d %v", dev, st, body)
		}
	}
	st, body := reg(6, "user6@example.com")
	if st != 429 || errCode(body) != "quota_exceeded" || !strings.Contains(fmt.Sprint(body), "maxPerTenant") {
		t.Errorf("5th registration of the tenant: %d %v, want 429 quota_exceeded naming maxPerTenant", st, body)
	}
	tn, _ := w.main.Store.TenantByName(context.Background(), "acme")
	if n, _ := w.main.Store.CountRegistrations(context.Background(), tn.ID); n != 4 {
		t.Errorf("%d registrations stored, want 4", n)
	}
	// Deleting one makes room again.
	if st, _ := w.call(t, "DELETE", "/api/v1/registrations/"+replacedID(t, w, token), token, nil); st != 204 {
		t.Fatalf("delete = %d", st)
	}
	if st, body := reg(6, "user6@example.com"); st != 201 {
		t.Errorf("after a delete: %d %v, want 201", st, body)
	}
}

// replacedID re-registers device 4 at the quota (a replacement keeps its
// ID and counts nothing) and returns the registration's ID.
func replacedID(t *testing.T, w *world, token string) string {
	t.Helper()
	const addr = "user4@example.com"
	st, body := w.call(t, "POST", "/api/v1/registrations", token, map[string]any{
		"device":  map[string]any{"platform": "ios", "token": deviceToken(4)},
		"mailbox": map[string]any{"address": addr, "source": "ews", "ewsUrl": w.exchange.URL(), "sealedCredentials": w.sealCredentials(t, addr, "pw of "+addr)},
	})
	if st != 201 {
		t.Fatalf("re-register at the quota = %d %v, want 201 (a replacement counts nothing)", st, body)
	}
	return body["id"].(string)
}

// TestDeviceSubscribedIsATenantSetting: a new tenant refuses
// device-subscribed registrations (they prove only that someone can POST to
// a callback URL) until `tenant set --device-subscribed on`.
func TestDeviceSubscribedIsATenantSetting(t *testing.T) {
	w := newWorld(t, "info")
	cli := func(args ...string) string {
		t.Helper()
		var out, errOut bytes.Buffer
		if err := run(context.Background(), append(args, "--config", w.configPath), &out, &errOut, nil); err != nil {
			t.Fatalf("%v: %v (%s)", args, err, errOut.String())
		}
		return out.String()
	}
	lines := strings.Split(strings.TrimSpace(cli("tenant", "add", "fresh", "--allow-host", hostOf(w.exchange.URL()))), "\n")
	token := lines[len(lines)-1]
	reg := func() (int, map[string]any) {
		return w.call(t, "POST", "/api/v1/registrations", token, map[string]any{
			"device":  map[string]any{"platform": "ios", "token": deviceToken(1)},
			"mailbox": map[string]any{"address": "alice@example.com", "source": "ews", "ewsUrl": w.exchange.URL()},
		})
	}
	if st, body := reg(); st != 422 || errCode(body) != "unsupported" || !strings.Contains(fmt.Sprint(body), "--device-subscribed on") {
		t.Errorf("device-subscribed on a new tenant: %d %v, want 422 unsupported naming the setting", st, body)
	}
	cli("tenant", "set", "fresh", "--device-subscribed", "on")
	if st, body := reg(); st != 201 || body["mode"] != "device-subscribed" || body["status"] != "pending" {
		t.Errorf("after --device-subscribed on: %d %v, want 201 pending", st, body)
	}
	cli("tenant", "set", "fresh", "--device-subscribed", "off")
	if st, _ := reg(); st != 422 {
		t.Errorf("after --device-subscribed off: %d, want 422", st)
	}
	var errOut bytes.Buffer
	if err := run(context.Background(), []string{"tenant", "set", "fresh", "--device-subscribed", "maybe", "--config", w.configPath}, &errOut, &errOut, nil); err == nil {
		t.Error("--device-subscribed maybe was accepted")
	}
}
