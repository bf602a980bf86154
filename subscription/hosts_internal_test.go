package subscription

import (
	"fmt"
	"testing"
	"time"
)

func TestHostBookDead(t *testing.T) {
	t0 := time.Unix(1_000_000, 0)
	r := HostRule{MinSubscriptions: 5, Silence: time.Minute, Overdue: 3, Frequency: 5 * time.Minute}
	fill := func(b *hostBook, host string, n int, at func(i int) time.Time) {
		for i := range n {
			b.heard(host, fmt.Sprintf("%s-%d", host, i), at(i))
		}
	}
	// Status events in one burst at t0: a healthy host is then silent until
	// t0+5m. Neither the silence alone nor the burst is taken for death.
	b := newHostBook(100)
	fill(b, "burst", 10, func(int) time.Time { return t0 })
	if d := b.dead(t0.Add(4*time.Minute+59*time.Second), r); len(d) != 0 {
		t.Fatalf("burst host dead after 4m59s of expected silence: %+v", d)
	}
	if d := b.dead(t0.Add(5*time.Minute+59*time.Second), r); len(d) != 0 {
		t.Fatalf("burst host dead before its status events are a minute late: %+v", d)
	}
	d := b.dead(t0.Add(6*time.Minute), r)
	if len(d) != 1 || len(d[0].mailboxes) != 10 || !d[0].lastHeard.Equal(t0) {
		t.Fatalf("dead = %+v, want the burst host with its 10 mailboxes", d)
	}
	if b.size != 0 || len(b.hosts) != 0 {
		t.Errorf("a dead host's mailboxes stay in the book: size %d", b.size)
	}

	// Status events spread over the StatusFrequency: dead one minute after
	// the host stopped, as soon as 3 are a minute late.
	b = newHostBook(100)
	fill(b, "spread", 60, func(i int) time.Time { return t0.Add(time.Duration(i) * 5 * time.Second) }) // t0 … t0+4m55s
	stop := t0.Add(5 * time.Minute)
	if d := b.dead(stop.Add(59*time.Second), r); len(d) != 0 {
		t.Fatalf("dead before hostSilence: %+v", d)
	}
	if d := b.dead(stop.Add(70*time.Second), r); len(d) != 1 || len(d[0].mailboxes) != 60 {
		t.Fatalf("dead = %+v, want the spread host with 60 mailboxes", d)
	}

	// Too few subscriptions: never the host rule; silent ones age out.
	b = newHostBook(100)
	fill(b, "small", 4, func(int) time.Time { return t0 })
	if d := b.dead(t0.Add(9*time.Minute), r); len(d) != 0 {
		t.Fatalf("small host dead: %+v", d)
	}
	b.dead(t0.Add(11*time.Minute), r)
	if b.size != 0 {
		t.Errorf("mailboxes silent for 2×StatusFrequency stay in the book: size %d", b.size)
	}

	// Bounded.
	b = newHostBook(3)
	fill(b, "full", 10, func(int) time.Time { return t0 })
	if b.size != 3 || len(b.hosts["full"].mailboxes) != 3 {
		t.Errorf("book holds %d mailboxes, want at most 3", b.size)
	}
}
