package storetest

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/mailpush/mailpush"
)

func testGateDevices(t *testing.T, s mailpush.Store, e *env) {
	ctx := context.Background()
	acme, other := mustTenant(t, s, "acme"), mustTenant(t, s, "other")
	userHash := e.keys.HashAddress(acme.ID, "alice@example.com")
	d := &mailpush.GateDevice{TenantID: acme.ID, DeviceID: "APPLF2LLD0ABCDEF", UserHash: userHash, DeviceType: "iPhone", State: mailpush.DeviceCompliant}
	if err := s.PutGateDevice(ctx, d); err != nil {
		t.Fatal(err)
	}
	created := e.clock.Now()
	if !d.CreatedAt.Equal(created) || !d.UpdatedAt.Equal(created) || !d.LastSeen.IsZero() {
		t.Errorf("PutGateDevice times: created %v updated %v lastSeen %v, want %v, %v, zero", d.CreatedAt, d.UpdatedAt, d.LastSeen, created, created)
	}
	got, err := s.GateDevice(ctx, acme.ID, "APPLF2LLD0ABCDEF")
	if err != nil {
		t.Fatal(err)
	}
	if got.DeviceID != d.DeviceID || !bytes.Equal(got.UserHash, userHash) || got.DeviceType != "iPhone" || got.State != mailpush.DeviceCompliant || !got.CreatedAt.Equal(created) {
		t.Errorf("GateDevice = %+v, want %+v", got, d)
	}
	_, err = s.GateDevice(ctx, other.ID, "APPLF2LLD0ABCDEF")
	wantCode(t, "another tenant's device", err, mailpush.ENotFound)
	_, err = s.GateDevice(ctx, acme.ID, "NOSUCHDEVICE")
	wantCode(t, "missing device", err, mailpush.ENotFound)

	// Last seen: recorded in batches, never backwards, missing devices ignored.
	e.clock.Add(time.Minute)
	seen := e.clock.Now()
	if err := s.TouchGateDevices(ctx, acme.ID, map[string]time.Time{"APPLF2LLD0ABCDEF": seen, "NOSUCHDEVICE": seen}); err != nil {
		t.Fatal(err)
	}
	if err := s.TouchGateDevices(ctx, acme.ID, map[string]time.Time{"APPLF2LLD0ABCDEF": created}); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.GateDevice(ctx, acme.ID, "APPLF2LLD0ABCDEF"); got == nil || !got.LastSeen.Equal(seen) {
		t.Errorf("LastSeen = %v, want %v", got, seen)
	}
	if _, err := s.GateDevice(ctx, acme.ID, "NOSUCHDEVICE"); mailpush.ErrorCode(err) != mailpush.ENotFound {
		t.Errorf("touching a missing device created it: %v", err)
	}

	// Replace: state and fields change, creation and last seen stay.
	e.clock.Add(time.Minute)
	d2 := &mailpush.GateDevice{TenantID: acme.ID, DeviceID: "APPLF2LLD0ABCDEF", DeviceType: "iPad", State: mailpush.DeviceBlocked}
	if err := s.PutGateDevice(ctx, d2); err != nil {
		t.Fatal(err)
	}
	got, err = s.GateDevice(ctx, acme.ID, "APPLF2LLD0ABCDEF")
	if err != nil {
		t.Fatal(err)
	}
	if got.State != mailpush.DeviceBlocked || got.DeviceType != "iPad" || got.UserHash != nil || !got.CreatedAt.Equal(created) || !got.LastSeen.Equal(seen) || !got.UpdatedAt.Equal(e.clock.Now()) {
		t.Errorf("after replace GateDevice = %+v", got)
	}
	if !d2.CreatedAt.Equal(created) || !d2.LastSeen.Equal(seen) {
		t.Errorf("PutGateDevice did not report the kept times: %+v", d2)
	}

	wantCode(t, "device of an unknown tenant", s.PutGateDevice(ctx, &mailpush.GateDevice{TenantID: "nosuchtenant", DeviceID: "X", State: mailpush.DeviceCompliant}), mailpush.ENotFound)

	wantCode(t, "delete another tenant's device", s.DeleteGateDevice(ctx, other.ID, "APPLF2LLD0ABCDEF"), mailpush.ENotFound)
	if err := s.DeleteGateDevice(ctx, acme.ID, "APPLF2LLD0ABCDEF"); err != nil {
		t.Fatal(err)
	}
	_, err = s.GateDevice(ctx, acme.ID, "APPLF2LLD0ABCDEF")
	wantCode(t, "deleted device", err, mailpush.ENotFound)
	wantCode(t, "delete twice", s.DeleteGateDevice(ctx, acme.ID, "APPLF2LLD0ABCDEF"), mailpush.ENotFound)
}

