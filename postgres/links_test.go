package postgres_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/mailpush/mailpush"
	"github.com/mailpush/mailpush/clocktest"
	"github.com/mailpush/mailpush/postgres"
	"github.com/mailpush/mailpush/postgres/pgtest"
	"github.com/mailpush/mailpush/storetest"
)

// TestLinksReadySaysConnectingBeforeTheFirstConnection: a node that has
// just started is not ready until its broadcast listener has connected, and
// /readyz's reason says it is connecting, not that a connection was lost;
// once a connection that existed dies, the reason says lost. The listener is
// held off its first connection by a pool of one connection that the test
// holds (so the listener waits in the pool, as it would for a slow or
// refusing database), then the test lets it go; the loss is a
// pg_terminate_backend of its backend, and the node's clock (the test's)
// keeps it lost until the clock moves on.
func TestLinksReadySaysConnectingBeforeTheFirstConnection(t *testing.T) {
	url, schema := pgtest.Schema(t)
	clock := clocktest.New(time.Now())
	s, err := postgres.Open(context.Background(), postgres.Config{URL: url, Schema: schema, MaxConns: 1}, storetest.Keyring(t), clock)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()

	held, err := s.Pool().Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.LinksReady(); err != nil {
		t.Fatalf("LinksReady before any link runs = %v", err)
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		s.Listen(ctx, "gate", func(string) {})
	}()
	// The listener waits for the pool's only connection: connecting.
	eventually(t, "LinksReady reports the listener", func() bool { return s.LinksReady() != nil })
	msg := mailpush.ErrorMessage(s.LinksReady())
	if !strings.Contains(msg, "broadcast connection (LISTEN gate)") || !strings.Contains(msg, "connecting") || strings.Contains(msg, "lost") {
		t.Fatalf("LinksReady before the first connection = %q: it should say the broadcast connection is connecting, not lost", msg)
	}
	if mailpush.ErrorCode(s.LinksReady()) != mailpush.EUnavailable {
		t.Fatalf("LinksReady's code = %v, want EUnavailable", mailpush.ErrorCode(s.LinksReady()))
	}
	held.Release()
	eventually(t, "the listener connects", func() bool { return s.LinksReady() == nil })

	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	listen := "LISTEN " + pgx.Identifier{schema + "_gate"}.Sanitize()
	var pid int
	if err := conn.QueryRow(ctx, `SELECT pid FROM pg_stat_activity WHERE query = $1`, listen).Scan(&pid); err != nil {
		t.Fatalf("no backend runs %q: %v", listen, err)
	}
	var killed bool
	if err := conn.QueryRow(ctx, `SELECT pg_terminate_backend($1)`, pid).Scan(&killed); err != nil || !killed {
		t.Fatalf("pg_terminate_backend(%d) = %v, %v", pid, killed, err)
	}
	// The listener is lost and waits for its pause on the test's clock.
	eventually(t, "LinksReady reports the lost listener", func() bool { return s.LinksReady() != nil })
	msg = mailpush.ErrorMessage(s.LinksReady())
	if !strings.Contains(msg, "broadcast connection (LISTEN gate)") || !strings.Contains(msg, "lost") || strings.Contains(msg, "connecting (") {
		t.Fatalf("LinksReady after the connection died = %q: it should say lost", msg)
	}
	if strings.Contains(msg, "127.0.0.1") || strings.Contains(msg, "terminat") {
		t.Errorf("LinksReady's message %q carries the cause: it belongs in the log", msg)
	}
	eventually(t, "the listener reconnects", func() bool {
		clock.Advance(200 * time.Millisecond)
		return s.LinksReady() == nil
	})
}
