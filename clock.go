package mailpush

import (
	"context"
	"time"
)

// Clock tells the time and makes timers. It is injected (never time.Now or
// time.NewTimer directly) so that tests move time themselves instead of
// sleeping, and so that a fake mail server and mailpush share one notion of
// time. It follows tailscale's tstime.Clock: timers and tickers return a
// small control interface and their channel separately. clocktest.Clock is
// the manual clock for tests.
type Clock interface {
	// Now returns the current time.
	Now() time.Time
	// NewTimer returns a timer that sends the time on the channel once, after d.
	NewTimer(d time.Duration) (Timer, <-chan time.Time)
	// NewTicker returns a ticker that sends the time every d (d > 0).
	NewTicker(d time.Duration) (Ticker, <-chan time.Time)
	// AfterFunc calls f in its own goroutine after d (the manual clock calls
	// it from Advance).
	AfterFunc(d time.Duration, f func()) Timer
}

// Timer is the control of a Clock's timer, as time.Timer's methods: after
// Stop or Reset no stale time is received (Go 1.23 semantics).
type Timer interface {
	Stop() bool
	Reset(d time.Duration) bool
}

// Ticker is the control of a Clock's ticker, as time.Ticker's methods.
type Ticker interface {
	Stop()
	Reset(d time.Duration)
}

// SystemClock is the real clock.
type SystemClock struct{}

var _ Clock = SystemClock{}

// Now returns the current time.
func (SystemClock) Now() time.Time { return time.Now() }

// NewTimer is time.NewTimer.
func (SystemClock) NewTimer(d time.Duration) (Timer, <-chan time.Time) {
	t := time.NewTimer(d)
	return t, t.C
}

// NewTicker is time.NewTicker.
func (SystemClock) NewTicker(d time.Duration) (Ticker, <-chan time.Time) {
	t := time.NewTicker(d)
	return t, t.C
}

// AfterFunc is time.AfterFunc.
func (SystemClock) AfterFunc(d time.Duration, f func()) Timer { return time.AfterFunc(d, f) }

// Sleep waits d on clock, or until ctx ends (then it returns ctx's error).
func Sleep(ctx context.Context, clock Clock, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t, c := clock.NewTimer(d)
	defer t.Stop()
	select {
	case <-c:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
