package subscription

import (
	"context"
	"sync"
	"time"

	"github.com/mailpush/mailpush"
)

// Defaults of the host-level rule (EWS's host-level dead-server detection).
const (
	DefaultHostMinSubscriptions = 20
	DefaultHostSilence          = time.Minute
	DefaultHostOverdue          = 5
	DefaultHostCheckInterval    = 10 * time.Second
)

// hostBook remembers, in memory only, per Exchange host the time of its last
// notification and, per mailbox heard on it, the time of that mailbox's
// last notification. It holds at most max mailboxes (then new ones are left
// to the per-subscription rule); mailboxes silent for 2×StatusFrequency
// leave it (they are the per-subscription rule's). After a restart it is
// empty: a host's clock starts with its first notification.
type hostBook struct {
	mu    sync.Mutex
	max   int
	size  int
	hosts map[string]*hostEntry
}

type hostEntry struct {
	last      time.Time            // the host's last notification
	mailboxes map[string]time.Time // mailbox → its last notification
}

func newHostBook(max int) *hostBook { return &hostBook{max: max, hosts: map[string]*hostEntry{}} }

// heard records a notification of mailboxID from host at now.
func (b *hostBook) heard(host, mailboxID string, now time.Time) {
	if host == "" {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	h := b.hosts[host]
	if h == nil {
		h = &hostEntry{mailboxes: map[string]time.Time{}}
		b.hosts[host] = h
	}
	if now.After(h.last) {
		h.last = now
	}
	if _, ok := h.mailboxes[mailboxID]; !ok {
		if b.size >= b.max {
			return
		}
		b.size++
	}
	h.mailboxes[mailboxID] = now
}

// deadHost is a host found dead and the mailboxes to heal, with the time the
// host was last heard (a mailbox heard later is alive and left alone).
type deadHost struct {
	host      string
	lastHeard time.Time
	mailboxes []string
}

// dead returns the hosts that are dead at now under r, and forgets their
// mailboxes (the resubscriptions' first status events bring them back).
//
// A live Exchange sends each subscription a notification at least every
// StatusFrequency (a StatusEvent when idle). So a subscription not heard
// for StatusFrequency + silence missed its status event. When at least
// r.Overdue subscriptions of a host with at least r.MinSubscriptions
// active ones missed theirs, and the host sent nothing at all for
// r.Silence, the host has lost them all (restarted or unreachable): every
// active subscription on it is dead now, not after 2×StatusFrequency each.
// Deliberately not a rule on the host's notification rate alone
// (StatusFrequency / active subscriptions): subscriptions made in a burst
// (registration wave, mass resubscription) send their status events in a
// burst too, and a healthy host then stays silent for most of every
// StatusFrequency.
func (b *hostBook) dead(now time.Time, r HostRule) []deadHost {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []deadHost
	for host, h := range b.hosts {
		for id, at := range h.mailboxes {
			if now.Sub(at) > 2*r.Frequency {
				delete(h.mailboxes, id)
				b.size--
			}
		}
		if len(h.mailboxes) == 0 {
			delete(b.hosts, host)
			continue
		}
		if len(h.mailboxes) < r.MinSubscriptions || now.Sub(h.last) < r.Silence {
			continue
		}
		late := 0
		for _, at := range h.mailboxes {
			if now.Sub(at) >= r.Frequency+r.Silence {
				late++
			}
		}
		if late < r.Overdue {
			continue
		}
		d := deadHost{host: host, lastHeard: h.last, mailboxes: make([]string, 0, len(h.mailboxes))}
		for id := range h.mailboxes {
			d.mailboxes = append(d.mailboxes, id)
		}
		b.size -= len(h.mailboxes)
		delete(b.hosts, host)
		out = append(out, d)
	}
	return out
}

// HostRule is when a host counts as dead (see hostBook.dead).
type HostRule struct {
	MinSubscriptions int           // active subscriptions a host needs for the rule
	Silence          time.Duration // nothing from the host for this long…
	Overdue          int           // …and this many status events late by Silence
	Frequency        time.Duration // the interval of the source's status events
}

// CheckHosts applies the host-level rule (see hostBook.dead): every active
// subscription of a dead host is claimed and healed now, exactly as Check
// heals a due one (same pacing, limits and back-off). Hosts with fewer than
// HostRule.MinSubscriptions active subscriptions are left to Check's rule.
// It works from memory and touches the store only for the mailboxes it
// heals.
func (e *Engine) CheckHosts(ctx context.Context) (CheckResult, error) {
	st := e.init()
	if e.HostRule.MinSubscriptions <= 0 {
		return CheckResult{}, nil
	}
	dead := st.hosts.dead(e.Clock.Now(), e.HostRule)
	if len(dead) == 0 {
		return CheckResult{}, nil
	}
	return e.sweep(ctx, "its mail-server host went silent", func(jobs chan<- *mailpush.Mailbox) (int, error) {
		n := 0
		for _, d := range dead {
			e.Logger.Warn("mail-server host silent: treating all its subscriptions as dead", "host", d.host,
				"subscriptions", len(d.mailboxes), "silentFor", e.Clock.Now().Sub(d.lastHeard).Round(time.Second))
			for _, id := range d.mailboxes {
				// Heard after the host's last notification means alive:
				// LastEventAt is compared at the store's millisecond precision.
				ok, err := e.claim(ctx, id, d.lastHeard.Truncate(time.Millisecond).Add(time.Millisecond), jobs)
				if err != nil {
					return n, err
				}
				if ok {
					n++
				}
			}
		}
		return n, nil
	})
}
