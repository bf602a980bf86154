package sqlite

import (
	"context"
	"database/sql"
	"strconv"
	"strings"
	"sync"
)

// stmtCache keeps the writer's hot statements (the outbox's) prepared:
// SQLite parsing and planning a statement costs about as much as running a
// small one, and the outbox runs the same few thousands of times a second.
// Statements are prepared on the single writer connection, so a
// transaction's tx.StmtContext reuses them as they are.
//
// The reader's hot statements (the pipeline's lookup of a mailbox's
// devices for every event) are kept prepared too, on the reader pool:
// database/sql prepares such a statement again on each connection it runs
// on, once.
type stmtCache struct {
	mu    sync.Mutex
	stmts map[string]*sql.Stmt
	reads map[string]*sql.Stmt
}

// prepare prepares queries on the writer. It must run outside any
// transaction: the writer has one connection, which a transaction holds.
func (c *stmtCache) prepare(ctx context.Context, w *sql.DB, queries ...string) error {
	return c.prepareOn(ctx, w, &c.stmts, queries)
}

// prepareReads prepares queries on the reader pool.
func (c *stmtCache) prepareReads(ctx context.Context, r *sql.DB, queries ...string) error {
	return c.prepareOn(ctx, r, &c.reads, queries)
}

func (c *stmtCache) prepareOn(ctx context.Context, db *sql.DB, into *map[string]*sql.Stmt, queries []string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if *into == nil {
		*into = map[string]*sql.Stmt{}
	}
	for _, q := range queries {
		st, err := db.PrepareContext(ctx, q)
		if err != nil {
			return err
		}
		(*into)[q] = st
	}
	return nil
}

// read runs a read-only query on the reader pool, prepared once when Open
// prepared it.
func (s *Store) read(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	s.cache.mu.Lock()
	st, ok := s.cache.reads[query]
	s.cache.mu.Unlock()
	if !ok {
		return s.r.QueryContext(ctx, query, args...)
	}
	return st.QueryContext(ctx, args...)
}

// stmt returns query prepared for tx: the cached statement when Open
// prepared it, otherwise one prepared in tx (closed with it).
func (s *Store) stmt(ctx context.Context, tx *sql.Tx, query string) (*sql.Stmt, error) {
	s.cache.mu.Lock()
	st, ok := s.cache.stmts[query]
	s.cache.mu.Unlock()
	if !ok {
		return tx.PrepareContext(ctx, query)
	}
	return tx.StmtContext(ctx, st), nil
}

// txStmt is stmt for statements that Open prepared (it cannot fail then:
// the cached statement is bound to tx).
func (s *Store) txStmt(ctx context.Context, tx *sql.Tx, query string) *sql.Stmt {
	st, err := s.stmt(ctx, tx, query)
	if err != nil {
		panic("sqlite: statement not prepared at Open: " + query)
	}
	return st
}

func (c *stmtCache) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, st := range c.stmts {
		st.Close()
	}
	for _, st := range c.reads {
		st.Close()
	}
	c.stmts, c.reads = nil, nil
}

// idList encodes IDs as a JSON array, for "IN (SELECT value FROM
// json_each(?))": one statement text whatever the number of IDs.
func idList(ids []int64) string {
	var b strings.Builder
	b.WriteByte('[')
	for i, id := range ids {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.FormatInt(id, 10))
	}
	b.WriteByte(']')
	return b.String()
}
