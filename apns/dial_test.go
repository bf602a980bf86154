package apns_test

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/mailpush/mailpush"
	"github.com/mailpush/mailpush/fake/apnsfake"
)

// A burst of pushes on a cold client opens one connection, not one per
// push; after a reset, one again.
func TestBurstOpensOneConnection(t *testing.T) {
	e := setup(t, apnsfake.Options{})
	burst := func() {
		var wg sync.WaitGroup
		for i := range 50 {
			wg.Go(func() {
				p := badgePush(fmt.Sprintf("%064x", i+1), i)
				if res, err := e.client.Push(context.Background(), p); err != nil || res.Outcome != mailpush.PushDelivered {
					t.Errorf("push %d: %+v, %v", i, res, err)
				}
			})
		}
		wg.Wait()
	}
	burst()
	if n := e.fake.Connections(); n != 1 {
		t.Fatalf("connections after a burst on a cold client = %d, want 1", n)
	}
	e.fake.ResetNext(1)
	p := badgePush(tokA, 1)
	if res, _ := e.client.Push(context.Background(), p); res.Outcome != mailpush.PushRetry {
		t.Fatalf("push on a reset connection: %+v, want a retry", res)
	}
	burst()
	if n := e.fake.Connections(); n != 2 {
		t.Fatalf("connections after a reset and a burst = %d, want 2", n)
	}
}
