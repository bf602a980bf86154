package main

import (
	"context"
	"database/sql"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mailpush/mailpush/fake/graphfake"
)

// TestGraphSlowAnswerWarnsBeforeGraphDrops drives the fake Graph's rule for
// a slow endpoint (answers over 3 s: 10 % in 10 minutes and Graph calls it
// slow, 15 % and it drops notifications) against mailpush: 19 answers in
// milliseconds, then one that waits for a database held by another writer
// for longer than Graph allows. The fake Graph then sees 5 % slow answers
// and still delivers; mailpush has already logged its warning (at 5 %, half
// of Graph's first threshold).
func TestGraphSlowAnswerWarnsBeforeGraphDrops(t *testing.T) {
	gw := newGraphWorld(t)
	if st, out := gw.register(t, gw.backend, deviceToken(40), ""); st != 201 {
		t.Fatalf("register = %d %v", st, out)
	}
	// mailpush counts every answer to Graph, the validation handshakes
	// too: 19 in all before the slow one, so that it makes 5 % of 20.
	for i := ackCount(t, gw); i < 19; i++ {
		gw.graph.Deliver(graphUser, fmt.Sprintf("Fast %d", i), "Adele Vance", "adele@contoso.example")
	}
	if n := ackCount(t, gw); n != 19 {
		t.Fatalf("mailpush counted %d answers, want 19", n)
	}
	const warning = "Graph notification answers are getting slow"
	if strings.Contains(gw.logs.String(), warning) {
		t.Fatal("warned with every answer fast")
	}

	// Another writer holds SQLite's write lock (a stalled disk, a long
	// admin transaction): the next notification's durable write waits.
	ctx := context.Background()
	raw, err := sql.Open("sqlite", "file:"+filepath.Join(gw.dir, "data", "mailpush.db")+"?_pragma=busy_timeout(10000)")
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	conn, err := raw.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, "BEGIN IMMEDIATE"); err != nil {
		t.Fatal(err)
	}
	delivered := make(chan struct{})
	go func() {
		defer close(delivered)
		gw.graph.Deliver(graphUser, "Slow", "Adele Vance", "adele@contoso.example")
	}()
	// Real time, not the test clock: Graph times the answer on its own
	// clock. Held well past 3 s so that mailpush's own measure, which
	// starts when the POST arrives, is over its 2.9 s too.
	time.Sleep(graphfake.SlowAnswer + 2*time.Second)
	if _, err := conn.ExecContext(ctx, "ROLLBACK"); err != nil {
		t.Fatal(err)
	}
	<-delivered

	ratio := gw.graph.SlowRatio()
	if ratio <= 0 {
		t.Fatal("the fake Graph saw no slow answer: the test did not slow mailpush down")
	}
	if ratio >= graphfake.SlowRatio {
		t.Fatalf("the fake Graph's slow ratio is %.2f: already slow by Graph's rule", ratio)
	}
	if !strings.Contains(gw.logs.String(), warning) {
		t.Fatalf("no warning with %.0f %% slow answers (Graph drops at %.0f %%)", ratio*100, graphfake.DropRatio*100)
	}
	for _, d := range gw.graph.Deliveries() {
		if d.Dropped {
			t.Fatal("the fake Graph dropped a notification")
		}
	}
	t.Logf("warned at %.0f %% slow answers; Graph calls the endpoint slow at %.0f %% and drops at %.0f %%", ratio*100, graphfake.SlowRatio*100, graphfake.DropRatio*100)
}

// ackCount reads how many Graph POSTs mailpush answered from its /metrics.
func ackCount(t *testing.T, gw *graphWorld) int {
	t.Helper()
	res, err := http.Get(gw.main.URL() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, "mailpush_graph_ack_seconds_count "); ok {
			n, err := strconv.Atoi(strings.TrimSpace(v))
			if err != nil {
				t.Fatalf("bad metric line %q", line)
			}
			return n
		}
	}
	t.Fatal("no mailpush_graph_ack_seconds_count on /metrics")
	return 0
}
