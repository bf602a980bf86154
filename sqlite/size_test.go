package sqlite_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mailpush/mailpush"
	"github.com/mailpush/mailpush/sqlite"
	"github.com/mailpush/mailpush/storetest"
)

// BenchmarkRegistrationSize inserts b.N registrations, each with its own
// mailbox (the worst case: one device per user), and reports the database
// file size per registration. Run with a fixed count:
//
//	go test -run XXX -bench RegistrationSize -benchtime 100000x ./sqlite
func BenchmarkRegistrationSize(b *testing.B) {
	ctx := context.Background()
	dir := b.TempDir()
	path := filepath.Join(dir, "size.db")
	keys := storetest.Keyring(b)
	s, err := sqlite.Open(ctx, path, keys, storetest.NewClock())
	if err != nil {
		b.Fatal(err)
	}
	tn := &mailpush.Tenant{Name: "acme", MaxContent: mailpush.ContentSubjectSender}
	if err := s.CreateTenant(ctx, tn); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := range b.N {
		reg := &mailpush.Registration{
			Device:    mailpush.Device{Platform: mailpush.PlatformIOS, Token: fmt.Sprintf("%064x", i), Environment: mailpush.EnvProduction},
			Content:   mailpush.ContentSubject,
			Status:    mailpush.StatusActive,
			ExpiresAt: time.Now().Add(720 * time.Hour),
		}
		mb := &mailpush.Mailbox{TenantID: tn.ID, AddressHash: keys.HashAddress(tn.ID, fmt.Sprintf("user%d@example.com", i)),
			Source: mailpush.SourceEWS, Mode: mailpush.ModeSealed, ServerURL: "https://mail.example.com/EWS/Exchange.asmx",
			SubscriptionID: fmt.Sprintf("FwBtYWlsMDEuZXhhbXBsZS5jb20QAAAA%016x", i), Watermark: "AQAAAEo8c2FuZ3VpbmUAAAAAAAAAAAAAAAAAAAA=",
			Badge: 3, Status: mailpush.StatusActive}
		if _, err := s.Register(ctx, reg, mb, nil); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	if err := s.Close(); err != nil { // checkpoints the WAL into the main file
		b.Fatal(err)
	}
	var total int64
	files, _ := filepath.Glob(path + "*")
	for _, f := range files {
		if fi, err := os.Stat(f); err == nil {
			total += fi.Size()
		}
	}
	b.ReportMetric(float64(total)/float64(b.N), "bytes/registration")
}

// BenchmarkCountRegistrations is the per-tenant quota check that every new
// registration pays, with 100,000 live registrations (the count that
// triggers keep on the tenant row).
//
//	go test -run XXX -bench CountRegistrations ./sqlite
func BenchmarkCountRegistrations(b *testing.B) {
	ctx := context.Background()
	keys := storetest.Keyring(b)
	s, err := sqlite.Open(ctx, filepath.Join(b.TempDir(), "count.db"), keys, storetest.NewClock())
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	tn := &mailpush.Tenant{Name: "acme", MaxContent: mailpush.ContentBadge}
	if err := s.CreateTenant(ctx, tn); err != nil {
		b.Fatal(err)
	}
	const n = 100_000
	mb := &mailpush.Mailbox{TenantID: tn.ID, AddressHash: keys.HashAddress(tn.ID, "shared@example.com"), Source: mailpush.SourceEWS, Mode: mailpush.ModeSealed, Status: mailpush.StatusActive, Badge: mailpush.NoBadge}
	for i := range n {
		reg := &mailpush.Registration{Device: mailpush.Device{Platform: mailpush.PlatformIOS, Token: fmt.Sprintf("%064x", i)}, Content: mailpush.ContentBadge, Status: mailpush.StatusActive}
		if _, err := s.Register(ctx, reg, mb, nil); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	for range b.N {
		if got, err := s.CountRegistrations(ctx, tn.ID); err != nil || got != n {
			b.Fatalf("count = %d, %v", got, err)
		}
	}
}

// BenchmarkRegisterParallel is the store's share of a registration through
// the API: concurrent callers (16 per CPU), each registration with a mailbox
// of its own, sharing group commits.
//
//	go test -run XXX -bench RegisterParallel -benchtime 20000x ./sqlite
func BenchmarkRegisterParallel(b *testing.B) {
	ctx := context.Background()
	keys := storetest.Keyring(b)
	s, err := sqlite.Open(ctx, filepath.Join(b.TempDir(), "reg.db"), keys, storetest.NewClock())
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	tn := &mailpush.Tenant{Name: "acme", MaxContent: mailpush.ContentSubjectSender}
	if err := s.CreateTenant(ctx, tn); err != nil {
		b.Fatal(err)
	}
	var next atomic.Int64
	b.ReportAllocs()
	b.SetParallelism(16)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := next.Add(1)
			reg := &mailpush.Registration{
				Device:    mailpush.Device{Platform: mailpush.PlatformIOS, Token: fmt.Sprintf("%064x", i), Environment: mailpush.EnvProduction},
				Content:   mailpush.ContentBadge,
				Status:    mailpush.StatusActive,
				ExpiresAt: time.Now().Add(720 * time.Hour),
			}
			mb := &mailpush.Mailbox{TenantID: tn.ID, AddressHash: keys.HashAddress(tn.ID, fmt.Sprintf("user%d@example.com", i)),
				Source: mailpush.SourceDovecot, Mode: mailpush.ModeService, Badge: mailpush.NoBadge, Status: mailpush.StatusActive}
			if _, err := s.Register(ctx, reg, mb, nil); err != nil {
				b.Fatal(err)
			}
		}
	})
}
