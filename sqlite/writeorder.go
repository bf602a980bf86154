package sqlite

import (
	"context"
	"sync"
)

// writeOrder decides which transaction gets the single writer connection
// next, so that an acknowledgement never queues behind the outbox's own
// work. database/sql hands a released connection to a random waiter; with
// up to InFlight batches per tier settling and claiming, a notification's
// event insert (or a registration) could wait behind several of them, and
// the mail server's answer with it. Here the group commit (grouped: event
// inserts, registrations) is urgent and the outbox's claims, settlements
// and device-tier enqueues are routine: when the connection is released,
// the oldest urgent waiter gets it, a routine one only when no urgent one
// waits. Routine writes still run back to back while nothing urgent comes,
// so the fan-out loses nothing; a routine transaction already holding the
// connection is not interrupted (they are short: one batch's settlement
// and the next claim). Other writes (tenants, tokens, sessions, the
// console) are rare and bypass the order; they meet the others at
// database/sql's pool as before.
type writeOrder struct {
	mu      sync.Mutex
	busy    bool
	urgent  []chan struct{}
	routine []chan struct{}
}

// acquire waits for the writer's turn; release must be called once the
// transaction is committed or rolled back.
func (o *writeOrder) acquire(ctx context.Context, urgent bool) (release func(), err error) {
	o.mu.Lock()
	if !o.busy {
		o.busy = true
		o.mu.Unlock()
		return o.release, nil
	}
	turn := make(chan struct{}, 1)
	q := &o.routine
	if urgent {
		q = &o.urgent
	}
	*q = append(*q, turn)
	o.mu.Unlock()
	select {
	case <-turn:
		return o.release, nil
	case <-ctx.Done():
		o.mu.Lock()
		for i, c := range *q {
			if c == turn {
				*q = append((*q)[:i], (*q)[i+1:]...)
				o.mu.Unlock()
				return nil, ctx.Err()
			}
		}
		o.mu.Unlock()
		// The turn was given meanwhile: pass it on.
		<-turn
		o.release()
		return nil, ctx.Err()
	}
}

// release hands the writer to the oldest urgent waiter, else to the oldest
// routine one.
func (o *writeOrder) release() {
	o.mu.Lock()
	defer o.mu.Unlock()
	q := &o.urgent
	if len(*q) == 0 {
		q = &o.routine
	}
	if len(*q) == 0 {
		o.busy = false
		return
	}
	next := (*q)[0]
	*q = (*q)[1:]
	next <- struct{}{}
}
