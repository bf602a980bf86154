package sqlite_test

import (
	"bytes"
	"context"
	"database/sql"
	"os"
	"path/filepath"
	"testing"

	"github.com/mailpush/mailpush"
	"github.com/mailpush/mailpush/sqlite"
	"github.com/mailpush/mailpush/storetest"
)

// TestMigrationKeepsOldTenantTokens builds a database as it was before
// scopes (the first four migrations, a tenant with its single token hash)
// and opens it: the tenant's old "<tenantID>.<secret>" token must become an
// app-scope token that still authenticates, and the hash column is gone.
func TestMigrationKeepsOldTenantTokens(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "old.db")
	db, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`CREATE TABLE schema_migrations (version TEXT PRIMARY KEY, applied_at INTEGER NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{"0001_init", "0002_outbox", "0003_gate", "0004_stale_mailboxes"} {
		body, err := os.ReadFile(filepath.Join("migrations", v+".sql"))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := db.Exec(string(body)); err != nil {
			t.Fatalf("%s: %v", v, err)
		}
		db.Exec(`INSERT INTO schema_migrations VALUES (?, 0)`, v)
	}
	oldSecret := "old-secret-inside-shipped-apps"
	if _, err := db.Exec(`INSERT INTO tenants (id, name, token_hash, allowed_hosts, max_content, created_at) VALUES ('tenant1', 'acme', ?, '', 'badge', 1000)`, mailpush.HashTokenSecret(oldSecret)); err != nil {
		t.Fatal(err)
	}
	db.Close()

	s, err := sqlite.Open(ctx, path, storetest.Keyring(t), storetest.NewClock())
	if err != nil {
		t.Fatalf("migrate: %v", err)
	}
	defer s.Close()
	id, secret, ok := mailpush.SplitToken("tenant1." + oldSecret)
	if !ok {
		t.Fatal("old token does not split")
	}
	tok, err := s.Token(ctx, id)
	if err != nil {
		t.Fatalf("old token lost: %v", err)
	}
	if tok.TenantID != "tenant1" || tok.Scope != mailpush.ScopeApp || !bytes.Equal(tok.SecretHash, mailpush.HashTokenSecret(secret)) {
		t.Errorf("migrated token = %+v, want an app token of tenant1 with the old hash", tok)
	}
	if tn, err := s.Tenant(ctx, "tenant1"); err != nil || tn.Name != "acme" {
		t.Errorf("tenant after migration = %+v, %v", tn, err)
	}
}

// BenchmarkVerifyToken is the authentication every API request pays: the
// token and its tenant in one prepared read (TokenAndTenant) against two
// (Token, then Tenant).
func BenchmarkVerifyToken(b *testing.B) {
	ctx := context.Background()
	s, err := sqlite.Open(ctx, filepath.Join(b.TempDir(), "tok.db"), storetest.Keyring(b), storetest.NewClock())
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	tn := &mailpush.Tenant{ID: mailpush.NewID(), Name: "acme", MaxContent: mailpush.ContentBadge}
	if err := s.CreateTenant(ctx, tn); err != nil {
		b.Fatal(err)
	}
	tok, bearer := mailpush.NewToken(tn.ID, mailpush.ScopeApp)
	if err := s.CreateToken(ctx, tok); err != nil {
		b.Fatal(err)
	}
	for _, c := range []struct {
		name  string
		store mailpush.TokenReader
	}{{"one-read", s}, {"two-reads", twoReads{s}}} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, _, err := mailpush.VerifyToken(ctx, c.store, bearer); err != nil {
						b.Fatal(err)
					}
				}
			})
		})
	}
}

// twoReads hides TokenAndTenant: VerifyToken then reads Token and Tenant.
type twoReads struct{ s *sqlite.Store }

func (r twoReads) Token(ctx context.Context, id string) (*mailpush.Token, error) {
	return r.s.Token(ctx, id)
}

func (r twoReads) Tenant(ctx context.Context, id string) (*mailpush.Tenant, error) {
	return r.s.Tenant(ctx, id)
}
