package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"runtime"
	"sync"
	"time"
)

// The savepoint statements, prepared once at Open: a write of a group in a
// savepoint runs two of them, and SQLite parsed them every time.
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
// One caller's write that fails is undone alone and only its caller sees the
// error; a failed commit fails them all.
//
// Undoing one write alone takes a SAVEPOINT around it, and a savepoint
// keeps a copy of every page the write changes (SQLite's sub-journal): in
// memory up to 64 KiB, then in a temporary file, one write(2) per page. A
// registration changes 9 to 20 pages (its rows and their indexes, the
// tenant's and the mailbox's counts), so savepoints cost a tenth of the
// server's CPU in the registrations bench. Writes that may run again
// (groupedRegistration) therefore run bare while only such writes
// precede them in the transaction; when one of them fails, the transaction
// is rolled back and the writes before it run again, this time each in its
// savepoint. The first write of a transaction needs no savepoint either:
// when it fails, the transaction holds nothing else.
//
// A commit costs about the same for one registration as for ten (the WAL
// frames of the same few pages, the locks), but on two cores a group took
// only the two or three registrations that had reached the store while the
// one before committed: the others were ready to run behind the leader, a
// few microseconds from their own write. So the leader of registrations
// first lets the goroutines ready to run go (runtime.Gosched, no timed
// wait): groups grew to about nine and the server's CPU per registration
// fell by a sixth. Other writes (an event's acknowledgement) lead at once.
//
// No goroutine of its own: the first caller to find no group in progress
// leads it, then hands the lead to the first caller that arrived meanwhile.
type groupCommit struct {
	mu      sync.Mutex
	busy    bool
	waiting []*groupWrite
}

type groupWrite struct {
	fn func(ctx context.Context, tx *sql.Tx) error
	// rerun: fn may run again in a new transaction after its first was
	// rolled back, and keeps nothing from a run that was not committed.
	rerun bool
	// gather: as leader, let the goroutines ready to run reach the group
	// first.
	gather bool
	done   chan groupResult // buffered: the leader never blocks on it
}

type groupResult struct {
	err  error
	lead bool // no result yet: the caller leads the next group
}

// grouped runs fn in a write transaction shared with concurrent callers and
// returns once that transaction committed (or fn failed). fn runs once.
func (s *Store) grouped(ctx context.Context, fn func(ctx context.Context, tx *sql.Tx) error) error {
	return s.group.run(ctx, s, &groupWrite{fn: fn})
}

// groupedRegistration is grouped for a registration's write: fn may run
// more than once, each time in a new transaction after the one before was
// rolled back, and only its last run is committed (it saves the write its
// savepoint); its leader gathers the registrations ready to run.
func (s *Store) groupedRegistration(ctx context.Context, fn func(ctx context.Context, tx *sql.Tx) error) error {
	return s.group.run(ctx, s, &groupWrite{fn: fn, rerun: true, gather: true})
}

func (g *groupCommit) run(ctx context.Context, s *Store, w *groupWrite) error {
	w.done = make(chan groupResult, 1)
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
	if w.gather {
		runtime.Gosched()
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
	commitErr := s.runGroup(cctx, group, errs)
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

// runGroup runs group's writes in one transaction and commits it, setting
// errs[i] to the error of the write group[i]; it returns the error that
// failed them all.
func (s *Store) runGroup(ctx context.Context, group []*groupWrite, errs []error) error {
	release, err := s.order.acquire(ctx, true)
	if err != nil {
		return err
	}
	defer release()
	var tx *sql.Tx
	defer func() {
		if tx != nil {
			tx.Rollback()
		}
	}()
	// The writes' statements run without a done channel: for a statement
	// whose context has one, the driver starts a goroutine to interrupt it
	// and installs a progress handler (2-3 % of the server's CPU in the
	// registrations bench, on the one writer). ctx still bounds the
	// transaction: the wait for the writer, BEGIN, and the commit; the
	// statements themselves do not wait (the transaction holds SQLite's
	// write lock from BEGIN IMMEDIATE).
	sctx := context.WithoutCancel(ctx)
	queue := make([]int, len(group)) // the writes still to run, by index
	for i := range queue {
		queue[i] = i
	}
	var ok []int     // the writes that succeeded in tx
	allRerun := true // every write in ok may run again
	saving := false  // since a rollback undid others' writes: a savepoint for each
	for q := 0; q < len(queue); q++ {
		i := queue[q]
		w := group[i]
		if tx == nil {
			if tx, err = s.w.BeginTx(ctx, nil); err != nil {
				return err
			}
		}
		if len(ok) == 0 || !saving && allRerun && w.rerun {
			if errs[i] = w.fn(sctx, tx); errs[i] == nil {
				ok = append(ok, i)
				allRerun = allRerun && w.rerun
				continue
			}
			// Undo it with the whole transaction; the writes that
			// succeeded in it (all of them may run again) run again.
			if err := tx.Rollback(); err != nil {
				return err
			}
			tx = nil
			saving = saving || len(ok) > 0
			queue = append(ok, queue[q+1:]...)
			ok, allRerun, q = nil, true, -1
			continue
		}
		if _, err := s.txStmt(sctx, tx, qSavepoint).ExecContext(sctx); err != nil {
			return err
		}
		if errs[i] = w.fn(sctx, tx); errs[i] != nil {
			if _, err := s.txStmt(sctx, tx, qRollbackTo).ExecContext(sctx); err != nil {
				return err
			}
		} else {
			ok = append(ok, i)
			allRerun = allRerun && w.rerun
		}
		if _, err := s.txStmt(sctx, tx, qRelease).ExecContext(sctx); err != nil {
			return err
		}
	}
	if len(ok) == 0 {
		return nil
	}
	err = tx.Commit()
	tx = nil
	return err
}
