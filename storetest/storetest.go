// Package storetest is the conformance suite that every mailpush.Store
// implementation must pass: the sqlite store runs it against a temporary
// file, the postgres store against a real server. Keeping one suite is what
// lets a site move from the embedded store to a cluster without surprises.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/mailpush/mailpush"
	"github.com/mailpush/mailpush/clocktest"
	"github.com/mailpush/mailpush/seal"
)

// Clock is the manual clock of stores under test (clocktest.Clock).
type Clock struct{ *clocktest.Clock }

// NewClock returns a clock set to a fixed instant.
func NewClock() *Clock { return &Clock{clocktest.New(time.Date(2026, 11, 22, 8, 0, 0, 0, time.UTC))} }

// Add moves the clock forward (clocktest.Clock.Advance).
func (c *Clock) Add(d time.Duration) { c.Advance(d) }

// Keyring returns a fresh service keyring in a temporary directory, to serve
// as the store's FieldCipher.
func Keyring(t testing.TB) *seal.Keyring {
	t.Helper()
	k, err := seal.Open(t.TempDir(), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// Factory opens an empty store using the given cipher and clock. The store is
// closed by the suite.
type Factory func(t *testing.T, cipher mailpush.FieldCipher, clock mailpush.Clock) mailpush.Store

// Run runs the whole conformance suite.
func Run(t *testing.T, open Factory) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s mailpush.Store, env *env)
	}{
		{"Tenants", testTenants},
		{"ListAndDeleteTenants", testListAndDeleteTenants},
		{"AdminReads", testAdminReads},
		{"CallbackURLs", testCallbackURLs},
		{"Tokens", testTokens},
		{"CountRegistrations", testCountRegistrations},
		{"RegisterSharesMailbox", testRegisterSharesMailbox},
		{"RegisterSameTokenReplaces", testRegisterSameTokenReplaces},
		{"TenantIsolation", testTenantIsolation},
		{"UpdateRegistration", testUpdateRegistration},
		{"DeleteRegistration", testDeleteRegistration},
		{"Mailboxes", testMailboxes},
		{"ConcurrentMailboxUpdates", testConcurrentMailboxUpdates},
		{"StaleMailboxes", testStaleMailboxes},
		{"GateDevices", testGateDevices},
		{"GateRules", testGateRules},
		{"ConsoleSessions", testConsoleSessions},
		{"OAuthGrants", testOAuthGrants},
		{"DeleteRegistrationsByActiveSyncDevice", testDeleteRegistrationsByActiveSyncDevice},
		{"OutboxClaimAndLease", testOutboxClaimAndLease},
		{"OutboxSettle", testOutboxSettle},
		{"OutboxCoalesces", testOutboxCoalesces},
		{"OutboxInactiveRegistration", testOutboxInactiveRegistration},
		{"OutboxSettleAfterCoalesce", testOutboxSettleAfterCoalesce},
		{"MailboxByAddress", testMailboxByAddress},
		{"Migration", testMigration},
		{"OutboxClaimKeepsDeviceOrder", testOutboxClaimKeepsDeviceOrder},
		{"OutboxSettleAndClaim", testOutboxSettleAndClaim},
		{"MailboxAudience", testMailboxAudience},
		{"RegisterCheck", testRegisterCheck},
		{"CountRegistrationsFollowsChanges", testCountRegistrationsFollowsChanges},
		{"OutboxEventsClaimAndLease", testOutboxEventsClaimAndLease},
		{"OutboxEventsCoalesce", testOutboxEventsCoalesce},
		{"OutboxEventsMailboxOrder", testOutboxEventsMailboxOrder},
		{"OutboxEventsRecord", testOutboxEventsRecord},
		{"OutboxRecipients", testOutboxRecipients},
		{"OutboxSettleEvents", testOutboxSettleEvents},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := &env{clock: NewClock(), keys: Keyring(t)}
			s := open(t, e.keys, e.clock)
			t.Cleanup(func() { s.Close() })
			if err := s.Ping(context.Background()); err != nil {
				t.Fatalf("Ping: %v", err)
			}
			tc.fn(t, s, e)
		})
	}
}

type env struct {
	clock *Clock
	keys  *seal.Keyring
}

