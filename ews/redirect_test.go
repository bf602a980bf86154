package ews

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/mailpush/mailpush"
)

// countingServer is an HTTP(S) server on loopback that counts the TCP
// connections it accepts: a redirect target that must receive nothing.
type countingServer struct {
	*httptest.Server
	accepts atomic.Int32
}

type countingListener struct {
	net.Listener
	n *atomic.Int32
}

func (l countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.n.Add(1)
	}
	return c, err
}

// newCountingServer starts the server with start: (*httptest.Server).Start
// or StartTLS.
func newCountingServer(t *testing.T, start func(*httptest.Server)) *countingServer {
	t.Helper()
	cs := &countingServer{}
	cs.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/xml; charset=utf-8")
		w.Write([]byte(subscribeOK))
	}))
	cs.Listener = countingListener{cs.Listener, &cs.accepts}
	start(cs.Server)
	t.Cleanup(cs.Close)
	return cs
}

// TestClientNeverFollowsRedirects is finding 1: an allowed host answering a
// redirect made mailpush send the SOAP request, with the user's password, to
// another host, or to plain http on the same host. Every 3xx is now an error
// with code upstream_redirect that names the target, and the target never
// sees a connection, whatever the HTTP client's own redirect policy.
func TestClientNeverFollowsRedirects(t *testing.T) {
	other := newCountingServer(t, (*httptest.Server).StartTLS) // another origin, https
	plain := newCountingServer(t, (*httptest.Server).Start)    // plain http on the same host (127.0.0.1)
	_, plainPort, _ := net.SplitHostPort(plain.Listener.Addr().String())
	cases := []struct {
		name, location string
		status         int
		target         *countingServer
		ntlm           bool
	}{
		{"307 to another host", other.URL + "/EWS/Exchange.asmx", http.StatusTemporaryRedirect, other, false},
		{"308 to another host", other.URL + "/EWS/Exchange.asmx", http.StatusPermanentRedirect, other, false},
		{"302 to another host", other.URL + "/EWS/Exchange.asmx", http.StatusFound, other, false},
		{"301 to another host", other.URL + "/EWS/Exchange.asmx", http.StatusMovedPermanently, other, false},
		{"307 to http on the same host", "http://127.0.0.1:" + plainPort + "/EWS/Exchange.asmx?token=x", http.StatusTemporaryRedirect, plain, false},
		{"307 to http on the same host after NTLM", "http://127.0.0.1:" + plainPort + "/EWS/Exchange.asmx", http.StatusTemporaryRedirect, plain, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := tc.target.accepts.Load()
			var seen atomic.Int32
			first := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				seen.Add(1)
				if tc.ntlm && strings.HasPrefix(r.Header.Get("Authorization"), "Basic ") {
					w.Header().Set("WWW-Authenticate", "NTLM")
					w.WriteHeader(http.StatusUnauthorized)
					return
				}
				w.Header().Set("Location", tc.location)
				w.WriteHeader(tc.status)
			}))
			defer first.Close()
			// A client that would follow redirects (the default policy),
			// trusting both TLS servers.
			tr := first.Client().Transport.(*http.Transport).Clone()
			tr.TLSClientConfig.RootCAs.AddCert(other.Certificate())
			c := &Client{HTTP: &http.Client{Transport: tr}}
			ep := Endpoint{URL: first.URL + "/EWS/Exchange.asmx", Credentials: basic}
			for _, call := range []func() error{
				func() error {
					_, err := c.Subscribe(context.Background(), ep, SubscribeRequest{StatusFrequency: 1, URL: "https://push.example.com/ews/notify/x"})
					return err
				},
				func() error { _, err := c.GetInboxUnread(context.Background(), ep); return err },
				func() error { _, err := c.GetItems(context.Background(), ep, []string{"id-1"}); return err },
			} {
				err := call()
				if mailpush.ErrorCode(err) != mailpush.ERedirect {
					t.Fatalf("error %v, want code %s", err, mailpush.ERedirect)
				}
				msg := mailpush.ErrorMessage(err)
				where, _, _ := strings.Cut(tc.location, "?")
				if !strings.Contains(msg, where) || strings.Contains(msg, "token=x") {
					t.Errorf("message %q should name %s (without its query)", msg, where)
				}
				if strings.Contains(err.Error(), secret) || strings.Contains(err.Error(), "alice") {
					t.Errorf("error %q holds a credential", err)
				}
			}
			if seen.Load() == 0 {
				t.Fatal("the first server got no request")
			}
			if n := tc.target.accepts.Load() - before; n != 0 {
				t.Errorf("the redirect target accepted %d connections, want 0", n)
			}
		})
	}
}
