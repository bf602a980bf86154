package pipeline

import (
	"context"
	"sync"
	"time"

	"github.com/mailpush/mailpush"
)

// tier is one of the outbox's two tiers (see the package doc).
type tier int

const (
	tierEvents  tier = iota // one row per event, fanned out in memory
	tierDevices             // one row per push that must wait (retry, order, rate limit)
)

// groupJob is one registration's pushes of a batch, for a worker.
type groupJob struct {
	b *batch
	i int // the group's index in b.groups
}

// group is one registration's pushes of a batch, in outbox (event) order.
type group struct {
	pushes []*mailpush.QueuedPush
	// held (event tier): device pushes of the registration are queued, so
	// these queue behind them instead of being sent.
	held    bool
	settled []mailpush.PushSettlement // by push, once sent
}

// batch is a claimed batch on its way through send and settle.
type batch struct {
	tier   tier
	events []*mailpush.OutboxEvent // event tier: the events fanned out
	size   int                     // events or device pushes claimed
	full   bool                    // the claim took all it could: more may be due
	groups []group
	dead   []mailpush.DeadLetter // event tier: pushes dead before any send
	wg     sync.WaitGroup        // the groups' sends
}

// dispatch hands a batch's groups to the workers (jobs) or, when there are
// none (Process without Start), to a goroutine per group. b.wg ends when
// every group is done. The store never puts a registration in two batches in
// flight of a tier (ClaimPushes skips a push while an earlier one of its
// registration is leased or waiting; ClaimEvents skips an event while an
// earlier one of its mailbox is leased), and an event's push to a registration
// with queued device pushes is queued behind them, so groups of different
// batches never race for one device.
func (p *Pipeline) dispatch(ctx context.Context, b *batch, jobs chan<- groupJob) *batch {
	// The groups' settlements, one array for the batch: each group appends
	// to its own window of it.
	total := 0
	for i := range b.groups {
		total += len(b.groups[i].pushes)
	}
	settled := make([]mailpush.PushSettlement, total)
	off := 0
	for i := range b.groups {
		n := len(b.groups[i].pushes)
		b.groups[i].settled = settled[off : off : off+n]
		off += n
	}
	b.wg.Add(len(b.groups))
	for i := range b.groups {
		if b.groups[i].held {
			b.wg.Done()
			continue
		}
		if jobs != nil {
			jobs <- groupJob{b: b, i: i}
			continue
		}
		// One goroutine per group, each sending only while it holds one
		// of the Workers slots.
		go func() {
			defer b.wg.Done()
			p.sem <- struct{}{}
			defer func() { <-p.sem }()
			d := newSendDeadline(ctx, p.cfg.SendTimeout)
			defer d.close()
			b.groups[i].settled = p.sendGroup(d, b.groups[i].pushes, b.groups[i].settled)
		}()
	}
	return b
}

// work sends the groups it receives until jobs is closed.
func (p *Pipeline) work(ctx context.Context, jobs <-chan groupJob) {
	d := newSendDeadline(ctx, p.cfg.SendTimeout)
	defer d.close()
	for j := range jobs {
		g := &j.b.groups[j.i]
		g.settled = p.sendGroup(d, g.pushes, g.settled)
		j.b.wg.Done()
	}
}

// devicePushes groups claimed device pushes by registration, in outbox order.
func devicePushes(pushes []*mailpush.QueuedPush) *batch {
	b := &batch{tier: tierDevices, size: len(pushes)}
	g := newGrouper(len(pushes))
	for _, q := range pushes {
		g.add(b, q, false)
	}
	g.finish(b)
	return b
}

// grouper groups a batch's pushes by registration, keeping their order, with
// one allocation for every group's list of pushes instead of one (or more)
// per group.
type grouper struct {
	index  map[string]int32 // registration → group
	of     []int32          // the group of each push added
	pushes []*mailpush.QueuedPush
}

func newGrouper(n int) *grouper {
	return &grouper{index: make(map[string]int32, n), of: make([]int32, 0, n), pushes: make([]*mailpush.QueuedPush, 0, n)}
}

