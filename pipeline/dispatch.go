package pipeline

import (
	"context"
	"sync"
	"time"

	"github.com/mailpush/mailpush"
)

// batch is a claimed batch on its way through send and settle.
type batch struct {
	pushes  []*mailpush.QueuedPush
	regs    []string                    // registrations, each once
	settled [][]mailpush.PushSettlement // by group
	wg      sync.WaitGroup              // the groups' sends
}

// dispatch starts sending a claimed batch: one group per registration, in
// outbox order. It does not block; b.wg ends when every group is done. The
// store never puts a registration in two batches in flight (ClaimPushes skips
// a push while an earlier one of its registration is leased or waiting), so
// groups of different batches never race for one device.
func (p *Pipeline) dispatch(ctx context.Context, pushes []*mailpush.QueuedPush) *batch {
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

// settle records the fate of a batch once its sends are done. A failed settlement leaves the pushes leased:
// they are sent again when the lease ends (at least once).
func (p *Pipeline) settle(ctx context.Context, b *batch) error {
	b.wg.Wait()
	all := make([]mailpush.PushSettlement, 0, len(b.pushes))
	for _, s := range b.settled {
		all = append(all, s...)
	}
	// Settle even when ctx ended (shutdown): what was sent must not be
	// sent again needlessly.
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	if err := p.cfg.Store.SettlePushes(sctx, all); err != nil {
		return err
	}
	p.cfg.Metrics.settled(all)
	return nil
}

// claim leases the next batch and dispatches it.
func (p *Pipeline) claim(ctx context.Context) (*batch, error) {
	pushes, err := p.cfg.Store.ClaimPushes(ctx, p.cfg.Clock.Now(), p.cfg.BatchSize, p.cfg.Lease)
	if err != nil || len(pushes) == 0 {
		return nil, err
	}
	return p.dispatch(ctx, pushes), nil
}

// Process claims one batch of due pushes, sends them and settles them. It
// returns how many pushes it claimed. Tests call it directly with a fake
// clock; the dispatcher (Start) pipelines the same steps.
func (p *Pipeline) Process(ctx context.Context) (int, error) {
	b, err := p.claim(ctx)
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
		b, err := p.claim(ctx)
		if err != nil && ctx.Err() == nil {
			p.cfg.Logger.Error("outbox: cannot claim pushes", "err", err)
		}
		if b != nil {
			settling.Add(1)
			go func() {
				defer settling.Done()
				defer func() { <-slots }()
				if err := p.settle(ctx, b); err != nil {
					p.cfg.Logger.Error("outbox: cannot settle pushes; they will be sent again after the lease", "err", err)
				}
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
