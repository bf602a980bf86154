package main

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/mailpush/mailpush/clocktest"
	"github.com/mailpush/mailpush/postgres/pgtest"
)

// TestReadyzNamesALostBroadcastConnection: a node whose LISTEN/NOTIFY
// connection is gone still answers queries, but misses the gate changes
// other nodes broadcast, so it is not ready and /readyz says why. The
// connection is killed from the database's side (pg_terminate_backend, as
// an admin or a failing proxy would); /readyz answers 503 naming the
// broadcast connection, and once the node's reconnection pause has passed
// (its clock is the test's) it is ready again by itself.
func TestReadyzNamesALostBroadcastConnection(t *testing.T) {
	url, schema := pgtest.Schema(t)
	clock := clocktest.New(time.Now())
	w := newWorldWith(t, "info", worldOptions{clock: clock, database: fmt.Sprintf("database: {driver: postgres, url: %q, schema: %s}", url, schema)})
	base := w.main.URL()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	waitReady(t, ctx, base, http.StatusOK)

	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	listen := "LISTEN " + pgx.Identifier{schema + "_" + gateChannel}.Sanitize()
	listener := func() (pid int) {
		conn.QueryRow(ctx, `SELECT pid FROM pg_stat_activity WHERE query = $1`, listen).Scan(&pid)
		return pid
	}
	pid := listener()
	if pid == 0 {
		t.Fatalf("no backend runs %q while the node is ready", listen)
	}
	var killed bool
	if err := conn.QueryRow(ctx, `SELECT pg_terminate_backend($1)`, pid).Scan(&killed); err != nil || !killed {
		t.Fatalf("pg_terminate_backend(%d) = %v, %v", pid, killed, err)
	}
	reason := waitReady(t, ctx, base, http.StatusServiceUnavailable)
	if !strings.Contains(reason, "broadcast connection") || !strings.Contains(reason, "lost") {
		t.Fatalf("/readyz with the broadcast connection killed says %q: it should name the lost broadcast connection", reason)
	}
	if strings.Contains(reason, "127.0.0.1") || strings.Contains(reason, "terminat") {
		t.Errorf("/readyz answers the cause %q: it belongs in the log only", reason)
	}
	// Still not ready while the node waits for its reconnection pause.
	if code, msg := readyz(t, base); code != http.StatusServiceUnavailable {
		t.Fatalf("/readyz = %d %q before the reconnection", code, msg)
	}
	// Time passes (the node's clock); nobody touches the node.
	for {
		clock.Advance(200 * time.Millisecond)
		if code, _ := readyz(t, base); code == http.StatusOK {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("the node never reconnected its broadcast connection: %s", w.logs.String())
		case <-time.After(20 * time.Millisecond): // polling with a deadline
		}
	}
	if p := listener(); p == 0 || p == pid {
		t.Fatalf("after recovery the listening backend is %d (the killed one was %d)", p, pid)
	}
	if !strings.Contains(w.logs.String(), "lost the broadcast connection") {
		t.Errorf("the log does not say the broadcast connection was lost")
	}
}
