package pipeline

import (
	"context"
	"sync"
	"time"

	"github.com/mailpush/mailpush"
)

// maxGroupCommit bounds the pushes written in one transaction; more waiting
// go in the next one.
const maxGroupCommit = 4096

// groupCommit writes the pushes of concurrent HandleEvent calls to the
// outbox in one transaction, as databases group their log flushes: SQLite
// has a single writer, so one transaction for a hundred events costs little
// more than one for a single event. No goroutine of its own: the first
// caller to find no write in progress becomes the leader, writes what is
// waiting, then hands the lead to the first caller that arrived meanwhile.
// Every caller returns only once its own pushes are committed (or failed).
type groupCommit struct {
	store mailpush.Outbox

	mu      sync.Mutex
	busy    bool
	waiting []*commitReq
}

type commitReq struct {
	pushes []*mailpush.Push
	done   chan commitResult // buffered: the leader never blocks on it
}

type commitResult struct {
	err  error
	lead bool // no result yet: the caller leads the next commit
}

func (g *groupCommit) do(ctx context.Context, pushes []*mailpush.Push) error {
	r := &commitReq{pushes: pushes, done: make(chan commitResult, 1)}
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

// lead commits one group: the waiting requests, up to maxGroupCommit pushes
// (always at least one request). Its caller's request is among them.
func (g *groupCommit) lead(ctx context.Context) {
	g.mu.Lock()
	n, size := 0, 0
	for n < len(g.waiting) && (n == 0 || size+len(g.waiting[n].pushes) <= maxGroupCommit) {
		size += len(g.waiting[n].pushes)
		n++
	}
	group := g.waiting[:n:n]
	g.waiting = g.waiting[n:]
	g.mu.Unlock()

	all := group[0].pushes
	if len(group) > 1 {
		all = make([]*mailpush.Push, 0, size)
		for _, r := range group {
			all = append(all, r.pushes...)
		}
	}
	// The commit serves other callers too: one caller's cancellation must
	// not fail theirs.
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	err := g.store.EnqueuePushes(cctx, all)
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