func wantCode(t *testing.T, what string, err error, code string) {
	t.Helper()
	if got := mailpush.ErrorCode(err); got != code {
		t.Errorf("%s: error code = %q (%v), want %q", what, got, err, code)
	}
}

func mustTenant(t *testing.T, s mailpush.Store, name string) *mailpush.Tenant {
	t.Helper()
	tn := &mailpush.Tenant{Name: name, AllowedHosts: []string{"mail.example.com", "*.corp.example"}, MaxContent: mailpush.ContentSubject}
	if err := s.CreateTenant(context.Background(), tn); err != nil {
		t.Fatalf("CreateTenant(%s): %v", name, err)
	}
	return tn
}

func newReg(e *env, tenantID, address, token string) (*mailpush.Registration, *mailpush.Mailbox) {
	reg := &mailpush.Registration{
		Device:    mailpush.Device{Platform: mailpush.PlatformIOS, Token: token, Environment: mailpush.EnvProduction},
		Content:   mailpush.ContentBadge,
		Status:    mailpush.StatusPending,
		ExpiresAt: e.clock.Now().Add(30 * 24 * time.Hour),
	}
	mb := &mailpush.Mailbox{TenantID: tenantID, AddressHash: e.keys.HashAddress(tenantID, address), Source: mailpush.SourceEWS,
		Mode: mailpush.ModeSealed, ServerURL: "https://mail.example.com/EWS/Exchange.asmx", Badge: mailpush.NoBadge, Status: mailpush.StatusPending}
	return reg, mb
}

