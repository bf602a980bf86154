package registrar_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mailpush/mailpush"
	"github.com/mailpush/mailpush/registrar"
	"github.com/mailpush/mailpush/seal"
	"github.com/mailpush/mailpush/sqlite"
	"github.com/mailpush/mailpush/storetest"
)

// watcher records what the registrar asks of a source and, as sources do,
// records the mailbox's mode and status.
type watcher struct {
	store mailpush.Store
	mu    sync.Mutex
	calls []watchCall
	err   error
}

type watchCall struct {
	mode      mailpush.Mode
	serverURL string
	address   string
	creds     mailpush.Credentials
}

func (w *watcher) Watch(ctx context.Context, t *mailpush.Tenant, mb *mailpush.Mailbox, reg *mailpush.Registration, creds mailpush.Credentials) (mailpush.WatchResult, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.calls = append(w.calls, watchCall{mb.Mode, mb.ServerURL, mb.Address, creds})
	if w.err != nil {
		return mailpush.WatchResult{}, w.err
	}
	status := mailpush.StatusActive
	if mb.Mode == mailpush.ModeDeviceSubscribed {
		status = mailpush.StatusPending
	}
	if _, err := w.store.UpdateMailbox(ctx, mb.ID, func(m *mailpush.Mailbox) error {
		m.Mode, m.Status, m.ServerURL = mb.Mode, status, mb.ServerURL
		return nil
	}); err != nil {
		return mailpush.WatchResult{}, err
	}
	if mb.Mode == mailpush.ModeDeviceSubscribed {
		return mailpush.WatchResult{CallbackURL: "https://push.example.com/ews/notify/x", Status: mailpush.StatusPending}, nil
	}
	return mailpush.WatchResult{Status: mailpush.StatusActive}, nil
}

func (w *watcher) last() watchCall {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.calls) == 0 {
		return watchCall{}
	}
	return w.calls[len(w.calls)-1]
}

// verifier accepts one password per address.
type verifier struct{ passwords map[string]string }

func (v verifier) VerifyCredentials(ctx context.Context, t *mailpush.Tenant, address string, c mailpush.Credentials) error {
	if c.Username != address {
		return mailpush.Errorf(mailpush.EMailboxDenied, "not this mailbox")
	}
	if v.passwords[address] != c.Password {
		return mailpush.Errorf(mailpush.ECredentials, "refused")
	}
	return nil
}

type fixture struct {
	svc     *registrar.Service
	store   mailpush.Store
	keys    *seal.Keyring
	ews     *watcher
	dovecot *watcher
	tenant  *mailpush.Tenant
}

func setup(t *testing.T) *fixture {
	t.Helper()
	ctx := context.Background()
	keys := storetest.Keyring(t)
	store, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "r.db"), keys, storetest.NewClock())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	f := &fixture{store: store, keys: keys, ews: &watcher{store: store}, dovecot: &watcher{store: store}}
	f.tenant = &mailpush.Tenant{Name: "acme", AllowedHosts: []string{"mail.example.com", "mail.example.com:8443"}, MaxContent: mailpush.ContentSubjectSender, DeviceSubscribed: true}
	if err := store.CreateTenant(ctx, f.tenant); err != nil {
		t.Fatal(err)
	}
	f.svc = &registrar.Service{
		Store: store, Keys: keys, Logger: slog.New(slog.DiscardHandler), Clock: storetest.NewClock(),
		Watchers:        map[mailpush.Source]mailpush.Watcher{mailpush.SourceEWS: f.ews, mailpush.SourceDovecot: f.dovecot},
		Verifiers:       map[mailpush.Source]mailpush.CredentialVerifier{mailpush.SourceDovecot: verifier{map[string]string{"alice@example.com": "alice-pw"}}},
		RegistrationTTL: 24 * time.Hour,
		Quotas:          func(*mailpush.Tenant) registrar.Quotas { return registrar.Quotas{PerTenant: 5, PerMailbox: 3} },
	}
	return f
}