// add puts q in its registration's group of b, making the group (held or
// not) when it is the registration's first push.
func (g *grouper) add(b *batch, q *mailpush.QueuedPush, held bool) {
	i, ok := g.index[q.Push.RegistrationID]
	if !ok {
		i = int32(len(b.groups))
		g.index[q.Push.RegistrationID] = i
		b.groups = append(b.groups, group{held: held})
	}
	g.of = append(g.of, i)
	g.pushes = append(g.pushes, q)
}

// finish gives each group of b its pushes, in the order they were added,
// as windows of one array.
func (g *grouper) finish(b *batch) {
	count := make([]int, len(b.groups))
	for _, i := range g.of {
		count[i]++
	}
	all := make([]*mailpush.QueuedPush, len(g.pushes))
	off := 0
	for i := range b.groups {
		b.groups[i].pushes = all[off : off : off+count[i]]
		off += count[i]
	}
	for k, q := range g.pushes {
		gr := &b.groups[g.of[k]]
		gr.pushes = append(gr.pushes, q)
	}
}

// deviceSettlements waits for a device batch's sends and returns their outcomes.
func (b *batch) deviceSettlements() []mailpush.PushSettlement {
	b.wg.Wait()
	all := make([]mailpush.PushSettlement, 0, b.size)
	for _, g := range b.groups {
		all = append(all, g.settled...)
	}
	return all
}

// claim leases the next batch of a tier and dispatches it; nil when nothing
// is due.
func (p *Pipeline) claim(ctx context.Context, t tier, jobs chan<- groupJob) (*batch, error) {
	now := p.cfg.Clock.Now()
	if t == tierEvents {
		limit := p.eventLimit()
		evs, err := p.cfg.Store.ClaimEvents(ctx, now, limit, p.cfg.Lease)
		if err != nil || len(evs) == 0 {
			return nil, err
		}
		b := p.fanOut(ctx, evs)
		b.full = len(evs) >= limit
		return p.dispatch(ctx, b, jobs), nil
	}
	pushes, err := p.cfg.Store.ClaimPushes(ctx, now, p.cfg.BatchSize, p.cfg.Lease)
	if err != nil || len(pushes) == 0 {
		return nil, err
	}
	b := devicePushes(pushes)
	b.full = len(pushes) >= p.cfg.BatchSize
	return p.dispatch(ctx, b, jobs), nil
}

// settleNext settles a batch once its sends are done and, when next is set,
// claims and dispatches the next batch of its tier, in the same transaction
// when the store can. A failed settlement leaves the batch leased: it is
// sent again when the lease ends (at least once).
func (p *Pipeline) settleNext(ctx context.Context, b *batch, next bool, jobs chan<- groupJob) (*batch, error) {
	// Settle even when ctx ended (shutdown): what was sent must not be
	// sent again needlessly.
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	limit := 0
	if next {
		limit = p.cfg.BatchSize
	}
	if b.tier == tierEvents {
		st := p.eventSettlement(b)
		if next {
			limit = p.eventLimit()
		}
		evs, err := p.cfg.Store.SettleEvents(sctx, st, p.cfg.Clock.Now(), limit, p.cfg.Lease)
		if err != nil && next {
			// The claim may be what failed: do not let it take the
			// settlement down with it.
			p.cfg.Logger.Error("outbox: cannot settle and claim events in one transaction; settling alone", "err", err)
			evs, err = p.cfg.Store.SettleEvents(sctx, st, p.cfg.Clock.Now(), 0, 0)
		}
		if err != nil {
			return nil, err
		}
		p.cfg.Metrics.settledEvents(st)
		if len(st.Queue) > 0 {
			select {
			case p.wakeQueue <- struct{}{}:
			default:
			}
		}
		if len(evs) == 0 {
			return nil, nil
		}
		return p.dispatch(ctx, p.fanOut(ctx, evs), jobs), nil
	}
	all := b.deviceSettlements()
	// Settle and claim in one transaction: half the commits of two.
	pushes, err := p.cfg.Store.SettleAndClaim(sctx, all, p.cfg.Clock.Now(), limit, p.cfg.Lease)
	if err != nil && next {
		p.cfg.Logger.Error("outbox: cannot settle and claim in one transaction; settling alone", "err", err)
		pushes, err = nil, p.cfg.Store.SettlePushes(sctx, all)
	}
	if err != nil {
		return nil, err
	}
	p.cfg.Metrics.settled(all)
	if len(pushes) == 0 {
		return nil, nil
	}
	return p.dispatch(ctx, devicePushes(pushes), jobs), nil
}

