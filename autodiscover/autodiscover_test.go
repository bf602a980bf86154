package autodiscover_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"

	"github.com/mailpush/mailpush"
	"github.com/mailpush/mailpush/autodiscover"
	"github.com/mailpush/mailpush/clocktest"
)

// env is a small internet on loopback: one HTTPS server and one HTTP server
// answering for every host name by the Host header, a DNS server for SRV,
// and a client whose dials all land on loopback, recorded by host name.
type env struct {
	https, http *httptest.Server
	handlers    map[string]http.HandlerFunc // by host name
	srv         map[string]*net.SRV         // by query name
	mu          sync.Mutex
	dialed      []string
	client      *autodiscover.Client
	clock       *clocktest.Clock
}

func newEnv(t *testing.T) *env {
	e := &env{handlers: map[string]http.HandlerFunc{}, srv: map[string]*net.SRV{}, clock: clocktest.New(time.Now())}
	route := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host, _, _ := net.SplitHostPort(r.Host)
		e.mu.Lock()
		h := e.handlers[host]
		e.mu.Unlock()
		if h != nil {
			h(w, r)
			return
		}
		http.NotFound(w, r)
	})
	cert := selfSigned(t, "example.com", "*.example.com", "corp.example", "*.corp.example", "evil.example")
	e.https = httptest.NewUnstartedServer(route)
	e.https.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	e.https.StartTLS()
	t.Cleanup(e.https.Close)
	e.http = httptest.NewServer(route)
	t.Cleanup(e.http.Close)

	pool := x509.NewCertPool()
	leaf, _ := x509.ParseCertificate(cert.Certificate[0])
	pool.AddCert(leaf)
	tr := &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool},
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			host, port, _ := net.SplitHostPort(addr)
			e.mu.Lock()
			e.dialed = append(e.dialed, host, addr)
			e.mu.Unlock()
			var d net.Dialer
			return d.DialContext(ctx, network, net.JoinHostPort("127.0.0.1", port))
		},
	}
	t.Cleanup(tr.CloseIdleConnections)
	e.client = &autodiscover.Client{
		HTTP: &http.Client{Transport: tr, Timeout: 5 * time.Second,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }},
		Resolver:  e.dnsServer(t),
		HTTPSPort: port(e.https), HTTPPort: port(e.http),
		Logger: slog.New(slog.DiscardHandler), Clock: e.clock,
	}
	return e
}

func port(s *httptest.Server) int {
	_, p, _ := net.SplitHostPort(s.Listener.Addr().String())
	n, _ := strconv.Atoi(p)
	return n
}

func (e *env) httpsURL(host, path string) string {
	return "https://" + net.JoinHostPort(host, strconv.Itoa(port(e.https))) + path
}

func (e *env) dialedHosts() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return strings.Join(e.dialed, ",")
}

// dnsServer answers SRV queries from e.srv over UDP on loopback.
func (e *env) dnsServer(t *testing.T) *net.Resolver {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() { pc.Close(); <-done })
	go func() {
		defer close(done)
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			var p dnsmessage.Parser
			h, err := p.Start(buf[:n])
			if err != nil {
				continue
			}
			q, err := p.Question()
			if err != nil {
				continue
			}
			b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: h.ID, Response: true, Authoritative: true})
			b.EnableCompression()
			b.StartQuestions()
			b.Question(q)
			e.mu.Lock()
			srv := e.srv[strings.ToLower(q.Name.String())]
			e.mu.Unlock()
			if srv != nil && q.Type == dnsmessage.TypeSRV {
				b.StartAnswers()
				b.SRVResource(dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET, TTL: 60},
					dnsmessage.SRVResource{Priority: srv.Priority, Weight: srv.Weight, Port: srv.Port, Target: dnsmessage.MustNewName(srv.Target)})
			} else {
				b = dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: h.ID, Response: true, Authoritative: true, RCode: dnsmessage.RCodeNameError})
				b.StartQuestions()
				b.Question(q)
			}
			msg, err := b.Finish()
			if err == nil {
				pc.WriteTo(msg, from)
			}
		}
	}()
	return &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "udp", pc.LocalAddr().String())
	}}
}

