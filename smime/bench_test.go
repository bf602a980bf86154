package smime_test

import (
	"context"
	"crypto/x509"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/mailpush/mailpush"
	"github.com/mailpush/mailpush/clocktest"
	"github.com/mailpush/mailpush/directory"
	"github.com/mailpush/mailpush/directory/slapdtest"
	"github.com/mailpush/mailpush/smime"
	"github.com/mailpush/mailpush/smime/smimetest"
)

// BenchmarkLookup10 measures lookups of 10-recipient messages against a
// real slapd: "cold" moves the clock past the directory cache's TTL before
// every message, so all 10 recipients are searched in slapd; "warm"
// answers from the cache. Both validate every certificate (chain to the
// root through the intermediate). The parallel variants run 8 apps at
// once. Reported: messages/s and the p99 latency of one message.
//
//	go test -run '^$' -bench BenchmarkLookup10 -benchtime 2000x ./smime/
func BenchmarkLookup10(b *testing.B) {
	root := smimetest.NewRoot(b, "Bench Root")
	inter := root.Intermediate(b, "Bench CA")
	var users []user
	var addrs []string
	for i := range 10 {
		a := fmt.Sprintf("user%d@example.com", i)
		c := inter.Issue(b, smimetest.Leaf{Emails: []string{a}, KeyUsage: x509.KeyUsageKeyEncipherment | x509.KeyUsageDigitalSignature,
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageEmailProtection}})
		users = append(users, user{uid: fmt.Sprintf("user%d", i), mail: a, certs: []*x509.Certificate{c.Cert, inter.Cert}})
		addrs = append(addrs, a)
	}
	srv := slapdtest.Start(b, ldif(b, users), slapdtest.Options{Anonymous: true})
	rootsFile := filepath.Join(b.TempDir(), "roots.pem")
	os.WriteFile(rootsFile, smimetest.PEM(root.Cert), 0o600)
	clock := clocktest.New(time.Now())
	log := slog.New(slog.DiscardHandler)
	d, err := directory.New(directory.Config{URL: srv.URL, BaseDN: slapdtest.BaseDN, PoolSize: 8, CacheTTL: time.Minute,
		Attributes: []string{"mail", "userCertificate;binary", "userSMIMECertificate"}}, log, clock)
	if err != nil {
		b.Fatal(err)
	}
	defer d.Close()
	svc, err := smime.New(smime.Options{Logger: log, Clock: clock},
		map[string]smime.Tenant{"acme": {Directory: d, Config: smime.Config{RootsFile: rootsFile}}})
	if err != nil {
		b.Fatal(err)
	}
	tn := &mailpush.Tenant{ID: "t", Name: "acme"}
	lookup := func(b *testing.B) {
		res, err := svc.LookupCertificates(context.Background(), tn, addrs)
		if err != nil || res.Verdict != mailpush.SMIMEVerdictEncryptAll {
			b.Fatalf("%v %+v", err, res)
		}
	}
	lookup(b) // fills the cache for warm
	for _, tc := range []struct {
		name     string
		cold     bool
		parallel bool
	}{{"cold", true, false}, {"warm", false, false}, {"cold-parallel8", true, true}, {"warm-parallel8", false, true}} {
		b.Run(tc.name, func(b *testing.B) {
			var mu sync.Mutex
			lat := make([]time.Duration, 0, b.N)
			one := func() {
				if tc.cold {
					clock.Advance(2 * time.Minute) // every entry is past its TTL
				}
				t0 := time.Now()
				lookup(b)
				d := time.Since(t0)
				mu.Lock()
				lat = append(lat, d)
				mu.Unlock()
			}
			b.ResetTimer()
			start := time.Now()
			if tc.parallel {
				b.SetParallelism(4) // 4 × GOMAXPROCS (2 here) = 8 apps
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						one()
					}
				})
			} else {
				for range b.N {
					one()
				}
			}
			elapsed := time.Since(start)
			b.StopTimer()
			slices.Sort(lat)
			b.ReportMetric(float64(len(lat))/elapsed.Seconds(), "msgs/s")
			b.ReportMetric(float64(len(lat))*10/elapsed.Seconds(), "recipients/s")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
			b.ReportMetric(0, "ns/op") // per-op time is in msgs/s; p99 is the latency figure
		})
	}
}
