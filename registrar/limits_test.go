package registrar_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mailpush/mailpush"
	"github.com/mailpush/mailpush/registrar"
	"github.com/mailpush/mailpush/seal"
	"github.com/mailpush/mailpush/storetest"
)

func (f *fixture) count(t *testing.T, tn *mailpush.Tenant) int {
	t.Helper()
	n, err := f.store.CountRegistrations(context.Background(), tn.ID)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func (f *fixture) otherTenant(t *testing.T, name string) *mailpush.Tenant {
	t.Helper()
	tn := &mailpush.Tenant{Name: name, AllowedHosts: f.tenant.AllowedHosts, MaxContent: mailpush.ContentBadge, DeviceSubscribed: true}
	if err := f.store.CreateTenant(context.Background(), tn); err != nil {
		t.Fatal(err)
	}
	return tn
}

// TestRegistrationRate plays the holder of a tenant's app token (it ships in
// every app) calling Register and CheckIn as fast as it can: beyond the
// tenant's burst the calls are 429 rate_limited with a Retry-After, nothing
// is stored and no source is asked; another tenant, and the same tenant's
// backend token, keep their own buckets.
func TestRegistrationRate(t *testing.T) {
	ctx := context.Background()
	f := setup(t)
	clock := storetest.NewClock()
	f.svc.Clock = clock
	f.svc.Quotas = func(*mailpush.Tenant) registrar.Quotas {
		return registrar.Quotas{Rate: registrar.Rate{PerSecond: 2, Burst: 3}, BackendRate: registrar.Rate{PerSecond: 1, Burst: 1}}
	}
	other := f.otherTenant(t, "globex")
	reg := func(tn *mailpush.Tenant, scope mailpush.Scope, n int) (*mailpush.RegistrationResult, error) {
		return f.svc.Register(ctx, tn, mailpush.RegisterRequest{Scope: scope, Device: device(n), Address: fmt.Sprintf("u%d@example.com", n), Source: mailpush.SourceEWS, EWSURL: ewsURL})
	}
	var first *mailpush.RegistrationResult
	for i := range 3 {
		res, err := reg(f.tenant, mailpush.ScopeApp, i)
		if err != nil {
			t.Fatalf("call %d of the burst: %v", i, err)
		}
		first = res
	}
	calls := len(f.ews.calls)
	_, err := reg(f.tenant, mailpush.ScopeApp, 3)
	if mailpush.ErrorCode(err) != mailpush.ERateLimited || mailpush.ErrorRetryAfter(err) != 500*time.Millisecond || !strings.Contains(mailpush.ErrorMessage(err), "registrations.rate") {
		t.Fatalf("4th call at once: %v (retry after %v), want rate_limited naming registrations.rate, retry after 500ms", err, mailpush.ErrorRetryAfter(err))
	}
	_, err = f.svc.CheckIn(ctx, f.tenant, first.Registration.ID, mailpush.CheckInRequest{Scope: mailpush.ScopeApp})
	if mailpush.ErrorCode(err) != mailpush.ERateLimited {
		t.Errorf("a check-in past the rate: %v, want rate_limited", err)
	}
	if n := f.count(t, f.tenant); n != 3 || len(f.ews.calls) != calls {
		t.Errorf("refused calls left %d registrations (want 3) and asked the source %d times", n, len(f.ews.calls)-calls)
	}
	if _, err := reg(other, mailpush.ScopeApp, 10); err != nil {
		t.Errorf("another tenant's registration: %v", err)
	}
	if _, err := reg(f.tenant, mailpush.ScopeBackend, 11); err != nil {
		t.Errorf("the tenant's backend token has its own bucket: %v", err)
	}
	if _, err := reg(f.tenant, mailpush.ScopeBackend, 12); mailpush.ErrorCode(err) != mailpush.ERateLimited || !strings.Contains(mailpush.ErrorMessage(err), "registrations.backendRate") {
		t.Errorf("backend call past its burst: %v, want rate_limited naming registrations.backendRate", err)
	}
	clock.Add(500 * time.Millisecond)
	if _, err := reg(f.tenant, mailpush.ScopeApp, 4); err != nil {
		t.Errorf("after the Retry-After: %v", err)
	}

	// Three live nodes: each allows a third (burst 3 → 1 here).
	f.svc.ShareRates(3)
	third := f.otherTenant(t, "initech")
	if _, err := reg(third, mailpush.ScopeApp, 20); err != nil {
		t.Fatal(err)
	}
	if _, err := reg(third, mailpush.ScopeApp, 21); mailpush.ErrorCode(err) != mailpush.ERateLimited || !strings.Contains(mailpush.ErrorMessage(err), "shared by 3 nodes") {
		t.Errorf("2nd call on a node of three: %v, want rate_limited naming the split", err)
	}
}

// blockingPreparer is an EWS source whose PrepareCredentials (a client
// identity's costly opening) waits to be released, and tells when it starts.
type blockingPreparer struct {
	*watcher
	started chan string // tenant name of each opening, as it starts
	mu      sync.Mutex
	release map[string][]chan struct{}
}

func (b *blockingPreparer) PrepareCredentials(ctx context.Context, t *mailpush.Tenant, c mailpush.Credentials) (mailpush.Credentials, error) {
	ch := make(chan struct{})
	b.mu.Lock()
	b.release[t.Name] = append(b.release[t.Name], ch)
	b.mu.Unlock()
	b.started <- t.Name
	<-ch
	return c, nil
}

// finish releases the oldest running opening of tenant.
func (b *blockingPreparer) finish(tenant string) {
	b.mu.Lock()
	ch := b.release[tenant][0]
	b.release[tenant] = b.release[tenant][1:]
	b.mu.Unlock()
	close(ch)
}

// TestOpeningsBoundedPerTenant plays the holder of tenant A's app token
// sending client identities that take long to open (a PKCS#12 at the
// iteration cap) faster than they open: A opens one at a time with four
// waiting, the rest are refused at once (429 rate_limited, Retry-After) and
// leave nothing stored; meanwhile tenant B's identity is opened while A's
// is still running (A holds one of the at least two global places), and B
// registers before any of A's waiting ones. Order and counts, not timing.
func TestOpeningsBoundedPerTenant(t *testing.T) {
	ctx := context.Background()
	f := setup(t)
	prep := &blockingPreparer{watcher: f.ews, started: make(chan string, 16), release: map[string][]chan struct{}{}}
	f.svc.Watchers[mailpush.SourceEWS] = prep
	f.svc.Quotas = func(*mailpush.Tenant) registrar.Quotas {
		return registrar.Quotas{Rate: registrar.Rate{PerSecond: 1000, Burst: 1000}}
	}
	b := f.otherTenant(t, "globex")
	kid, pub := f.keys.PublicKey()
	identity, err := seal.SealCredentials(kid, pub, mailpush.Credentials{PKCS12: "MAo=", PKCS12Password: "pw"})
	if err != nil {
		t.Fatal(err)
	}
	type result struct {
		tenant string
		err    error
	}
	results := make(chan result, 16)
	register := func(tn *mailpush.Tenant, n int) {
		_, err := f.svc.Register(ctx, tn, mailpush.RegisterRequest{Scope: mailpush.ScopeApp, Device: device(n), Address: fmt.Sprintf("u%d@example.com", n), Source: mailpush.SourceEWS, EWSURL: ewsURL, SealedCredentials: identity})
		results <- result{tn.Name, err}
	}
	go register(f.tenant, 0)
	if who := <-prep.started; who != "acme" {
		t.Fatalf("first opening: %s", who)
	}
	const flood = 7
	for i := 1; i <= flood; i++ {
		go register(f.tenant, i)
	}
	// Four wait behind A's running opening; three are refused at once.
	for range flood - 4 {
		r := <-results
		if r.tenant != "acme" || mailpush.ErrorCode(r.err) != mailpush.ERateLimited || mailpush.ErrorRetryAfter(r.err) <= 0 || !strings.Contains(mailpush.ErrorMessage(r.err), "4 waiting") {
			t.Fatalf("A's flood: %+v (retry after %v), want rate_limited naming the 4 waiting, with Retry-After", r, mailpush.ErrorRetryAfter(r.err))
		}
	}
	if n := f.count(t, f.tenant); n != 0 {
		t.Errorf("%d registrations stored while every opening of A is running or refused", n)
	}
	// B is not held up by A's running opening nor by A's queue.
	go register(b, 100)
	if who := <-prep.started; who != "globex" {
		t.Fatalf("the opening after A's running one is %s's, want globex's", who)
	}
	prep.finish("globex")
	if r := <-results; r.tenant != "globex" || r.err != nil {
		t.Fatalf("B's registration: %+v", r)
	}
	if n := f.count(t, b); n != 1 {
		t.Errorf("B has %d registrations, want 1", n)
	}
	// A's five (one running, four waiting) go one at a time.
	for i := range 5 {
		prep.finish("acme")
		if r := <-results; r.tenant != "acme" || r.err != nil {
			t.Fatalf("A's registration %d: %+v", i, r)
		}
		if i < 4 {
			if who := <-prep.started; who != "acme" {
				t.Fatalf("next opening: %s", who)
			}
		}
	}
	if n := f.count(t, f.tenant); n != 5 {
		t.Errorf("A has %d registrations, want 5 (the refused %d left nothing)", n, flood-4)
	}
}
