package main

import (
	"context"
	"testing"
	"time"

	"github.com/mailpush/mailpush/fake/ewsfake"
	"github.com/mailpush/mailpush/subscription"
)

// Host-level dead-server detection, with the default statusFrequency of 5
// minutes (2×StatusFrequency = 10 min) and a fake clock. The thresholds are
// lowered to fit a handful of users: a host needs 5 active subscriptions,
// and 3 of them late by hostSilence (1 min) with their status event. The
// background checks are off: the tests call Check and CheckHosts.
func newHostRuleWorld(t *testing.T, users int) *healWorld {
	t.Helper()
	return newHealWorldOptions(t, users, worldOptions{configure: func(c *Config) {
		c.EWS.StatusFrequency = 5
		c.EWS.HostMinSubscriptions, c.EWS.HostOverdue = 5, 3
	}})
}

// lateBy is how far past every subscription's last status event the clock
// must go for the host rule: StatusFrequency + hostSilence, well before
// 2×StatusFrequency.
const lateBy = 5*time.Minute + time.Minute + time.Second

func (hw *healWorld) checkHosts(t *testing.T) subscription.CheckResult {
	t.Helper()
	return hw.drive(t, hw.main.EWSEngine.CheckHosts)
}

// waitAnswered waits until mailpush has answered OK a notification of each
// user's active subscription: only then has the host rule heard of it
// (Subscribe alone moves LastEventAt, so waitHeard can pass while the first
// status event is still in flight, and a restart then cancels it).
func (hw *healWorld) waitAnswered(t *testing.T) {
	t.Helper()
	waitFor(t, "first notifications answered", func(ctx context.Context) error {
		return hw.exchange.WaitFor(ctx, func(s *ewsfake.Server) bool {
			answered := map[string]bool{}
			for _, cb := range s.Callbacks() {
				if cb.Result == "OK" {
					answered[cb.SubscriptionID] = true
				}
			}
			for _, u := range hw.users {
				sub, ok := hw.activeSub(u)
				if !ok || !answered[sub.ID] {
					return false
				}
			}
			return true
		})
	})
}

func TestHostRuleResubscribesASilentHostAtOnce(t *testing.T) {
	hw := newHostRuleWorld(t, 6)
	hw.waitHeard(t, hw.users...)
	hw.waitAnswered(t)
	hw.exchange.Restart()
	hw.clock.Advance(lateBy)
	if res := hw.check(t); res.Stale != 0 {
		t.Fatalf("Check = %+v: the per-subscription rule must not fire before 2×StatusFrequency", res)
	}
	// A notification in flight at the restart may land after the clock
	// moved: the host then looks live for one more period.
	var sum subscription.CheckResult
	for range 5 {
		res := hw.checkHosts(t)
		sum.Stale += res.Stale
		sum.Resubscribed += res.Resubscribed
		if hw.healed(t) {
			break
		}
		hw.clock.Advance(lateBy)
	}
	if sum.Stale != 6 || sum.Resubscribed != 6 || !hw.healed(t) {
		t.Fatalf("CheckHosts = %+v, healed %v; want all 6 resubscribed", sum, hw.healed(t))
	}
	// Each resubscribed exactly once, and it works as before.
	if n := hw.exchange.Requests("Subscribe"); n != 12 {
		t.Errorf("%d Subscribe requests, want 6 + 6", n)
	}
	for _, u := range hw.users {
		hw.exchange.Deliver(u.address, "After", "Bob", "bob@example.com")
		hw.waitBadge(t, u)
	}
}

func TestHostRuleLeavesSmallHostsToThePerSubscriptionRule(t *testing.T) {
	hw := newHostRuleWorld(t, 3) // fewer than hostMinSubscriptions (5)
	hw.waitHeard(t, hw.users...)
	hw.waitAnswered(t)
	hw.exchange.Restart()
	hw.clock.Advance(lateBy)
	if res := hw.checkHosts(t); res.Stale != 0 {
		t.Fatalf("CheckHosts = %+v on a host with 3 subscriptions, want nothing", res)
	}
	if hw.healed(t) {
		t.Fatal("healed before any rule fired")
	}
	hw.clock.Advance(10*time.Minute - lateBy + time.Second) // past 2×StatusFrequency
	if res := hw.check(t); res.Stale != 3 || res.Resubscribed != 3 {
		t.Fatalf("Check = %+v, want 3 resubscribed by the per-subscription rule", res)
	}
	if !hw.healed(t) {
		t.Fatalf("not healed: %+v", hw.exchange.Subscriptions())
	}
}

func TestHostRuleLeavesALiveHostsSilentMailboxToItsOwnRule(t *testing.T) {
	hw := newHostRuleWorld(t, 6)
	hw.waitHeard(t, hw.users...)
	dead, _ := hw.activeSub(hw.users[0])
	if err := hw.exchange.DropSubscription(dead.ID); err != nil {
		t.Fatal(err)
	}
	t0 := hw.clock.Advance(0)
	hw.clock.Advance(lateBy)
	// The host lives: the others' status events fell due at +5 min.
	hw.waitHeardSince(t, t0.Add(5*time.Minute), hw.users[1:]...)
	if res := hw.checkHosts(t); res.Stale != 0 {
		t.Fatalf("CheckHosts = %+v on a live host, want nothing", res)
	}
	hw.clock.Advance(10*time.Minute - lateBy + time.Second)
	hw.waitHeardSince(t, t0.Add(10*time.Minute), hw.users[1:]...) // and at +10 min
	if res := hw.checkHosts(t); res.Stale != 0 {
		t.Fatalf("CheckHosts = %+v on a live host, want nothing", res)
	}
	if res := hw.check(t); res.Stale != 1 || res.Resubscribed != 1 {
		t.Fatalf("Check = %+v, want only the dropped one resubscribed", res)
	}
	if !hw.healed(t) {
		t.Fatalf("not healed: %+v", hw.exchange.Subscriptions())
	}
}
