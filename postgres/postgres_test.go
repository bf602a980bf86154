package postgres_test

import (
	"context"
	"testing"

	"github.com/mailpush/mailpush"
	"github.com/mailpush/mailpush/postgres"
	"github.com/mailpush/mailpush/postgres/pgtest"
	"github.com/mailpush/mailpush/storetest"
)

var _ mailpush.Store = (*postgres.Store)(nil)

// TestConformance runs the store conformance suite against the real
// PostgreSQL server, each case in a schema of its own.
func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T, cipher mailpush.FieldCipher, clock mailpush.Clock) mailpush.Store {
		url, schema := pgtest.Schema(t)
		s, err := postgres.Open(context.Background(), postgres.Config{URL: url, Schema: schema}, cipher, clock)
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}
