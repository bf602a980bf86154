package directory_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mailpush/mailpush"
	"github.com/mailpush/mailpush/clocktest"
	"github.com/mailpush/mailpush/directory"
	"github.com/mailpush/mailpush/directory/slapdtest"
)

func newClock() *clocktest.Clock { return clocktest.New(time.Date(2026, 12, 1, 8, 0, 0, 0, time.UTC)) }

// certBytes is binary on purpose: NUL, 0xff and bytes that are not UTF-8.
var certBytes = []byte{0x30, 0x82, 0x00, 0xff, 0xfe, 0x00, 0x7f, 0x80, '(', '*', ')', '\\'}

const svcDN = "cn=svc-mailpush,ou=system," + slapdtest.BaseDN
const svcPassword = "svc pässword"

func testLDIF() string {
	return `dn: ou=people,dc=example,dc=com
objectClass: organizationalUnit
ou: people

dn: ou=system,dc=example,dc=com
objectClass: organizationalUnit
ou: system

dn: cn=svc-mailpush,ou=system,dc=example,dc=com
objectClass: person
cn: svc-mailpush
sn: svc
userPassword:: ` + base64.StdEncoding.EncodeToString([]byte(svcPassword)) + `

dn: uid=alice,ou=people,dc=example,dc=com
objectClass: inetOrgPerson
objectClass: mailpushTestUser
uid: alice
cn: Alice
sn: Müller
displayName:: ` + base64.StdEncoding.EncodeToString([]byte("Ålice Müller 山田")) + `
mail: alice@example.com
proxyAddresses: SMTP:alice@example.com
proxyAddresses: smtp:a.mueller@example.com
userCertificate;binary:: ` + base64.StdEncoding.EncodeToString(certBytes) + `

dn: uid=bob,ou=people,dc=example,dc=com
objectClass: inetOrgPerson
uid: bob
cn: Bob
sn: Bob
mail: bob@example.com

dn: uid=odd,ou=people,dc=example,dc=com
objectClass: inetOrgPerson
uid: odd
cn: Odd
sn: Odd
mail: a*b(c)d\e@example.com

dn: uid=twin1,ou=people,dc=example,dc=com
objectClass: inetOrgPerson
uid: twin1
cn: Twin
sn: One
mail: twin@example.com

dn: uid=twin2,ou=people,dc=example,dc=com
objectClass: inetOrgPerson
uid: twin2
cn: Twin
sn: Two
mail: twin@example.com
`
}

var attrs = []string{"mail", "displayName", "userCertificate;binary", "uid"}

func passwordFile(t *testing.T, pw string) string {
	p := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(p, []byte(pw+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func newDir(t *testing.T, cfg directory.Config, logs io.Writer) (*directory.Directory, *clocktest.Clock) {
	t.Helper()
	if logs == nil {
		logs = io.Discard
	}
	c := newClock()
	d, err := directory.New(cfg, slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})), c)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d, c
}

func boundConfig(t *testing.T, url string) directory.Config {
	return directory.Config{
		URL: url, BindDN: svcDN, BindPasswordFile: passwordFile(t, svcPassword),
		BaseDN: slapdtest.BaseDN, Attributes: attrs,
	}
}

