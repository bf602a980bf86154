package sqlite

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mailpush/mailpush/storetest"
)

// TestWriterLeavesCheckpointsToTheCheckpointer: the writer connection never
// checkpoints in a commit (wal_autocheckpoint 0), and the WAL still reaches
// the database file, copied by the checkpointer beside it.
func TestWriterLeavesCheckpointsToTheCheckpointer(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "ck.db")
	s, err := Open(ctx, path, storetest.Keyring(t), storetest.NewClock())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var auto int
	if err := s.w.QueryRowContext(ctx, "PRAGMA wal_autocheckpoint").Scan(&auto); err != nil || auto != 0 {
		t.Fatalf("writer's wal_autocheckpoint = %d, %v; want 0", auto, err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	before := fi.Size()
	if _, err := s.w.ExecContext(ctx, "CREATE TABLE filler (b BLOB)"); err != nil {
		t.Fatal(err)
	}
	// About 4.8 MB: past SQLite's automatic checkpoint of 1,000 pages.
	for range 120 {
		if _, err := s.w.ExecContext(ctx, "INSERT INTO filler VALUES (randomblob(40000))"); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(time.Minute)
	for {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Size() >= before+4_500_000 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("database file %d bytes a minute after 4.8 MB were committed (was %d): the WAL is not checkpointed", fi.Size(), before)
		}
		time.Sleep(10 * time.Millisecond) // polling the file for the condition
	}
}

// TestUrgentWriterGoesFirst: when the writer is released, a waiting urgent
// transaction (the group commit) gets it before routine ones that waited
// longer, and routine ones keep their order.
func TestUrgentWriterGoesFirst(t *testing.T) {
	var o writeOrder
	ctx := context.Background()
	release, err := o.acquire(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var order []string
	var wg sync.WaitGroup
	waiters := func() int {
		o.mu.Lock()
		defer o.mu.Unlock()
		return len(o.urgent) + len(o.routine)
	}
	start := func(name string, urgent bool) {
		want := waiters() + 1
		wg.Go(func() {
			rel, err := o.acquire(ctx, urgent)
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			order = append(order, name)
			mu.Unlock()
			rel()
		})
		for waiters() < want {
			time.Sleep(time.Millisecond) // until the waiter is queued
		}
	}
	start("routine1", false)
	start("routine2", false)
	start("urgent", true)
	// A waiter that gives up leaves the queue.
	cctx, cancel := context.WithCancel(ctx)
	gaveUp := make(chan error)
	go func() {
		_, err := o.acquire(cctx, true)
		gaveUp <- err
	}()
	for waiters() < 4 {
		time.Sleep(time.Millisecond)
	}
	cancel()
	if err := <-gaveUp; err == nil {
		t.Fatal("acquire returned nil after its context ended while the writer was busy")
	}
	release()
	wg.Wait()
	if got := strings.Join(order, " "); got != "urgent routine1 routine2" {
		t.Fatalf("writer handed over in order %q", got)
	}
	if o.busy {
		t.Fatal("writer still busy after every holder released it")
	}
}
