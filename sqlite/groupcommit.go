package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"sync"
	"time"
)

// The savepoint statements, prepared once at Open: each write of a group
// runs two of them, and SQLite parsed them every time.
const (
	qSavepoint  = "SAVEPOINT w"
	qRollbackTo = "ROLLBACK TO w"
	qRelease    = "RELEASE w"
)

var groupStatements = []string{qSavepoint, qRollbackTo, qRelease}

// maxGroupWrites bounds the writes that share one transaction.
const maxGroupWrites = 256

// groupCommit runs the small write transactions of concurrent callers
// (registrations arriving through the API at the same moment) in one SQLite
// transaction: SQLite has a single writer, and the commit (the WAL append
// and its sync) costs far more than a registration's few statements, so
// sharing it is what lets the API take thousands of registrations a second.
// Each caller's writes run inside a SAVEPOINT, so one that fails is undone
// alone and only its caller sees the error; a failed commit fails them all.
// No goroutine of its own: the first caller to find no group in progress
// leads it, then hands the lead to the first caller that arrived meanwhile.
type groupCommit struct {
	mu      sync.Mutex
	busy    bool
	waiting []*groupWrite
}

type groupWrite struct {
	fn   func(ctx context.Context, tx *sql.Tx) error
	done chan groupResult // buffered: the leader never blocks on it
}

type groupResult struct {
	err  error
	lead bool // no result yet: the caller leads the next group
}

// grouped runs fn in a write transaction shared with concurrent callers and
// returns once that transaction committed (or fn failed).
func (s *Store) grouped(ctx context.Context, fn func(ctx context.Context, tx *sql.Tx) error) error {
	g := &s.group
	w := &groupWrite{fn: fn, done: make(chan groupResult, 1)}
	g.mu.Lock()
	g.waiting = append(g.waiting, w)
	if g.busy {
		g.mu.Unlock()
		// No early return on ctx: a waiter may be handed the lead. The
		// leader's transaction is bounded by its own timeout.
		if res := <-w.done; !res.lead {
			return res.err
		}
	} else {
		g.busy = true
		g.mu.Unlock()
	}
	s.leadGroup(ctx)
	return (<-w.done).err
}

// leadGroup commits the waiting writes, up to maxGroupWrites.
func (s *Store) leadGroup(ctx context.Context) {
	g := &s.group
	g.mu.Lock()
	n := min(len(g.waiting), maxGroupWrites)
	group := g.waiting[:n:n]
	g.waiting = g.waiting[n:]
	g.mu.Unlock()

	errs := make([]error, len(group))
	// The transaction serves other callers too: one caller's cancellation
	// must not fail theirs.
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	commitErr := func() error {
		release, err := s.order.acquire(cctx, true)
		if err != nil {
			return err
		}
		defer release()
		tx, err := s.w.BeginTx(cctx, nil)
		if err != nil {
			return err
		}
		defer tx.Rollback()
		for i, w := range group {
			if len(group) == 1 {
				errs[i] = w.fn(cctx, tx)
				if errs[i] != nil {
					return nil
				}
				break
			}
			if _, err := s.txStmt(cctx, tx, qSavepoint).ExecContext(cctx); err != nil {
				return err
			}
			if errs[i] = w.fn(cctx, tx); errs[i] != nil {
				if _, err := s.txStmt(cctx, tx, qRollbackTo).ExecContext(cctx); err != nil {
					return err
				}
			}
			if _, err := s.txStmt(cctx, tx, qRelease).ExecContext(cctx); err != nil {
				return err
			}
		}
		return tx.Commit()
	}()
	cancel()

	g.mu.Lock()
	if len(g.waiting) > 0 {
		g.waiting[0].done <- groupResult{lead: true}
	} else {
		g.busy = false
	}
	g.mu.Unlock()
	for i, w := range group {
		err := errs[i]
		if err == nil && commitErr != nil {
			err = dbError("commit", fmt.Errorf("%w", commitErr))
		}
		w.done <- groupResult{err: err}
	}
}