func (f *fixture) sealed(t *testing.T, user, pass string) string {
	t.Helper()
	kid, pub := f.keys.PublicKey()
	s, err := seal.SealCredentials(kid, pub, mailpush.Credentials{Username: user, Password: pass})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func device(n int) mailpush.Device {
	return mailpush.Device{Platform: mailpush.PlatformIOS, Token: fmt.Sprintf("%064x", n)}
}

const ewsURL = "https://mail.example.com/EWS/Exchange.asmx"

func (f *fixture) registrations(t *testing.T, address string, src mailpush.Source) int {
	t.Helper()
	mb, err := f.store.MailboxByAddress(context.Background(), f.tenant.ID, f.keys.HashAddress(f.tenant.ID, address), src)
	if mailpush.ErrorCode(err) == mailpush.ENotFound {
		return 0
	}
	if err != nil {
		t.Fatal(err)
	}
	regs, err := f.store.ActiveRegistrations(context.Background(), mb.ID)
	if err != nil {
		t.Fatal(err)
	}
	return len(regs)
}

// TestWhoMayRegister: each mode's proof, and what each scope may do
// without it. A refusal stores nothing and asks no source.
func TestWhoMayRegister(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name        string
		scope       mailpush.Scope
		source      mailpush.Source
		creds       [2]string // username, password; empty: none
		serviceEWS  bool      // the tenant has an EWS service account
		deviceSubOn bool
		wantCode    string
		wantMode    mailpush.Mode
		wantStatus  mailpush.Status
	}{
		{"sealed credentials", mailpush.ScopeApp, mailpush.SourceEWS, [2]string{"alice", "pw"}, false, false, "", mailpush.ModeSealed, mailpush.StatusActive},
		{"device-subscribed, tenant allows it", mailpush.ScopeApp, mailpush.SourceEWS, [2]string{}, false, true, "", mailpush.ModeDeviceSubscribed, mailpush.StatusPending},
		{"device-subscribed, tenant does not", mailpush.ScopeApp, mailpush.SourceEWS, [2]string{}, false, false, mailpush.EUnsupported, "", ""},
		{"EWS service account, app token", mailpush.ScopeApp, mailpush.SourceEWS, [2]string{}, true, true, mailpush.EScope, "", ""},
		{"EWS service account, backend token", mailpush.ScopeBackend, mailpush.SourceEWS, [2]string{}, true, false, "", mailpush.ModeService, mailpush.StatusActive},
		{"dovecot, app token alone", mailpush.ScopeApp, mailpush.SourceDovecot, [2]string{}, false, true, mailpush.EScope, "", ""},
		{"dovecot, backend token", mailpush.ScopeBackend, mailpush.SourceDovecot, [2]string{}, false, false, "", mailpush.ModeService, mailpush.StatusActive},
		{"dovecot, the user's own password", mailpush.ScopeApp, mailpush.SourceDovecot, [2]string{"alice@example.com", "alice-pw"}, false, false, "", mailpush.ModeService, mailpush.StatusActive},
		{"dovecot, another user's password", mailpush.ScopeApp, mailpush.SourceDovecot, [2]string{"mallory@example.com", "m-pw"}, false, false, mailpush.EMailboxDenied, "", ""},
		{"dovecot, a wrong password", mailpush.ScopeBackend, mailpush.SourceDovecot, [2]string{"alice@example.com", "guess"}, false, false, mailpush.ECredentials, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := setup(t)
			f.tenant.DeviceSubscribed = tc.deviceSubOn
			f.svc.ServiceMode = func(*mailpush.Tenant, mailpush.Source) bool { return tc.serviceEWS }
			req := mailpush.RegisterRequest{Scope: tc.scope, Device: device(1), Address: "alice@example.com", Source: tc.source}
			if tc.source == mailpush.SourceEWS {
				req.EWSURL = ewsURL
			}
			if tc.creds[0] != "" {
				req.SealedCredentials = f.sealed(t, tc.creds[0], tc.creds[1])
			}
			res, err := f.svc.Register(ctx, f.tenant, req)
			if got := mailpush.ErrorCode(err); got != tc.wantCode {
				t.Fatalf("code = %q (%v), want %q", got, err, tc.wantCode)
			}
			if tc.wantCode != "" {
				if n := f.registrations(t, req.Address, tc.source); n != 0 {
					t.Errorf("a refused registration stored %d registrations", n)
				}
				if len(f.ews.calls)+len(f.dovecot.calls) != 0 {
					t.Errorf("a refused registration reached the source")
				}
				return
			}
			if res.Mode != tc.wantMode || res.Status != tc.wantStatus {
				t.Errorf("mode %s status %s, want %s %s", res.Mode, res.Status, tc.wantMode, tc.wantStatus)
			}
			if tc.source == mailpush.SourceDovecot && !f.dovecot.last().creds.Empty() {
				t.Error("the user's password reached the source: it is a proof only")
			}
		})
	}
}

