package sqlstore

import "testing"

func TestNumbered(t *testing.T) {
	for in, want := range map[string]string{
		`SELECT 1`:                             `SELECT 1`,
		`UPDATE t SET a = ? WHERE b = ? AND c`: `UPDATE t SET a = $1 WHERE b = $2 AND c`,
		`VALUES (?, ?, 1, ?)`:                  `VALUES ($1, $2, 1, $3)`,
		`?,?,?,?,?,?,?,?,?,?,?`:                `$1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11`,
	} {
		if got := Numbered(in); got != want {
			t.Errorf("Numbered(%q) = %q, want %q", in, got, want)
		}
	}
}
