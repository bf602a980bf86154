package ews

import (
	"fmt"
	"testing"
	"time"
)

// The holder of one mailbox's callback URL floods notifications: its
// mailbox keeps only its newest plans, and every other mailbox's fetch is
// still planned.
func TestOneMailboxCannotFillThePendingFetches(t *testing.T) {
	var p pendingFetches
	at := time.Date(2026, 12, 1, 8, 0, 0, 0, time.UTC)
	for seq := int64(1); seq <= 10*maxPendingFetches/maxPendingPerMailbox; seq++ {
		p.put("flooded", seq, fetchPlan{itemID: fmt.Sprint(seq), at: at})
	}
	if got := len(p.m["flooded"]); got != maxPendingPerMailbox {
		t.Fatalf("the flooded mailbox keeps %d plans, want %d", got, maxPendingPerMailbox)
	}
	if p.n != maxPendingPerMailbox {
		t.Fatalf("the table counts %d plans, want %d", p.n, maxPendingPerMailbox)
	}
	last := int64(10 * maxPendingFetches / maxPendingPerMailbox)
	if f, ok := p.take("flooded", last); !ok || f.itemID != fmt.Sprint(last) {
		t.Fatalf("the newest plan of the flooded mailbox is gone (%v, %q)", ok, f.itemID)
	}
	if _, ok := p.take("flooded", 1); ok {
		t.Fatal("the oldest plan was kept over newer ones")
	}
	// With the mailbox full again, a plan older than every kept one is not
	// taken in at all.
	p.put("flooded", last, fetchPlan{at: at})
	p.put("flooded", 2, fetchPlan{at: at})
	if _, ok := p.take("flooded", 2); ok {
		t.Fatal("a stale plan pushed out a newer one")
	}
	p.put("victim", 1, fetchPlan{itemID: "v", at: at})
	if f, ok := p.take("victim", 1); !ok || f.itemID != "v" {
		t.Fatal("another mailbox's fetch was not planned beside the flood")
	}
}

// A full table of fresh plans refuses a new one (that event resolves from
// the credential cache); once the old ones pass the TTL, the next sweep
// frees room.
func TestAFullTableIsSweptForOldPlans(t *testing.T) {
	var p pendingFetches
	at := time.Date(2026, 12, 1, 8, 0, 0, 0, time.UTC)
	for i := 0; i < maxPendingFetches; i++ {
		p.put(fmt.Sprint("mb", i), 1, fetchPlan{at: at})
	}
	p.put("late", 1, fetchPlan{at: at.Add(time.Second)})
	if _, ok := p.take("late", 1); ok {
		t.Fatal("a full table of fresh plans took one more")
	}
	p.put("later", 1, fetchPlan{itemID: "l", at: at.Add(pendingFetchTTL + pendingFetchSweep + time.Second)})
	if f, ok := p.take("later", 1); !ok || f.itemID != "l" {
		t.Fatal("plans older than the TTL were not swept to make room")
	}
	if p.n != 0 {
		t.Fatalf("%d plans left after the sweep, want 0", p.n)
	}
}
