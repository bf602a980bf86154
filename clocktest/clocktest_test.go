package clocktest_test

import (
	"context"
	"testing"
	"time"

	"github.com/mailpush/mailpush"
	"github.com/mailpush/mailpush/clocktest"
)

var start = time.Date(2026, 12, 1, 8, 0, 0, 0, time.UTC)

func received(c <-chan time.Time) (time.Time, bool) {
	select {
	case t := <-c:
		return t, true
	default:
		return time.Time{}, false
	}
}

func TestTimerFiresOnlyWhenAdvancedPastItsDeadline(t *testing.T) {
	c := clocktest.New(start)
	_, ch := c.NewTimer(time.Minute)
	c.Advance(59 * time.Second)
	if _, ok := received(ch); ok {
		t.Fatal("fired before its deadline")
	}
	if now := c.Advance(2 * time.Second); !now.Equal(start.Add(61 * time.Second)) {
		t.Fatalf("Advance = %v", now)
	}
	at, ok := received(ch)
	if !ok || !at.Equal(start.Add(time.Minute)) {
		t.Fatalf("fired %v at %v, want at the deadline %v", ok, at, start.Add(time.Minute))
	}
	if c.Pending() != 0 {
		t.Fatalf("%d pending after firing", c.Pending())
	}
}

func TestAfterFuncsFireInDeadlineOrderWithTheClockAtEach(t *testing.T) {
	c := clocktest.New(start)
	var got []time.Duration
	for _, d := range []time.Duration{3 * time.Second, time.Second, 2 * time.Second, time.Second} {
		c.AfterFunc(d, func() { got = append(got, c.Now().Sub(start)) })
	}
	// A callback's own timer fires within the same Advance when due.
	c.AfterFunc(500*time.Millisecond, func() {
		c.AfterFunc(time.Second, func() { got = append(got, -c.Now().Sub(start)) })
	})
	c.Advance(10 * time.Second)
	want := []time.Duration{time.Second, time.Second, -1500 * time.Millisecond, 2 * time.Second, 3 * time.Second}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("got %v, want %v", got, want)
		}
	}
}

func TestStopAndResetDropAStaleTime(t *testing.T) {
	c := clocktest.New(start)
	tm, ch := c.NewTimer(time.Second)
	c.Advance(time.Second)
	if tm.Stop() {
		t.Error("Stop of a fired timer reported active")
	}
	if _, ok := received(ch); ok {
		t.Error("a stopped timer's stale time was received")
	}
	if tm.Reset(time.Second) {
		t.Error("Reset of a stopped timer reported active")
	}
	if !tm.Reset(2 * time.Second) {
		t.Error("Reset of a pending timer reported inactive")
	}
	c.Advance(time.Second)
	if _, ok := received(ch); ok {
		t.Error("fired at the deadline it was reset away from")
	}
	c.Advance(time.Second)
	if _, ok := received(ch); !ok {
		t.Error("did not fire at the reset deadline")
	}
}

func TestTickerDropsMissedTicks(t *testing.T) {
	c := clocktest.New(start)
	tk, ch := c.NewTicker(time.Second)
	c.Advance(5 * time.Second)
	if at, ok := received(ch); !ok || !at.Equal(start.Add(time.Second)) {
		t.Fatalf("first tick %v %v", at, ok)
	}
	if _, ok := received(ch); ok {
		t.Fatal("a reader that missed ticks got more than one")
	}
	c.Advance(time.Second)
	if at, ok := received(ch); !ok || !at.Equal(start.Add(6*time.Second)) {
		t.Fatalf("next tick %v %v, want at 6 s", at, ok)
	}
	tk.Stop()
	c.Advance(time.Hour)
	if _, ok := received(ch); ok {
		t.Fatal("a stopped ticker ticked")
	}
}

func TestAdvanceNextFiresOnlyWithin(t *testing.T) {
	c := clocktest.New(start)
	_, near := c.NewTimer(10 * time.Millisecond)
	_, far := c.NewTimer(time.Minute)
	if !c.AdvanceNext(time.Second) {
		t.Fatal("the near timer did not fire")
	}
	if c.AdvanceNext(time.Second) {
		t.Fatal("fired a timer a minute away")
	}
	if _, ok := received(near); !ok {
		t.Fatal("near not received")
	}
	if _, ok := received(far); ok {
		t.Fatal("far received")
	}
	if got := c.Now().Sub(start); got != 10*time.Millisecond {
		t.Fatalf("clock at +%v, want +10ms", got)
	}
}

func TestSleepWaitsForTheClock(t *testing.T) {
	c := clocktest.New(start)
	done := make(chan error)
	go func() { done <- mailpush.Sleep(context.Background(), c, time.Hour) }()
	if err := c.WaitPending(context.Background(), 1); err != nil {
		t.Fatal(err)
	}
	select {
	case <-done:
		t.Fatal("Sleep returned before the clock moved")
	default:
	}
	c.Advance(time.Hour)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := mailpush.Sleep(ctx, c, time.Hour); err == nil {
		t.Fatal("Sleep with an ended context returned nil")
	}
}
