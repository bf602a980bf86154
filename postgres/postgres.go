// Package postgres is the multi-node store: several mailpush nodes share one
// PostgreSQL database (and PostgreSQL's own replication and failover). It
// passes the same conformance suite (storetest) as the embedded sqlite store,
// so a site moves from one to the other without surprises.
//
// It talks to the server through pgx's own interface (github.com/jackc/pgx/v5,
// the maintained PostgreSQL driver for Go) rather than database/sql: a pool
// that every node sizes itself, statements prepared and cached per connection
// automatically, and COPY and LISTEN/NOTIFY where they help.
//
// Migrations are embedded SQL files applied in order, each in a transaction
// that first takes a transaction-level advisory lock, so that several nodes
// starting at once migrate exactly once; they are recorded in
// schema_migrations. Times are Unix milliseconds in bigint columns, as in
// sqlite, so that both stores round times alike.
package postgres

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"sort"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/mailpush/mailpush"
)

//go:embed migrations/*.sql
var migrations embed.FS

// migrationLock is the advisory lock key that serialises migrations between
// nodes ("mailpush" in ASCII, as an int64).
const migrationLock = 0x6d61696c70757368

// Config says how to reach the database.
type Config struct {
	// URL is a libpq connection string or URL, e.g.
	// postgres://mailpush@db.example.com:5432/mailpush?sslmode=verify-full.
	URL string
	// Schema, when set, is the search_path of every connection: several
	// deployments (or tests) can then share one database.
	Schema string
	// MaxConns bounds the pool; 0 means pgx's default (4 or the number of CPUs).
	MaxConns int32
	// Logger receives the store's operator-worthy events (lost broadcast
	// connection, leadership); nil discards them.
	Logger *slog.Logger
}

// Store is the PostgreSQL implementation of mailpush.Store.
type Store struct {
	pool   *pgxpool.Pool
	codec  mailpush.StoreCodec
	clock  mailpush.Clock
	schema string
	logger *slog.Logger
	links  links // the long-lived connections' state (cluster.go)
}

// Open connects to the database and migrates it.
func Open(ctx context.Context, cfg Config, cipher mailpush.FieldCipher, clock mailpush.Clock) (*Store, error) {
	if cipher == nil || clock == nil {
		return nil, errors.New("postgres: Open needs a cipher and a clock")
	}
	pc, err := pgxpool.ParseConfig(cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("postgres: database.url: %w", err)
	}
	if cfg.Schema != "" {
		pc.ConnConfig.RuntimeParams["search_path"] = cfg.Schema
	}
	if cfg.MaxConns > 0 {
		pc.MaxConns = cfg.MaxConns
	}
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		return nil, fmt.Errorf("postgres: connect: %w", err)
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	s := &Store{pool: pool, codec: mailpush.StoreCodec{Cipher: cipher}, clock: clock, schema: cfg.Schema, logger: logger}
	if err := s.migrate(ctx); err != nil {
		pool.Close()
		return nil, err
	}
	return s, nil
}

// Close closes the pool.
func (s *Store) Close() error {
	s.pool.Close()
	return nil
}

// Ping reports whether the database answers.
func (s *Store) Ping(ctx context.Context) error {
	var one int
	if err := s.pool.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil {
		return mailpush.WrapError(mailpush.EUnavailable, "the database does not answer", err)
	}
	return nil
}

func (s *Store) migrate(ctx context.Context) error {
	names, err := fs.Glob(migrations, "migrations/*.sql")
	if err != nil {
		return err
	}
	sort.Strings(names)
	for _, name := range names {
		version := strings.TrimSuffix(strings.TrimPrefix(name, "migrations/"), ".sql")
		if err := s.applyMigration(ctx, version, name); err != nil {
			return fmt.Errorf("postgres: migration %s: %w", version, err)
		}
	}
	return nil
}

func (s *Store) applyMigration(ctx context.Context, version, name string) error {
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, int64(migrationLock)); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (version text PRIMARY KEY, applied_at bigint NOT NULL)`); err != nil {
			return err
		}
		var n int
		if err := tx.QueryRow(ctx, `SELECT count(*) FROM schema_migrations WHERE version = $1`, version).Scan(&n); err != nil {
			return err
		}
		if n > 0 {
			return nil
		}
		body, err := migrations.ReadFile(name)
		if err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, string(body)); err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)`, version, s.now())
		return err
	})
}

func (s *Store) now() int64 { return s.clock.Now().UnixMilli() }

func notFound(what string) error {
	return mailpush.Errorf(mailpush.ENotFound, "%s not found", what)
}

func dbError(op string, err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("postgres: %s: %w", op, err)
	}
	return mailpush.WrapError(mailpush.EUnavailable, "the database failed", fmt.Errorf("postgres: %s: %w", op, err))
}

func pgCode(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code
	}
	return ""
}

func isUnique(err error) bool     { return pgCode(err) == "23505" }
func isForeignKey(err error) bool { return pgCode(err) == "23503" }
