package gate

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/netip"
	"sync"
	"time"
)

// The audit log is kept off the request path. A decision queues a record —
// the strings it already has and the remembered hashes, nothing formatted,
// nothing written — and one goroutine formats the records with the server's
// log handler into a buffer, which it writes out in pieces of whole lines of
// at most auditChunk bytes (a write that size is atomic on a pipe, so no
// other log line lands inside one). Formatting and writing one line per
// decision on the request path was 43 % of a decision's time in process,
// and a write system call per decision besides.
//
// Nothing is dropped: a full queue makes the request wait, as the
// synchronous log did. A line reaches the output once auditChunk bytes are
// waiting or auditFlushAfter after the first of them; Flush writes
// everything queued before it returns, and Close writes every queued line
// before the gate's final "gate stopped" line. Before Start and after Close
// (a request still running when the server stopped waiting for it) a
// decision is written at once.
const (
	auditQueue      = 8192
	auditChunk      = 4096 // PIPE_BUF on Linux
	auditFlushAfter = 100 * time.Millisecond
)

// auditRecord is one decision waiting to be formatted; a record with
// flushed set is a Flush request instead.
type auditRecord struct {
	t                                       time.Time
	allow, cached                           bool
	reason, rule, cmd, deviceType, deviceID string
	user                                    []byte
	ip                                      netip.Addr
	flushed                                 chan struct{}
}

type auditor struct {
	g   *Gate
	h   slog.Handler
	out io.Writer   // where buf goes; nil when h writes to its own output
	buf *lineBuffer // what h formatted and out has not received

	// mu is held for reading while a record is queued, and for writing by
	// start and close, so that no record is queued to a stopped goroutine.
	mu      sync.RWMutex
	running bool
	queue   chan auditRecord
	done    chan struct{}
	// direct guards h and buf: the goroutine holds it per record, a write
	// made without the goroutine for its whole line.
	direct sync.Mutex
}

func newAuditor(g *Gate, deps Deps) *auditor {
	a := &auditor{g: g, h: deps.Logger.Handler()}
	if deps.AuditHandler != nil && deps.AuditOutput != nil {
		a.buf = &lineBuffer{}
		a.h, a.out = deps.AuditHandler(a.buf), deps.AuditOutput
	}
	return a
}

// enabled reports whether the handler writes decision lines at all (the log
// level may be above info).
func (a *auditor) enabled(ctx context.Context) bool { return a.h.Enabled(ctx, slog.LevelInfo) }

func (a *auditor) start() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.running || a.done != nil {
		return
	}
	a.running, a.queue, a.done = true, make(chan auditRecord, auditQueue), make(chan struct{})
	go a.run(a.queue)
}

// close writes every queued line and stops the goroutine; later records are
// written at once.
func (a *auditor) close() {
	a.mu.Lock()
	wasRunning := a.running
	a.running = false
	if wasRunning {
		close(a.queue)
	}
	a.mu.Unlock()
	if wasRunning {
		<-a.done
	}
}

// log queues rec, or writes it at once when no goroutine runs.
func (a *auditor) log(rec auditRecord) {
	a.mu.RLock()
	if a.running {
		a.queue <- rec
		a.mu.RUnlock()
		return
	}
	a.mu.RUnlock()
	if rec.flushed != nil {
		close(rec.flushed)
		return
	}
	a.direct.Lock()
	a.format(rec)
	a.flush()
	a.direct.Unlock()
}

// Flush writes every audit line of the decisions made before it.
func (g *Gate) Flush() {
	done := make(chan struct{})
	g.auditor.log(auditRecord{flushed: done})
	<-done
}

func (a *auditor) run(queue <-chan auditRecord) {
	defer close(a.done)
	var due <-chan time.Time // set while lines wait in buf
	for {
		select {
		case rec, ok := <-queue:
			a.direct.Lock() // a direct write may still run from before start
			switch {
			case !ok:
				a.flush()
				a.direct.Unlock()
				return
			case rec.flushed != nil:
				a.flush()
				close(rec.flushed)
				due = nil
			default:
				a.format(rec)
				if a.buf != nil && len(a.buf.b) >= auditChunk {
					a.flush()
					due = nil
				} else if a.buf != nil && due == nil {
					due = time.After(auditFlushAfter)
				}
			}
			a.direct.Unlock()
		case <-due:
			a.direct.Lock()
			a.flush()
			a.direct.Unlock()
			due = nil
		}
	}
}

// format writes rec's line through the handler: never the password, the
// user only as a hash prefix, and DeviceIds and client addresses as
// keyed-hash prefixes unless gate.auditIdentifiers is clear, which every
// line says.
func (a *auditor) format(rec auditRecord) {
	g := a.g
	ids := "hashed"
	if g.clearIDs {
		ids = "clear"
	}
	decision := "deny"
	if rec.allow {
		decision = "allow"
	}
	r := slog.NewRecord(rec.t, slog.LevelInfo, "gate decision", 0)
	r.AddAttrs(
		slog.String("decision", decision), slog.String("reason", rec.reason),
		slog.String("deviceId", g.deviceLogID(rec.deviceID)), slog.String("deviceType", headerSafe(rec.deviceType)),
		slog.String("cmd", rec.cmd), slog.String("user", userID(rec.user)), slog.Bool("cached", rec.cached), slog.String("identifiers", ids),
	)
	if rec.rule != "" {
		r.AddAttrs(slog.String("rule", rec.rule))
	}
	if rec.ip.IsValid() {
		ip := rec.ip.String()
		if !g.clearIDs {
			ip = userID(g.hash(kindIP, ip))
		}
		r.AddAttrs(slog.String("ip", ip))
	}
	a.h.Handle(context.Background(), r) // like slog.Logger: a log that cannot be written has nowhere to say so
}

// flush writes buf out in pieces of whole lines of at most auditChunk bytes
// (a longer line goes alone).
func (a *auditor) flush() {
	if a.buf == nil {
		return
	}
	b := a.buf.b
	for len(b) > 0 {
		n := len(b)
		if n > auditChunk {
			if n = bytes.LastIndexByte(b[:auditChunk], '\n') + 1; n == 0 {
				if n = bytes.IndexByte(b, '\n') + 1; n == 0 {
					n = len(b)
				}
			}
		}
		a.out.Write(b[:n])
		b = b[n:]
	}
	a.buf.b = a.buf.b[:0]
}

// lineBuffer collects what the audit handler formats; one goroutine at a
// time uses it (the auditor's, or a direct write under auditor.direct).
type lineBuffer struct{ b []byte }

func (l *lineBuffer) Write(p []byte) (int, error) {
	l.b = append(l.b, p...)
	return len(p), nil
}
