package registrar_test

import (
	"context"
	"testing"

	"github.com/mailpush/mailpush"
)

// TestAdmit: what a notification through a callback URL may change, decided
// without HTTP. Every refusal is Unsubscribe and changes nothing.
func TestAdmit(t *testing.T) {
	ctx := context.Background()
	f := setup(t)
	sealedRes, err := f.svc.Register(ctx, f.tenant, mailpush.RegisterRequest{Scope: mailpush.ScopeApp, Device: device(1), Address: "alice@example.com", Source: mailpush.SourceEWS, EWSURL: ewsURL, SealedCredentials: f.sealed(t, "alice", "pw")})
	if err != nil {
		t.Fatal(err)
	}
	sealedMB := sealedRes.Registration.MailboxID
	bindSub := func(mailboxID, sub string) {
		t.Helper()
		if _, err := f.store.UpdateMailbox(ctx, mailboxID, func(m *mailpush.Mailbox) error { m.SubscriptionID = sub; return nil }); err != nil {
			t.Fatal(err)
		}
	}
	bindSub(sealedMB, "sub-alice")
	devRes, err := f.svc.Register(ctx, f.tenant, mailpush.RegisterRequest{Scope: mailpush.ScopeApp, Device: device(2), Address: "dora@example.com", Source: mailpush.SourceEWS, EWSURL: ewsURL})
	if err != nil {
		t.Fatal(err)
	}
	devReg := devRes.Registration
	if devReg.MailboxID == sealedMB {
		t.Fatal("a device-subscribed registration shares a mailbox")
	}
	sealedTok := mailpush.CallbackToken{TenantID: f.tenant.ID, MailboxID: sealedMB}
	devTok := mailpush.CallbackToken{TenantID: f.tenant.ID, MailboxID: devReg.MailboxID, RegistrationID: devReg.ID}

	for _, tc := range []struct {
		name        string
		tok         mailpush.CallbackToken
		sub         string
		unsubscribe bool
		bind        bool
	}{
		{"sealed, its subscription", sealedTok, "sub-alice", false, false},
		{"sealed, another subscription", sealedTok, "sub-other", true, false},
		{"sealed, unknown mailbox", mailpush.CallbackToken{TenantID: f.tenant.ID, MailboxID: "gone"}, "sub-alice", true, false},
		{"sealed, another tenant's token", mailpush.CallbackToken{TenantID: "other-tenant", MailboxID: sealedMB}, "sub-alice", true, false},
		{"device-subscribed, another mailbox's subscription", devTok, "sub-alice", true, false},
		{"device-subscribed, first notification binds", devTok, "sub-dora", false, true},
		{"device-subscribed, registration gone", mailpush.CallbackToken{TenantID: f.tenant.ID, MailboxID: devReg.MailboxID, RegistrationID: "gone"}, "sub-dora", true, false},
		{"device-subscribed, another registration's URL", mailpush.CallbackToken{TenantID: f.tenant.ID, MailboxID: devReg.MailboxID, RegistrationID: sealedRes.Registration.ID}, "sub-dora", true, false},
	} {
		adm, err := f.svc.Admit(ctx, tc.tok, tc.sub)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if adm.Unsubscribe != tc.unsubscribe || adm.Bind != tc.bind {
			t.Errorf("%s: unsubscribe %v bind %v, want %v %v", tc.name, adm.Unsubscribe, adm.Bind, tc.unsubscribe, tc.bind)
		}
		if !adm.Unsubscribe && adm.Mailbox == nil {
			t.Errorf("%s: admitted without its mailbox", tc.name)
		}
	}

	// Bound and active, the device-subscribed registration refuses a newer
	// subscription; pending again (its app must subscribe anew) and alone in
	// its mailbox, it takes it.
	bindSub(devReg.MailboxID, "sub-dora")
	if err := f.svc.Activate(ctx, devReg); err != nil {
		t.Fatal(err)
	}
	if got, _ := f.store.Registration(ctx, f.tenant.ID, devReg.ID); got.Status != mailpush.StatusActive {
		t.Fatalf("Activate: %s", got.Status)
	}
	if adm, _ := f.svc.Admit(ctx, devTok, "sub-newer"); !adm.Unsubscribe {
		t.Error("an active registration's URL rebinds to a newer subscription")
	}
	if err := f.svc.Suspend(ctx, devReg.MailboxID); err != nil {
		t.Fatal(err)
	}
	if got, _ := f.store.Registration(ctx, f.tenant.ID, devReg.ID); got.Status != mailpush.StatusPending {
		t.Fatalf("Suspend: %s", got.Status)
	}
	if adm, _ := f.svc.Admit(ctx, devTok, "sub-newer"); adm.Unsubscribe || !adm.Bind {
		t.Errorf("a pending registration alone in its mailbox: %+v, want it to bind the newer subscription", adm)
	}
	// The sealed registration is untouched by all of it.
	if got, _ := f.store.Registration(ctx, f.tenant.ID, sealedRes.Registration.ID); got.Status != mailpush.StatusActive {
		t.Errorf("the sealed registration is %s", got.Status)
	}
}
