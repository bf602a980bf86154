package gate

import (
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/mailpush/mailpush"
	"github.com/mailpush/mailpush/clocktest"
)

// BenchmarkForwardAuth is one /gate/auth decision in process (no sockets):
// 1,000 registered devices in turn, from the cache, audit log on (to
// io.Discard, so the formatting is counted but not the disk).
//
//	go test -run XXX -bench ForwardAuth -benchmem ./gate/
func BenchmarkForwardAuth(b *testing.B) {
	st := newMemStore()
	g, err := New(Config{Proxy: "nginx", MinProtocolVersion: "14.0"}, Deps{Store: st, Hasher: hasher{}, TenantID: "t1",
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Clock: clocktest.New(time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC))})
	if err != nil {
		b.Fatal(err)
	}
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
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		clear(w.h)
		mux.ServeHTTP(w, reqs[i%len(reqs)])
		if w.code != 200 {
			b.Fatalf("status %d: %v", w.code, w.h)
		}
	}
}

type discardWriter struct {
	h    http.Header
	code int
}

func (d *discardWriter) Header() http.Header         { return d.h }
func (d *discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (d *discardWriter) WriteHeader(c int)           { d.code = c }
