package pipeline

import (
	"context"
	"sync"
	"time"

	"github.com/mailpush/mailpush"
)

// settleClaimer is implemented by stores that can settle a batch and claim
// the next one in one transaction (sqlite.Store.SettleAndClaim): half the
// commits of SettlePushes then ClaimPushes.
type settleClaimer interface {
	SettleAndClaim(ctx context.Context, settlements []mailpush.PushSettlement, now time.Time, limit int, lease time.Duration) ([]*mailpush.QueuedPush, error)
}

// groupJob is one registration's pushes of a batch, for a worker.
type groupJob struct {
	b      *batch
	i      int // the group's index in b.settled
	pushes []*mailpush.QueuedPush
}

// batch is a claimed batch on its way through send and settle.
type batch struct {
	pushes  []*mailpush.QueuedPush
	regs    []string                    // registrations, each once
	settled [][]mailpush.PushSettlement // by group
	wg      sync.WaitGroup              // the groups' sends
}

// dispatch starts sending a claimed batch: one group per registration, in
// outbox order, handed to the workers (jobs) or, when there are none (Process
// without Start), to a goroutine per group. b.wg ends when every group is
// done. The store never puts a registration in two batches in flight
// (ClaimPushes skips a push while an earlier one of its registration is
// leased or waiting), so groups of different batches never race for one
// device.
func (p *Pipeline) dispatch(ctx context.Context, pushes []*mailpush.QueuedPush, jobs chan<- groupJob) *batch {
	b := &batch{pushes: pushes}
	groups := map[string][]*mailpush.QueuedPush{}
	for _, q := range pushes {
		reg := q.Push.RegistrationID
		if _, ok := groups[reg]; !ok {
			b.regs = append(b.regs, reg)
		}
		groups[reg] = append(groups[reg], q)
	}
	b.settled = make([][]mailpush.PushSettlement, len(b.regs))
	b.wg.Add(len(b.regs))
	if jobs != nil {
		for i, reg := range b.regs {
			jobs <- groupJob{b: b, i: i, pushes: groups[reg]}
		}
		return b
	}
	for i, reg := range b.regs {
		// One goroutine per group (at most BatchSize x InFlight), each
		// sending only while it holds one of the Workers slots.
		go func() {
			defer b.wg.Done()
			p.sem <- struct{}{}
			defer func() { <-p.sem }()
			b.settled[i] = p.sendGroup(ctx, groups[reg])
		}()
	}
	return b
}

// work sends the groups it receives until jobs is closed.
func (p *Pipeline) work(ctx context.Context, jobs <-chan groupJob) {
	for j := range jobs {
		j.b.settled[j.i] = p.sendGroup(ctx, j.pushes)
		j.b.wg.Done()
	}
}

// settlements waits for a batch's sends and returns their outcomes.
func (b *batch) settlements() []mailpush.PushSettlement {
	b.wg.Wait()
	all := make([]mailpush.PushSettlement, 0, len(b.pushes))
	for _, s := range b.settled {
		all = append(all, s...)
	}
	return all
}

// settle records the fate of a batch once its sends are done. A failed
// settlement leaves the pushes leased: they are sent again when the lease
// ends (at least once).
func (p *Pipeline) settle(ctx context.Context, b *batch) error {
	_, err := p.settleAndClaim(ctx, b, false)
	return err
}

// settleAndClaim settles a batch once its sends are done and, when next is
// set, claims the next batch in the same transaction (when the store can).
func (p *Pipeline) settleAndClaim(ctx context.Context, b *batch, next bool) ([]*mailpush.QueuedPush, error) {
	all := b.settlements()
	// Settle even when ctx ended (shutdown): what was sent must not be
	// sent again needlessly.
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	var pushes []*mailpush.QueuedPush
	var err error
	if sc, ok := p.cfg.Store.(settleClaimer); ok {
		limit := 0
		if next {
			limit = p.cfg.BatchSize
		}
		pushes, err = sc.SettleAndClaim(sctx, all, p.cfg.Clock.Now(), limit, p.cfg.Lease)
		if err == nil {
			p.cfg.Metrics.settled(all)
			return pushes, nil
		}
		if !next {
			return nil, err
		}
		// The claim may be what failed (a row it cannot read): do not let
		// it take the settlement down with it, or the batch would be sent
		// again after its lease.
		p.cfg.Logger.Error("outbox: cannot settle and claim in one transaction; settling alone", "err", err)
		next = false
	}
	if err := p.cfg.Store.SettlePushes(sctx, all); err != nil {
		return nil, err
	}
	p.cfg.Metrics.settled(all)
	if next {
		return p.cfg.Store.ClaimPushes(ctx, p.cfg.Clock.Now(), p.cfg.BatchSize, p.cfg.Lease)
	}
	return nil, nil
}

// claim leases the next batch and dispatches it.
func (p *Pipeline) claim(ctx context.Context, jobs chan<- groupJob) (*batch, error) {
	pushes, err := p.cfg.Store.ClaimPushes(ctx, p.cfg.Clock.Now(), p.cfg.BatchSize, p.cfg.Lease)
	if err != nil || len(pushes) == 0 {
		return nil, err
	}
	return p.dispatch(ctx, pushes, jobs), nil
}

// chain settles b and keeps claiming, sending and settling batches, each
// settlement and the next claim in one transaction, until a claim finds
// nothing due or the pipeline stops.
func (p *Pipeline) chain(ctx context.Context, b *batch, jobs chan<- groupJob) {
	for b != nil {
		next := ctx.Err() == nil
		select {
		case <-p.stop:
			next = false
		default:
		}
		pushes, err := p.settleAndClaim(ctx, b, next)
		if err != nil {
			p.cfg.Logger.Error("outbox: cannot settle pushes; they will be sent again after the lease", "err", err)
			return
		}
		if len(pushes) == 0 {
			return
		}
		b = p.dispatch(ctx, pushes, jobs)
	}
}

// Process claims one batch of due pushes, sends them and settles them. It
// returns how many pushes it claimed. Tests call it directly with a fake
// clock; the dispatcher (Start) pipelines the same steps.
func (p *Pipeline) Process(ctx context.Context) (int, error) {
	b, err := p.claim(ctx, nil)
	if err != nil || b == nil {
		return 0, err
	}
	return len(b.pushes), p.settle(ctx, b)
}

// run is the dispatcher. It keeps up to InFlight batches between claim and
// settlement: the next batch is claimed while the previous ones are being
// sent, so the provider connection never idles on a batch's slowest push or
// on a database transaction. With nothing due it waits for a new event or
// the poll interval.
func (p *Pipeline) run(ctx context.Context) {
	defer close(p.done)
	// Workers live as long as the dispatcher: a goroutine per group would
	// grow a fresh stack through the HTTP/2 client for every push.
	jobs := make(chan groupJob, p.cfg.BatchSize*p.cfg.InFlight)
	var workers sync.WaitGroup
	defer workers.Wait()
	defer close(jobs) // after the batches in flight are settled
	for range p.cfg.Workers {
		workers.Go(func() { p.work(ctx, jobs) })
	}
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
		b, err := p.claim(ctx, jobs)
		if err != nil && ctx.Err() == nil {
			p.cfg.Logger.Error("outbox: cannot claim pushes", "err", err)
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
		if err == nil && b != nil && len(b.pushes) >= p.cfg.BatchSize {
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
		case <-p.wake:
		case <-timer.C:
		}
	}
}