func TestLookupRealSlapd(t *testing.T) {
	srv := slapdtest.Start(t, testLDIF(), slapdtest.Options{})
	var logs bytes.Buffer
	d, _ := newDir(t, boundConfig(t, srv.URL), &logs)
	ctx := context.Background()

	e, err := d.Lookup(ctx, "alice@example.com")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := e.Value("displayName"), "Ålice Müller 山田"; got != want {
		t.Errorf("displayName = %q, want %q", got, want)
	}
	if got := e.Values("userCertificate"); len(got) != 1 || !bytes.Equal(got[0], certBytes) {
		t.Errorf("userCertificate = %x, want %x", got, certBytes)
	}
	if e.DN != "uid=alice,ou=people,"+slapdtest.BaseDN {
		t.Errorf("DN = %q", e.DN)
	}

	// By proxy address (the default filter), case-insensitively.
	if e, err := d.Lookup(ctx, "A.Mueller@example.com"); err != nil || e.Value("uid") != "alice" {
		t.Errorf("proxy address: %v %q", err, e.Value("uid"))
	}

	// Missing optional attributes are simply absent.
	e, err = d.Lookup(ctx, "bob@example.com")
	if err != nil {
		t.Fatal(err)
	}
	if e.Values("displayName") != nil || e.Values("userCertificate;binary") != nil || e.Value("displayName") != "" {
		t.Errorf("bob has attributes he lacks: %v", e.Attributes)
	}

	if _, err := d.Lookup(ctx, "nobody@example.com"); !errors.Is(err, directory.ErrNotFound) || mailpush.ErrorCode(err) != mailpush.ENotFound {
		t.Errorf("nobody: err = %v, want ErrNotFound", err)
	}
	if _, err := d.Lookup(ctx, "twin@example.com"); !errors.Is(err, directory.ErrAmbiguous) {
		t.Errorf("twin: err = %v, want ErrAmbiguous", err)
	}
	for _, v := range []string{"alice@example.com", "nobody@example.com", "A.Mueller@example.com"} {
		if strings.Contains(strings.ToLower(logs.String()), strings.ToLower(v)) {
			t.Errorf("log carries the looked-up value %q:\n%s", v, logs.String())
		}
	}
}

