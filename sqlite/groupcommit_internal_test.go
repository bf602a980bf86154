package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"path/filepath"
	"slices"
	"testing"

	"github.com/mailpush/mailpush/storetest"
)

// TestGroupUndoesAFailedWriteAlone: whether a write runs bare or in its
// savepoint, the one that fails leaves nothing and only its caller sees the
// error; the others are committed, each once. A write that may run again
// runs bare and, when one fails after it, runs again; a write that may not
// runs exactly once, and the writes after it run in their savepoints.
func TestGroupUndoesAFailedWriteAlone(t *testing.T) {
	ctx := context.Background()
	s, err := Open(ctx, filepath.Join(t.TempDir(), "g.db"), storetest.Keyring(t), storetest.NewClock())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.w.ExecContext(ctx, "CREATE TABLE t (k TEXT NOT NULL UNIQUE)"); err != nil {
		t.Fatal(err)
	}
	refusal := errors.New("refused")
	type write struct {
		key   string
		rerun bool
		fail  bool // after its insert
	}
	for _, tc := range []struct {
		name   string
		writes []write
		runs   []int // how many times each write's fn ran
	}{
		{"bare, the failure in the middle", []write{{"a", true, false}, {"b", true, true}, {"c", true, false}}, []int{2, 1, 1}},
		{"bare, the failure first", []write{{"d", true, true}, {"e", true, false}, {"f", true, false}}, []int{1, 1, 1}},
		{"bare, the failure last", []write{{"g", true, false}, {"h", true, false}, {"i", true, true}}, []int{2, 2, 1}},
		{"a write that runs once, then a failure", []write{{"j", false, false}, {"k", true, true}, {"l", true, false}}, []int{1, 1, 1}},
		{"a failure after a write that runs once", []write{{"m", true, false}, {"n", false, false}, {"o", true, true}, {"p", true, false}}, []int{1, 1, 1, 1}},
		{"two failures", []write{{"q", true, false}, {"r", true, true}, {"s", true, false}, {"u", true, true}, {"v", true, false}}, []int{2, 1, 1, 1, 1}},
		{"only failures", []write{{"w", true, true}, {"x", false, true}}, []int{1, 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := s.w.ExecContext(ctx, "DELETE FROM t"); err != nil {
				t.Fatal(err)
			}
			runs := make([]int, len(tc.writes))
			group := make([]*groupWrite, len(tc.writes))
			var want []string
			for i, w := range tc.writes {
				group[i] = &groupWrite{rerun: w.rerun, fn: func(ctx context.Context, tx *sql.Tx) error {
					runs[i]++
					if _, err := tx.ExecContext(ctx, "INSERT INTO t (k) VALUES (?)", w.key); err != nil {
						return err
					}
					if w.fail {
						return refusal
					}
					return nil
				}}
				if !w.fail {
					want = append(want, w.key)
				}
			}
			errs := make([]error, len(group))
			if err := s.runGroup(ctx, group, errs); err != nil {
				t.Fatal(err)
			}
			for i, w := range tc.writes {
				if w.fail && errs[i] != refusal || !w.fail && errs[i] != nil {
					t.Errorf("write %s: err = %v", w.key, errs[i])
				}
			}
			if !slices.Equal(runs, tc.runs) {
				t.Errorf("runs = %v; want %v", runs, tc.runs)
			}
			rows, err := s.w.QueryContext(ctx, "SELECT k FROM t ORDER BY k")
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for rows.Next() {
				var k string
				if err := rows.Scan(&k); err != nil {
					t.Fatal(err)
				}
				got = append(got, k)
			}
			rows.Close()
			if !slices.Equal(got, want) {
				t.Errorf("committed %v; want %v", got, want)
			}
		})
	}
}
