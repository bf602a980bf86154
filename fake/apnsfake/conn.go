package apnsfake

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"io"
	"net"
	"net/http"
)

// Connection faults. APNs closes connections (idle ones, and on some
// errors) with an HTTP/2 GOAWAY frame whose debug data is a JSON reason, and
// networks reset connections. Both can hit a push in the middle of its
// stream; the fake reproduces them on the connection of the n next requests:
//
//   - ResetNext: the request's headers and body are read, then the TCP
//     connection is closed with SO_LINGER 0, so the client gets a RST
//     instead of an answer, on this stream and every other one in flight.
//   - GoAwayNext: the fake writes a GOAWAY frame with last-stream-ID 0 (no
//     stream on the connection was processed, so a client may send them
//     again elsewhere) and the reason {"reason":"Shutdown"}, then closes the
//     connection. The frame is written on the TLS connection beside the
//     HTTP/2 server's own writes, which net/http does not let a handler
//     do otherwise; each frame is a single TLS write, so frames do not mix.

type connKey struct{}

// withConn is the server's ConnContext: handlers find their connection.
func withConn(ctx context.Context, c net.Conn) context.Context {
	return context.WithValue(ctx, connKey{}, c)
}

// ResetNext makes the next n requests end with a TCP reset of their
// connection instead of an answer.
func (s *Server) ResetNext(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.resets = n
}

// GoAwayNext makes the next n requests end with a GOAWAY of their
// connection instead of an answer.
func (s *Server) GoAwayNext(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.goaways = n
}

// connFault applies a pending connection fault to r's connection and
// reports whether it did (then the request gets no answer).
func (s *Server) connFault(r *http.Request) bool {
	s.mu.Lock()
	reset, goaway := s.resets > 0, s.resets == 0 && s.goaways > 0
	if reset {
		s.resets--
	} else if goaway {
		s.goaways--
	}
	s.mu.Unlock()
	if !reset && !goaway {
		return false
	}
	c, _ := r.Context().Value(connKey{}).(net.Conn)
	if c == nil {
		return false
	}
	raw := c
	if tc, ok := c.(*tls.Conn); ok {
		raw = tc.NetConn()
	}
	if reset {
		_, _ = io.Copy(io.Discard, r.Body) // the request arrived whole: the answer is what is lost
		if tcp, ok := raw.(*net.TCPConn); ok {
			_ = tcp.SetLinger(0) // close with RST
		}
		raw.Close()
		return true
	}
	debug := []byte(`{"reason":"Shutdown"}`)
	frame := make([]byte, 9+8+len(debug))
	binary.BigEndian.PutUint32(frame[0:4], uint32(8+len(debug))<<8|0x7) // 24-bit length, type GOAWAY
	// flags 0, stream 0 (frame[4:9] stay zero); last-stream-ID 0, NO_ERROR.
	copy(frame[17:], debug)
	_, _ = c.Write(frame)
	c.Close()
	return true
}