// chain settles b and keeps claiming, sending and settling batches of its
// tier, each settlement and the next claim in one transaction, until a
// claim finds nothing due or the pipeline stops.
func (p *Pipeline) chain(ctx context.Context, b *batch, jobs chan<- groupJob) {
	for b != nil {
		next := ctx.Err() == nil
		select {
		case <-p.stop:
			next = false
		default:
		}
		var err error
		if b, err = p.settleNext(ctx, b, next, jobs); err != nil {
			p.cfg.Logger.Error("outbox: cannot settle; the batch will be sent again after the lease", "err", err)
			return
		}
	}
}

// Process claims one batch of due events and one of due device pushes,
// sends them and settles them. It returns how many events and pushes it
// claimed. Tests call it directly with a fake clock; the dispatcher (Start)
// pipelines the same steps.
func (p *Pipeline) Process(ctx context.Context) (int, error) {
	n := 0
	for _, t := range []tier{tierEvents, tierDevices} {
		b, err := p.claim(ctx, t, nil)
		if err != nil {
			return n, err
		}
		if b == nil {
			continue
		}
		n += b.size
		if _, err := p.settleNext(ctx, b, false, nil); err != nil {
			return n, err
		}
	}
	return n, nil
}

// run is the dispatcher: one loop per tier, sharing the send workers.
func (p *Pipeline) run(ctx context.Context) {
	defer close(p.done)
	// Workers live as long as the dispatcher: a goroutine per group would
	// grow a fresh stack through the HTTP/2 client for every push.
	jobs := make(chan groupJob, p.cfg.BatchSize*p.cfg.InFlight)
	var workers sync.WaitGroup
	for range p.cfg.Workers {
		workers.Go(func() { p.work(ctx, jobs) })
	}
	var loops sync.WaitGroup
	loops.Go(func() { p.loop(ctx, tierEvents, p.wake, jobs) })
	loops.Go(func() { p.loop(ctx, tierDevices, p.wakeQueue, jobs) })
	loops.Wait()
	close(jobs) // after the batches in flight are settled
	workers.Wait()
}

// loop keeps up to InFlight batches of a tier between claim and settlement:
// the next batch is claimed while the previous ones are being sent, so the
// provider connection never idles on a batch's slowest push or on a
// database transaction. With nothing due it waits for wake or the poll
// interval.
func (p *Pipeline) loop(ctx context.Context, t tier, wake <-chan struct{}, jobs chan<- groupJob) {
	slots := make(chan struct{}, p.cfg.InFlight)
	var settling sync.WaitGroup
	defer settling.Wait()
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case slots <- struct{}{}:
		case <-p.stop:
			return
		}
		b, err := p.claim(ctx, t, jobs)
		if err != nil && ctx.Err() == nil {
			p.cfg.Logger.Error("outbox: cannot claim", "tier", t.String(), "err", err)
		}
		if b != nil {
			settling.Add(1)
			go func() {
				defer settling.Done()
				defer func() { <-slots }()
				p.chain(ctx, b, jobs)
			}()
		} else {
			<-slots
		}
		if err == nil && b != nil && b.full {
			select {
			case <-p.stop:
				return
			default:
				continue // more may be due right now
			}
		}
		timer.Reset(p.cfg.PollInterval)
		select {
		case <-p.stop:
			return
		case <-wake:
		case <-timer.C:
		}
	}
}

func (t tier) String() string {
	if t == tierEvents {
		return "events"
	}
	return "devices"
}
