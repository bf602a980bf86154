package pgtest

import (
	"context"
	"encoding/hex"
	"fmt"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
)

// Dump returns every row of every table of schema as JSON, with bytea
// values decoded, so that a secret stored in clear in either kind of column
// shows.
func Dump(t testing.TB, url, schema string) string {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, `SELECT table_name FROM information_schema.tables WHERE table_schema = $1`, schema)
	if err != nil {
		t.Fatal(err)
	}
	tables, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil || len(tables) < 5 {
		t.Fatalf("tables = %v, %v", tables, err)
	}
	var b strings.Builder
	decoded := 0
	for _, table := range tables {
		rows, err := conn.Query(ctx, fmt.Sprintf(`SELECT row_to_json(t)::text FROM %s t`, pgx.Identifier{schema, table}.Sanitize()))
		if err != nil {
			t.Fatal(err)
		}
		lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range lines {
			b.WriteString(l + "\n")
			// bytea is "\\x<hex>" in JSON: decode it too.
			for _, part := range strings.Split(l, `"\\x`)[1:] {
				end := strings.IndexByte(part, '"')
				if raw, err := hex.DecodeString(part[:max(end, 0)]); err == nil {
					b.Write(raw)
					b.WriteByte('\n')
					decoded++
				}
			}
		}
	}
	if decoded == 0 {
		t.Fatal("no bytea value was decoded: the dump cannot see sealed columns")
	}
	return b.String()
}