// TestCredentialsGoOnlyToTheRequestsURL (the rule behind finding 2): a
// device-subscribed registration stores another port's URL for the
// address; the victim's sealed registration must be watched at its own
// ewsUrl, never the stored one.
func TestCredentialsGoOnlyToTheRequestsURL(t *testing.T) {
	ctx := context.Background()
	f := setup(t)
	attacker := "https://mail.example.com:8443/EWS/Exchange.asmx"
	if _, err := f.svc.Register(ctx, f.tenant, mailpush.RegisterRequest{Scope: mailpush.ScopeApp, Device: device(1), Address: "victim@example.com", Source: mailpush.SourceEWS, EWSURL: attacker}); err != nil {
		t.Fatal(err)
	}
	res, err := f.svc.Register(ctx, f.tenant, mailpush.RegisterRequest{Scope: mailpush.ScopeApp, Device: device(2), Address: "victim@example.com", Source: mailpush.SourceEWS, EWSURL: ewsURL, SealedCredentials: f.sealed(t, "victim", "pw")})
	if err != nil {
		t.Fatal(err)
	}
	if c := f.ews.last(); c.serverURL != ewsURL || c.creds.Empty() || c.address != "victim@example.com" || res.Mode != mailpush.ModeSealed {
		t.Errorf("sealed watch went to %q for %q (creds %v), want %q for the victim", c.serverURL, c.address, !c.creds.Empty(), ewsURL)
	}
	// A check-in with credentials of the attacker's registration (its
	// mailbox is sealed now) must name the address, and a device-subscribed
	// mailbox's stored URL never gets credentials.
	other, err := f.svc.Register(ctx, f.tenant, mailpush.RegisterRequest{Scope: mailpush.ScopeApp, Device: device(3), Address: "bob@example.com", Source: mailpush.SourceEWS, EWSURL: attacker})
	if err != nil {
		t.Fatal(err)
	}
	calls := len(f.ews.calls)
	_, err = f.svc.CheckIn(ctx, f.tenant, other.Registration.ID, mailpush.CheckInRequest{Address: "bob@example.com", SealedCredentials: f.sealed(t, "bob", "pw")})
	if mailpush.ErrorCode(err) != mailpush.EConflict || len(f.ews.calls) != calls {
		t.Errorf("credentials at check-in for a device-subscribed mailbox: %v, %d watch calls; want conflict and none", err, len(f.ews.calls)-calls)
	}
	_, err = f.svc.CheckIn(ctx, f.tenant, res.Registration.ID, mailpush.CheckInRequest{SealedCredentials: f.sealed(t, "victim", "pw")})
	if mailpush.ErrorCode(err) != mailpush.EInvalid {
		t.Errorf("credentials at check-in without the address: %v, want invalid_request", err)
	}
}

// TestDeviceSubscribedCannotJoinSealed: a registration that proves nothing
// can neither join nor replace a subscription made with credentials.
func TestDeviceSubscribedCannotJoinSealed(t *testing.T) {
	ctx := context.Background()
	f := setup(t)
	if _, err := f.svc.Register(ctx, f.tenant, mailpush.RegisterRequest{Scope: mailpush.ScopeApp, Device: device(1), Address: "alice@example.com", Source: mailpush.SourceEWS, EWSURL: ewsURL, SealedCredentials: f.sealed(t, "alice", "pw")}); err != nil {
		t.Fatal(err)
	}
	calls := len(f.ews.calls)
	_, err := f.svc.Register(ctx, f.tenant, mailpush.RegisterRequest{Scope: mailpush.ScopeApp, Device: device(2), Address: "alice@example.com", Source: mailpush.SourceEWS, EWSURL: ewsURL})
	if mailpush.ErrorCode(err) != mailpush.EConflict || len(f.ews.calls) != calls || f.registrations(t, "alice@example.com", mailpush.SourceEWS) != 1 {
		t.Errorf("device-subscribed join of a sealed mailbox: %v; want conflict, no watch, one registration", err)
	}
}

