// Package sqlstore holds what the SQLite and PostgreSQL stores share beyond
// the domain's row decodings (package mailpush's StoreCodec): algorithms of
// several statements whose logic must be the same in both stores, written
// once, with the SQL in SQLite's `?` placeholders. Each store runs them
// through a Tx of its own transaction (PostgreSQL's numbers the
// placeholders: Numbered), and wraps the errors as its other methods do.
//
// It is internal: nothing outside the two stores has a reason to run SQL.
package sqlstore

import (
	"context"
	"errors"
	"strconv"
	"strings"
)

// Tx is one store's open transaction.
type Tx interface {
	// Exec runs a statement and reports the rows it changed.
	Exec(ctx context.Context, query string, args ...any) (int64, error)
	// QueryRow runs a query of one row; its Scan returns ErrNoRows when
	// there is none.
	QueryRow(ctx context.Context, query string, args ...any) Row
}

// Row is a query's one row.
type Row interface {
	Scan(dest ...any) error
}

// ErrNoRows is what a Tx's Row returns when the query found no row.
var ErrNoRows = errors.New("sqlstore: no rows")

// Numbered rewrites SQLite's `?` placeholders into PostgreSQL's `$1`, `$2`…
// The shared statements carry no `?` inside a literal.
func Numbered(query string) string {
	var b strings.Builder
	b.Grow(len(query) + 8)
	n := 0
	for i := 0; i < len(query); i++ {
		if query[i] != '?' {
			b.WriteByte(query[i])
			continue
		}
		n++
		b.WriteByte('$')
		b.WriteString(strconv.Itoa(n))
	}
	return b.String()
}
