package sqlite_test

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/mailpush/mailpush"
	"github.com/mailpush/mailpush/seal"
	"github.com/mailpush/mailpush/sqlite"
	"github.com/mailpush/mailpush/storetest"
)

// groupWorld opens a store of the test's own with the named tenants.
func groupWorld(t *testing.T, names ...string) (*sqlite.Store, *seal.Keyring, *storetest.Clock, []*mailpush.Tenant) {
	t.Helper()
	keys := storetest.Keyring(t)
	clock := storetest.NewClock()
	s, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "g.db"), keys, clock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	var tenants []*mailpush.Tenant
	for _, name := range names {
		tn := &mailpush.Tenant{Name: name, MaxContent: mailpush.ContentBadge}
		if err := s.CreateTenant(context.Background(), tn); err != nil {
			t.Fatal(err)
		}
		tenants = append(tenants, tn)
	}
	return s, keys, clock, tenants
}

// wasStored reports (and otherwise says) whether registration i's write,
// which returned err, succeeded and reads back with its device token.
func wasStored(t *testing.T, s *sqlite.Store, tenantID string, i int, reg *mailpush.Registration, err error) bool {
	t.Helper()
	if err != nil {
		t.Errorf("registration %d failed beside the others: %v", i, err)
		return false
	}
	got, err := s.Registration(context.Background(), tenantID, reg.ID)
	if err != nil || got.Device.Token != reg.Device.Token {
		t.Errorf("registration %d not stored: %+v, %v", i, got, err)
		return false
	}
	return true
}

// TestConcurrentRegistrationsShareCommits: registrations arriving together
// share transactions (group commit); one that fails (its tenant does not
// exist) fails alone and leaves nothing behind, the others are all stored.
func TestConcurrentRegistrationsShareCommits(t *testing.T) {
	ctx := context.Background()
	s, keys, clock, tenants := groupWorld(t, "acme")
	tn := tenants[0]
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
		if wasStored(t, s, tn.ID, i, regs[i], errs[i]) {
			stored++
		}
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

// TestRefusedRegistrationsCannotHarmAnotherTenants plays an app-token holder
// whose registrations are all refused inside the write (over quota), sent
// at once so that they share group commits with another tenant's. A write
// that fails bare rolls its whole transaction back, and the writes before
// it in the group run again (a few do in every run of this test). The
// other tenant's registrations must all be stored once, its live count
// (kept by triggers) must count each once, each of its writes runs at most
// twice (all the attacker buys is that), and nothing of the refused ones
// (registration or mailbox) is left.
func TestRefusedRegistrationsCannotHarmAnotherTenants(t *testing.T) {
	ctx := context.Background()
	s, keys, clock, tenants := groupWorld(t, "acme", "mallory")
	acme, mallory := tenants[0], tenants[1]
	const n = 300
	errs := make([]error, n)
	checks := make([]int, n)
	regs := make([]*mailpush.Registration, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			tn := acme
			if i%2 == 1 {
				tn = mallory
			}
			addr := fmt.Sprintf("user%d@example.com", i)
			regs[i] = &mailpush.Registration{Device: mailpush.Device{Platform: mailpush.PlatformIOS, Token: fmt.Sprintf("%064x", i+1)},
				Content: mailpush.ContentBadge, Status: mailpush.StatusActive, ExpiresAt: clock.Now().Add(time.Hour)}
			mb := &mailpush.Mailbox{TenantID: tn.ID, AddressHash: keys.HashAddress(tn.ID, addr), Source: mailpush.SourceDovecot,
				Mode: mailpush.ModeService, Badge: mailpush.NoBadge, Status: mailpush.StatusActive}
			_, errs[i] = s.Register(ctx, regs[i], mb, func(mailpush.Join) error {
				checks[i]++ // one write at a time: the group runs its writes in turn
				if tn == mallory {
					return mailpush.Errorf(mailpush.EQuota, "registrations.maxPerTenant reached")
				}
				return nil
			})
		})
	}
	wg.Wait()
	stored := 0
	for i := range n {
		if checks[i] < 1 || checks[i] > 2 {
			t.Errorf("registration %d's write ran %d times; want once, or twice after a refused one rolled its group back", i, checks[i])
		}
		if i%2 == 1 {
			if mailpush.ErrorCode(errs[i]) != mailpush.EQuota {
				t.Errorf("refused registration %d: %v, want quota_exceeded", i, errs[i])
			}
			if _, err := s.MailboxByAddress(ctx, mallory.ID, keys.HashAddress(mallory.ID, fmt.Sprintf("user%d@example.com", i)), mailpush.SourceDovecot); mailpush.ErrorCode(err) != mailpush.ENotFound {
				t.Errorf("refused registration %d left its mailbox behind (%v)", i, err)
			}
			continue
		}
		if wasStored(t, s, acme.ID, i, regs[i], errs[i]) {
			stored++
		}
	}
	reruns := 0
	for _, c := range checks {
		if c == 2 {
			reruns++
		}
	}
	t.Logf("%d writes ran again after a refused one rolled their group back", reruns)
	if stored != n/2 {
		t.Errorf("stored %d of the other tenant's registrations, want %d", stored, n/2)
	}
	if c, err := s.CountRegistrations(ctx, acme.ID); err != nil || c != n/2 {
		t.Errorf("the other tenant's live count is %d (%v); want %d, each registration once", c, err, n/2)
	}
	if c, err := s.CountRegistrations(ctx, mallory.ID); err != nil || c != 0 {
		t.Errorf("the refused tenant's live count is %d (%v); want 0", c, err)
	}
}
