package pipeline

import (
	"context"
	"time"
)

// sendDeadline bounds each provider call of one send worker by SendTimeout
// without a context and a timer per push: the worker keeps one cancellable
// context and one timer, re-armed for every call. When a call overruns, the
// timer cancels the context and the next call starts a fresh pair. The
// context reports the call's deadline, so that a provider client does not
// add a timeout of its own.
type sendDeadline struct {
	parent  context.Context
	timeout time.Duration
	ctx     *deadlineCtx
	cancel  context.CancelFunc
	timer   *time.Timer
}

// deadlineCtx is a cancellable context whose Deadline is the current call's.
type deadlineCtx struct {
	context.Context
	deadline time.Time
}

func (c *deadlineCtx) Deadline() (time.Time, bool) { return c.deadline, true }

func newSendDeadline(parent context.Context, timeout time.Duration) *sendDeadline {
	return &sendDeadline{parent: parent, timeout: timeout}
}

// begin returns the context for one call, cancelled after the timeout.
func (d *sendDeadline) begin() context.Context {
	if d.ctx == nil {
		ctx, cancel := context.WithCancel(d.parent)
		d.ctx, d.cancel = &deadlineCtx{Context: ctx}, cancel
		d.timer = time.AfterFunc(d.timeout, cancel)
	} else {
		d.timer.Reset(d.timeout)
	}
	d.ctx.deadline = time.Now().Add(d.timeout)
	return d.ctx
}

// end disarms the timer after a call. A timer that already fired has
// cancelled the context (or is about to): the next call gets a new one.
func (d *sendDeadline) end() {
	if !d.timer.Stop() || d.ctx.Err() != nil {
		d.cancel()
		d.ctx = nil
	}
}

// close releases the context.
func (d *sendDeadline) close() {
	if d.ctx != nil {
		d.timer.Stop()
		d.cancel()
		d.ctx = nil
	}
}
