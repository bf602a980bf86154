package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/mailpush/mailpush/postgres/pgtest"
)

// built is this command's binary, built once per test process
// (buildMailpush) and removed by TestMain.
var built struct {
	once     sync.Once
	dir, bin string
	err      error
	out      []byte
}

// buildMailpush builds this command once for the test process: the tests
// that run `mailpush serve` (or the load command, which starts it) as
// separate processes need the real binary, not the test binary. One build
// serves them all (each cost most of a minute on the loaded machine).
func buildMailpush(t *testing.T) string {
	t.Helper()
	built.once.Do(func() {
		if built.dir, built.err = os.MkdirTemp("", "mailpush-test-bin-"); built.err != nil {
			return
		}
		built.bin = filepath.Join(built.dir, "mailpush")
		built.out, built.err = exec.Command(filepath.Join(runtime.GOROOT(), "bin", "go"), "build", "-o", built.bin, ".").CombinedOutput()
	})
	if built.err != nil {
		t.Fatalf("go build: %v\n%s", built.err, built.out)
	}
	return built.bin
}

func TestMain(m *testing.M) {
	code := m.Run()
	if built.dir != "" {
		os.RemoveAll(built.dir)
	}
	os.Exit(code)
}

// TestBenchCompareWithTwoNodes runs the load command as an operator would
// (`mailpush bench -scenario fanout -compare -nodes 2`, small counts) on the
// real PostgreSQL: SQLite, PostgreSQL with one node, and PostgreSQL with two
// nodes (a `mailpush serve` child process) one after the other. What it
// reports must add up: every run seeds the asked mailboxes and devices,
// takes one event per mailbox and delivers exactly one push per device (no
// notification failed, none lost), the two-node run says it ran two nodes
// and reports the child's memory, the comparison lists the three runs with
// SQLite's ratios at 1, and each run's schema is dropped after it. No
// timing is asserted.
func TestBenchCompareWithTwoNodes(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs the load command three times")
	}
	url, _ := pgtest.Schema(t) // the server is there (under CI a missing one fails)
	bin := buildMailpush(t)
	const mailboxes, devices = 12, 4
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "bench", "-scenario", "fanout", "-mailboxes", strconv.Itoa(mailboxes), "-devices", strconv.Itoa(devices),
		"-concurrency", "4", "-compare", "-nodes", "2", "-database-url", url, "-dir", t.TempDir())
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	report := string(out)
	if err != nil {
		t.Fatalf("mailpush bench: %v\nstdout:\n%s\nstderr:\n%s", err, report, stderr.String())
	}
	t.Logf("the load command's report:\n%s", report)

	sections := regexp.MustCompile(`(?m)^== (SQLite|PostgreSQL, 1 node|PostgreSQL, 2 nodes) \(load average`).FindAllStringSubmatchIndex(report, -1)
	if len(sections) != 3 {
		t.Fatalf("%d run sections in the report, want SQLite, PostgreSQL with 1 node and with 2 nodes", len(sections))
	}
	var schemas []string
	for i, sec := range sections {
		end := len(report)
		if i+1 < len(sections) {
			end = sections[i+1][0]
		}
		name, body := report[sec[2]:sec[3]], report[sec[0]:end]
		seeded := regexp.MustCompile(`seeded (\d+) mailboxes, (\d+) devices`).FindStringSubmatch(body)
		if seeded == nil || seeded[1] != strconv.Itoa(mailboxes) || seeded[2] != strconv.Itoa(mailboxes*devices) {
			t.Errorf("%s: seeded %v, want %d mailboxes and %d devices", name, seeded, mailboxes, mailboxes*devices)
		}
		fan := regexp.MustCompile(`(?m)^mailpush fan-out: (\d+) pushes, (\d+) events in`).FindStringSubmatch(body)
		if fan == nil {
			t.Errorf("%s: no fan-out line", name)
			continue
		}
		if fan[1] != strconv.Itoa(mailboxes*devices) || fan[2] != strconv.Itoa(mailboxes) {
			t.Errorf("%s: %s pushes for %s events; want one push per device (%d) for one event per mailbox (%d)", name, fan[1], fan[2], mailboxes*devices, mailboxes)
		}
		if strings.Contains(body, "notifications failed") {
			t.Errorf("%s: notifications failed", name)
		}
		twoNodes := strings.Contains(body, "nodes: 2 (node 1 in this process, 1 `mailpush serve` child processes) on one PostgreSQL")
		childRSS := regexp.MustCompile(`node 2 \(child process\) RSS ([0-9.]+) MiB`).FindStringSubmatch(body)
		schema := regexp.MustCompile(`(?m)^database: PostgreSQL, schema (\S+)$`).FindStringSubmatch(body)
		switch name {
		case "SQLite":
			if schema != nil || twoNodes {
				t.Errorf("the SQLite run used PostgreSQL or several nodes")
			}
		case "PostgreSQL, 1 node":
			if schema == nil || twoNodes || childRSS != nil {
				t.Errorf("the one-node run: schema %v, two nodes %v, child %v", schema, twoNodes, childRSS)
			}
		case "PostgreSQL, 2 nodes":
			if schema == nil || !twoNodes || childRSS == nil || childRSS[1] == "0.0" {
				t.Errorf("the two-node run: schema %v, two nodes %v, child RSS %v; want a schema, two nodes, the child's RSS", schema, twoNodes, childRSS)
			}
		}
		if schema != nil {
			schemas = append(schemas, schema[1])
		}
	}
	table := report[strings.Index(report, "ratios to SQLite"):]
	for _, row := range []string{"SQLite", "PostgreSQL, 1 node", "PostgreSQL, 2 nodes"} {
		if !regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(row) + `\s+\d+\s+[0-9.]+`).MatchString(table) {
			t.Errorf("the comparison has no row %q", row)
		}
	}
	if !regexp.MustCompile(`(?m)^SQLite\s+\d+\s+1\.00\s+[0-9.]+\s+1\.00\s`).MatchString(table) {
		t.Errorf("SQLite's row is not the ratios' base (1.00):\n%s", table)
	}

	// Each PostgreSQL run dropped the schema it made.
	if len(schemas) != 2 || schemas[0] == schemas[1] {
		t.Fatalf("schemas %v: want one of its own per PostgreSQL run", schemas)
	}
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	for _, s := range schemas {
		var n int
		if err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_namespace WHERE nspname = $1`, s).Scan(&n); err != nil || n != 0 {
			t.Errorf("schema %s: %d left after the run (%v); the load command drops the schema it made", s, n, err)
			conn.Exec(context.Background(), "DROP SCHEMA IF EXISTS "+pgx.Identifier{s}.Sanitize()+" CASCADE")
		}
	}
}
