package pipeline_test

import (
	"context"
	"testing"

	"github.com/mailpush/mailpush"
	"github.com/mailpush/mailpush/pipeline"
)

// nopPusher accepts every push and keeps nothing: what remains is the
// pipeline's own cost.
type nopPusher struct{}

func (nopPusher) Push(context.Context, *mailpush.Push) (mailpush.PushResult, error) {
	return mailpush.PushResult{Outcome: mailpush.PushDelivered, Status: 200}, nil
}

// BenchmarkFanOut measures the pipeline's own work per push, providers
// aside: accept an event (one outbox row), claim it, read its 100 devices,
// build and hand over their pushes, settle. b.N counts pushes, so ns/op and
// allocs/op are per push, SQLite's work included.
//
//	go test -run XXX -bench FanOut -benchmem ./pipeline
func BenchmarkFanOut(b *testing.B) {
	const devices = 100
	f := newFixture(b, pipeline.Config{})
	for i := range devices {
		f.register(b, mailpush.PlatformIOS, tok(i+1), mailpush.ContentSubject, nil)
	}
	p := pipeline.New(pipeline.Config{Store: f.store, Clock: f.clock,
		Pushers: map[mailpush.Platform]mailpush.Pusher{mailpush.PlatformIOS: nopPusher{}}})
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := cpuTime(b)
	for seq := int64(1); seq*devices <= int64(b.N)+devices-1; seq++ {
		ev := mailpush.Event{TenantID: f.tenant.ID, MailboxID: f.mb.ID, Kind: mailpush.EventNewMail, Badge: int(seq), Subject: "Quarterly report", Seq: seq, At: f.clock.Now()}
		if err := p.HandleEvent(ctx, ev); err != nil {
			b.Fatal(err)
		}
		if n, err := p.Process(ctx); err != nil || n != 1 {
			b.Fatalf("Process = %d, %v", n, err)
		}
	}
	// Wall time is what the box's other jobs leave; CPU time is the cost.
	b.ReportMetric(float64((cpuTime(b)-cpu0).Nanoseconds())/1000/float64(b.N), "cpu-µs/push")
}
