package postgres

import (
	"context"
	"flag"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/mailpush/mailpush"
	"github.com/mailpush/mailpush/postgres/pgtest"
	"github.com/mailpush/mailpush/seal"
	"github.com/mailpush/mailpush/storetest"
)

// The loader behind docs/PERFORMANCE.md's registration figures; without
// flags it loads a few thousand rows and checks them, as a normal test.
var (
	loadCopy     = flag.Int("load.copy", 4000, "registrations TestLoadRegistrations loads with COPY")
	loadRegister = flag.Int("load.register", 400, "registrations TestLoadRegistrations stores through Register, one transaction each")
	loadKeyDir   = flag.String("load.keydir", "", "service keyring directory to seal with (a node's keyDir); empty: a fresh one")
	loadKeep     = flag.Bool("load.keep", false, "keep the schema (and print it) instead of dropping it")
)

// devicesPerMailbox is the loaded mix: two devices (a phone and a tablet)
// per mailbox.
const devicesPerMailbox = 2

// TestLoadRegistrations loads registrations the two ways a site can: with
// COPY (as a bulk import would) and through Register (as devices do, one
// transaction each, 8 at a time), then reports the rates and the bytes each
// registration takes on disk (registrations and mailboxes, with their
// indexes and TOAST), and checks that what COPY wrote reads back through the
// store like what Register wrote.
func TestLoadRegistrations(t *testing.T) {
	ctx := context.Background()
	url, schema := schemaFor(t)
	var cipher mailpush.FieldCipher = storetest.Keyring(t)
	if *loadKeyDir != "" {
		k, err := seal.Open(*loadKeyDir, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		cipher = k
	}
	s, err := Open(ctx, Config{URL: url, Schema: schema, MaxConns: 16}, cipher, mailpush.SystemClock{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	tn := &mailpush.Tenant{Name: "load", AllowedHosts: []string{"mail.example.com"}, MaxContent: mailpush.ContentSubject}
	if err := s.CreateTenant(ctx, tn); err != nil {
		t.Fatal(err)
	}

	// COPY: mailboxes first, then their registrations, in batches of 50,000.
	start := time.Now()
	const batch = 50_000
	for from := 0; from < *loadCopy; from += batch {
		n := min(batch, *loadCopy-from)
		if err := s.copyRegistrations(ctx, tn.ID, from, n); err != nil {
			t.Fatal(err)
		}
	}
	copyTook := time.Since(start)

	// Register: 8 workers, a mailbox of two devices each pair.
	start = time.Now()
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= *loadRegister {
					return
				}
				j := *loadCopy + i
				mb := &mailpush.Mailbox{TenantID: tn.ID, AddressHash: cipher.HashField([]byte(loadAddress(j / devicesPerMailbox))),
					Source: mailpush.SourceEWS, Mode: mailpush.ModeSealed, ServerURL: "https://mail.example.com/EWS/Exchange.asmx", Badge: mailpush.NoBadge, Status: mailpush.StatusActive}
				reg := &mailpush.Registration{Device: mailpush.Device{Platform: mailpush.PlatformIOS, Token: loadToken(j), Environment: mailpush.EnvProduction},
					Content: mailpush.ContentBadge, Status: mailpush.StatusActive, ExpiresAt: time.Now().Add(90 * 24 * time.Hour)}
				if _, err := s.Register(ctx, reg, mb, nil); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		t.Fatal(err)
	}
	registerTook := time.Since(start)

	for _, table := range []string{"registrations", "mailboxes"} {
		if _, err := s.pool.Exec(ctx, `VACUUM ANALYZE `+table); err != nil {
			t.Fatal(err)
		}
	}
	var regs, mbs, regBytes, mbBytes int64
	err = s.pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM registrations), (SELECT count(*) FROM mailboxes),
		pg_total_relation_size('registrations'), pg_total_relation_size('mailboxes')`).Scan(&regs, &mbs, &regBytes, &mbBytes)
	if err != nil {
		t.Fatal(err)
	}
	total := *loadCopy + *loadRegister
	if regs != int64(total) || mbs != int64((total+devicesPerMailbox-1)/devicesPerMailbox) {
		t.Fatalf("%d registrations in %d mailboxes, want %d in %d", regs, mbs, total, (total+1)/2)
	}
	// What COPY wrote reads back through the store: the device token
	// opens, the mailbox is found by its hash.
	for _, i := range []int{0, *loadCopy - 1, total - 1} {
		mb, err := s.MailboxByAddress(ctx, tn.ID, cipher.HashField([]byte(loadAddress(i/devicesPerMailbox))), mailpush.SourceEWS)
		if err != nil {
			t.Fatalf("mailbox of registration %d: %v", i, err)
		}
		rs, err := s.ActiveRegistrations(ctx, mb.ID)
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, r := range rs {
			found = found || r.Device.Token == loadToken(i)
		}
		if !found {
			t.Fatalf("registration %d is not among its mailbox's %d", i, len(rs))
		}
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	t.Logf("%d registrations in %d mailboxes (schema %s)", regs, mbs, schema)
	if *loadCopy > 0 {
		t.Logf("COPY: %d registrations in %v (%.0f/s)", *loadCopy, copyTook.Round(time.Millisecond), float64(*loadCopy)/copyTook.Seconds())
	}
	if *loadRegister > 0 {
		t.Logf("Register (8 at a time, one transaction each): %d in %v (%.0f/s)", *loadRegister, registerTook.Round(time.Millisecond), float64(*loadRegister)/registerTook.Seconds())
	}
	t.Logf("on disk: registrations %d MB, mailboxes %d MB: %.0f bytes per registration (tables, indexes, TOAST)",
		regBytes>>20, mbBytes>>20, float64(regBytes+mbBytes)/float64(regs))
}

// copyRegistrations writes n registrations (and their mailboxes) from index
// from with two COPYs in one transaction, with the columns and sealing that
// Register uses.
func (s *Store) copyRegistrations(ctx context.Context, tenantID string, from, n int) error {
	now := time.Now().UnixMilli()
	expires := time.Now().Add(90 * 24 * time.Hour).UnixMilli()
	var mbRows, regRows [][]any
	mbID := map[int]string{}
	for i := from; i < from+n; i++ {
		m := i / devicesPerMailbox
		id, ok := mbID[m]
		if !ok && i%devicesPerMailbox == 0 {
			id = mailpush.NewID()
			mbID[m] = id
			mbRows = append(mbRows, []any{id, tenantID, s.codec.Cipher.HashField([]byte(loadAddress(m))), "ews", "sealed",
				"https://mail.example.com/EWS/Exchange.asmx", "", -1, "active", now, now})
		}
		if id == "" {
			return fmt.Errorf("registration %d: batches must start at a mailbox's first device", i)
		}
		tok := loadToken(i)
		sealed, hash, err := s.codec.SealToken(tok)
		if err != nil {
			return err
		}
		regRows = append(regRows, []any{mailpush.NewID(), tenantID, id, "ios", "production", sealed, hash, "badge", "active", now, now, expires})
	}
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.CopyFrom(ctx, pgx.Identifier{"mailboxes"},
			[]string{"id", "tenant_id", "address_hash", "source", "mode", "server_url", "watermark", "badge", "status", "created_at", "updated_at"},
			pgx.CopyFromRows(mbRows)); err != nil {
			return fmt.Errorf("copy mailboxes: %w", err)
		}
		if _, err := tx.CopyFrom(ctx, pgx.Identifier{"registrations"},
			[]string{"id", "tenant_id", "mailbox_id", "platform", "environment", "token_sealed", "token_hash", "content", "status", "created_at", "updated_at", "expires_at"},
			pgx.CopyFromRows(regRows)); err != nil {
			return fmt.Errorf("copy registrations: %w", err)
		}
		return nil
	})
}

func loadAddress(m int) string { return fmt.Sprintf("user%07d@example.com", m) }
func loadToken(i int) string   { return fmt.Sprintf("%064x", 0x10000000+i) }

// schemaFor is pgtest.Schema, or with -load.keep a schema that outlives the
// test (for measuring a node on it).
func schemaFor(t *testing.T) (url, schema string) {
	if !*loadKeep {
		return pgtest.Schema(t)
	}
	url = pgtest.URL()
	schema = fmt.Sprintf("mailpush_load_%d", time.Now().Unix())
	conn, err := pgx.Connect(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(context.Background(), "CREATE SCHEMA "+schema); err != nil {
		t.Fatal(err)
	}
	t.Logf("keeping schema %s: DROP SCHEMA %s CASCADE when done", schema, schema)
	return url, schema
}
