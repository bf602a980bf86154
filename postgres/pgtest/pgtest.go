// Package pgtest gives each test its own schema in the real PostgreSQL server
// that the machine runs (127.0.0.1:5432, database test, trust auth), or the
// one named by MAILPUSH_TEST_POSTGRES_URL. Outside CI a missing server skips
// the test with a message; under CI (CI set) it fails it.
//
// A test that must stop and start PostgreSQL (an outage) never does it to
// that shared server: Private gives it a server of its own (initdb in a temp
// dir, a free loopback port).
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// DefaultURL is the server the tests use unless MAILPUSH_TEST_POSTGRES_URL is set.
const DefaultURL = "postgres://127.0.0.1:5432/test?sslmode=disable"

// URL returns the test server's connection URL.
func URL() string {
	if u := os.Getenv("MAILPUSH_TEST_POSTGRES_URL"); u != "" {
		return u
	}
	return DefaultURL
}

// Schema creates a fresh schema for t and drops it (with everything in it)
// when t ends. It returns the server URL and the schema's name.
func Schema(t testing.TB) (url, schema string) {
	t.Helper()
	url = URL()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("PostgreSQL at %s: %v (CI needs the real server)", url, err)
		}
		t.Skipf("PostgreSQL at %s is not reachable (%v): start it or set MAILPUSH_TEST_POSTGRES_URL", url, err)
	}
	defer conn.Close(ctx)
	b := make([]byte, 6)
	rand.Read(b)
	schema = "mailpush_test_" + hex.EncodeToString(b)
	if _, err := conn.Exec(ctx, "CREATE SCHEMA "+schema); err != nil {
		t.Fatalf("create schema: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, url)
		if err != nil {
			t.Errorf("drop schema %s: %v", schema, err)
			return
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, "DROP SCHEMA "+schema+" CASCADE"); err != nil {
			t.Errorf("drop schema %s: %v", schema, err)
		}
	})
	return url, schema
}
