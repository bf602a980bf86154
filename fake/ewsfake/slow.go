package ewsfake

import (
	"net/http"
	"time"
)

// A slow Exchange, for the tests that show a notification's answer does not
// wait for the reads it triggers, and for the benchmarks that measure it.

// SubscribeAnswer is the pseudo-operation to Hold for an Exchange whose
// notifications outrun its answers: while it is held, Subscribe creates
// the subscription and starts sending its notifications (the first status
// event, then any new mail) at once, but its answer waits for the release.
// Real Exchange may deliver a new subscription's first notification before
// the subscriber has read the SubscribeResponse.
const SubscribeAnswer = "SubscribeAnswer"

// Hold makes every request of the EWS operation op (e.g. "GetFolder",
// "GetItem") wait, once authenticated and counted, until release is
// called, as an Exchange that does not answer does. A waiting request also
// ends when its client gives up. Held tells how many are waiting. Holding
// an operation that is held already changes nothing until the first
// release; release may be called more than once.
func (s *Server) Hold(op string) (release func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	gate, ok := s.holds[op]
	if !ok {
		gate = make(chan struct{})
		s.holds[op] = gate
	}
	return func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.holds[op] == gate {
			delete(s.holds, op)
			close(gate)
			s.notifyLocked()
		}
	}
}

// Held returns how many requests of op are waiting for a Hold's release.
func (s *Server) Held(op string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.held[op]
}

// SetLatency makes every request of op wait d (real time, not scaled)
// before it is answered, as a loaded mailbox server does; 0 ends it.
func (s *Server) SetLatency(op string, d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if d <= 0 {
		delete(s.latency, op)
		return
	}
	s.latency[op] = d
}

// slow makes a request of op wait for its Hold and its latency; it reports
// false when the client gave up meanwhile (nothing is to be answered).
func (s *Server) slow(r *http.Request, op string) bool {
	s.mu.Lock()
	gate, d := s.holds[op], s.latency[op]
	if gate != nil {
		s.held[op]++
		s.notifyLocked()
	}
	s.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-r.Context().Done():
		}
		s.mu.Lock()
		s.held[op]--
		s.notifyLocked()
		s.mu.Unlock()
	}
	if d > 0 && r.Context().Err() == nil {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
		case <-r.Context().Done():
		}
	}
	return r.Context().Err() == nil
}
