package mailpush_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/mailpush/mailpush"
)

func TestBuckets(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 8, 0, 0, 0, time.UTC)
	var b mailpush.Buckets
	for i := range 3 {
		if wait := b.Take("a", 2, 3, t0); wait != 0 {
			t.Fatalf("call %d of a burst of 3: wait %v", i, wait)
		}
	}
	if wait := b.Take("a", 2, 3, t0); wait != 500*time.Millisecond {
		t.Errorf("4th call at once: wait %v, want 500ms (2 per second)", wait)
	}
	if wait := b.Take("b", 2, 3, t0); wait != 0 {
		t.Errorf("another key shares a's bucket: wait %v", wait)
	}
	if wait := b.Take("a", 2, 3, t0.Add(500*time.Millisecond)); wait != 0 {
		t.Errorf("after 500ms a token should be back: wait %v", wait)
	}
	// A lowered rate and burst (a cluster's share) apply at once.
	if wait := b.Take("b", 1, 1, t0); wait != 0 {
		t.Errorf("b holds 2 tokens, clamped to the new burst of 1: wait %v", wait)
	}
	if wait := b.Take("b", 1, 1, t0); wait != time.Second {
		t.Errorf("burst lowered to 1, its token spent: wait %v, want 1s", wait)
	}
	if wait := b.Take("c", 0, 1, t0); wait != 0 {
		t.Errorf("a rate of zero still has its burst: wait %v", wait)
	}
	if wait := b.Take("c", 0, 1, t0.Add(time.Hour)); wait != time.Hour {
		t.Errorf("a rate of zero never refills: wait %v", wait)
	}

	small := mailpush.Buckets{Max: 10}
	for i := range 25 {
		small.Take(fmt.Sprint(i), 1, 1, t0) // each one empty: none can be pruned as full
	}
	if n := small.Len(); n > 10 {
		t.Errorf("%d keys held, want at most Max=10", n)
	}
}