// TestRefusedWatchChangesNothing: when the mail server refuses, a new
// registration is taken back and a device's previous one restored.
func TestRefusedWatchChangesNothing(t *testing.T) {
	ctx := context.Background()
	f := setup(t)
	first, err := f.svc.Register(ctx, f.tenant, mailpush.RegisterRequest{Scope: mailpush.ScopeApp, Device: device(1), Address: "alice@example.com", Source: mailpush.SourceEWS, EWSURL: ewsURL, SealedCredentials: f.sealed(t, "alice", "pw")})
	if err != nil {
		t.Fatal(err)
	}
	f.ews.err = mailpush.Errorf(mailpush.EMailboxDenied, "Exchange says no")
	for _, dev := range []int{1, 2} { // the same device again, then a new one
		_, err := f.svc.Register(ctx, f.tenant, mailpush.RegisterRequest{Scope: mailpush.ScopeApp, Device: device(dev), Address: "alice@example.com", Source: mailpush.SourceEWS, EWSURL: ewsURL, SealedCredentials: f.sealed(t, "bob", "pw")})
		if mailpush.ErrorCode(err) != mailpush.EMailboxDenied {
			t.Fatalf("device %d: %v", dev, err)
		}
	}
	got, err := f.store.Registration(ctx, f.tenant.ID, first.Registration.ID)
	if err != nil || got.Status != mailpush.StatusActive {
		t.Errorf("the first registration after refusals: %+v, %v; want it active", got, err)
	}
	if n := f.registrations(t, "alice@example.com", mailpush.SourceEWS); n != 1 {
		t.Errorf("%d registrations, want 1", n)
	}
}

// TestQuotas: per mailbox and per tenant, 429's code naming the limit; a
// device re-registering replaces itself and counts nothing.
func TestQuotas(t *testing.T) {
	ctx := context.Background()
	f := setup(t) // 3 per mailbox, 5 per tenant
	reg := func(dev int, addr string) error {
		_, err := f.svc.Register(ctx, f.tenant, mailpush.RegisterRequest{Scope: mailpush.ScopeApp, Device: device(dev), Address: addr, Source: mailpush.SourceEWS, EWSURL: ewsURL, SealedCredentials: f.sealed(t, "u", "pw")})
		return err
	}
	for dev := 1; dev <= 3; dev++ {
		if err := reg(dev, "alice@example.com"); err != nil {
			t.Fatal(err)
		}
	}
	var e *mailpush.Error
	if err := reg(4, "alice@example.com"); !errors.As(err, &e) || e.Code != mailpush.EQuota || !strings.Contains(e.Message, "maxPerMailbox") {
		t.Errorf("4th device of a mailbox: %v, want quota_exceeded naming maxPerMailbox", err)
	}
	if err := reg(3, "alice@example.com"); err != nil {
		t.Errorf("a device re-registering at the limit: %v", err)
	}
	for dev := 5; dev <= 6; dev++ {
		if err := reg(dev, fmt.Sprintf("u%d@example.com", dev)); err != nil {
			t.Fatal(err)
		}
	}
	if err := reg(7, "u7@example.com"); !errors.As(err, &e) || e.Code != mailpush.EQuota || !strings.Contains(e.Message, "maxPerTenant") {
		t.Errorf("6th registration of the tenant: %v, want quota_exceeded naming maxPerTenant", err)
	}
	if n := f.registrations(t, "u7@example.com", mailpush.SourceEWS); n != 0 {
		t.Errorf("a registration over quota was stored")
	}
}