func testTenants(t *testing.T, s mailpush.Store, e *env) {
	ctx := context.Background()
	tn := mustTenant(t, s, "acme")
	if tn.ID == "" {
		t.Fatal("CreateTenant did not set an ID")
	}
	got, err := s.Tenant(ctx, tn.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Name != "acme" || len(got.AllowedHosts) != 2 || got.AllowedHosts[1] != "*.corp.example" || got.MaxContent != mailpush.ContentSubject {
		t.Errorf("Tenant = %+v", got)
	}
	if got, err := s.TenantByName(ctx, "acme"); err != nil || got.ID != tn.ID {
		t.Errorf("TenantByName = %v, %v", got, err)
	}
	wantCode(t, "duplicate name", s.CreateTenant(ctx, &mailpush.Tenant{Name: "acme", MaxContent: mailpush.ContentBadge}), mailpush.EConflict)
	_, err = s.Tenant(ctx, "nope")
	wantCode(t, "missing tenant", err, mailpush.ENotFound)
	_, err = s.TenantByName(ctx, "nope")
	wantCode(t, "missing tenant by name", err, mailpush.ENotFound)

	if got.DeviceSubscribed {
		t.Errorf("a new tenant accepts device-subscribed registrations: it was created without")
	}
	got.AllowedHosts = nil
	got.DeviceSubscribed = true
	if err := s.UpdateTenant(ctx, got); err != nil {
		t.Fatal(err)
	}
	if again, _ := s.Tenant(ctx, tn.ID); len(again.AllowedHosts) != 0 || !again.DeviceSubscribed {
		t.Errorf("after UpdateTenant: %+v", again)
	}
	wantCode(t, "update missing tenant", s.UpdateTenant(ctx, &mailpush.Tenant{ID: "nope", Name: "x"}), mailpush.ENotFound)
}

// testListAndDeleteTenants: deleting a tenant removes what is its own and
// nothing of another tenant's.
func testListAndDeleteTenants(t *testing.T, s mailpush.Store, e *env) {
	ctx := context.Background()
	globex, acme := mustTenant(t, s, "globex"), mustTenant(t, s, "acme")
	ts, err := s.Tenants(ctx)
	if err != nil || len(ts) != 2 || ts[0].Name != "acme" || ts[1].Name != "globex" || ts[0].MaxContent != mailpush.ContentSubject {
		t.Fatalf("Tenants = %v, %v: want acme, globex by name", ts, err)
	}
	var regs []*mailpush.Registration
	for _, tn := range []*mailpush.Tenant{acme, globex} {
		reg, mb := newReg(e, tn.ID, "alice@example.com", "aa01")
		if _, err := s.Register(ctx, reg, mb, nil); err != nil {
			t.Fatal(err)
		}
		regs = append(regs, reg)
		if err := s.PutGateDevice(ctx, &mailpush.GateDevice{TenantID: tn.ID, DeviceID: "DEV1", State: mailpush.DeviceCompliant}); err != nil {
			t.Fatal(err)
		}
		if err := s.EnqueuePushes(ctx, []*mailpush.Push{pushFor(reg, mailpush.PushBadge, 1)}); err != nil {
			t.Fatal(err)
		}
		if err := s.EnqueueEvents(ctx, []*mailpush.OutboxEvent{eventFor(reg, mailpush.EventNewMail, 1, 1)}); err != nil {
			t.Fatal(err)
		}
	}
	tok, _ := mailpush.NewToken(acme.ID, mailpush.ScopeAdmin)
	if err := s.CreateToken(ctx, tok); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteTenant(ctx, acme.ID); err != nil {
		t.Fatal(err)
	}
	_, err = s.Token(ctx, tok.ID)
	wantCode(t, "deleted tenant's token", err, mailpush.ENotFound)
	_, err = s.Tenant(ctx, acme.ID)
	wantCode(t, "deleted tenant", err, mailpush.ENotFound)
	_, err = s.Registration(ctx, acme.ID, regs[0].ID)
	wantCode(t, "deleted tenant's registration", err, mailpush.ENotFound)
	_, err = s.GateDevice(ctx, acme.ID, "DEV1")
	wantCode(t, "deleted tenant's gate device", err, mailpush.ENotFound)
	if _, err := s.Registration(ctx, globex.ID, regs[1].ID); err != nil {
		t.Errorf("the other tenant's registration: %v", err)
	}
	if _, err := s.GateDevice(ctx, globex.ID, "DEV1"); err != nil {
		t.Errorf("the other tenant's gate device: %v", err)
	}
	if n, err := s.OutboxDepth(ctx); err != nil || n != 2 {
		t.Errorf("outbox depth after deleting acme = %d, %v; want globex's push and event", n, err)
	}
	wantCode(t, "delete missing tenant", s.DeleteTenant(ctx, acme.ID), mailpush.ENotFound)
	if ts, _ := s.Tenants(ctx); len(ts) != 1 || ts[0].Name != "globex" {
		t.Errorf("Tenants after delete = %v", ts)
	}
}

// testAdminReads covers what the admin console reads: the audit log,
// subscription health, gate device lists and dropping dead letters, each
// limited to the tenant asked about.
func testAdminReads(t *testing.T, s mailpush.Store, e *env) {
	ctx := context.Background()
	acme, globex := mustTenant(t, s, "acme"), mustTenant(t, s, "globex")
	for i, tn := range []*mailpush.Tenant{acme, acme, globex} {
		if err := s.AppendAudit(ctx, &mailpush.AuditEntry{Actor: "token:x", TenantID: tn.ID, Action: fmt.Sprintf("a%d", i), Target: "t"}); err != nil {
			t.Fatal(err)
		}
	}
	if es, err := s.AuditEntries(ctx, acme.ID, 10); err != nil || len(es) != 2 || es[0].Action != "a1" || es[1].Action != "a0" || es[0].At.IsZero() {
		t.Errorf("AuditEntries(acme) = %+v, %v: want a1, a0", es, err)
	}
	if es, _ := s.AuditEntries(ctx, "", 2); len(es) != 2 || es[0].Action != "a2" {
		t.Errorf("AuditEntries(all, 2) = %+v", es)
	}
	// Two mailboxes of acme (one silent since long), one of globex.
	for i, addr := range []string{"alice@example.com", "bob@example.com"} {
		reg, mb := newReg(e, acme.ID, addr, fmt.Sprintf("ab%02d", i))
		stored, err := s.Register(ctx, reg, mb, nil)
		if err != nil {
			t.Fatal(err)
		}
		last := e.clock.Now()
		if i == 1 {
			last = last.Add(-time.Hour)
		}
		if _, err := s.UpdateMailbox(ctx, stored.ID, func(m *mailpush.Mailbox) error { m.Status, m.LastEventAt = mailpush.StatusActive, last; return nil }); err != nil {
			t.Fatal(err)
		}
	}
	reg, mb := newReg(e, globex.ID, "carol@example.com", "ac01")
	if _, err := s.Register(ctx, reg, mb, nil); err != nil {
		t.Fatal(err)
	}
	hs, err := s.SubscriptionHealth(ctx, acme.ID, e.clock.Now().Add(-10*time.Minute))
	if err != nil || len(hs) != 1 || hs[0].Source != mailpush.SourceEWS || hs[0].Status != mailpush.StatusActive || hs[0].Mailboxes != 2 || hs[0].Overdue != 1 {
		t.Errorf("SubscriptionHealth(acme) = %+v, %v: want 2 active ews mailboxes, 1 overdue", hs, err)
	}
	if hs, _ := s.SubscriptionHealth(ctx, "", e.clock.Now().Add(-10*time.Minute)); len(hs) != 2 {
		t.Errorf("SubscriptionHealth(all) = %+v: want acme's active and globex's pending", hs)
	}
	// Due: acme's bob silent for an hour, alice now, globex's carol (pending, never heard) since its creation.
	now := e.clock.Now()
	if due, err := s.DueSubscriptions(ctx, acme.ID, mailpush.SourceEWS, []time.Time{now.Add(-30 * time.Minute), now.Add(time.Millisecond), now.Add(time.Hour)}); err != nil || fmt.Sprint(due) != "[1 2 2]" {
		t.Errorf("DueSubscriptions(acme) = %v, %v; want [1 2 2]", due, err)
	}
	if due, err := s.DueSubscriptions(ctx, "", mailpush.SourceEWS, []time.Time{now.Add(time.Hour)}); err != nil || fmt.Sprint(due) != "[3]" {
		t.Errorf("DueSubscriptions(all) = %v, %v; want [3]", due, err)
	}
	if due, err := s.DueSubscriptions(ctx, "", mailpush.SourceGraph, []time.Time{now.Add(time.Hour)}); err != nil || fmt.Sprint(due) != "[0]" {
		t.Errorf("DueSubscriptions(graph) = %v, %v; want [0]", due, err)
	}
	for _, id := range []string{"DEV1", "DEV2"} {
		if err := s.PutGateDevice(ctx, &mailpush.GateDevice{TenantID: acme.ID, DeviceID: id, State: mailpush.DeviceCompliant}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.PutGateDevice(ctx, &mailpush.GateDevice{TenantID: globex.ID, DeviceID: "DEV3", State: mailpush.DeviceBlocked}); err != nil {
		t.Fatal(err)
	}
	if ds, err := s.GateDevices(ctx, acme.ID, 10); err != nil || len(ds) != 2 || ds[0].TenantID != acme.ID || ds[0].State != mailpush.DeviceCompliant {
		t.Errorf("GateDevices(acme) = %v, %v", ds, err)
	}
	if ds, _ := s.GateDevices(ctx, acme.ID, 1); len(ds) != 1 {
		t.Errorf("GateDevices limit 1 = %d devices", len(ds))
	}
	wantCode(t, "drop a missing dead letter", s.DropDeadLetter(ctx, acme.ID, "nope"), mailpush.ENotFound)
}

// testCallbackURLs: a registration's callback URL is kept per tenant,
// replaced by the next, and deleted with the registration.
func testCallbackURLs(t *testing.T, s mailpush.Store, e *env) {
	ctx := context.Background()
	acme, globex := mustTenant(t, s, "acme"), mustTenant(t, s, "globex")
	reg, mb := newReg(e, acme.ID, "alice@example.com", "cb01")
	if _, err := s.Register(ctx, reg, mb, nil); err != nil {
		t.Fatal(err)
	}
	_, err := s.CallbackURL(ctx, acme.ID, reg.ID)
	wantCode(t, "no callback URL yet", err, mailpush.ENotFound)
	for _, url := range []string{"https://push.example.com/ews/notify/k1.first", "https://push.example.com/ews/notify/k1.second"} {
		if err := s.SetCallbackURL(ctx, acme.ID, reg.ID, url); err != nil {
			t.Fatal(err)
		}
		if got, err := s.CallbackURL(ctx, acme.ID, reg.ID); err != nil || got != url {
			t.Errorf("CallbackURL = %q, %v; want %q", got, err, url)
		}
	}
	_, err = s.CallbackURL(ctx, globex.ID, reg.ID)
	wantCode(t, "another tenant's callback URL", err, mailpush.ENotFound)
	if err := s.SetCallbackURL(ctx, globex.ID, reg.ID, "https://evil.example/x"); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.CallbackURL(ctx, acme.ID, reg.ID); got != "https://push.example.com/ews/notify/k1.second" {
		t.Errorf("another tenant changed the callback URL to %q", got)
	}
	if err := s.DeleteRegistration(ctx, acme.ID, reg.ID); err != nil {
		t.Fatal(err)
	}
	_, err = s.CallbackURL(ctx, acme.ID, reg.ID)
	wantCode(t, "callback URL of a deleted registration", err, mailpush.ENotFound)
}

func testRegisterSharesMailbox(t *testing.T, s mailpush.Store, e *env) {
	ctx := context.Background()
	tn := mustTenant(t, s, "acme")
	r1, mb1 := newReg(e, tn.ID, "alice@example.com", "aa01")
	m1, err := s.Register(ctx, r1, mb1, nil)
	if err != nil {
		t.Fatal(err)
	}
	if m1.ID == "" || r1.ID == "" || r1.MailboxID != m1.ID || r1.TenantID != tn.ID {
		t.Fatalf("Register: mailbox %+v registration %+v", m1, r1)
	}
	r2, mb2 := newReg(e, tn.ID, "ALICE@example.com", "bb02")
	mb2.ServerURL = "https://other.example.com/EWS"
	m2, err := s.Register(ctx, r2, mb2, nil)
	if err != nil {
		t.Fatal(err)
	}
	if m2.ID != m1.ID || m2.ServerURL != m1.ServerURL {
		t.Errorf("second device got mailbox %+v, want the existing %s unchanged", m2, m1.ID)
	}
	if r2.ID == r1.ID {
		t.Error("second device reused the first registration ID")
	}
	regs, err := s.ActiveRegistrations(ctx, m1.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(regs) != 2 {
		t.Fatalf("ActiveRegistrations = %d, want 2", len(regs))
	}
	tokens := map[string]bool{regs[0].Device.Token: true, regs[1].Device.Token: true}
	if !tokens["aa01"] || !tokens["bb02"] {
		t.Errorf("tokens = %v", tokens)
	}
	got, err := s.Registration(ctx, tn.ID, r1.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Device.Token != r1.Device.Token || got.Device.Platform != r1.Device.Platform || got.Device.Environment != r1.Device.Environment || got.Content != r1.Content || got.Status != r1.Status || !got.ExpiresAt.Equal(r1.ExpiresAt) {
		t.Errorf("Registration = %+v, want %+v", got, r1)
	}
	// A different source is a different mailbox.
	r3, mb3 := newReg(e, tn.ID, "alice@example.com", "cc03")
	mb3.Source = mailpush.SourceDovecot
	m3, err := s.Register(ctx, r3, mb3, nil)
	if err != nil || m3.ID == m1.ID {
		t.Errorf("dovecot mailbox = %v, %v; want a new mailbox", m3, err)
	}
}

func testRegisterSameTokenReplaces(t *testing.T, s mailpush.Store, e *env) {
	ctx := context.Background()
	tn := mustTenant(t, s, "acme")
	r1, mb := newReg(e, tn.ID, "alice@example.com", "aa01")
	if _, err := s.Register(ctx, r1, mb, nil); err != nil {
		t.Fatal(err)
	}
	e.clock.Add(time.Minute)
	r2, mb2 := newReg(e, tn.ID, "alice@example.com", "aa01")
	r2.Content = mailpush.ContentSubject
	if _, err := s.Register(ctx, r2, mb2, nil); err != nil {
		t.Fatal(err)
	}
	if r2.ID != r1.ID {
		t.Errorf("re-registering the same token gave ID %s, want %s", r2.ID, r1.ID)
	}
	regs, _ := s.ActiveRegistrations(ctx, r1.MailboxID)
	if len(regs) != 1 || regs[0].Content != mailpush.ContentSubject {
		t.Errorf("after re-register: %d registrations %+v", len(regs), regs)
	}
}

func testTenantIsolation(t *testing.T, s mailpush.Store, e *env) {
	ctx := context.Background()
	a := mustTenant(t, s, "a")
	b := mustTenant(t, s, "b")
	r, mb := newReg(e, a.ID, "alice@example.com", "aa01")
	if _, err := s.Register(ctx, r, mb, nil); err != nil {
		t.Fatal(err)
	}
	_, err := s.Registration(ctx, b.ID, r.ID)
	wantCode(t, "other tenant reads", err, mailpush.ENotFound)
	_, err = s.UpdateRegistration(ctx, b.ID, r.ID, func(*mailpush.Registration) error { return nil })
	wantCode(t, "other tenant updates", err, mailpush.ENotFound)
	wantCode(t, "other tenant deletes", s.DeleteRegistration(ctx, b.ID, r.ID), mailpush.ENotFound)
	if _, err := s.Registration(ctx, a.ID, r.ID); err != nil {
		t.Errorf("owner lost the registration: %v", err)
	}
	// The same address under another tenant is another mailbox.
	rb, mbb := newReg(e, b.ID, "alice@example.com", "aa01")
	m, err := s.Register(ctx, rb, mbb, nil)
	if err != nil || m.ID == r.MailboxID {
		t.Errorf("tenant b's mailbox = %v, %v; want its own", m, err)
	}
}

func testUpdateRegistration(t *testing.T, s mailpush.Store, e *env) {
	ctx := context.Background()
	tn := mustTenant(t, s, "acme")
	r, mb := newReg(e, tn.ID, "alice@example.com", "aa01")
	if _, err := s.Register(ctx, r, mb, nil); err != nil {
		t.Fatal(err)
	}
	boom := errors.New("boom")
	if _, err := s.UpdateRegistration(ctx, tn.ID, r.ID, func(r *mailpush.Registration) error {
		r.Device.Token = "changed"
		return boom
	}); !errors.Is(err, boom) {
		t.Errorf("fn error: got %v", err)
	}
	if got, _ := s.Registration(ctx, tn.ID, r.ID); got.Device.Token != "aa01" {
		t.Errorf("a failed update changed the token to %q", got.Device.Token)
	}
	got, err := s.UpdateRegistration(ctx, tn.ID, r.ID, func(r *mailpush.Registration) error {
		r.Device.Token = "ff99"
		r.Status = mailpush.StatusInactive
		r.ID = "hijack"
		return nil
	})
	if err != nil || got.Device.Token != "ff99" || got.ID != r.ID {
		t.Fatalf("UpdateRegistration = %+v, %v", got, err)
	}
	if regs, _ := s.ActiveRegistrations(ctx, r.MailboxID); len(regs) != 0 {
		t.Errorf("inactive registration still listed as active: %+v", regs)
	}
	if again, _ := s.Registration(ctx, tn.ID, r.ID); again.Device.Token != "ff99" || again.Status != mailpush.StatusInactive {
		t.Errorf("after update: %+v", again)
	}
}

func testDeleteRegistration(t *testing.T, s mailpush.Store, e *env) {
	ctx := context.Background()
	tn := mustTenant(t, s, "acme")
	r1, mb := newReg(e, tn.ID, "alice@example.com", "aa01")
	m, err := s.Register(ctx, r1, mb, nil)
	if err != nil {
		t.Fatal(err)
	}
	s.UpdateMailbox(ctx, m.ID, func(m *mailpush.Mailbox) error { m.Status = mailpush.StatusActive; return nil })
	r2, mb2 := newReg(e, tn.ID, "alice@example.com", "bb02")
	s.Register(ctx, r2, mb2, nil)

	if err := s.DeleteRegistration(ctx, tn.ID, r1.ID); err != nil {
		t.Fatal(err)
	}
	_, err = s.Registration(ctx, tn.ID, r1.ID)
	wantCode(t, "deleted registration", err, mailpush.ENotFound)
	wantCode(t, "delete twice", s.DeleteRegistration(ctx, tn.ID, r1.ID), mailpush.ENotFound)
	if got, _ := s.Mailbox(ctx, m.ID); got.Status != mailpush.StatusActive {
		t.Errorf("mailbox with a device left has status %s, want active", got.Status)
	}
	if err := s.DeleteRegistration(ctx, tn.ID, r2.ID); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Mailbox(ctx, m.ID); got.Status != mailpush.StatusInactive {
		t.Errorf("mailbox without devices has status %s, want inactive", got.Status)
	}
}

func testMailboxes(t *testing.T, s mailpush.Store, e *env) {
	ctx := context.Background()
	tn := mustTenant(t, s, "acme")
	r, mb := newReg(e, tn.ID, "alice@example.com", "aa01")
	m, _ := s.Register(ctx, r, mb, nil)
	_, err := s.MailboxBySubscription(ctx, "sub-1")
	wantCode(t, "unbound subscription", err, mailpush.ENotFound)
	_, err = s.MailboxBySubscription(ctx, "")
	wantCode(t, "empty subscription", err, mailpush.ENotFound)
	_, err = s.Mailbox(ctx, "nope")
	wantCode(t, "missing mailbox", err, mailpush.ENotFound)

	at := e.clock.Now().Add(time.Second)
	got, err := s.UpdateMailbox(ctx, m.ID, func(m *mailpush.Mailbox) error {
		m.SubscriptionID, m.Watermark, m.Badge, m.Seq, m.Status, m.LastEventAt = "sub-1", "wm-1", 3, 7, mailpush.StatusActive, at
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	again, err := s.MailboxBySubscription(ctx, "sub-1")
	if err != nil {
		t.Fatal(err)
	}
	if again.ID != m.ID || again.Watermark != "wm-1" || again.Badge != 3 || again.Seq != 7 || again.Status != mailpush.StatusActive || !again.LastEventAt.Equal(at) || string(again.AddressHash) != string(mb.AddressHash) {
		t.Errorf("MailboxBySubscription = %+v (update returned %+v)", again, got)
	}
	r2, mb2 := newReg(e, tn.ID, "bob@example.com", "bb02")
	m2, _ := s.Register(ctx, r2, mb2, nil)
	_, err = s.UpdateMailbox(ctx, m2.ID, func(m *mailpush.Mailbox) error { m.SubscriptionID = "sub-1"; return nil })
	wantCode(t, "subscription bound twice", err, mailpush.EConflict)
	if got, _ := s.Mailbox(ctx, m2.ID); got.SubscriptionID != "" {
		t.Errorf("refused update still bound %q", got.SubscriptionID)
	}
}

func testConcurrentMailboxUpdates(t *testing.T, s mailpush.Store, e *env) {
	ctx := context.Background()
	tn := mustTenant(t, s, "acme")
	r, mb := newReg(e, tn.ID, "alice@example.com", "aa01")
	m, _ := s.Register(ctx, r, mb, nil)
	const n = 50
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := s.UpdateMailbox(ctx, m.ID, func(m *mailpush.Mailbox) error { m.Seq++; return nil })
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	got, _ := s.Mailbox(ctx, m.ID)
	if got.Seq != n {
		t.Errorf("after %d concurrent increments Seq = %d: updates were lost", n, got.Seq)
	}
}

func testMailboxByAddress(t *testing.T, s mailpush.Store, e *env) {
	ctx := context.Background()
	acme, other := mustTenant(t, s, "acme"), mustTenant(t, s, "other")
	r, mb := newReg(e, acme.ID, "alice@example.com", "aa01")
	mb.Source, mb.Mode, mb.ServerURL = mailpush.SourceDovecot, mailpush.ModeService, ""
	m, err := s.Register(ctx, r, mb, nil)
	if err != nil {
		t.Fatal(err)
	}
	r2, ews := newReg(e, acme.ID, "alice@example.com", "aa02")
	if _, err := s.Register(ctx, r2, ews, nil); err != nil {
		t.Fatal(err)
	}
	got, err := s.MailboxByAddress(ctx, acme.ID, e.keys.HashAddress(acme.ID, "Alice@Example.com "), mailpush.SourceDovecot)
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != m.ID || got.Source != mailpush.SourceDovecot || got.Mode != mailpush.ModeService {
		t.Errorf("MailboxByAddress = %+v, want the dovecot mailbox %s", got, m.ID)
	}
	for _, tc := range []struct {
		name   string
		tenant string
		hash   []byte
		source mailpush.Source
	}{
		{"other address", acme.ID, e.keys.HashAddress(acme.ID, "bob@example.com"), mailpush.SourceDovecot},
		{"other tenant", other.ID, e.keys.HashAddress(acme.ID, "alice@example.com"), mailpush.SourceDovecot},
		{"other tenant's hash", other.ID, e.keys.HashAddress(other.ID, "alice@example.com"), mailpush.SourceDovecot},
		{"other source", acme.ID, e.keys.HashAddress(acme.ID, "alice@example.com"), mailpush.SourceGraph},
		{"empty hash", acme.ID, nil, mailpush.SourceDovecot},
	} {
		_, err := s.MailboxByAddress(ctx, tc.tenant, tc.hash, tc.source)
		wantCode(t, tc.name, err, mailpush.ENotFound)
	}
}

// String keeps fmt from printing stores in failures.
func (c *Clock) String() string { return fmt.Sprintf("Clock(%v)", c.Now()) }

func testStaleMailboxes(t *testing.T, s mailpush.Store, e *env) {
	ctx := context.Background()
	tn := mustTenant(t, s, "acme")
	t0 := e.clock.Now()
	// Five mailboxes, last heard of at t0+1s … t0+5s.
	var ids []string
	for i := range 5 {
		r, mb := newReg(e, tn.ID, fmt.Sprintf("user%d@example.com", i), fmt.Sprintf("aa%02d", i))
		m, err := s.Register(ctx, r, mb, nil)
		if err != nil {
			t.Fatal(err)
		}
		at := t0.Add(time.Duration(i+1) * time.Second)
		if _, err := s.UpdateMailbox(ctx, m.ID, func(m *mailpush.Mailbox) error {
			m.LastEventAt, m.Status = at, mailpush.StatusActive
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, m.ID)
	}
	// Inactive ones and other sources are never stale.
	s.UpdateMailbox(ctx, ids[0], func(m *mailpush.Mailbox) error { m.Status = mailpush.StatusInactive; return nil })
	r, mb := newReg(e, tn.ID, "graph@example.com", "bb01")
	mb.Source = mailpush.SourceGraph
	if _, err := s.Register(ctx, r, mb, nil); err != nil {
		t.Fatal(err)
	}
	s.UpdateMailbox(ctx, ids[2], func(m *mailpush.Mailbox) error { m.Status = mailpush.StatusPending; return nil })

	got, err := s.StaleMailboxes(ctx, mailpush.SourceEWS, t0.Add(4*time.Second), 10)
	if err != nil {
		t.Fatal(err)
	}
	var gotIDs []string
	for _, m := range got {
		gotIDs = append(gotIDs, m.ID)
	}
	if want := []string{ids[1], ids[2]}; fmt.Sprint(gotIDs) != fmt.Sprint(want) {
		t.Errorf("StaleMailboxes(before t0+4s) = %v, want %v (oldest first, pending included, inactive left out)", gotIDs, want)
	}
	if len(got) > 0 && (got[0].Status != mailpush.StatusActive || !got[0].LastEventAt.Equal(t0.Add(2*time.Second))) {
		t.Errorf("stale mailbox fields = %+v", got[0])
	}
	got, _ = s.StaleMailboxes(ctx, mailpush.SourceEWS, t0.Add(time.Hour), 2)
	if len(got) != 2 || got[0].ID != ids[1] {
		t.Errorf("limit 2: got %d mailboxes", len(got))
	}
	got, _ = s.StaleMailboxes(ctx, mailpush.SourceGraph, t0.Add(time.Hour), 10)
	if len(got) != 1 || got[0].Source != mailpush.SourceGraph {
		t.Errorf("source graph: got %d mailboxes", len(got))
	}
	_, err = s.StaleMailboxes(ctx, mailpush.SourceEWS, t0, 0)
	wantCode(t, "limit 0", err, mailpush.EInvalid)
}
