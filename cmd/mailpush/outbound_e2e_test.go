package main

import (
	"bytes"
	"context"
	"crypto/x509"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
)

// acceptCounter is a loopback HTTP(S) server that counts the connections it
// accepts: a place credentials must never reach.
type acceptCounter struct {
	*httptest.Server
	accepts atomic.Int32
}

func newAcceptCounter(t testing.TB, h http.Handler, tls bool) *acceptCounter {
	t.Helper()
	a := &acceptCounter{Server: httptest.NewUnstartedServer(h)}
	a.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			a.accepts.Add(1)
		}
	}
	if tls {
		a.StartTLS()
	} else {
		a.Start()
	}
	t.Cleanup(a.Close)
	return a
}

// addTenantHosts runs `mailpush tenant add` allowing exactly hosts.
func (w *world) addTenantHosts(t testing.TB, name string, hosts ...string) string {
	t.Helper()
	args := []string{"tenant", "add", name, "--config", w.configPath}
	for _, h := range hosts {
		args = append(args, "--allow-host", h)
	}
	var out, errOut bytes.Buffer
	if err := run(context.Background(), args, &out, &errOut, nil); err != nil {
		t.Fatalf("tenant add: %v (%s)", err, errOut.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	return lines[len(lines)-1]
}

// TestRedirectCarriesNoCredentials is finding 1 over real sockets: an
// allowed EWS host that answers a registration's Subscribe with a redirect,
// to another (even allowed) host or to plain http on the same host, gets a
// 502 upstream_redirect naming the target, and the target never sees a
// connection (today's main followed the 307 with Authorization: Basic).
// An ewsUrl on an allowed host name but another port is refused with 403
// before any connection is made.
func TestRedirectCarriesNoCredentials(t *testing.T) {
	sink := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusInternalServerError) })
	other := newAcceptCounter(t, sink, true)
	plain := newAcceptCounter(t, sink, false)
	wrongPort := newAcceptCounter(t, sink, true)
	var location atomic.Value
	location.Store("")
	var asked atomic.Int32
	first := newAcceptCounter(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		asked.Add(1)
		w.Header().Set("Location", location.Load().(string))
		w.WriteHeader(http.StatusTemporaryRedirect)
	}), true)
	w := newWorldWith(t, "debug", worldOptions{extra: func(*world) (string, []*x509.Certificate) {
		return "", []*x509.Certificate{first.Certificate(), other.Certificate(), wrongPort.Certificate()}
	}})
	// The redirect target is allowed too: not even an allowed host gets a
	// request that was redirected.
	token := w.addTenantHosts(t, "acme", hostOf(first.URL), hostOf(other.URL), hostOf(plain.URL))
	sealed := w.sealCredentials(t, username, password)
	register := func(ewsURL string) (int, map[string]any) {
		return w.call(t, "POST", "/api/v1/registrations", token, map[string]any{
			"device":  map[string]any{"platform": "ios", "token": deviceToken(7), "environment": "production"},
			"mailbox": map[string]any{"address": address, "source": "ews", "ewsUrl": ewsURL, "sealedCredentials": sealed},
		})
	}
	for _, tc := range []struct {
		name, to string
		target   *acceptCounter
	}{
		{"307 to another host", other.URL + "/EWS/Exchange.asmx", other},
		{"307 to http on the same host", plain.URL + "/EWS/Exchange.asmx", plain},
	} {
		t.Run(tc.name, func(t *testing.T) {
			location.Store(tc.to)
			before := asked.Load()
			st, body := register(first.URL + "/EWS/Exchange.asmx")
			e, _ := body["error"].(map[string]any)
			if st != http.StatusBadGateway || e["code"] != "upstream_redirect" || !strings.Contains(e["message"].(string), tc.to) {
				t.Fatalf("register = %d %v; want 502 upstream_redirect naming %s", st, body, tc.to)
			}
			if asked.Load() == before {
				t.Fatal("the allowed host got no request: the test proves nothing")
			}
			if n := tc.target.accepts.Load(); n != 0 {
				t.Errorf("the redirect target accepted %d connections, want 0", n)
			}
		})
	}
	t.Run("allowed host at another port", func(t *testing.T) {
		st, body := register(wrongPort.URL + "/EWS/Exchange.asmx") // 127.0.0.1, not at an allowed port
		e, _ := body["error"].(map[string]any)
		if st != http.StatusForbidden || e["code"] != "forbidden" {
			t.Fatalf("register = %d %v; want 403 forbidden", st, body)
		}
		if n := wrongPort.accepts.Load(); n != 0 {
			t.Errorf("the server at the port not allowed accepted %d connections, want 0", n)
		}
	})
	if strings.Contains(w.logs.String(), password) {
		t.Error("the logs hold the password")
	}
}

// TestAllowHostValidation: `tenant add --allow-host` refuses entries that
// are not host[:port] and names the flag.
func TestAllowHostValidation(t *testing.T) {
	for _, bad := range []string{"https://mail.example.com", "mail.example.com:0", "mail.*.example.com", "mail.example.com/EWS"} {
		var out, errOut bytes.Buffer
		err := run(context.Background(), []string{"tenant", "add", "acme", "--allow-host", bad}, &out, &errOut, []string{"MAILPUSH_DATABASE_PATH=" + t.TempDir() + "/db", "MAILPUSH_KEY_DIR=" + t.TempDir()})
		if _, ok := err.(usageError); !ok || !strings.Contains(err.Error(), "--allow-host") {
			t.Errorf("--allow-host %q: %v, want a usage error naming --allow-host", bad, err)
		}
	}
}
