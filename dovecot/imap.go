package dovecot

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/mailpush/mailpush"
)

// IMAP is how mailpush reaches a tenant's Dovecot over IMAP to check a
// user's password (tenants.<name>.dovecot.imap): the per-user proof that
// lets an app token register that user in service mode.
type IMAP struct {
	Address string // host:port
	// TLS is "tls" (implicit TLS, port 993; the default), "starttls", or
	// "none" (plain text: loopback tests and labs only, the password
	// crosses the network in clear).
	TLS       string
	TLSConfig *tls.Config // roots and server name; nil: system roots
	Timeout   time.Duration
}

const maxIMAPLine = 8 << 10

var _ mailpush.CredentialVerifier = (*Source)(nil)

// VerifyCredentials checks that creds are the user's own for address: the
// username must name that address (by the tenant's user mapping) and the
// tenant's Dovecot must accept them in an IMAP LOGIN. The password is used
// for that one LOGIN and forgotten; it is never logged.
func (s *Source) VerifyCredentials(ctx context.Context, t *mailpush.Tenant, address string, creds mailpush.Credentials) error {
	ts := s.tenantNamed(t.Name)
	if ts == nil {
		return mailpush.Errorf(mailpush.EUnsupported, "tenant %q has no Dovecot configuration on this server (tenants.%s.dovecot)", t.Name, t.Name)
	}
	if ts.IMAP.Address == "" {
		return mailpush.Errorf(mailpush.EUnsupported, "tenant %s cannot check a user's password: it has no IMAP host (tenants.%s.dovecot.imap); use a backend token", t.Name, t.Name)
	}
	if creds.Username == "" || creds.Password == "" {
		return mailpush.Errorf(mailpush.EInvalid, "mailbox.sealedCredentials for source dovecot must hold the user's IMAP username and password")
	}
	if strings.ContainsAny(creds.Username+creds.Password, "\r\n\x00") || len(creds.Username) > 320 || len(creds.Password) > 1024 {
		return mailpush.Errorf(mailpush.EInvalid, "the sealed IMAP username or password holds a line break or is too long")
	}
	if !strings.EqualFold(ts.Address(creds.Username), address) {
		return mailpush.Errorf(mailpush.EMailboxDenied, "the sealed credentials are not those of mailbox.address")
	}
	ok, err := ts.IMAP.login(ctx, creds.Username, creds.Password)
	if err != nil {
		return mailpush.WrapError(mailpush.EUpstream, "the tenant's IMAP server could not be asked to check the password", err)
	}
	if !ok {
		return mailpush.Errorf(mailpush.ECredentials, "the tenant's IMAP server refused the sealed credentials")
	}
	return nil
}

// login runs one IMAP LOGIN and reports whether the server accepted it.
func (m IMAP) login(ctx context.Context, user, pass string) (bool, error) {
	timeout := m.Timeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", m.Address)
	if err != nil {
		return false, err
	}
	defer conn.Close()
	deadline, _ := ctx.Deadline()
	conn.SetDeadline(deadline)
	tlsConfig := func() *tls.Config {
		c := &tls.Config{MinVersion: tls.VersionTLS12}
		if m.TLSConfig != nil {
			c = m.TLSConfig.Clone()
		}
		if c.ServerName == "" {
			c.ServerName, _, _ = net.SplitHostPort(m.Address)
		}
		return c
	}
	if m.TLS == "" || m.TLS == "tls" {
		conn = tls.Client(conn, tlsConfig())
	}
	c := &imapConn{r: bufio.NewReaderSize(conn, 1024), conn: conn}
	if line, err := c.line(); err != nil {
		return false, err
	} else if !strings.HasPrefix(line, "* OK") {
		return false, fmt.Errorf("imap: greeting %q", truncate(line))
	}
	if m.TLS == "starttls" {
		if status, err := c.command("a0", "STARTTLS"); err != nil {
			return false, err
		} else if status != "OK" {
			return false, errors.New("imap: STARTTLS refused")
		}
		tc := tls.Client(conn, tlsConfig())
		c = &imapConn{r: bufio.NewReaderSize(tc, 1024), conn: tc}
	}
	status, err := c.command("a1", "LOGIN "+quote(user)+" "+quote(pass))
	if err != nil {
		return false, err
	}
	c.command("a2", "LOGOUT") // best effort: the answer does not matter
	switch status {
	case "OK":
		return true, nil
	case "NO":
		return false, nil
	}
	return false, fmt.Errorf("imap: LOGIN answered %s", status)
}

type imapConn struct {
	r    *bufio.Reader
	conn net.Conn
}

func (c *imapConn) line() (string, error) {
	var b []byte
	for {
		part, more, err := c.r.ReadLine()
		if err != nil {
			return "", err
		}
		if b = append(b, part...); len(b) > maxIMAPLine {
			return "", errors.New("imap: line too long")
		}
		if !more {
			return string(b), nil
		}
	}
}

// command sends a tagged command and returns the tagged status (OK, NO,
// BAD), skipping untagged lines.
func (c *imapConn) command(tag, cmd string) (string, error) {
	if _, err := c.conn.Write([]byte(tag + " " + cmd + "\r\n")); err != nil {
		return "", err
	}
	for range 100 {
		line, err := c.line()
		if err != nil {
			return "", err
		}
		if rest, ok := strings.CutPrefix(line, tag+" "); ok {
			status, _, _ := strings.Cut(rest, " ")
			return strings.ToUpper(status), nil
		}
	}
	return "", errors.New("imap: no tagged answer")
}

// quote makes an IMAP quoted string (RFC 3501); callers refuse CR, LF
// and NUL beforehand.
func quote(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
}

func truncate(s string) string {
	if len(s) > 60 {
		return s[:60] + "…"
	}
	return s
}
