package sqlite_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/mailpush/mailpush"
	"github.com/mailpush/mailpush/sqlite"
	"github.com/mailpush/mailpush/storetest"
)

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T, c mailpush.FieldCipher, clock mailpush.Clock) mailpush.Store {
		s, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "test.db"), c, clock)
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}

func TestReopenKeepsDataAndMigratesOnce(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "m.db")
	keys := storetest.Keyring(t)
	s, err := sqlite.Open(ctx, path, keys, storetest.NewClock())
	if err != nil {
		t.Fatal(err)
	}
	tn := &mailpush.Tenant{Name: "acme", MaxContent: mailpush.ContentBadge}
	if err := s.CreateTenant(ctx, tn); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s, err = sqlite.Open(ctx, path, keys, storetest.NewClock())
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	defer s.Close()
	if _, err := s.Tenant(ctx, tn.ID); err != nil {
		t.Errorf("tenant lost across reopen: %v", err)
	}
}

func TestTokensAndAddressesNotInFile(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	path := filepath.Join(dir, "m.db")
	keys := storetest.Keyring(t)
	s, err := sqlite.Open(ctx, path, keys, storetest.NewClock())
	if err != nil {
		t.Fatal(err)
	}
	tn := &mailpush.Tenant{Name: "acme", MaxContent: mailpush.ContentBadge}
	s.CreateTenant(ctx, tn)
	const token = "5f1c9a0e7d3b42a8e6c0f1d2b3a4958677a8b9c0d1e2f30415263748596a7b8c"
	const addr = "carol.secret@example.com"
	reg := &mailpush.Registration{Device: mailpush.Device{Platform: mailpush.PlatformIOS, Token: token, Environment: mailpush.EnvSandbox}, Content: mailpush.ContentBadge, Status: mailpush.StatusActive}
	mb := &mailpush.Mailbox{TenantID: tn.ID, AddressHash: keys.HashAddress(tn.ID, addr), Source: mailpush.SourceEWS, Mode: mailpush.ModeSealed, Status: mailpush.StatusActive, Badge: mailpush.NoBadge}
	if _, err := s.Register(ctx, reg, mb, nil); err != nil {
		t.Fatal(err)
	}
	got, err := s.Registration(ctx, tn.ID, reg.ID)
	if err != nil || got.Device.Token != token {
		t.Fatalf("token did not round-trip: %v %v", got, err)
	}
	s.Close()
	files, _ := filepath.Glob(filepath.Join(dir, "m.db*"))
	for _, f := range files {
		if fi, err := os.Stat(f); err == nil && fi.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %v, want 0600", filepath.Base(f), fi.Mode().Perm())
		}
		b, _ := os.ReadFile(f)
		for _, secret := range []string{token, addr, "carol.secret"} {
			if bytes.Contains(b, []byte(secret)) {
				t.Errorf("%s holds %q in clear", filepath.Base(f), secret)
			}
		}
	}
}
