package dovecottest

import (
	"fmt"
	"net"
	"net/textproto"
	"strings"
	"time"
)

// Deliver sends one message over LMTP (RFC 2033) and returns once Dovecot
// has answered the DATA for the recipient: the message is then stored.
func Deliver(addr, from, to, subject string) error {
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	c := textproto.NewConn(conn)
	step := func(code int, format string, args ...any) error {
		if format != "" {
			if err := c.PrintfLine(format, args...); err != nil {
				return err
			}
		}
		if _, msg, err := c.ReadResponse(code); err != nil {
			return fmt.Errorf("lmtp %q: %w (%s)", format, err, msg)
		}
		return nil
	}
	for _, s := range []struct {
		code   int
		format string
		args   []any
	}{
		{220, "", nil}, {250, "LHLO mailpush.test", nil}, {250, "MAIL FROM:<%s>", []any{from}},
		{250, "RCPT TO:<%s>", []any{to}}, {354, "DATA", nil},
	} {
		if err := step(s.code, s.format, s.args...); err != nil {
			return err
		}
	}
	w := c.DotWriter()
	fmt.Fprintf(w, "From: <%s>\r\nTo: <%s>\r\nSubject: %s\r\nDate: %s\r\nMessage-ID: <%d@mailpush.test>\r\n\r\nHello from the mailpush benchmark.\r\n",
		from, to, subject, time.Now().Format(time.RFC1123Z), time.Now().UnixNano())
	if err := w.Close(); err != nil {
		return err
	}
	if err := step(250, ""); err != nil { // one reply per recipient
		return err
	}
	return step(221, "QUIT")
}

// IMAP is a minimal IMAP4rev1 client (RFC 3501): enough to log in, select
// a mailbox and change flags as another mail client would.
type IMAP struct {
	conn net.Conn
	c    *textproto.Conn
	tag  int
}

// DialIMAP connects and reads the greeting.
func DialIMAP(addr string) (*IMAP, error) {
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	conn.SetDeadline(time.Now().Add(60 * time.Second))
	m := &IMAP{conn: conn, c: textproto.NewConn(conn)}
	line, err := m.c.ReadLine()
	if err != nil || !strings.HasPrefix(line, "* OK") {
		conn.Close()
		return nil, fmt.Errorf("imap greeting %q: %v", line, err)
	}
	return m, nil
}

// Cmd sends one command (no literals) and returns its untagged responses; a
// NO or BAD completion is an error.
func (m *IMAP) Cmd(format string, args ...any) ([]string, error) {
	m.tag++
	tag := fmt.Sprintf("a%d", m.tag)
	cmd := fmt.Sprintf(format, args...)
	if err := m.c.PrintfLine("%s %s", tag, cmd); err != nil {
		return nil, err
	}
	var untagged []string
	for {
		line, err := m.c.ReadLine()
		if err != nil {
			return untagged, err
		}
		if rest, ok := strings.CutPrefix(line, tag+" "); ok {
			if !strings.HasPrefix(rest, "OK") {
				return untagged, fmt.Errorf("imap %s: %s", strings.Fields(cmd)[0], rest)
			}
			return untagged, nil
		}
		untagged = append(untagged, line)
	}
}

// Login authenticates with LOGIN (quoted strings without quotes or
// backslashes in them).
func (m *IMAP) Login(user, password string) error {
	_, err := m.Cmd("LOGIN %q %q", user, password)
	return err
}

// Close logs out and closes the connection.
func (m *IMAP) Close() error {
	m.Cmd("LOGOUT")
	return m.conn.Close()
}
