// Package clocktest provides a manual mailpush.Clock for tests: time stands
// still until the test calls Advance, which fires the timers that fall due,
// one by one in the order of their deadlines. A fake mail server and the
// mailpush under test given the same Clock then share one notion of time,
// and a test that moves it gets the same outcome on every run whatever the
// machine's load: no timer fires on its own.
package clocktest

import (
	"context"
	"sync"
	"time"

	"github.com/mailpush/mailpush"
)

// Clock is a manual clock. The zero value is not usable: call New.
type Clock struct {
	mu      sync.Mutex
	now     time.Time
	seq     uint64
	timers  map[*timer]struct{} // the pending ones
	changed chan struct{}       // closed and replaced when a timer is added
}

var _ mailpush.Clock = (*Clock)(nil)

// New returns a clock set to start.
func New(start time.Time) *Clock {
	return &Clock{now: start, timers: map[*timer]struct{}{}, changed: make(chan struct{})}
}

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

type timer struct {
	c      *Clock
	when   time.Time
	seq    uint64 // ties between equal deadlines go to the older timer
	period time.Duration
	ch     chan time.Time
	fn     func()
}

// NewTimer returns a timer that fires when Advance passes now+d.
func (c *Clock) NewTimer(d time.Duration) (mailpush.Timer, <-chan time.Time) {
	t := &timer{c: c, ch: make(chan time.Time, 1)}
	t.Reset(d)
	return t, t.ch
}

// NewTicker returns a ticker firing every d of the clock's time.
func (c *Clock) NewTicker(d time.Duration) (mailpush.Ticker, <-chan time.Time) {
	if d <= 0 {
		panic("clocktest: non-positive interval for NewTicker")
	}
	t := &timer{c: c, ch: make(chan time.Time, 1), period: d}
	t.Reset(d)
	return ticker{t}, t.ch
}

// AfterFunc calls f, from the goroutine that calls Advance, once Advance
// passes now+d.
func (c *Clock) AfterFunc(d time.Duration, f func()) mailpush.Timer {
	t := &timer{c: c, fn: f}
	t.Reset(d)
	return t
}

func (t *timer) Stop() bool {
	c := t.c
	c.mu.Lock()
	defer c.mu.Unlock()
	_, active := c.timers[t]
	delete(c.timers, t)
	t.drain()
	return active
}

func (t *timer) Reset(d time.Duration) bool {
	c := t.c
	c.mu.Lock()
	defer c.mu.Unlock()
	_, active := c.timers[t]
	t.drain()
	c.seq++
	t.when, t.seq = c.now.Add(d), c.seq
	c.timers[t] = struct{}{}
	close(c.changed)
	c.changed = make(chan struct{})
	return active
}

// drain drops a time sent but not received, as time.Timer does since Go 1.23.
func (t *timer) drain() {
	if t.ch == nil {
		return
	}
	select {
	case <-t.ch:
	default:
	}
}

type ticker struct{ t *timer }

func (k ticker) Stop()                 { k.t.Stop() }
func (k ticker) Reset(d time.Duration) { k.t.period = d; k.t.Reset(d) }

// Advance moves the clock forward by d, firing every timer whose deadline
// falls within, in deadline order, with the clock set to each deadline as it
// fires. Timers made by the fired callbacks fire too if due. It returns the
// new time.
func (c *Clock) Advance(d time.Duration) time.Time {
	c.mu.Lock()
	target := c.now.Add(d)
	c.mu.Unlock()
	for c.fireNext(target) {
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if target.After(c.now) {
		c.now = target
	}
	return c.now
}

// AdvanceNext moves the clock to the earliest pending deadline and fires
// that timer, if it falls within d from now; it reports whether it did.
// Tests use it to let a paced loop run without firing timers further away
// (a fake server's status timers).
func (c *Clock) AdvanceNext(within time.Duration) bool {
	c.mu.Lock()
	target := c.now.Add(within)
	c.mu.Unlock()
	return c.fireNext(target)
}

// fireNext fires the earliest timer due at or before target; it reports
// whether there was one.
func (c *Clock) fireNext(target time.Time) bool {
	c.mu.Lock()
	var next *timer
	for t := range c.timers {
		if t.when.After(target) {
			continue
		}
		if next == nil || t.when.Before(next.when) || t.when.Equal(next.when) && t.seq < next.seq {
			next = t
		}
	}
	if next == nil {
		c.mu.Unlock()
		return false
	}
	if next.when.After(c.now) {
		c.now = next.when
	}
	now := c.now
	if next.period > 0 {
		// A ticker drops the ticks its reader missed, as time.Ticker does.
		next.when = next.when.Add(next.period)
		for !next.when.After(target) {
			next.when = next.when.Add(next.period)
		}
		c.seq++
		next.seq = c.seq
	} else {
		delete(c.timers, next)
	}
	c.mu.Unlock()
	if next.fn != nil {
		next.fn()
	} else {
		select {
		case next.ch <- now:
		default:
		}
	}
	return true
}

// Pending returns the number of timers and tickers waiting to fire.
func (c *Clock) Pending() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.timers)
}

// WaitPending waits until at least n timers are pending (a goroutine under
// test has parked on its timer), or ctx ends.
func (c *Clock) WaitPending(ctx context.Context, n int) error {
	for {
		c.mu.Lock()
		ok, changed := len(c.timers) >= n, c.changed
		c.mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
