package ews

import (
	"fmt"
	"testing"
	"time"

	"github.com/mailpush/mailpush"
)

func TestFetchLimiter(t *testing.T) {
	t0 := time.Date(2026, 11, 22, 8, 0, 0, 0, time.UTC)
	l := newFetchLimiter(6, 3) // 6 a minute: one token every 10 s
	for i, want := range []bool{true, true, true, false, false} {
		if got := l.allow("m1", t0); got != want {
			t.Errorf("call %d at once: %v, want %v", i, got, want)
		}
	}
	if !l.allow("m2", t0) {
		t.Error("another mailbox shares the first one's bucket")
	}
	if l.allow("m1", t0.Add(9*time.Second)) {
		t.Error("a token came back before 10 s")
	}
	if !l.allow("m1", t0.Add(10*time.Second)) || l.allow("m1", t0.Add(10*time.Second)) {
		t.Error("after 10 s exactly one token should be back")
	}
	if got := l.allow("m1", t0.Add(time.Hour)) && l.allow("m1", t0.Add(time.Hour)) && l.allow("m1", t0.Add(time.Hour)) && !l.allow("m1", t0.Add(time.Hour)); !got {
		t.Error("after an hour the bucket should hold exactly the burst")
	}
	big := newFetchLimiter(1, 1)
	for i := range maxFetchBuckets + 10 {
		big.allow(fmt.Sprint(i), t0)
	}
	if n := big.buckets.Len(); n > maxFetchBuckets {
		t.Errorf("%d buckets, want at most %d", n, maxFetchBuckets)
	}
}

func TestReplayed(t *testing.T) {
	mb := &mailpush.Mailbox{SubscriptionID: "sub", Watermark: "wm-2"}
	n := func(sub, prev string, wms ...string) *Notification {
		out := &Notification{SubscriptionID: sub, PreviousWatermark: prev}
		for _, w := range wms {
			out.Events = append(out.Events, Event{Type: NewMailEvent, Watermark: w})
		}
		return out
	}
	for _, tc := range []struct {
		name string
		n    *Notification
		want bool
	}{
		{"same last watermark", n("sub", "wm-1", "wm-2"), true},
		{"new watermark", n("sub", "wm-2", "wm-3"), false},
		{"another subscription", n("other", "wm-1", "wm-2"), false},
		{"no watermark", n("sub", "wm-1"), false},
	} {
		if got := replayed(mb, tc.n); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
	if replayed(&mailpush.Mailbox{Watermark: "wm-2"}, n("", "", "wm-2")) {
		t.Error("an unbound mailbox reports a replay")
	}
}

func TestCallbackExpiry(t *testing.T) {
	now := time.Now()
	s := &Source{Clock: mailpush.SystemClock{}}
	for _, tc := range []struct {
		maxAge time.Duration
		issued time.Time
		want   bool
	}{
		{0, now.Add(-DefaultCallbackMaxAge + time.Hour), false},
		{0, now.Add(-DefaultCallbackMaxAge - time.Hour), true},
		{time.Hour, now.Add(-2 * time.Hour), true},
		{time.Hour, now.Add(-time.Minute), false},
		{-1, now.Add(-10 * DefaultCallbackMaxAge), false},
	} {
		s.CallbackMaxAge = tc.maxAge
		if got := s.expired(mailpush.CallbackToken{IssuedAt: tc.issued.Unix()}); got != tc.want {
			t.Errorf("maxAge %v, issued %v ago: expired %v, want %v", tc.maxAge, now.Sub(tc.issued), got, tc.want)
		}
	}
}

// BenchmarkFetchLimiter is the cost a notification pays for the per-mailbox
// fetch bucket, over 100,000 mailboxes, from parallel goroutines.
func BenchmarkFetchLimiter(b *testing.B) {
	l := newFetchLimiter(DefaultFetchRate, DefaultFetchBurst)
	ids := make([]string, 100_000)
	for i := range ids {
		ids[i] = fmt.Sprintf("mailbox-%06d", i)
	}
	t0 := time.Now()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			l.allow(ids[i%len(ids)], t0.Add(time.Duration(i)*time.Millisecond))
			i += 7919
		}
	})
}
