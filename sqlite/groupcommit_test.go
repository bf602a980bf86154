package sqlite_test

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/mailpush/mailpush"
	"github.com/mailpush/mailpush/sqlite"
	"github.com/mailpush/mailpush/storetest"
)

// TestConcurrentRegistrationsShareCommits: registrations arriving together
// share transactions (group commit); one that fails (its tenant does not
// exist) fails alone and leaves nothing behind, the others are all stored.
func TestConcurrentRegistrationsShareCommits(t *testing.T) {
	ctx := context.Background()
	keys := storetest.Keyring(t)
	clock := storetest.NewClock()
	s, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "g.db"), keys, clock)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	tn := &mailpush.Tenant{Name: "acme", MaxContent: mailpush.ContentBadge}
	if err := s.CreateTenant(ctx, tn); err != nil {
		t.Fatal(err)
	}
	const n = 200
	errs := make([]error, n)
	regs := make([]*mailpush.Registration, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			tenant := tn.ID
			if i%10 == 7 {
				tenant = "no-such-tenant"
			}
			addr := fmt.Sprintf("user%d@example.com", i%50)
			regs[i] = &mailpush.Registration{Device: mailpush.Device{Platform: mailpush.PlatformIOS, Token: fmt.Sprintf("%064x", i+1)},
				Content: mailpush.ContentBadge, Status: mailpush.StatusActive, ExpiresAt: clock.Now().Add(time.Hour)}
			mb := &mailpush.Mailbox{TenantID: tenant, AddressHash: keys.HashAddress(tenant, addr), Source: mailpush.SourceDovecot,
				Mode: mailpush.ModeService, Badge: mailpush.NoBadge, Status: mailpush.StatusActive}
			_, errs[i] = s.Register(ctx, regs[i], mb, nil)
		})
	}
	wg.Wait()
	stored := 0
	for i := range n {
		if i%10 == 7 {
			if errs[i] == nil {
				t.Errorf("registration %d for a tenant that does not exist succeeded", i)
			}
			continue
		}
		if errs[i] != nil {
			t.Errorf("registration %d failed with its group: %v", i, errs[i])
			continue
		}
		got, err := s.Registration(ctx, tn.ID, regs[i].ID)
		if err != nil || got.Device.Token != regs[i].Device.Token {
			t.Errorf("registration %d not stored: %+v, %v", i, got, err)
		}
		stored++
	}
	if stored != n-n/10 {
		t.Errorf("stored %d, want %d", stored, n-n/10)
	}
	// Devices of one mailbox registered together are all in it.
	mb, err := s.MailboxByAddress(ctx, tn.ID, keys.HashAddress(tn.ID, "user3@example.com"), mailpush.SourceDovecot)
	if err != nil {
		t.Fatal(err)
	}
	if a, err := s.MailboxAudience(ctx, mb.ID); err != nil || a.Registrations != 4 {
		t.Errorf("mailbox of user3 has %+v, %v; want 4 registrations", a, err)
	}
}
