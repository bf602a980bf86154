package gate

import (
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"syscall"
	"testing"
	"time"

	"github.com/mailpush/mailpush"
	"github.com/mailpush/mailpush/clocktest"
)

// BenchmarkForwardAuth is one /gate/auth decision in process (no sockets):
// 1,000 registered devices in turn, from the cache, audit log on as the
// server runs it (queued, formatted by the gate's audit goroutine in the
// text format, written in batches to io.Discard: the formatting is counted,
// not the disk). cpu-ns/op is the process's CPU time (user and system, every
// goroutine, GC included) per decision: on a shared machine it is steadier
// than ns/op, which is wall time.
//
//	go test -run XXX -bench ForwardAuth -benchmem ./gate/
func BenchmarkForwardAuth(b *testing.B) {
	st := newMemStore()
	textHandler := func(w io.Writer) slog.Handler { return slog.NewTextHandler(w, nil) }
	g, err := New(Config{Proxy: "nginx", MinProtocolVersion: "14.0"}, Deps{Store: st, Hasher: hasher{}, TenantID: "t1",
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Clock: clocktest.New(time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)),
		AuditHandler: textHandler, AuditOutput: io.Discard})
	if err != nil {
		b.Fatal(err)
	}
	g.Start()
	defer g.Close()
	reg := &Registry{Store: st, Hasher: hasher{}, Logger: discardLogger(), Identity: g.policy.id}
	reqs := make([]*http.Request, 1000)
	for i := range reqs {
		id := fmt.Sprintf("DEV%05d", i)
		if _, _, err := reg.SetDevice(context.Background(), "t1", mailpush.GateDeviceUpdate{DeviceID: id, User: "perf@example.com", State: mailpush.DeviceCompliant}); err != nil {
			b.Fatal(err)
		}
		r := httptest.NewRequest("GET", "/gate/auth", nil)
		r.RemoteAddr = "127.0.0.1:40000"
		r.Header.Set("X-Original-URI", "/Microsoft-Server-ActiveSync?Cmd=Ping&User=perf%40example.com&DeviceId="+id+"&DeviceType=iPhone")
		r.Header.Set("X-Original-Method", "POST")
		r.Header.Set("X-Forwarded-For", "192.0.2.10, 127.0.0.1")
		r.Header.Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte("perf@example.com:Secret")))
		r.Header.Set("User-Agent", "Apple-iPhone/1")
		r.Header.Set("MS-ASProtocolVersion", "16.1")
		reqs[i] = r
	}
	mux := http.NewServeMux()
	g.Routes(mux)
	w := &discardWriter{h: http.Header{}}
	b.ReportAllocs()
	cpu0 := cpuTime()
	n := 0
	for i := 0; b.Loop(); i++ {
		clear(w.h)
		mux.ServeHTTP(w, reqs[i%len(reqs)])
		if w.code != 200 {
			b.Fatalf("status %d: %v", w.code, w.h)
		}
		n++
	}
	g.Flush() // the audit lines of these decisions are part of their cost
	b.ReportMetric(float64(cpuTime()-cpu0)/float64(n), "cpu-ns/op")
}

// cpuTime is the process's user and system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		panic(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

type discardWriter struct {
	h    http.Header
	code int
}

func (d *discardWriter) Header() http.Header         { return d.h }
func (d *discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (d *discardWriter) WriteHeader(c int)           { d.code = c }
