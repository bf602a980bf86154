package ews

import (
	"time"

	"github.com/mailpush/mailpush"
)

// Defaults of the per-mailbox fetch limit.
const (
	DefaultFetchRate  = 20      // GetFolder/GetItem calls per minute per mailbox, sustained
	DefaultFetchBurst = 10      // calls a mailbox may make at once
	maxFetchBuckets   = 100_000 // mailboxes tracked
)

// fetchLimiter is a token bucket per mailbox for the mail-server reads that
// notifications trigger (GetFolder for the badge, GetItem for the subject).
// Whoever holds a sealed-mode callback URL can post notifications to it, and
// each could make mailpush call Exchange with the user's credentials: the
// bucket bounds that to FetchBurst at once and FetchRate per minute, however
// many notifications arrive. A notification beyond it is still handled, its
// push goes without the fetched badge or content (a sync signal, itself
// limited per device by push.syncPerHour). Exchange's own notifications stay
// far below the rate (one per mail, and MoreEvents batches are pushed once).
//
// The buckets hold at most maxFetchBuckets mailboxes (mailpush.Buckets says
// which give way). Only mailboxes with a genuine callback URL reach them, so
// no caller can fill them at will.
type fetchLimiter struct {
	rate    float64 // tokens per second
	burst   int
	buckets mailpush.Buckets
}

func newFetchLimiter(perMinute float64, burst int) *fetchLimiter {
	if perMinute <= 0 {
		perMinute = DefaultFetchRate
	}
	if burst <= 0 {
		burst = DefaultFetchBurst
	}
	return &fetchLimiter{rate: perMinute / 60, burst: burst, buckets: mailpush.Buckets{Max: maxFetchBuckets}}
}

// allow takes one token from mailboxID's bucket, if there is one.
func (l *fetchLimiter) allow(mailboxID string, now time.Time) bool {
	return l.buckets.Take(mailboxID, l.rate, l.burst, now) == 0
}

// mayFetch reports whether a notification of mb may read the mail server
// now, and logs when it may not.
func (s *Source) mayFetch(mb *mailpush.Mailbox, op string) bool {
	if s.init().fetch.allow(mb.ID, s.Clock.Now()) {
		return true
	}
	s.Logger.Warn("fetch limit reached: not calling Exchange for this notification", "mailbox", mb.ID, "op", op)
	return false
}

// replayed reports whether n repeats what mb already handled: the same
// subscription, and its last watermark is the one stored. Exchange sends a
// notification again when it did not get our answer (after we stored its
// watermark), and a holder of the callback URL can post one again and
// again: neither deserves a fetch or a second push, so a replay only counts
// as a sign of life. (A forged notification with new watermarks is not a
// replay; the fetch limit bounds those.)
func replayed(mb *mailpush.Mailbox, n *Notification) bool {
	wm := lastWatermark(n)
	return wm != "" && mb.SubscriptionID != "" && n.SubscriptionID == mb.SubscriptionID && wm == mb.Watermark
}