// TestQuotasHoldUnderConcurrentRegistrations plays a client that fires many
// registrations at once to slip past a quota between its check and its
// write: the check runs inside the write (the group-committed transaction),
// so exactly the quota's worth are stored, per mailbox and per tenant.
func TestQuotasHoldUnderConcurrentRegistrations(t *testing.T) {
	ctx := context.Background()
	f := setup(t) // 3 per mailbox, 5 per tenant
	sealed := f.sealed(t, "u", "pw")
	run := func(n int, addr func(i int) string, dev func(i int) int) (ok, quota int) {
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				_, errs[i] = f.svc.Register(ctx, f.tenant, mailpush.RegisterRequest{Scope: mailpush.ScopeApp, Device: device(dev(i)), Address: addr(i), Source: mailpush.SourceEWS, EWSURL: ewsURL, SealedCredentials: sealed})
			})
		}
		wg.Wait()
		for i, err := range errs {
			switch mailpush.ErrorCode(err) {
			case "":
				ok++
			case mailpush.EQuota:
				quota++
			default:
				t.Errorf("registration %d: %v", i, err)
			}
		}
		return ok, quota
	}
	if ok, quota := run(12, func(int) string { return "alice@example.com" }, func(i int) int { return 100 + i }); ok != 3 || quota != 9 {
		t.Errorf("12 devices at once on one mailbox: %d stored, %d refused for quota; want 3 and 9", ok, quota)
	}
	if n := f.registrations(t, "alice@example.com", mailpush.SourceEWS); n != 3 {
		t.Errorf("the mailbox has %d registrations; want 3", n)
	}
	if ok, quota := run(12, func(i int) string { return fmt.Sprintf("u%d@example.com", i) }, func(i int) int { return 200 + i }); ok != 2 || quota != 10 {
		t.Errorf("12 mailboxes at once with 2 left in the tenant: %d stored, %d refused for quota; want 2 and 10", ok, quota)
	}
	if n, err := f.store.CountRegistrations(ctx, f.tenant.ID); err != nil || n != 5 {
		t.Errorf("the tenant has %d registrations (%v); want its quota, 5", n, err)
	}
}

// locator records what autodiscover was asked with.
type locator struct{ creds []mailpush.Credentials }

func (l *locator) LocateEWS(_ context.Context, _ *mailpush.Tenant, _ string, c mailpush.Credentials) (string, error) {
	l.creds = append(l.creds, c)
	return ewsURL, nil
}

// TestClientIdentityRules: a client identity (CBA) is Exchange's way of
// signing in: refused for another source before anything is stored or any
// source is asked, and never handed to autodiscover (which would send it
// nowhere useful: it asks without credentials).
func TestClientIdentityRules(t *testing.T) {
	ctx := context.Background()
	f := setup(t)
	kid, pub := f.keys.PublicKey()
	identity, err := seal.SealCredentials(kid, pub, mailpush.Credentials{CertificatePEM: "-----BEGIN CERTIFICATE-----\n…", PrivateKeyPEM: "-----BEGIN PRIVATE KEY-----\n…"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = f.svc.Register(ctx, f.tenant, mailpush.RegisterRequest{Scope: mailpush.ScopeApp, Device: device(1), Address: "alice@example.com", Source: mailpush.SourceDovecot, SealedCredentials: identity})
	if mailpush.ErrorCode(err) != mailpush.EInvalid || !strings.Contains(mailpush.ErrorMessage(err), "source ews only") {
		t.Errorf("identity for dovecot: %v, want invalid_request", err)
	}
	if len(f.dovecot.calls) != 0 || f.registrations(t, "alice@example.com", mailpush.SourceDovecot) != 0 {
		t.Error("a refused identity reached the source or was stored")
	}
	loc := &locator{}
	f.svc.Autodiscover = loc
	res, err := f.svc.Register(ctx, f.tenant, mailpush.RegisterRequest{Scope: mailpush.ScopeApp, Device: device(2), Address: "alice@example.com", Source: mailpush.SourceEWS, SealedCredentials: identity})
	if err != nil || res.Mode != mailpush.ModeSealed {
		t.Fatalf("identity for ews without ewsUrl: %v %+v", err, res)
	}
	if len(loc.creds) != 1 || !loc.creds[0].Empty() {
		t.Errorf("autodiscover was asked with %d credentials, want one empty", len(loc.creds))
	}
	if c := f.ews.last(); !c.creds.HasIdentity() || c.serverURL != ewsURL {
		t.Errorf("the source got no identity, or another URL: %q", c.serverURL)
	}
}
