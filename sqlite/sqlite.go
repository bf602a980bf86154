// Package sqlite is the embedded store: one SQLite file in WAL mode through a
// pure-Go driver (modernc.org/sqlite, so the binary needs no cgo and no
// set-up). Writes go through a single connection, which is how SQLite
// serialises them anyway, so read-modify-write transactions never fail with
// SQLITE_BUSY; reads use a pool and run beside the writer thanks to WAL.
//
// The acknowledgement of a notification (one group commit of event
// inserts) must not wait for the outbox's own work on the same database,
// which shares the machine with a fan-out of thousands of pushes a
// second. Three things keep it off that work's path:
//
//   - writeOrder: when the writer connection is released, a waiting group
//     commit gets it before the outbox's claims and settlements;
//   - checkpointer: the WAL is copied into the database file by a
//     connection of its own, never inside a commit (the writer's
//     wal_autocheckpoint is 0);
//   - Store.bulk: the fan-out's device reads (Recipients) run on
//     connections of their own, with a small page cache, so a
//     notification's lookups never queue behind them and never start by
//     throwing away the hundreds of pages a device read left in its
//     connection's cache (see Store.bulk).
//
// Migrations are embedded SQL files applied in order, each in a transaction,
// and recorded in schema_migrations.
package sqlite

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/mailpush/mailpush"
	_ "modernc.org/sqlite" // registers the "sqlite" driver
)

//go:embed migrations/*.sql
var migrations embed.FS

// Store is the SQLite implementation of mailpush.Store.
type Store struct {
	w, r  *sql.DB
	codec mailpush.StoreCodec
	clock mailpush.Clock
	cache stmtCache
	group groupCommit // registration writes of concurrent callers
	order writeOrder  // the group commit before the outbox's routine writes
	// bulk is the fan-out's device reads' (Recipients) own read-only
	// pool, half the size of r. On r they held readers for a batch's rows
	// while a notification's lookups (tenant, mailbox, audience) waited
	// behind them, and its acknowledgement with them. And they filled the
	// connection's page cache: in WAL mode a reader throws its whole cache
	// away at the start of a read whenever the database changed since its
	// last one (always, while the outbox commits), page by page under the
	// page cache's process-wide lock and the driver's C allocator's; a
	// notification's lookup that came after a device read on the same
	// connection paid for hundreds of pages, and held those locks against
	// every other connection while it did. The bulk connections' cache is
	// small (bulkCacheKiB): a device read touches each page about once, and
	// nothing of it survives to the next read anyway.
	bulk *sql.DB
	// ck is the checkpointer's connection (see checkpointer).
	ck             *sql.DB
	stopCk, ckDone chan struct{}
	closeCk        sync.Once
}

var _ mailpush.Store = (*Store)(nil)

// Open opens (creating if needed) the database file at path and migrates it.
func Open(ctx context.Context, path string, cipher mailpush.FieldCipher, clock mailpush.Clock) (*Store, error) {
	if cipher == nil || clock == nil {
		return nil, errors.New("sqlite: Open needs a cipher and a clock")
	}
	// The file holds sealed tokens and hashes: keep it private. SQLite gives
	// the -wal and -shm files the same mode.
	if f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600); err == nil {
		f.Close()
	}
	q := url.Values{}
	for _, p := range []string{"journal_mode(WAL)", "busy_timeout(10000)", "foreign_keys(1)", "synchronous(NORMAL)"} {
		q.Add("_pragma", p)
	}
	dsn := "file:" + path + "?" + q.Encode()
	// The writer never checkpoints (checkpointer does, beside it).
	w, err := sql.Open("sqlite", dsn+"&_txlock=immediate&_pragma="+url.QueryEscape("wal_autocheckpoint(0)"))
	if err != nil {
		return nil, fmt.Errorf("sqlite: open %s: %w", path, err)
	}
	w.SetMaxOpenConns(1)
	r, err := sql.Open("sqlite", dsn+"&mode=ro")
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("sqlite: open %s: %w", path, err)
	}
	// Every reader stays open: database/sql keeps only 2 idle by default, so
	// under concurrent reads the others were closed and reopened, each
	// reopen paying a connection's set-up and preparing the hot statements
	// again (a fifth of the token read's CPU in the registrations bench).
	readers := max(4, runtime.NumCPU())
	r.SetMaxOpenConns(readers)
	r.SetMaxIdleConns(readers)
	bulk, err := sql.Open("sqlite", dsn+"&mode=ro&_pragma="+url.QueryEscape(fmt.Sprintf("cache_size(-%d)", bulkCacheKiB)))
	if err != nil {
		w.Close()
		r.Close()
		return nil, fmt.Errorf("sqlite: open %s: %w", path, err)
	}
	bulk.SetMaxOpenConns(max(1, readers/2))
	bulk.SetMaxIdleConns(max(1, readers/2))
	ck, err := sql.Open("sqlite", dsn)
	if err != nil {
		w.Close()
		r.Close()
		bulk.Close()
		return nil, fmt.Errorf("sqlite: open %s: %w", path, err)
	}
	ck.SetMaxOpenConns(1)
	s := &Store{w: w, r: r, bulk: bulk, ck: ck, stopCk: make(chan struct{}), ckDone: make(chan struct{}), codec: mailpush.StoreCodec{Cipher: cipher}, clock: clock}
	go s.checkpointer()
	if err := s.migrate(ctx); err != nil {
		s.Close()
		return nil, err
	}
	if err := s.cache.prepareReads(ctx, s.bulk, qRecipients); err != nil {
		s.Close()
		return nil, fmt.Errorf("sqlite: prepare: %w", err)
	}
	if err := s.cache.prepareReads(ctx, s.r, qActiveRegistrations, qMailboxAudience, qMailboxByAddress, qRegistrationByID, qMailboxByID,
		qGateDevice, qTokenByID, qTenantByID, qTenantByName, qTokenAndTenant, qCountRegistrations); err != nil {
		s.Close()
		return nil, fmt.Errorf("sqlite: prepare: %w", err)
	}
	if err := s.cache.prepare(ctx, s.w, slices.Concat(outboxStatements, registerStatements, groupStatements)...); err != nil {
		s.Close()
		return nil, fmt.Errorf("sqlite: prepare: %w", err)
	}
	return s, nil
}