func selfSigned(t *testing.T, names ...string) tls.Certificate {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: names[0]}, DNSNames: names,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func pox(body string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != "/autodiscover/autodiscover.xml" {
			http.NotFound(w, r)
			return
		}
		req, _ := io.ReadAll(r.Body)
		if !strings.Contains(string(req), "<EMailAddress>") {
			http.Error(w, "bad request", 400)
			return
		}
		w.Header().Set("Content-Type", "text/xml")
		io.WriteString(w, `<?xml version="1.0" encoding="utf-8"?><Autodiscover xmlns="http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006">`+
			`<Response xmlns="http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a">`+body+`</Response></Autodiscover>`)
	}
}

func settings(ewsURL string) http.HandlerFunc {
	return pox(`<User><DisplayName>A</DisplayName></User><Account><AccountType>email</AccountType><Action>settings</Action>` +
		`<Protocol><Type>EXCH</Type><Server>mbx01</Server><EwsUrl>` + ewsURL + `</EwsUrl></Protocol></Account>`)
}

func redirectAddr(addr string) http.HandlerFunc {
	return pox(`<Account><Action>redirectAddr</Action><RedirectAddr>` + addr + `</RedirectAddr></Account>`)
}

func redirectURL(u string) http.HandlerFunc {
	return pox(`<Account><Action>redirectUrl</Action><RedirectUrl>` + u + `</RedirectUrl></Account>`)
}

func tenant(hosts ...string) *mailpush.Tenant {
	return &mailpush.Tenant{ID: "t1", Name: "acme", AllowedHosts: hosts}
}

// tenantAt is tenant with every host allowed at the test's https port (the
// fake internet's 443).
func (e *env) tenantAt(hosts ...string) *mailpush.Tenant {
	var out []string
	for _, h := range hosts {
		out = append(out, net.JoinHostPort(h, strconv.Itoa(port(e.https))))
	}
	return tenant(out...)
}