// TestFilterMetacharactersEscaped proves against slapd that looked-up
// values cannot change the filter: without escaping, "*" would match every
// user (ambiguous), "*)(uid=alice" would find alice, and so on.
func TestFilterMetacharactersEscaped(t *testing.T) {
	srv := slapdtest.Start(t, testLDIF(), slapdtest.Options{})
	d, _ := newDir(t, boundConfig(t, srv.URL), nil)
	ctx := context.Background()
	notFound := []string{
		"*",
		"*@example.com",
		"alice*",
		"*)(uid=alice",
		"alice@example.com)(mail=*",
		"*))(|(uid=*",
		`alice@example.com\`,
		`\2a`,
		"a*b(c)d*e@example.com",
		"(",
		")",
	}
	for _, v := range notFound {
		if e, err := d.Lookup(ctx, v); !errors.Is(err, directory.ErrNotFound) {
			t.Errorf("Lookup(%q) = %q, %v; want ErrNotFound", v, e.DN, err)
		}
	}
	// NUL is escaped like the others, but slapd compares assertion values
	// as C strings: "alice@example.com\x00junk" would find alice. Values
	// holding NUL (or not UTF-8, or too long) are refused before any
	// request; the escaping itself is exercised by the fuzz-free table
	// above and by TestFillEscapes.
	for _, v := range []string{"alice@example.com\x00", "\x00", "\x00)(uid=*", "alice@example.com\x00junk", "\xff\xfe", strings.Repeat("a", 1025)} {
		if e, err := d.Lookup(ctx, v); !errors.Is(err, directory.ErrInvalid) || mailpush.ErrorCode(err) != mailpush.EInvalid {
			t.Errorf("Lookup(%q) = %q, %v; want ErrInvalid", v, e.DN, err)
		}
	}
	// A value holding every metacharacter still finds the entry whose
	// address really is that.
	e, err := d.Lookup(ctx, `a*b(c)d\e@example.com`)
	if err != nil || e.Value("uid") != "odd" {
		t.Errorf("odd address: %q %v", e.Value("uid"), err)
	}
}

func TestBindAndAnonymous(t *testing.T) {
	srv := slapdtest.Start(t, testLDIF(), slapdtest.Options{})
	ctx := context.Background()

	cfg := boundConfig(t, srv.URL)
	cfg.BindPasswordFile = passwordFile(t, "wrong")
	d, _ := newDir(t, cfg, nil)
	if _, err := d.Lookup(ctx, "alice@example.com"); !errors.Is(err, directory.ErrUnavailable) || mailpush.ErrorCode(err) != mailpush.EUnavailable {
		t.Errorf("wrong bind password: err = %v, want ErrUnavailable", err)
	}

	// This server lets only bound users read: anonymous is refused, which
	// is the operator's problem (unavailable), not a missing user.
	d, _ = newDir(t, directory.Config{URL: srv.URL, BaseDN: slapdtest.BaseDN, Attributes: attrs}, nil)
	if _, err := d.Lookup(ctx, "alice@example.com"); !errors.Is(err, directory.ErrUnavailable) {
		t.Errorf("anonymous on a closed directory: err = %v, want ErrUnavailable", err)
	}

	open := slapdtest.Start(t, testLDIF(), slapdtest.Options{Anonymous: true})
	d, _ = newDir(t, directory.Config{URL: open.URL, BaseDN: slapdtest.BaseDN, Attributes: attrs}, nil)
	if e, err := d.Lookup(ctx, "alice@example.com"); err != nil || e.Value("uid") != "alice" {
		t.Errorf("anonymous on an open directory: %q %v", e.Value("uid"), err)
	}
}

func TestTLS(t *testing.T) {
	srv := slapdtest.Start(t, testLDIF(), slapdtest.Options{TLS: true})
	ctx := context.Background()
	for _, tc := range []struct {
		name     string
		url      string
		startTLS bool
	}{
		{"ldaps", srv.LDAPSURL, false},
		{"starttls", srv.URL, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := boundConfig(t, tc.url)
			cfg.StartTLS, cfg.CAFile = tc.startTLS, srv.CAFile
			d, _ := newDir(t, cfg, nil)
			if e, err := d.Lookup(ctx, "alice@example.com"); err != nil || e.Value("uid") != "alice" {
				t.Errorf("lookup: %q %v", e.Value("uid"), err)
			}
			// Without the CA the server's certificate is not trusted.
			cfg.CAFile = ""
			d, _ = newDir(t, cfg, nil)
			if _, err := d.Lookup(ctx, "alice@example.com"); !errors.Is(err, directory.ErrUnavailable) {
				t.Errorf("untrusted server: err = %v, want ErrUnavailable", err)
			}
		})
	}
}

// TestCache: answers and "not found" are cached for their TTLs, failures
// are not; a directory that goes down keeps serving what is cached.
func TestCache(t *testing.T) {
	srv := slapdtest.Start(t, testLDIF(), slapdtest.Options{})
	cfg := boundConfig(t, srv.URL)
	cfg.CacheTTL, cfg.NegativeTTL = 10*time.Minute, time.Minute
	d, clk := newDir(t, cfg, nil)
	ctx := context.Background()
	if _, err := d.Lookup(ctx, "alice@example.com"); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Lookup(ctx, "nobody@example.com"); !errors.Is(err, directory.ErrNotFound) {
		t.Fatal(err)
	}
	srv.Stop()

	if e, err := d.Lookup(ctx, "alice@example.com"); err != nil || e.Value("uid") != "alice" {
		t.Errorf("cached entry with the directory down: %q %v", e.Value("uid"), err)
	}
	if _, err := d.Lookup(ctx, "nobody@example.com"); !errors.Is(err, directory.ErrNotFound) {
		t.Errorf("negative cache with the directory down: %v", err)
	}
	if _, err := d.Lookup(ctx, "bob@example.com"); !errors.Is(err, directory.ErrUnavailable) {
		t.Errorf("uncached with the directory down: %v, want ErrUnavailable", err)
	}
	if n := d.CacheLen(); n != 2 {
		t.Errorf("cache holds %d values after a failed lookup, want 2 (failures are not cached)", n)
	}

	clk.Advance(time.Minute) // the negative entry expires, the positive one not
	if _, err := d.Lookup(ctx, "nobody@example.com"); !errors.Is(err, directory.ErrUnavailable) {
		t.Errorf("expired negative entry: %v, want ErrUnavailable", err)
	}
	if _, err := d.Lookup(ctx, "alice@example.com"); err != nil {
		t.Errorf("positive entry within its TTL: %v", err)
	}
	clk.Advance(9 * time.Minute)
	if _, err := d.Lookup(ctx, "alice@example.com"); !errors.Is(err, directory.ErrUnavailable) {
		t.Errorf("expired positive entry: %v, want ErrUnavailable", err)
	}
}

func TestCacheBounded(t *testing.T) {
	srv := slapdtest.Start(t, testLDIF(), slapdtest.Options{})
	cfg := boundConfig(t, srv.URL)
	cfg.CacheSize = 2
	d, _ := newDir(t, cfg, nil)
	ctx := context.Background()
	for _, v := range []string{"alice@example.com", "bob@example.com", "nobody@example.com", "alice@example.com"} {
		d.Lookup(ctx, v)
		if n := d.CacheLen(); n > 2 {
			t.Fatalf("cache holds %d values, bound is 2", n)
		}
	}
	srv.Stop()
	// alice was looked up last, then nobody: bob is the one evicted.
	if _, err := d.Lookup(ctx, "alice@example.com"); err != nil {
		t.Errorf("alice: %v", err)
	}
	if _, err := d.Lookup(ctx, "bob@example.com"); !errors.Is(err, directory.ErrUnavailable) {
		t.Errorf("bob should have been evicted: %v", err)
	}
}

// silentServer accepts connections and never answers: a hung directory.
func silentServer(t *testing.T) (addr string, accepted *atomic.Int64) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	accepted = new(atomic.Int64)
	var conns []net.Conn
	var mu sync.Mutex
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		<-done
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
	})
	return l.Addr().String(), accepted
}

// TestSlowOrDownDirectory: every way the directory can fail to answer ends
// in ErrUnavailable within the configured timeout, never a hang; the pool
// never opens more than PoolSize connections.
func TestSlowOrDownDirectory(t *testing.T) {
	ctx := context.Background()
	silent, accepted := silentServer(t)

	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedAddr := closed.Addr().String()
	closed.Close()

	for _, tc := range []struct {
		name     string
		url      string
		startTLS bool
		bind     bool
	}{
		{"refused", "ldap://" + closedAddr, false, false},
		{"silent search", "ldap://" + silent, false, false},
		{"silent bind", "ldap://" + silent, false, true},
		{"silent starttls", "ldap://" + silent, true, false},
		{"silent ldaps handshake", "ldaps://" + silent, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := directory.Config{URL: tc.url, StartTLS: tc.startTLS, BaseDN: slapdtest.BaseDN, Attributes: attrs,
				Timeout: 300 * time.Millisecond, DialTimeout: 200 * time.Millisecond}
			if tc.bind {
				cfg.BindDN, cfg.BindPasswordFile = svcDN, passwordFile(t, "x")
			}
			d, _ := newDir(t, cfg, nil)
			if _, err := d.Lookup(ctx, "alice@example.com"); !errors.Is(err, directory.ErrUnavailable) {
				t.Errorf("err = %v, want ErrUnavailable", err)
			}
		})
	}

	t.Run("pool bound", func(t *testing.T) {
		before := accepted.Load()
		d, _ := newDir(t, directory.Config{URL: "ldap://" + silent, BaseDN: slapdtest.BaseDN, Attributes: attrs,
			PoolSize: 2, Timeout: 300 * time.Millisecond}, nil)
		var wg sync.WaitGroup
		var unavailable atomic.Int64
		for i := 0; i < 10; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, err := d.Lookup(ctx, "alice@example.com"); errors.Is(err, directory.ErrUnavailable) {
					unavailable.Add(1)
				}
			}()
		}
		wg.Wait()
		if n := unavailable.Load(); n != 10 {
			t.Errorf("%d of 10 lookups unavailable", n)
		}
		// Each lookup that got a slot opened one connection; the ones that
		// waited timed out in the queue. 10 lookups in one timeout window
		// with 2 slots open at most 2 at once; all at once would be 10.
		if n := accepted.Load() - before; n < 1 || n > 4 {
			t.Errorf("the silent server accepted %d connections, want 1..4 (pool of 2)", n)
		}
	})
}

// TestPoolReuse: sequential lookups reuse one bound connection.
func TestPoolReuse(t *testing.T) {
	srv := slapdtest.Start(t, testLDIF(), slapdtest.Options{})
	// A proxy in front of slapd counts the connections opened to it.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var opened atomic.Int64
	var wg sync.WaitGroup
	var mu sync.Mutex
	var clients []net.Conn
	t.Cleanup(func() { l.Close(); wg.Wait() })
	target := strings.TrimPrefix(srv.URL, "ldap://")
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			opened.Add(1)
			mu.Lock()
			clients = append(clients, c)
			mu.Unlock()
			up, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			wg.Add(2)
			go func() { defer wg.Done(); io.Copy(up, c); up.Close() }()
			go func() { defer wg.Done(); io.Copy(c, up); c.Close() }()
		}
	}()
	cfg := boundConfig(t, "ldap://"+l.Addr().String())
	cfg.CacheSize = 1
	d, _ := newDir(t, cfg, nil)
	for i := 0; i < 5; i++ {
		for _, v := range []string{"alice@example.com", "bob@example.com"} {
			if _, err := d.Lookup(context.Background(), v); err != nil {
				t.Fatal(err)
			}
		}
	}
	if n := opened.Load(); n != 1 {
		t.Errorf("10 sequential lookups opened %d connections, want 1", n)
	}

	// The server side drops the idle connection (as Active Directory does
	// after 15 idle minutes): the next lookup still answers, on a new one.
	mu.Lock()
	for _, c := range clients {
		c.Close()
	}
	mu.Unlock()
	if e, err := d.Lookup(context.Background(), "nobody-yet@example.com"); !errors.Is(err, directory.ErrNotFound) {
		t.Errorf("after the server closed the idle connection: %q %v, want ErrNotFound", e.DN, err)
	}
	if n := opened.Load(); n != 2 {
		t.Errorf("%d connections opened, want 2", n)
	}
	d.Close()
}

func TestConfigValidate(t *testing.T) {
	good := directory.Config{URL: "ldap://dc.example.com", BaseDN: "dc=example,dc=com", Attributes: []string{"mail"}}
	for _, tc := range []struct {
		name string
		edit func(*directory.Config)
		key  string
	}{
		{"no url", func(c *directory.Config) { c.URL = "" }, "url"},
		{"http url", func(c *directory.Config) { c.URL = "http://dc.example.com" }, "url"},
		{"starttls on ldaps", func(c *directory.Config) { c.URL, c.StartTLS = "ldaps://dc", true }, "startTls"},
		{"bind dn without password", func(c *directory.Config) { c.BindDN = "cn=x" }, "bindPasswordFile"},
		{"password without bind dn", func(c *directory.Config) { c.BindPasswordFile = "/x" }, "bindDn"},
		{"no base", func(c *directory.Config) { c.BaseDN = "" }, "baseDn"},
		{"bad base", func(c *directory.Config) { c.BaseDN = "not a dn" }, "baseDn"},
		{"no placeholder", func(c *directory.Config) { c.Filter = "(mail=x)" }, "filter"},
		{"bad filter", func(c *directory.Config) { c.Filter = "(mail={value}" }, "filter"},
		{"no attributes", func(c *directory.Config) { c.Attributes = nil }, "attributes"},
		{"bad attribute", func(c *directory.Config) { c.Attributes = []string{"mail)(x"} }, "attributes"},
		{"negative timeout", func(c *directory.Config) { c.Timeout = -time.Second }, "timeout"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := good
			tc.edit(&c)
			err := c.Defaults().Validate()
			if err == nil || !strings.Contains(err.Error(), tc.key) {
				t.Errorf("Validate() = %v, want an error naming %s", err, tc.key)
			}
		})
	}
	if err := good.Defaults().Validate(); err != nil {
		t.Errorf("good config: %v", err)
	}
	for _, f := range []string{"(mail={address})", "(uid={user})", "(|(mail={value})(proxyAddresses=smtp:{value}))"} {
		c := good
		c.Filter = f
		if err := c.Defaults().Validate(); err != nil {
			t.Errorf("filter %q: %v", f, err)
		}
	}
	// An empty password file is refused at start (it would bind anonymously).
	c := good
	c.BindDN, c.BindPasswordFile = "cn=x", passwordFile(t, "")
	if _, err := directory.New(c, slog.New(slog.DiscardHandler), newClock()); err == nil || !strings.Contains(err.Error(), "bindPasswordFile") {
		t.Errorf("empty password file: %v", err)
	}
}
