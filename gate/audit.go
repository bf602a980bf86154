package gate

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"sync"
	"time"
)

// The audit log is kept off the request path. A decision appends a record
// — the strings it already has and the remembered hashes, nothing
// formatted, nothing written — to a pending list under a mutex, and one
// goroutine takes the whole list at a time, formats the records with the
// server's log handler into a buffer, and writes the buffer out in pieces of
// whole lines. Formatting and writing one line per decision on the request
// path was 43 % of a decision's time in process, and a write system call per
// decision besides. The writer is woken only every auditWakeAt records or
// auditFlushAfter, never per decision: on two cores a wake-up per request
// (a channel send to a parked goroutine) costs about as much as the line.
//
// A piece is at most auditChunk bytes (a write that size is atomic on a
// pipe, so no other log line lands inside one); to a regular file, whose
// writes Linux does not interleave, at most auditFileChunk.
//
// Nothing is dropped: with auditQueue records pending a request waits, as
// the synchronous log did. A line reaches the output at most
// auditFlushAfter after its decision; Flush writes everything logged before
// it, and Close every line before the gate's final "gate stopped" line.
// Before Start and after Close (a request still running when the server
// stopped waiting for it) a decision is written at once.
const (
	auditQueue      = 8192
	auditWakeAt     = 256
	auditChunk      = 4096 // PIPE_BUF on Linux
	auditFileChunk  = 64 << 10
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
	g     *Gate
	h     slog.Handler
	out   io.Writer   // where buf goes; nil when h writes to its own output
	buf   *lineBuffer // what h formatted and out has not received
	chunk int         // the largest write to out

	mu      sync.Mutex
	space   sync.Cond // signalled when the writer took the pending records
	running bool      // the writer runs: records are appended to pending
	stop    bool      // close asked the writer to finish
	pending []auditRecord
	wake    chan struct{} // capacity 1: the writer has work
	done    chan struct{}
	// direct guards h and buf: the writer holds it per batch, a write
	// made without the writer for its whole line.
	direct sync.Mutex
}

func newAuditor(g *Gate, deps Deps) *auditor {
	a := &auditor{g: g, h: deps.Logger.Handler(), chunk: auditChunk, wake: make(chan struct{}, 1)}
	a.space.L = &a.mu
	if deps.AuditHandler != nil && deps.AuditOutput != nil {
		a.buf = &lineBuffer{}
		a.h, a.out = deps.AuditHandler(a.buf), deps.AuditOutput
		if f, ok := deps.AuditOutput.(*os.File); ok {
			if fi, err := f.Stat(); err == nil && fi.Mode().IsRegular() {
				a.chunk = auditFileChunk
			}
		}
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
	a.running, a.done = true, make(chan struct{})
	go a.run()
}

// close writes every pending line and stops the writer; later records are
// written at once.
func (a *auditor) close() {
	a.mu.Lock()
	wasRunning := a.running
	a.running, a.stop = false, true
	a.space.Broadcast()
	a.mu.Unlock()
	if wasRunning {
		a.signal()
		<-a.done
	}
}

func (a *auditor) signal() {
	select {
	case a.wake <- struct{}{}:
	default:
	}
}

// log appends rec to the pending records, or writes it at once when no
// writer runs.
func (a *auditor) log(rec auditRecord) {
	a.mu.Lock()
	for a.running && len(a.pending) >= auditQueue {
		a.space.Wait()
	}
	if a.running {
		a.pending = append(a.pending, rec)
		n := len(a.pending)
		a.mu.Unlock()
		if n == auditWakeAt || rec.flushed != nil {
			a.signal()
		}
		return
	}
	a.mu.Unlock()
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

// run is the writer: it takes the pending records when woken or every
// auditFlushAfter, until close.
func (a *auditor) run() {
	defer close(a.done)
	tick := time.NewTicker(auditFlushAfter)
	defer tick.Stop()
	var batch []auditRecord
	for {
		select {
		case <-a.wake:
		case <-tick.C:
		}
		a.mu.Lock()
		batch, a.pending = a.pending, batch[:0]
		stop := a.stop
		a.space.Broadcast()
		a.mu.Unlock()
		a.direct.Lock()
		for i := range batch {
			if rec := &batch[i]; rec.flushed != nil {
				a.flush()
				close(rec.flushed)
			} else {
				a.format(*rec)
			}
			batch[i] = auditRecord{} // let the strings go
		}
		a.flush()
		a.direct.Unlock()
		if stop {
			a.mu.Lock()
			left := len(a.pending) // appended between the swap and stop: none, running was false
			a.mu.Unlock()
			if left == 0 {
				return
			}
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

// flush writes buf out in pieces of whole lines of at most a.chunk bytes
// (a longer line goes alone).
func (a *auditor) flush() {
	if a.buf == nil {
		return
	}
	b := a.buf.b
	for len(b) > 0 {
		n := len(b)
		if n > a.chunk {
			if n = bytes.LastIndexByte(b[:a.chunk], '\n') + 1; n == 0 {
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
// time uses it (under auditor.direct).
type lineBuffer struct{ b []byte }

func (l *lineBuffer) Write(p []byte) (int, error) {
	l.b = append(l.b, p...)
	return len(p), nil
}
