package postgres

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/mailpush/mailpush"
)

// What several nodes share besides the tables: a broadcast channel
// (LISTEN/NOTIFY, so that a change made on one node reaches every node's
// caches at once), leadership for work that must run on one node only
// (a session-level advisory lock, released by PostgreSQL the moment the
// holder's connection dies, so a killed node's work moves on by itself), and
// a table of live nodes (heartbeats), so that per-node shares of a cluster
// limit follow the number of nodes.

// Broadcast sends payload to every node listening on channel, this one
// included. PostgreSQL delivers it once the sending transaction commits (here
// at once); a payload must stay under 8000 bytes.
func (s *Store) Broadcast(ctx context.Context, channel, payload string) error {
	if _, err := s.pool.Exec(ctx, `SELECT pg_notify($1, $2)`, s.channel(channel), payload); err != nil {
		return dbError("broadcast", err)
	}
	return nil
}

// channel scopes a channel name to the store's schema, so that deployments
// (or tests) sharing a database do not hear each other.
func (s *Store) channel(name string) string {
	if s.schema == "" {
		return "mailpush_" + name
	}
	return s.schema + "_" + name
}

// Listen calls fn for every payload broadcast on channel until ctx ends. It
// holds one connection of its own and, when that connection fails, connects
// again with a growing pause (capped at retryMax); notifications sent while
// it was away are lost, so it calls fn with the empty payload after every
// reconnection: "anything may have changed, drop what you cached".
func (s *Store) Listen(ctx context.Context, channel string, fn func(payload string)) {
	link := "the broadcast connection (LISTEN " + channel + ")"
	s.links.setDown(link, errNotYet)
	defer s.links.gone(link)
	pause := 100 * time.Millisecond
	const retryMax = 5 * time.Second
	first := true
	for ctx.Err() == nil {
		err := s.listenOnce(ctx, channel, func() {
			s.links.up(link)
			if !first {
				fn("")
			}
			first = false
			pause = 100 * time.Millisecond
		}, fn)
		if ctx.Err() != nil {
			return
		}
		s.links.setDown(link, err)
		s.logger.Warn("lost the broadcast connection; connecting again", "channel", channel, "err", err)
		if mailpush.Sleep(ctx, s.clock, pause) != nil {
			return
		}
		pause = min(2*pause, retryMax)
	}
}

func (s *Store) listenOnce(ctx context.Context, channel string, listening func(), fn func(string)) error {
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return err
	}
	// The connection carries LISTEN state: never hand it back to the pool.
	c := conn.Hijack()
	defer c.Close(context.Background())
	if _, err := c.Exec(ctx, "LISTEN "+pgx.Identifier{s.channel(channel)}.Sanitize()); err != nil {
		return err
	}
	listening()
	for {
		n, err := c.WaitForNotification(ctx)
		if err != nil {
			return err
		}
		fn(n.Payload)
	}
}

// Lead runs fn while this node holds the cluster-wide lock called name, and
// waits for it otherwise; it returns when ctx ends. fn's context is cancelled
// when the lock is lost (its connection failed), so that two nodes never do
// the once-only work at the same time for longer than one check interval.
// A node that dies loses its connection and with it the lock: another node
// takes over at its next try.
func (s *Store) Lead(ctx context.Context, name string, check time.Duration, fn func(ctx context.Context)) {
	key := lockKey(s.schema + "/" + name)
	link := "the leadership connection (" + name + ")"
	defer s.links.gone(link)
	for ctx.Err() == nil {
		err := s.leadOnce(ctx, key, check, func() { s.links.up(link) }, fn)
		if err != nil && ctx.Err() == nil {
			s.links.setDown(link, err)
			s.logger.Warn("leadership check failed", "lock", name, "err", err)
		}
		if mailpush.Sleep(ctx, s.clock, check) != nil {
			return
		}
	}
}