// bulkCacheKiB is the page cache of each bulk connection (Store.bulk).
const bulkCacheKiB = 256

// checkpointInterval is how often checkpointer copies the WAL into the
// database file.
const checkpointInterval = 200 * time.Millisecond

// checkpointer copies the WAL into the database file every
// checkpointInterval, from a connection of its own, until Close. SQLite's
// automatic checkpoint (every 1,000 WAL pages) runs inside the commit of
// whichever write crosses the threshold: copying the pages and syncing the
// file took 60-80 ms on this machine under load, and when that write was a
// group commit of event inserts, every notification in it waited that long
// for its acknowledgement. A PASSIVE checkpoint from another connection
// blocks neither the writer nor the readers; the writer starts the WAL
// over once a checkpoint has copied all of it.
func (s *Store) checkpointer() {
	defer close(s.ckDone)
	t := time.NewTicker(checkpointInterval)
	defer t.Stop()
	for {
		select {
		case <-s.stopCk:
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		// A failure leaves the WAL to the next tick (it grows meanwhile).
		s.ck.ExecContext(ctx, "PRAGMA wal_checkpoint(PASSIVE)")
		cancel()
	}
}

// Close closes the database.
func (s *Store) Close() error {
	s.closeCk.Do(func() { close(s.stopCk) })
	<-s.ckDone
	s.cache.close()
	return errors.Join(s.ck.Close(), s.bulk.Close(), s.r.Close(), s.w.Close())
}

// Ping reports whether the database answers.
func (s *Store) Ping(ctx context.Context) error {
	var one int
	if err := s.r.QueryRowContext(ctx, "SELECT 1").Scan(&one); err != nil {
		return mailpush.WrapError(mailpush.EUnavailable, "the database does not answer", err)
	}
	return nil
}

func (s *Store) migrate(ctx context.Context) error {
	if _, err := s.w.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (version TEXT PRIMARY KEY, applied_at INTEGER NOT NULL)`); err != nil {
		return fmt.Errorf("sqlite: migrate: %w", err)
	}
	names, err := fs.Glob(migrations, "migrations/*.sql")
	if err != nil {
		return err
	}
	sort.Strings(names)
	for _, name := range names {
		version := strings.TrimSuffix(strings.TrimPrefix(name, "migrations/"), ".sql")
		if err := s.applyMigration(ctx, version, name); err != nil {
			return fmt.Errorf("sqlite: migration %s: %w", version, err)
		}
	}
	return nil
}

func (s *Store) applyMigration(ctx context.Context, version, name string) error {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	var n int
	if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM schema_migrations WHERE version = ?`, version).Scan(&n); err != nil {
		return err
	}
	if n > 0 {
		return nil
	}
	body, err := migrations.ReadFile(name)
	if err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, string(body)); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)`, version, s.now()); err != nil {
		return err
	}
	return tx.Commit()
}

func (s *Store) now() int64 { return s.clock.Now().UnixMilli() }

func notFound(what string) error {
	return mailpush.Errorf(mailpush.ENotFound, "%s not found", what)
}

func dbError(op string, err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("sqlite: %s: %w", op, err)
	}
	return mailpush.WrapError(mailpush.EUnavailable, "the database failed", fmt.Errorf("sqlite: %s: %w", op, err))
}

func isUnique(err error) bool {
	return err != nil && strings.Contains(err.Error(), "UNIQUE constraint failed")
}
