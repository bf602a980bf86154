package subscription

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mailpush/mailpush"
)

// concurrency runs 100 acquire/release pairs with keys from key(i) and
// returns the most places held at once.
func concurrency(t *testing.T, l *limiter, key func(i int) (host, account string)) int32 {
	var now, most atomic.Int32
	var wg sync.WaitGroup
	for i := range 100 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			host, acct := key(i)
			release, err := l.acquire(context.Background(), host, acct)
			if err != nil {
				t.Error(err)
				return
			}
			v := now.Add(1)
			for {
				old := most.Load()
				if v <= old || most.CompareAndSwap(old, v) {
					break
				}
			}
			for range 100 {
				runtime.Gosched() // hold the place a while
			}
			now.Add(-1)
			release()
		}()
	}
	wg.Wait()
	return most.Load()
}

func TestLimiterBoundsHostAndAccount(t *testing.T) {
	l := newLimiter(mailpush.SystemClock{}, 4, 2)
	if got := concurrency(t, l, func(i int) (string, string) { return "h", fmt.Sprint(i) }); got > 4 {
		t.Errorf("%d requests at once on one host, limit 4", got)
	}
	if got := concurrency(t, l, func(i int) (string, string) { return fmt.Sprint(i), "acct" }); got > 2 {
		t.Errorf("%d requests at once for one account, limit 2", got)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.hosts) != 0 || len(l.accounts) != 0 {
		t.Errorf("limiter keeps %d hosts and %d accounts after use", len(l.hosts), len(l.accounts))
	}
}

func TestLimiterBackOffAndCancel(t *testing.T) {
	l := newLimiter(mailpush.SystemClock{}, 1, 1)
	l.busy("h", time.Hour)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := l.acquire(ctx, "h", "a"); err == nil {
		t.Fatal("acquire during a back-off with a cancelled context succeeded")
	}
	release, err := l.acquire(context.Background(), "other", "a")
	if err != nil {
		t.Fatal(err)
	}
	release()
}
