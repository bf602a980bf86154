package ews

import (
	"context"
	"sync"
	"time"

	"github.com/mailpush/mailpush"
)

// Defaults of host-level dead-server detection.
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

// hostRule is when a host counts as dead.
type hostRule struct {
	minSubscriptions int           // active subscriptions a host needs for the rule
	silence          time.Duration // nothing from the host for this long…
	overdue          int           // …and this many status events late by silence
	frequency        time.Duration // StatusFrequency
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
// r.overdue subscriptions of a host with at least r.minSubscriptions
// active ones missed theirs, and the host sent nothing at all for
// r.silence, the host has lost them all (restarted or unreachable): every
// active subscription on it is dead now, not after 2×StatusFrequency each.
// Deliberately not a rule on the host's notification rate alone
// (StatusFrequency / active subscriptions): subscriptions made in a burst
// (registration wave, mass resubscription) send their status events in a
// burst too, and a healthy host then stays silent for most of every
// StatusFrequency.
func (b *hostBook) dead(now time.Time, r hostRule) []deadHost {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []deadHost
	for host, h := range b.hosts {
		for id, at := range h.mailboxes {
			if now.Sub(at) > 2*r.frequency {
				delete(h.mailboxes, id)
				b.size--
			}
		}
		if len(h.mailboxes) == 0 {
			delete(b.hosts, host)
			continue
		}
		if len(h.mailboxes) < r.minSubscriptions || now.Sub(h.last) < r.silence {
			continue
		}
		late := 0
		for _, at := range h.mailboxes {
			if now.Sub(at) >= r.frequency+r.silence {
				late++
			}
		}
		if late < r.overdue {
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

// heard records a handled notification for the host-level rule.
func (s *Source) heard(mb *mailpush.Mailbox, serverURL string, now time.Time) {
	if mb.ServerURL != "" {
		serverURL = mb.ServerURL
	}
	if serverURL != "" {
		s.init().hosts.heard(hostOf(serverURL), mb.ID, now)
	}
}

func (s *Source) hostRule() hostRule {
	return hostRule{
		minSubscriptions: orDefault(s.HostMinSubscriptions, DefaultHostMinSubscriptions),
		silence:          orDefaultDuration(s.HostSilence, DefaultHostSilence),
		overdue:          orDefault(s.HostOverdue, DefaultHostOverdue),
		frequency:        s.statusFrequency(),
	}
}

func orDefaultDuration(v, def time.Duration) time.Duration {
	if v <= 0 {
		return def
	}
	return v
}

// CheckHosts applies the host-level rule (see hostBook.dead): every active
// subscription of a dead host is claimed and healed now, exactly as Check
// heals a silent one (same pacing, limits and ErrorServerBusy back-off).
// Hosts with fewer than HostMinSubscriptions active subscriptions are left
// to Check's per-subscription rule. It works from memory and touches the
// store only for the mailboxes it heals.
func (s *Source) CheckHosts(ctx context.Context) (CheckResult, error) {
	st := s.init()
	dead := st.hosts.dead(s.Clock.Now(), s.hostRule())
	if len(dead) == 0 {
		return CheckResult{}, nil
	}
	return s.sweep(ctx, func(jobs chan<- *mailpush.Mailbox) (int, error) {
		n := 0
		for _, d := range dead {
			s.Logger.Warn("Exchange host silent: treating all its subscriptions as dead", "host", d.host,
				"subscriptions", len(d.mailboxes), "silentFor", s.Clock.Now().Sub(d.lastHeard).Round(time.Second))
			for _, id := range d.mailboxes {
				// Heard after the host's last notification means alive:
				// LastEventAt is compared at the store's millisecond precision.
				ok, err := s.claim(ctx, id, d.lastHeard.Truncate(time.Millisecond).Add(time.Millisecond), jobs)
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
