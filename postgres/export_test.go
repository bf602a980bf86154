package postgres

import "github.com/jackc/pgx/v5/pgxpool"

// Pool is the store's pool, for the tests that must hold its connections.
func (s *Store) Pool() *pgxpool.Pool { return s.pool }