func TestLocateEWS(t *testing.T) {
	const addr = "alice@example.com"
	cases := []struct {
		name   string
		hosts  []string
		setup  func(e *env)
		want   string // EWS URL host, or "error:<code>"
		noDial string // a host, or host:port, that must never be dialled
	}{
		{"json v2 at the domain", []string{"example.com", "*.example.com"}, func(e *env) {
			e.handlers["example.com"] = func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path != "/autodiscover/autodiscover.json/v1.0/alice@example.com" || r.URL.Query().Get("Protocol") != "EWS" {
					http.NotFound(w, r)
					return
				}
				fmt.Fprintf(w, `{"Protocol":"EWS","Url":%q}`, e.httpsURL("mail.example.com", "/EWS/Exchange.asmx"))
			}
		}, "mail.example.com", ""},
		{"pox at autodiscover.domain", []string{"example.com", "*.example.com"}, func(e *env) {
			e.handlers["autodiscover.example.com"] = settings(e.httpsURL("mail.example.com", "/EWS/Exchange.asmx"))
		}, "mail.example.com", ""},
		{"http redirect method", []string{"*.example.com"}, func(e *env) {
			e.handlers["autodiscover.example.com"] = func(w http.ResponseWriter, r *http.Request) {
				if r.TLS != nil {
					http.NotFound(w, r)
					return
				}
				http.Redirect(w, r, e.httpsURL("adfs.example.com", "/autodiscover/autodiscover.xml"), http.StatusFound)
			}
			e.handlers["adfs.example.com"] = settings(e.httpsURL("mail.example.com", "/EWS/Exchange.asmx"))
		}, "mail.example.com", "example.com"},
		{"dns srv", []string{"mail.example.com"}, func(e *env) {
			e.srv["_autodiscover._tcp.example.com."] = &net.SRV{Target: "mail.example.com.", Port: uint16(port(e.https)), Priority: 0, Weight: 0}
			e.handlers["mail.example.com"] = settings(e.httpsURL("mail.example.com", "/EWS/Exchange.asmx"))
		}, "mail.example.com", "autodiscover.example.com"},
		{"redirectAddr to another domain", []string{"*.example.com", "corp.example", "*.corp.example"}, func(e *env) {
			e.handlers["autodiscover.example.com"] = redirectAddr("alice@corp.example")
			e.handlers["corp.example"] = settings(e.httpsURL("ews.corp.example", "/EWS/Exchange.asmx"))
		}, "ews.corp.example", ""},
		{"redirectUrl within the allowed hosts", []string{"*.example.com"}, func(e *env) {
			e.handlers["autodiscover.example.com"] = redirectURL(e.httpsURL("ad2.example.com", "/autodiscover/autodiscover.xml"))
			e.handlers["ad2.example.com"] = settings(e.httpsURL("mail.example.com", "/EWS/Exchange.asmx"))
		}, "mail.example.com", ""},
		{"redirectUrl outside the allowed hosts", []string{"*.example.com"}, func(e *env) {
			e.handlers["autodiscover.example.com"] = redirectURL(e.httpsURL("evil.example", "/autodiscover/autodiscover.xml"))
			e.handlers["evil.example"] = settings(e.httpsURL("evil.example", "/EWS/Exchange.asmx"))
		}, "error:" + mailpush.EForbidden, "evil.example"},
		{"EwsUrl outside the allowed hosts", []string{"*.example.com"}, func(e *env) {
			e.handlers["autodiscover.example.com"] = settings(e.httpsURL("evil.example", "/EWS/Exchange.asmx"))
		}, "error:" + mailpush.EForbidden, "evil.example"},
		{"http redirect to plain http", []string{"*.example.com"}, func(e *env) {
			e.handlers["autodiscover.example.com"] = func(w http.ResponseWriter, r *http.Request) {
				http.Redirect(w, r, "http://adfs.example.com/autodiscover/autodiscover.xml", http.StatusFound)
			}
		}, "error:" + mailpush.EUnsupported, "adfs.example.com"},
		// Finding 1: an allowed host name at a port the tenant did not allow.
		{"redirectUrl to an allowed host at another port", []string{"*.example.com"}, func(e *env) {
			e.handlers["autodiscover.example.com"] = redirectURL("https://ad2.example.com:" + strconv.Itoa(port(e.http)) + "/autodiscover/autodiscover.xml")
			e.handlers["ad2.example.com"] = settings(e.httpsURL("mail.example.com", "/EWS/Exchange.asmx"))
		}, "error:" + mailpush.EForbidden, "ad2.example.com"},
		{"EwsUrl on an allowed host at another port", []string{"*.example.com"}, func(e *env) {
			e.handlers["autodiscover.example.com"] = settings("https://mail.example.com:22/EWS/Exchange.asmx")
		}, "error:" + mailpush.EForbidden, "mail.example.com"},
		{"POX 307 to plain http is not followed", []string{"*.example.com"}, func(e *env) {
			e.handlers["autodiscover.example.com"] = func(w http.ResponseWriter, r *http.Request) {
				http.Redirect(w, r, "http://adfs.example.com:"+strconv.Itoa(port(e.http))+"/autodiscover/autodiscover.xml", http.StatusTemporaryRedirect)
			}
			e.handlers["adfs.example.com"] = settings(e.httpsURL("mail.example.com", "/EWS/Exchange.asmx"))
		}, "error:" + mailpush.EUnsupported, "adfs.example.com"},
		{"an HTTP client that follows redirects still does not", []string{"*.example.com"}, func(e *env) {
			e.client.HTTP.CheckRedirect = nil // net/http's default: follow
			e.handlers["autodiscover.example.com"] = func(w http.ResponseWriter, r *http.Request) {
				http.Redirect(w, r, "https://evil.example:"+strconv.Itoa(port(e.https))+"/autodiscover/autodiscover.xml", http.StatusTemporaryRedirect)
			}
			e.handlers["evil.example"] = settings(e.httpsURL("mail.example.com", "/EWS/Exchange.asmx"))
		}, "error:" + mailpush.EForbidden, "evil.example"},
		{"loop", []string{"*.example.com"}, func(e *env) {
			e.handlers["autodiscover.example.com"] = redirectURL(e.httpsURL("a.example.com", "/autodiscover/autodiscover.xml"))
			e.handlers["a.example.com"] = redirectURL(e.httpsURL("b.example.com", "/autodiscover/autodiscover.xml"))
			e.handlers["b.example.com"] = redirectURL(e.httpsURL("a.example.com", "/autodiscover/autodiscover.xml"))
		}, "error:" + mailpush.EUpstream, ""},
		{"more than 10 hops", []string{"*.example.com"}, func(e *env) {
			e.handlers["autodiscover.example.com"] = func(w http.ResponseWriter, r *http.Request) {
				body, _ := io.ReadAll(r.Body)
				n := 0
				if _, rest, ok := strings.Cut(string(body), "<EMailAddress>user"); ok {
					fmt.Sscanf(rest, "%d", &n)
				}
				r.Body = io.NopCloser(strings.NewReader(string(body)))
				redirectAddr(fmt.Sprintf("user%d@example.com", n+1))(w, r)
			}
		}, "error:" + mailpush.EUpstream, ""},
		{"garbage answers", []string{"*.example.com", "example.com"}, func(e *env) {
			e.handlers["example.com"] = func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "{not json") }
			e.handlers["autodiscover.example.com"] = func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "<html>hello</html>") }
		}, "error:" + mailpush.EUnsupported, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			e.mu.Lock()
			tc.setup(e)
			e.mu.Unlock()
			got, err := e.client.LocateEWS(context.Background(), e.tenantAt(tc.hosts...), addr, mailpush.Credentials{})
			if code, ok := strings.CutPrefix(tc.want, "error:"); ok {
				if mailpush.ErrorCode(err) != code || mailpush.ErrorMessage(err) == "" {
					t.Errorf("LocateEWS = %q, %v; want an error with code %s", got, err, code)
				}
			} else if err != nil || !strings.HasPrefix(got, "https://"+tc.want+":") {
				t.Errorf("LocateEWS = %q, %v; want a URL on %s", got, err, tc.want)
			}
			if tc.noDial != "" {
				for _, h := range strings.Split(e.dialedHosts(), ",") {
					if h == tc.noDial {
						t.Errorf("a connection went to %s: dialled %s", tc.noDial, e.dialedHosts())
					}
				}
			}
		})
	}
}

func TestLocateEWSCache(t *testing.T) {
	e := newEnv(t)
	var requests atomic.Int32
	e.mu.Lock()
	e.handlers["autodiscover.example.com"] = func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			requests.Add(1)
		}
		settings(e.httpsURL("mail.example.com", "/EWS/Exchange.asmx"))(w, r)
	}
	e.mu.Unlock()
	e.client.TTL = time.Hour
	tn := e.tenantAt("*.example.com")
	for range 3 {
		if _, err := e.client.LocateEWS(context.Background(), tn, "alice@example.com", mailpush.Credentials{}); err != nil {
			t.Fatal(err)
		}
	}
	if requests.Load() != 1 {
		t.Errorf("%d POX requests for 3 lookups, want 1 (cached)", requests.Load())
	}
	e.clock.Advance(2 * time.Hour)
	e.client.LocateEWS(context.Background(), tn, "alice@example.com", mailpush.Credentials{})
	if requests.Load() != 2 {
		t.Errorf("%d POX requests after the TTL, want 2", requests.Load())
	}
}