func testDeleteRegistrationsByActiveSyncDevice(t *testing.T, s mailpush.Store, e *env) {
	ctx := context.Background()
	acme, other := mustTenant(t, s, "acme"), mustTenant(t, s, "other")
	hash := mailpush.ActiveSyncDeviceHash(e.keys, acme.ID, "dev1")
	// Alice's phone is linked to dev1 in two mailboxes; Bob's is not linked.
	r1, mb1 := newReg(e, acme.ID, "alice@example.com", "aa01")
	r1.Device.ActiveSyncDeviceHash = hash
	m1, err := s.Register(ctx, r1, mb1, nil)
	if err != nil {
		t.Fatal(err)
	}
	s.UpdateMailbox(ctx, m1.ID, func(m *mailpush.Mailbox) error { m.Status = mailpush.StatusActive; return nil })
	r2, mb2 := newReg(e, acme.ID, "shared@example.com", "aa01")
	r2.Device.ActiveSyncDeviceHash = hash
	m2, err := s.Register(ctx, r2, mb2, nil)
	if err != nil {
		t.Fatal(err)
	}
	s.UpdateMailbox(ctx, m2.ID, func(m *mailpush.Mailbox) error { m.Status = mailpush.StatusActive; return nil })
	r3, mb3 := newReg(e, acme.ID, "shared@example.com", "bb02")
	if _, err := s.Register(ctx, r3, mb3, nil); err != nil {
		t.Fatal(err)
	}
	got, err := s.Registration(ctx, acme.ID, r1.ID)
	if err != nil || !bytes.Equal(got.Device.ActiveSyncDeviceHash, hash) {
		t.Fatalf("stored ActiveSyncDeviceHash = %v (%v), want %x", got, err, hash)
	}

	if n, err := s.DeleteRegistrationsByActiveSyncDevice(ctx, other.ID, hash); err != nil || n != 0 {
		t.Errorf("another tenant's delete = %d, %v; want 0, nil", n, err)
	}
	n, err := s.DeleteRegistrationsByActiveSyncDevice(ctx, acme.ID, hash)
	if err != nil || n != 2 {
		t.Fatalf("DeleteRegistrationsByActiveSyncDevice = %d, %v; want 2", n, err)
	}
	for _, id := range []string{r1.ID, r2.ID} {
		_, err := s.Registration(ctx, acme.ID, id)
		wantCode(t, "removed registration", err, mailpush.ENotFound)
	}
	if _, err := s.Registration(ctx, acme.ID, r3.ID); err != nil {
		t.Errorf("unlinked registration was removed: %v", err)
	}
	if m, _ := s.Mailbox(ctx, m1.ID); m.Status != mailpush.StatusInactive {
		t.Errorf("mailbox left without devices has status %s, want inactive", m.Status)
	}
	if m, _ := s.Mailbox(ctx, m2.ID); m.Status != mailpush.StatusActive {
		t.Errorf("mailbox with a device left has status %s, want active", m.Status)
	}
	if n, err := s.DeleteRegistrationsByActiveSyncDevice(ctx, acme.ID, hash); err != nil || n != 0 {
		t.Errorf("second delete = %d, %v; want 0, nil", n, err)
	}
}
