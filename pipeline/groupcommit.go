package pipeline

import (
	"context"
	"sync"
	"time"

	"github.com/mailpush/mailpush"
)

// maxGroupCommit bounds the events written in one transaction; more waiting
// go in the next one.
const maxGroupCommit = 1024

// groupCommit writes the events of concurrent HandleEvent calls to the
// outbox in one transaction, as databases group their log flushes: SQLite
// has a single writer, so one transaction for a hundred events costs little
// more than one for a single event. No goroutine of its own: the first
// caller to find no write in progress becomes the leader, writes what is
// waiting, then hands the lead to the first caller that arrived meanwhile.
// Every caller returns only once its own event is committed (or failed).
type groupCommit struct {
	store mailpush.Outbox

	mu      sync.Mutex
	busy    bool
	waiting []*commitReq
}

type commitReq struct {
	event *mailpush.OutboxEvent
	done  chan commitResult // buffered: the leader never blocks on it
}

type commitResult struct {
	err  error
	lead bool // no result yet: the caller leads the next commit
}

func (g *groupCommit) do(ctx context.Context, ev *mailpush.OutboxEvent) error {
	r := &commitReq{event: ev, done: make(chan commitResult, 1)}
	g.mu.Lock()
	g.waiting = append(g.waiting, r)
	if g.busy {
		g.mu.Unlock()
		res := <-r.done
		if !res.lead {
			return res.err
		}
	} else {
		g.busy = true
		g.mu.Unlock()
	}
	g.lead(ctx)
	return (<-r.done).err
}

// lead commits one group: the waiting requests, up to maxGroupCommit
// events. Its caller's request is among them.
func (g *groupCommit) lead(ctx context.Context) {
	g.mu.Lock()
	n := min(len(g.waiting), maxGroupCommit)
	group := g.waiting[:n:n]
	g.waiting = g.waiting[n:]
	g.mu.Unlock()

	all := make([]*mailpush.OutboxEvent, len(group))
	for i, r := range group {
		all[i] = r.event
	}
	// The commit serves other callers too: one caller's cancellation must
	// not fail theirs.
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	err := g.store.EnqueueEvents(cctx, all)
	cancel()

	g.mu.Lock()
	if len(g.waiting) > 0 {
		g.waiting[0].done <- commitResult{lead: true}
	} else {
		g.busy = false
	}
	g.mu.Unlock()
	for _, r := range group {
		r.done <- commitResult{err: err}
	}
}
