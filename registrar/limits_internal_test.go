package registrar

import (
	"context"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/mailpush/mailpush"
)

// queued reports how many wait for a global place.
func (o *openers) queued() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.all.waiting)
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %s", what)
		}
		runtime.Gosched()
	}
}

// TestOpenersGlobalOrder: with one global place, a tenant that waits for it
// gets it before the flooding tenant's next opening (places go in arrival
// order, and a tenant queues for a global place only once its own one
// opening is allowed), so B waits for at most A's running opening.
func TestOpenersGlobalOrder(t *testing.T) {
	ctx := context.Background()
	o := newOpeners(1, 4, 64)
	a, b := &mailpush.Tenant{ID: "a", Name: "a"}, &mailpush.Tenant{ID: "b", Name: "b"}
	relA1, err := o.acquire(ctx, a)
	if err != nil {
		t.Fatal(err)
	}
	order := make(chan string, 4)
	releases := map[string]chan func(){"a2": make(chan func(), 1), "a3": make(chan func(), 1), "b1": make(chan func(), 1)}
	for _, who := range []string{"a2", "a3"} {
		go func() {
			rel, err := o.acquire(ctx, a)
			if err != nil {
				t.Error(err)
				return
			}
			order <- who
			releases[who] <- func() { rel(0) }
		}()
	}
	// A's two wait for A's own place; B waits for the global one.
	go func() {
		rel, err := o.acquire(ctx, b)
		if err != nil {
			t.Error(err)
			return
		}
		order <- "b1"
		releases["b1"] <- func() { rel(0) }
	}()
	waitFor(t, "b1 to queue for the global place", func() bool { return o.queued() == 1 })
	relA1(0)
	if who := <-order; who != "b1" {
		t.Fatalf("after A's first opening, %s got the place, want b1", who)
	}
	(<-releases["b1"])()
	next := <-order
	if next != "a2" && next != "a3" {
		t.Fatalf("then %s", next)
	}
	(<-releases[next])()
	last := <-order
	(<-releases[last])()
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.all.held != 0 || len(o.all.waiting) != 0 || len(o.tenants) != 0 {
		t.Errorf("after every release: %d global places held, %d waiting, %d tenants", o.all.held, len(o.all.waiting), len(o.tenants))
	}
}

// TestOpenersGiveUp: a request that stops waiting (its client went away)
// leaves its queue and holds nothing; a release after it frees everything.
func TestOpenersGiveUp(t *testing.T) {
	o := newOpeners(1, 4, 64)
	a, b := &mailpush.Tenant{ID: "a", Name: "a"}, &mailpush.Tenant{ID: "b", Name: "b"}
	relA, err := o.acquire(context.Background(), a)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errs := make(chan error, 2)
	go func() { _, err := o.acquire(ctx, a); errs <- err }() // waits for A's place
	go func() { _, err := o.acquire(ctx, b); errs <- err }() // waits for the global place
	waitFor(t, "both to wait", func() bool {
		o.mu.Lock()
		defer o.mu.Unlock()
		return len(o.all.waiting) == 1 && o.tenants["a"] != nil && len(o.tenants["a"].waiting) == 1
	})
	cancel()
	for range 2 {
		if err := <-errs; mailpush.ErrorCode(err) != mailpush.EUnavailable {
			t.Errorf("a request that gave up: %v, want unavailable", err)
		}
	}
	relA(0)
	relA(0) // a second release does nothing
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.all.held != 0 || len(o.all.waiting) != 0 || len(o.tenants) != 0 {
		t.Errorf("after giving up and releasing: %d global places held, %d waiting, %d tenants", o.all.held, len(o.all.waiting), len(o.tenants))
	}
}

// BenchmarkTakeRate is what the registration rate adds to every Register
// and CheckIn: the tenant's limits (a function of the configuration) and one
// bucket, no store read.
func BenchmarkTakeRate(b *testing.B) {
	s := &Service{Clock: mailpush.SystemClock{}, Quotas: func(*mailpush.Tenant) Quotas {
		return Quotas{Rate: Rate{PerSecond: 1e12, Burst: 1 << 30}}
	}}
	tenants := make([]*mailpush.Tenant, 100)
	for i := range tenants {
		tenants[i] = &mailpush.Tenant{ID: fmt.Sprintf("tenant-%03d", i), Name: fmt.Sprint(i)}
	}
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			if err := s.takeRate(tenants[i%len(tenants)], mailpush.ScopeApp); err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
}
