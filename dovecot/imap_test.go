package dovecot

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/mailpush/mailpush"
)

// imapServer is a scripted IMAP server: it accepts the one user and
// password, speaking implicit TLS, STARTTLS or plain text.
func imapServer(t *testing.T, mode string, user, pass string) (addr string, roots *x509.CertPool, logins func() int) {
	t.Helper()
	// httptest's certificate is valid for 127.0.0.1: borrow it.
	ts := httptest.NewTLSServer(nil)
	cert := ts.TLS.Certificates[0]
	roots = x509.NewCertPool()
	roots.AddCert(ts.Certificate())
	ts.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	conf := &tls.Config{Certificates: []tls.Certificate{cert}}
	var mu sync.Mutex
	seen := 0
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func(c net.Conn) {
				defer c.Close()
				if mode == "tls" {
					c = tls.Server(c, conf)
				}
				r := bufio.NewReader(c)
				c.Write([]byte("* OK [CAPABILITY IMAP4rev1 STARTTLS] ready\r\n"))
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					tag, cmd, _ := strings.Cut(strings.TrimRight(line, "\r\n"), " ")
					switch {
					case cmd == "STARTTLS":
						c.Write([]byte(tag + " OK begin TLS\r\n"))
						c = tls.Server(c, conf)
						r = bufio.NewReader(c)
					case strings.HasPrefix(cmd, "LOGIN "):
						mu.Lock()
						seen++
						mu.Unlock()
						if cmd == "LOGIN "+quote(user)+" "+quote(pass) {
							c.Write([]byte("* CAPABILITY IMAP4rev1\r\n" + tag + " OK Logged in\r\n"))
						} else {
							c.Write([]byte(tag + " NO [AUTHENTICATIONFAILED] Authentication failed.\r\n"))
						}
					case cmd == "LOGOUT":
						c.Write([]byte("* BYE\r\n" + tag + " OK\r\n"))
						return
					default:
						c.Write([]byte(tag + " BAD unknown\r\n"))
					}
				}
			}(c)
		}
	}()
	return ln.Addr().String(), roots, func() int { mu.Lock(); defer mu.Unlock(); return seen }
}

// TestVerifyCredentials: the user's own password for the address passes an
// IMAP LOGIN over implicit TLS, STARTTLS or plain text; a wrong password,
// another address's user, or a line break in it do not (and the last two
// make no connection).
func TestVerifyCredentials(t *testing.T) {
	const pass = `p"a\ss word`
	for _, mode := range []string{"tls", "starttls", "none"} {
		t.Run(mode, func(t *testing.T) {
			addr, roots, logins := imapServer(t, mode, "alice@example.com", pass)
			s, err := New(Config{Tenants: []Tenant{{Name: "acme", Username: "dovecot", Password: "x", UserMapping: MapAddress,
				IMAP: IMAP{Address: addr, TLS: mode, TLSConfig: &tls.Config{RootCAs: roots}}}}})
			if err != nil {
				t.Fatal(err)
			}
			tn := &mailpush.Tenant{Name: "acme"}
			ctx := context.Background()
			for _, tc := range []struct {
				name          string
				address, user string
				pass          string
				code          string
				connects      bool
			}{
				{"own password", "alice@example.com", "alice@example.com", pass, "", true},
				{"wrong password", "alice@example.com", "alice@example.com", "guess", mailpush.ECredentials, true},
				{"another user's password", "alice@example.com", "mallory@example.com", "m", mailpush.EMailboxDenied, false},
				{"a line break", "alice@example.com", "alice@example.com", "pw\r\na2 LOGOUT", mailpush.EInvalid, false},
			} {
				before := logins()
				err := s.VerifyCredentials(ctx, tn, tc.address, mailpush.Credentials{Username: tc.user, Password: tc.pass})
				if mailpush.ErrorCode(err) != tc.code {
					t.Errorf("%s: %v, want code %q", tc.name, err, tc.code)
				}
				if got := logins() > before; got != tc.connects {
					t.Errorf("%s: LOGIN sent %v, want %v", tc.name, got, tc.connects)
				}
			}
		})
	}
	s, _ := New(Config{Tenants: []Tenant{{Name: "acme", Username: "dovecot", Password: "x", UserMapping: MapAddress}}})
	if err := s.VerifyCredentials(context.Background(), &mailpush.Tenant{Name: "acme"}, "a@example.com", mailpush.Credentials{Username: "a@example.com", Password: "p"}); mailpush.ErrorCode(err) != mailpush.EUnsupported {
		t.Errorf("without an IMAP host: %v, want unsupported", err)
	}
}
