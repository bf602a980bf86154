package ewsfake_test

import (
	"context"
	"testing"

	"github.com/mailpush/mailpush/fake/ewsfake"
)

// TestHold: a held operation is counted and waits until released, then is
// answered as usual; other operations go on meanwhile.
func TestHold(t *testing.T) {
	f, c, ep := newFake(t, ewsfake.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), waitMax)
	defer cancel()
	item := f.Deliver(address, "s", "A", "a@example.com")
	release := f.Hold("GetFolder")
	got := make(chan int, 1)
	go func() {
		n, err := c.GetInboxUnread(ctx, ep)
		if err != nil {
			t.Error(err)
		}
		got <- n
	}()
	if err := f.WaitFor(ctx, func(x *ewsfake.Server) bool { return x.Held("GetFolder") == 1 }); err != nil {
		t.Fatal(err)
	}
	if f.Requests("GetFolder") != 1 {
		t.Errorf("a held request is not counted: %d", f.Requests("GetFolder"))
	}
	select {
	case n := <-got:
		t.Fatalf("GetFolder answered %d while held", n)
	default:
	}
	// Another operation is not held.
	if _, err := c.GetItems(ctx, ep, []string{item}); err != nil {
		t.Fatal(err)
	}
	release()
	release() // a second call changes nothing
	if n := <-got; n != 1 {
		t.Errorf("GetFolder after release = %d, want 1", n)
	}
	if f.Held("GetFolder") != 0 {
		t.Errorf("%d requests still held after release", f.Held("GetFolder"))
	}
	// A client that gives up ends its held request.
	release = f.Hold("GetFolder")
	defer release()
	short, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { _, err := c.GetInboxUnread(short, ep); done <- err }()
	if err := f.WaitFor(ctx, func(x *ewsfake.Server) bool { return x.Held("GetFolder") == 1 }); err != nil {
		t.Fatal(err)
	}
	stop()
	if err := <-done; err == nil {
		t.Error("a cancelled request was answered")
	}
	if err := f.WaitFor(ctx, func(x *ewsfake.Server) bool { return x.Held("GetFolder") == 0 }); err != nil {
		t.Fatal(err)
	}
}
