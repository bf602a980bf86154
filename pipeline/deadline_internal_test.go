package pipeline

import (
	"context"
	"testing"
	"time"
)

// TestSendDeadline: a call that overruns the timeout has its context
// cancelled; the next call gets a live context of its own, with a deadline,
// and one that ended in time leaves the context reusable.
func TestSendDeadline(t *testing.T) {
	parent, stop := context.WithCancel(context.Background())
	d := newSendDeadline(parent, time.Millisecond)
	defer d.close()

	slow := d.begin()
	<-slow.Done() // the timer cancels a call that overruns
	d.end()
	next := d.begin()
	if next.Err() != nil {
		t.Fatalf("the call after an overrun got a cancelled context: %v", next.Err())
	}
	if _, ok := next.Deadline(); !ok {
		t.Error("a call's context reports no deadline: a provider client would add its own timer")
	}
	if next == slow {
		t.Error("an overrun call's context was reused")
	}

	d.timeout = time.Hour
	d.end()
	a := d.begin()
	d.end()
	if b := d.begin(); b != a || b.Err() != nil {
		t.Errorf("a call that ended in time did not leave its context for the next (%v)", b.Err())
	}
	d.end()

	stop() // the worker's context ends (shutdown): so do its calls'
	if c := d.begin(); c.Err() == nil {
		<-c.Done()
	}
	d.end()
}
