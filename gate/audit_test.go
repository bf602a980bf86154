package gate

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mailpush/mailpush/clocktest"
)

// writeRecorder keeps every Write it receives, separately.
type writeRecorder struct {
	mu     sync.Mutex
	writes [][]byte
}

func (w *writeRecorder) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.writes = append(w.writes, bytes.Clone(p))
	return len(p), nil
}

func (w *writeRecorder) all() (string, [][]byte) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return string(bytes.Join(w.writes, nil)), w.writes
}

// auditGate is a started gate whose audit lines go, batched, to out.
func auditGate(t *testing.T, out io.Writer) (*Gate, http.Handler) {
	t.Helper()
	g, err := New(Config{Proxy: "nginx"}, Deps{Store: newMemStore(), Hasher: hasher{}, TenantID: "t1",
		Logger: slog.New(slog.DiscardHandler), Clock: clocktest.New(time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)),
		AuditHandler: func(w io.Writer) slog.Handler { return slog.NewTextHandler(w, nil) }, AuditOutput: out})
	if err != nil {
		t.Fatal(err)
	}
	g.Start()
	mux := http.NewServeMux()
	g.Routes(mux)
	return g, mux
}

func askGate(h http.Handler, dev string) int {
	r := httptest.NewRequest("GET", "/gate/auth", nil)
	r.RemoteAddr = "127.0.0.1:40000"
	r.Header.Set("X-Original-URI", "/Microsoft-Server-ActiveSync?Cmd=Ping&DeviceId="+dev)
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w.Code
}

// TestAuditLinesAreNotLostOnClose: decisions made concurrently all have
// their line once Close returns, each line whole, written in pieces of
// whole lines no larger than a pipe writes atomically.
func TestAuditLinesAreNotLostOnClose(t *testing.T) {
	out := &writeRecorder{}
	g, h := auditGate(t, out)
	const workers, each = 8, 500
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				askGate(h, fmt.Sprintf("DEV%dX%d", w, i))
			}
		})
	}
	wg.Wait()
	g.Close()
	all, writes := out.all()
	lines := strings.Split(strings.TrimSuffix(all, "\n"), "\n")
	if len(lines) != workers*each {
		t.Fatalf("%d audit lines after Close, want %d", len(lines), workers*each)
	}
	for _, l := range lines {
		if !strings.HasPrefix(l, "time=") || !strings.Contains(l, `msg="gate decision" decision=deny reason="device is not registered: default deny"`) {
			t.Fatalf("not a whole audit line: %q", l)
		}
	}
	if len(writes) >= len(lines)/4 {
		t.Errorf("%d lines took %d writes: not batched", len(lines), len(writes))
	}
	for _, w := range writes {
		if len(w) > auditChunk || !bytes.HasSuffix(w, []byte("\n")) {
			t.Fatalf("a write of %d bytes that does not end a line or is larger than %d: %.80q", len(w), auditChunk, w)
		}
	}
}

// TestAuditFlushAndAfterClose: Flush writes the lines of the decisions
// before it; after Close a decision's line is written at once.
func TestAuditFlushAndAfterClose(t *testing.T) {
	out := &writeRecorder{}
	g, h := auditGate(t, out)
	askGate(h, "FIRST01")
	g.Flush()
	if all, _ := out.all(); strings.Count(all, "gate decision") != 1 {
		t.Fatalf("after Flush: %q, want one line", all)
	}
	g.Close()
	askGate(h, "LATE01")
	if all, _ := out.all(); strings.Count(all, "gate decision") != 2 {
		t.Fatalf("a decision after Close: %q, want its line written at once", all)
	}
	g.Flush() // after Close: returns at once
}

// TestAuditLongLineAlone: a line longer than a chunk is written alone and
// whole, the lines around it in their own writes.
func TestAuditLongLineAlone(t *testing.T) {
	out := &writeRecorder{}
	a := &auditor{buf: &lineBuffer{}, out: out}
	long := strings.Repeat("x", auditChunk+100) + "\n"
	a.buf.b = append(a.buf.b, "short one\n"+long+"short two\n"...)
	a.flush()
	_, writes := out.all()
	if len(writes) != 3 || string(writes[0]) != "short one\n" || string(writes[1]) != long || string(writes[2]) != "short two\n" {
		t.Errorf("writes %d: %.40q", len(writes), writes)
	}
}
