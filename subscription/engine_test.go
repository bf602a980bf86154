package subscription_test

import (
	"context"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/mailpush/mailpush"
	"github.com/mailpush/mailpush/clocktest"
	"github.com/mailpush/mailpush/subscription"
)

// memStore holds mailboxes in memory: the two calls the engine makes.
type memStore struct {
	mailpush.Store // the engine calls nothing else
	mu             sync.Mutex
	mbs            map[string]*mailpush.Mailbox
	ids            []string
}

func (s *memStore) StaleMailboxes(_ context.Context, src mailpush.Source, before time.Time, limit int) ([]*mailpush.Mailbox, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*mailpush.Mailbox
	for _, id := range s.ids {
		m := s.mbs[id]
		if m.Source == src && m.Status != mailpush.StatusInactive && m.LastEventAt.Before(before) {
			c := *m
			out = append(out, &c)
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].LastEventAt.Before(out[j].LastEventAt) })
	if len(out) > limit {
		out = out[:limit]
	}
	return out, nil
}

func (s *memStore) UpdateMailbox(_ context.Context, id string, fn func(*mailpush.Mailbox) error) (*mailpush.Mailbox, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m, ok := s.mbs[id]
	if !ok {
		return nil, mailpush.Errorf(mailpush.ENotFound, "no mailbox")
	}
	c := *m
	if err := fn(&c); err != nil {
		return nil, err
	}
	*m = c
	return &c, nil
}

// renewer is a Healer that renews on the engine's clock and records when.
type renewer struct {
	clock *clocktest.Clock
	mu    sync.Mutex
	at    []time.Time
}

func (r *renewer) Heal(context.Context, *mailpush.Mailbox) mailpush.HealOutcome {
	r.mu.Lock()
	r.at = append(r.at, r.clock.Now())
	r.mu.Unlock()
	return mailpush.HealResubscribed
}

// wave runs one Check over n subscriptions created in the same instant
// (the worst case: a registration wave or an import) at rate per second,
// driving the manual clock through the engine's pacing; it returns the
// renewal times and when the subscriptions were created.
func wave(t testing.TB, n int, rate float64, dueAfter time.Duration) (*renewer, time.Time) {
	t.Helper()
	created := time.Date(2026, 12, 1, 8, 0, 0, 0, time.UTC)
	clock := clocktest.New(created)
	st := &memStore{mbs: map[string]*mailpush.Mailbox{}}
	for i := range n {
		id := fmt.Sprintf("mb%06d", i)
		st.mbs[id] = &mailpush.Mailbox{ID: id, Source: mailpush.SourceGraph, Status: mailpush.StatusActive, LastEventAt: created}
		st.ids = append(st.ids, id)
	}
	r := &renewer{clock: clock}
	e := &subscription.Engine{Store: st, Source: mailpush.SourceGraph, Healer: r, Logger: slog.New(slog.DiscardHandler), Clock: clock,
		// One worker: the manual clock then stands still between a start
		// and its record (the pacing is shared by all workers anyway).
		DueAfter: dueAfter, Rate: rate, Workers: 1}
	clock.Advance(dueAfter + time.Second)
	done := make(chan subscription.CheckResult)
	go func() {
		res, err := e.Check(context.Background())
		if err != nil {
			t.Error(err)
		}
		done <- res
	}()
	for {
		select {
		case res := <-done:
			if res.Stale != n || res.Resubscribed != n {
				t.Fatalf("Check = %+v, want %d renewed", res, n)
			}
			return r, created
		default:
		}
		// The engine parks on its pacing timer between starts.
		ctx, cancel := context.WithTimeout(context.Background(), time.Millisecond)
		clock.WaitPending(ctx, 1)
		cancel()
		clock.AdvanceNext(time.Minute)
	}
}

// maxPerSecond is the most renewals in any one-second window [t, t+1s).
func maxPerSecond(at []time.Time) int {
	sort.Slice(at, func(i, j int) bool { return at[i].Before(at[j]) })
	most, j := 0, 0
	for i := range at {
		for at[i].Sub(at[j]) >= time.Second {
			j++
		}
		most = max(most, i-j+1)
	}
	return most
}

func TestRenewalsNeverBurstPastTheRate(t *testing.T) {
	const n, rate = 600, 50
	r, _ := wave(t, n, rate, 36*time.Hour)
	if got := maxPerSecond(r.at); got > rate {
		t.Errorf("%d renewals in one second, rate %d", got, rate)
	}
	// Spread, not trickled: n/rate seconds at most, 1.25× with the jitter.
	span := r.at[len(r.at)-1].Sub(r.at[0])
	if span < time.Duration(float64(n-1)/rate*float64(time.Second)) || span > time.Duration(1.25*float64(n)/rate*float64(time.Second)) {
		t.Errorf("%d renewals spread over %v at rate %d", n, span, rate)
	}
}

// BenchmarkRenewalWave: 100,000 Graph subscriptions made in the same
// instant (lifetime 72 h, renewed from half of it) at the default renewal
// rate of 20/s, on the manual clock. Reports the most renewals seen in any
// one second and when the last one ran, in hours after creation (it must be
// before 72 h: then none expires).
func BenchmarkRenewalWave(b *testing.B) {
	for range b.N {
		r, created := wave(b, 100_000, 20, 36*time.Hour)
		b.ReportMetric(float64(maxPerSecond(r.at)), "max_per_s")
		b.ReportMetric(r.at[len(r.at)-1].Sub(created).Hours(), "last_renewal_h")
	}
}