func (s *Store) leadOnce(ctx context.Context, key int64, check time.Duration, asked func(), fn func(context.Context)) error {
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return err
	}
	// A session lock belongs to the connection: it leaves the pool for good.
	c := conn.Hijack()
	defer c.Close(context.Background())
	var got bool
	if err := c.QueryRow(ctx, `SELECT pg_try_advisory_lock($1)`, key).Scan(&got); err != nil {
		return err
	}
	asked() // led here or elsewhere: either way this node takes part
	if !got {
		return nil
	}
	s.logger.Info("this node leads", "lock", key)
	lctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn(lctx)
	}()
	defer func() { cancel(); <-done }()
	t, tick := s.clock.NewTicker(check)
	defer t.Stop()
	for {
		select {
		case <-done:
			return nil
		case <-ctx.Done():
			return nil
		case <-tick:
			pctx, pcancel := context.WithTimeout(ctx, check)
			err := c.Ping(pctx)
			pcancel()
			if err != nil {
				return fmt.Errorf("lost the leadership connection: %w", err)
			}
		}
	}
}

func lockKey(name string) int64 {
	h := fnv.New64a()
	h.Write([]byte(name))
	return int64(h.Sum64())
}

// Heartbeat records that node is alive, now; LiveNodes counts the nodes whose
// heartbeat is younger than within.
func (s *Store) Heartbeat(ctx context.Context, node string) error {
	_, err := s.pool.Exec(ctx, `INSERT INTO nodes (id, seen_at) VALUES ($1, $2) ON CONFLICT (id) DO UPDATE SET seen_at = excluded.seen_at`, node, s.now())
	if err != nil {
		return dbError("heartbeat", err)
	}
	return nil
}

// LiveNodes counts the nodes that sent a heartbeat within the given time.
func (s *Store) LiveNodes(ctx context.Context, within time.Duration) (int, error) {
	var n int
	err := s.pool.QueryRow(ctx, `SELECT count(*) FROM nodes WHERE seen_at >= $1`, s.now()-within.Milliseconds()).Scan(&n)
	if err != nil {
		return 0, dbError("live nodes", err)
	}
	return n, nil
}

// errNotYet is the state of a connection that has not connected yet.
var errNotYet = errors.New("not connected yet")

// links is the state of the store's long-lived connections of its own (a
// broadcast listener, leadership), which the pool's health does not show:
// a node whose broadcast connection is lost misses other nodes' changes
// while its queries still work. A link that has never been up is
// "connecting" (a node that has just started), not "lost": an operator who
// reads "lost" looks for a failure that did not happen.
type links struct {
	mu   sync.Mutex
	down map[string]error // link → why it is down; absent: up (or not run)
	was  map[string]bool  // links that have been up at least once
}

func (l *links) setDown(link string, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.down == nil {
		l.down = map[string]error{}
	}
	l.down[link] = err
}

func (l *links) up(link string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.down, link)
	if l.was == nil {
		l.was = map[string]bool{}
	}
	l.was[link] = true
}

// gone forgets a link that stopped running (its context ended).
func (l *links) gone(link string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.down, link)
	delete(l.was, link)
}

// LinksReady reports whether every long-lived connection the store runs
// (Listen, Lead) is up: nil, or an EUnavailable error naming the ones that
// are down (its message fit for /readyz; the cause, which may name the
// database host, is wrapped for the log): "connecting" for a link that has
// never been up, "lost; reconnecting" for one that was. A link that is down
// connects (again) by itself.
func (s *Store) LinksReady() error {
	s.links.mu.Lock()
	defer s.links.mu.Unlock()
	if len(s.links.down) == 0 {
		return nil
	}
	names := make([]string, 0, len(s.links.down))
	for n := range s.links.down {
		names = append(names, n)
	}
	sort.Strings(names)
	var lost, connecting []string
	causes := make([]error, 0, len(names))
	for _, n := range names {
		causes = append(causes, fmt.Errorf("%s: %w", n, s.links.down[n]))
		if s.links.was[n] {
			lost = append(lost, n)
		} else {
			connecting = append(connecting, n)
		}
	}
	var parts []string
	if len(lost) > 0 {
		parts = append(parts, strings.Join(lost, " and ")+" to the database is lost; reconnecting")
	}
	if len(connecting) > 0 {
		parts = append(parts, strings.Join(connecting, " and ")+" to the database is connecting (not connected since the node started)")
	}
	return mailpush.WrapError(mailpush.EUnavailable, strings.Join(parts, "; "), errors.Join(causes...))
}
