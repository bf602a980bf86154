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
