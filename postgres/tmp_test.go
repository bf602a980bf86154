package postgres_test

import (
	"context"
	"testing"

	"github.com/mailpush/mailpush"
	"github.com/mailpush/mailpush/postgres"
	"github.com/mailpush/mailpush/postgres/pgtest"
	"github.com/mailpush/mailpush/storetest"
)

type partial struct {
	*postgres.Store
	mailpush.Outbox
}

func (p partial) Close() error { return p.Store.Close() }
func (p partial) Ping(ctx context.Context) error { return p.Store.Ping(ctx) }

func TestTmp(t *testing.T) {
	storetest.Run(t, func(t *testing.T, cipher mailpush.FieldCipher, clock mailpush.Clock) mailpush.Store {
		url, schema := pgtest.Schema(t)
		s, err := postgres.Open(context.Background(), postgres.Config{URL: url, Schema: schema}, cipher, clock)
		if err != nil {
			t.Fatal(err)
		}
		return partial{Store: s}
	})
}
