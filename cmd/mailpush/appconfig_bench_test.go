package main

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mailpush/mailpush"
	"github.com/mailpush/mailpush/directory/slapdtest"
)

// parallelGets runs b.N GETs (or POSTs when body is set) from 8 goroutines
// on keep-alive connections to the running server, path(i) naming the
// i-th request, and reports requests/s and the latency percentiles.
func parallelGets(b *testing.B, w *world, token string, path func(i int) string, body func(i int) (string, string), wantStatus int) {
	b.Helper()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	defer client.CloseIdleConnections()
	const workers = 8
	var next atomic.Int64
	lat := make([][]time.Duration, workers)
	var wg sync.WaitGroup
	var failed atomic.Value
	b.ResetTimer()
	start := time.Now()
	for g := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= b.N {
					return
				}
				method, rd := http.MethodGet, io.Reader(nil)
				var ct string
				if body != nil {
					var s string
					ct, s = body(i)
					method, rd = http.MethodPost, strings.NewReader(s)
				}
				req, _ := http.NewRequest(method, w.main.URL()+path(i), rd)
				if token != "" {
					req.Header.Set("Authorization", "Bearer "+token)
				}
				if ct != "" {
					req.Header.Set("Content-Type", ct)
				}
				t0 := time.Now()
				resp, err := client.Do(req)
				if err != nil {
					failed.Store(err.Error())
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				lat[g] = append(lat[g], time.Since(t0))
				if resp.StatusCode != wantStatus {
					failed.Store(fmt.Sprintf("%s = %d, want %d", path(i), resp.StatusCode, wantStatus))
					return
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	if f := failed.Load(); f != nil {
		b.Fatal(f)
	}
	var all []time.Duration
	for _, l := range lat {
		all = append(all, l...)
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "req/s")
	reportPercentiles(b, all, "")
}

// BenchmarkAutodiscover measures the responder in the running server over
// loopback, 8 concurrent keep-alive clients, each request a different
// address. Run:
//
//	go test -run XXX -bench Autodiscover -benchtime 20000x ./cmd/mailpush
func BenchmarkAutodiscover(b *testing.B) {
	w := newWorldWith(b, "warn", worldOptions{extraConfig: `tenants:
  acme:
    autodiscover:
      domains: [example.com]
      ewsUrl: https://mail.example.com/EWS/Exchange.asmx
      activeSyncUrl: https://gate.example.com/Microsoft-Server-ActiveSync
`})
	b.Run("POX", func(b *testing.B) {
		parallelGets(b, w, "", func(int) string { return "/autodiscover/autodiscover.xml" }, func(i int) (string, string) {
			return "text/xml", `<?xml version="1.0" encoding="utf-8"?><Autodiscover xmlns="http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006"><Request>` +
				fmt.Sprintf("<EMailAddress>user%d@example.com</EMailAddress>", i) +
				`<AcceptableResponseSchema>http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a</AcceptableResponseSchema></Request></Autodiscover>`
		}, 200)
	})
	b.Run("JSON", func(b *testing.B) {
		parallelGets(b, w, "", func(i int) string {
			return fmt.Sprintf("/autodiscover/autodiscover.json/v1.0/user%d@example.com?Protocol=EWS", i)
		}, nil, 200)
	})
}

// BenchmarkAppConfig measures GET /api/v1/appconfig/{user} through the
// running server against the real slapd: 1,000 users, 8 concurrent
// clients. Warm: every user is in the directory cache (a first pass fills
// it); cold: cacheSize 1, so every request searches slapd (a bind per
// pooled connection, then one subtree search). Run:
//
//	go test -run XXX -bench AppConfig -benchtime 5000x ./cmd/mailpush
func BenchmarkAppConfig(b *testing.B) {
	const users = 1000
	var ldif strings.Builder
	ldif.WriteString("dn: ou=people,dc=example,dc=com\nobjectClass: organizationalUnit\nou: people\n")
	for u := range users {
		fmt.Fprintf(&ldif, "\ndn: uid=u%d,ou=people,dc=example,dc=com\nobjectClass: inetOrgPerson\nobjectClass: mailpushTestUser\nuid: u%d\ncn: User %d\nsn: U\n"+
			"displayName: User Nummer %d\nmail: u%d@example.com\nuserPrincipalName: u%d@corp.example.com\nsAMAccountName: u%d\n", u, u, u, u, u, u, u)
		if u%2 == 0 {
			fmt.Fprintf(&ldif, "mobile: +1 555 %04d\n", u)
		}
	}
	slapd := slapdtest.Start(b, ldif.String(), slapdtest.Options{Anonymous: true})
	for _, mode := range []struct {
		name      string
		cacheSize int
	}{{"warm", 10000}, {"cold", 1}} {
		b.Run(mode.name, func(b *testing.B) {
			w := newWorldWith(b, "warn", worldOptions{extraConfig: fmt.Sprintf(`tenants:
  acme:
    directory: {url: '%s', baseDn: '%s', attributes: [mail], cacheSize: %d}
    appConfig:
      attributes: [mobile]
      keys:
        pushServiceUrl: "${mailpush.url}/api/v1"
        pushEnabled: true
        user: "${user.userPrincipalName}"
        phone: "${user.mobile:-none}"
        SEND_LDAP_ATTRIBUTES: "userPrincipalName=${user.userprincipalname},sAMAccountName=${user.samaccountname},displayName=${user.displayName:-},mail=${user.mail}"
`, slapd.URL, slapdtest.BaseDN, mode.cacheSize)})
			w.addTenant(b, "acme")
			admin := w.addToken(b, "acme", mailpush.ScopeAdmin)
			path := func(i int) string { return fmt.Sprintf("/api/v1/appconfig/u%d", i%users) }
			if mode.name == "warm" {
				for i := range users {
					if st, out := w.call(b, "GET", path(i), admin, nil); st != 200 {
						b.Fatalf("warm-up %d: %d %v", i, st, out)
					}
				}
			}
			parallelGets(b, w, admin, path, nil, 200)
		})
	}
}
