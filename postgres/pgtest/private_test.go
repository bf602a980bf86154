package pgtest_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/mailpush/mailpush/postgres/pgtest"
)

// TestPrivateStopStart checks the private server: a row written before a
// stop is there after the start, and while it is stopped nothing connects.
func TestPrivateStopStart(t *testing.T) {
	srv := pgtest.Private(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	exec := func(sql string) error {
		conn, err := pgx.Connect(ctx, srv.URL)
		if err != nil {
			return err
		}
		defer conn.Close(ctx)
		_, err = conn.Exec(ctx, sql)
		return err
	}
	if err := exec(`CREATE TABLE kept (v int); INSERT INTO kept VALUES (42)`); err != nil {
		t.Fatal(err)
	}
	srv.Stop()
	if err := exec(`SELECT 1`); err == nil {
		t.Fatal("connected to a stopped server")
	}
	srv.Start()
	conn, err := pgx.Connect(ctx, srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var v int
	if err := conn.QueryRow(ctx, `SELECT v FROM kept`).Scan(&v); err != nil || v != 42 {
		t.Fatalf("after restart: v = %d, %v", v, err)
	}
}
