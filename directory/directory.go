// Package directory reads entries from a tenant's corporate directory (LDAP,
// LDAPS or LDAP with StartTLS; Active Directory or OpenLDAP) for the
// features that need it: S/MIME certificate lookup and managed app
// configuration. It is the one LDAP client of mailpush, on
// github.com/go-ldap/ldap/v3.
//
// Use:
//
//	d, err := directory.New(cfg, logger, clock) // cfg validated here
//	defer d.Close()
//	e, err := d.Lookup(ctx, "alice@example.com")
//	certs := e.Values("userCertificate;binary")
//
// Lookup fills the configured filter template (Config.Filter, with every
// {value} — or its aliases {address} and {user} — replaced by the value
// escaped with ldap.EscapeFilter, so `*`, `(`, `)`, `\` and NUL match
// themselves and never widen the search), searches the subtree under
// Config.BaseDN and returns the one matching entry with the configured
// attributes, values kept as raw bytes (certificates are binary).
//
// Outcomes are stable conditions that callers test with errors.Is, or,
// outside this package (adapters do not import each other), by their
// mailpush error code, as mailpush.Directory documents:
//
//   - ErrNotFound: no entry matches (a mailpush.Error with code not_found);
//   - ErrInvalid: the value holds NUL, is not UTF-8 or is longer than
//     MaxValueLen (code invalid_request); nothing is sent. NUL is refused
//     rather than only escaped because slapd compares assertion values as
//     C strings: "alice@example.com\x00junk" would find alice;
//   - ErrAmbiguous: more than one entry matches (code conflict); the
//     directory is not trusted to pick one;
//   - ErrUnavailable: the directory could not answer — refused connection,
//     TLS or bind failure, a server that is slow beyond Config.Timeout, a
//     pool with no free connection in time, a search error (code
//     unavailable, HTTP 503). Callers report "directory unavailable" and
//     never wait longer than Config.Timeout.
//
// Connections: at most Config.PoolSize connections are open at once, each
// bound once (bind DN and the password read from Config.BindPasswordFile,
// or anonymous when no bind DN is set) and reused; a connection that saw a
// network error or a timeout is closed, never reused. When a pooled
// connection turns out to have been closed by the server while idle (Active
// Directory's idle timeout, a server restart), the idle ones are dropped
// and the search runs once more on a new connection, so that the first
// lookup after a quiet night does not answer "directory unavailable". Every operation runs
// under a deadline: when it passes, the socket is closed, which unblocks
// whatever go-ldap was waiting for (its StartTLS, for one, has no timeout
// of its own).
//
// Cache: answers are cached per value for Config.CacheTTL, "no such entry"
// and "ambiguous" for Config.NegativeTTL (so a user added to the directory
// appears soon), failures never. At most Config.CacheSize values are kept;
// the least recently used goes first. Times come from the injected clock.
//
// Privacy: the package never logs a looked-up value (an address or a user
// name); its log lines name the server and the failure only.
package directory

import (
	"container/list"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/go-ldap/ldap/v3"

	"github.com/mailpush/mailpush"
)

// DefaultFilter finds a user by primary address or by any of Active
// Directory's proxy addresses.
const DefaultFilter = "(|(mail={value})(proxyAddresses=smtp:{value}))"

// Config is a tenant's directory: tenants.<name>.directory in the
// configuration file. Zero durations and sizes take the defaults of
// Defaults.
type Config struct {
	// URL is ldap://host[:389] or ldaps://host[:636].
	URL string `yaml:"url"`
	// StartTLS upgrades an ldap:// connection to TLS before binding.
	StartTLS bool `yaml:"startTls"`
	// CAFile is a PEM bundle that verifies the server's certificate
	// (default: the system roots).
	CAFile string `yaml:"caFile"`
	// ServerName overrides the name checked in the server's certificate
	// (default: the URL's host).
	ServerName string `yaml:"serverName"`
	// BindDN and the password in BindPasswordFile authenticate the service
	// account; with no BindDN the directory is read anonymously.
	BindDN           string `yaml:"bindDn"`
	BindPasswordFile string `yaml:"bindPasswordFile"`
	// BaseDN is where the subtree search starts.
	BaseDN string `yaml:"baseDn"`
	// Filter is the search filter template; {value} (or {address},
	// {user}) stands for the escaped looked-up value. Default DefaultFilter.
	Filter string `yaml:"filter"`
	// Attributes are the attributes read; with options where the server
	// needs them, e.g. "userCertificate;binary".
	Attributes []string `yaml:"attributes"`

	PoolSize    int           `yaml:"poolSize"`    // open connections at most; default 4
	DialTimeout time.Duration `yaml:"dialTimeout"` // TCP and TLS set-up; default 3s
	Timeout     time.Duration `yaml:"timeout"`     // a whole lookup, waiting for a connection included; default 5s
	CacheTTL    time.Duration `yaml:"cacheTtl"`    // default 10m
	NegativeTTL time.Duration `yaml:"negativeTtl"` // default 1m
	CacheSize   int           `yaml:"cacheSize"`   // values cached at most; default 10000
}

// Defaults fills the zero fields of c with the defaults.
func (c Config) Defaults() Config {
	if c.Filter == "" {
		c.Filter = DefaultFilter
	}
	if c.PoolSize == 0 {
		c.PoolSize = 4
	}
	if c.DialTimeout == 0 {
		c.DialTimeout = 3 * time.Second
	}
	if c.Timeout == 0 {
		c.Timeout = 5 * time.Second
	}
	if c.CacheTTL == 0 {
		c.CacheTTL = 10 * time.Minute
	}
	if c.NegativeTTL == 0 {
		c.NegativeTTL = time.Minute
	}
	if c.CacheSize == 0 {
		c.CacheSize = 10000
	}
	return c
}

var placeholders = []string{"{value}", "{address}", "{user}"}

// fill replaces the placeholders in one pass: a value that itself reads
// "{user}" is not expanded again.
func fill(template, value string) string {
	esc := ldap.EscapeFilter(value)
	return strings.NewReplacer("{value}", esc, "{address}", esc, "{user}", esc).Replace(template)
}

// Validate reports the first problem of c (after Defaults), naming the key
// relative to the directory block ("url", "filter", …) and the fix.
func (c Config) Validate() error {
	u, err := url.Parse(c.URL)
	switch {
	case c.URL == "":
		return errors.New("url: required (ldap://host:389 or ldaps://host:636)")
	case err != nil || u.Host == "" || (u.Scheme != "ldap" && u.Scheme != "ldaps"):
		return fmt.Errorf("url: %q is not ldap://host[:port] or ldaps://host[:port]", c.URL)
	case c.StartTLS && u.Scheme == "ldaps":
		return errors.New("startTls: not with ldaps:// (already TLS); use ldap:// with startTls, or ldaps:// alone")
	case c.BindDN != "" && c.BindPasswordFile == "":
		return errors.New("bindPasswordFile: required with bindDn (or remove bindDn to read anonymously)")
	case c.BindDN == "" && c.BindPasswordFile != "":
		return errors.New("bindDn: required with bindPasswordFile")
	case c.BaseDN == "":
		return errors.New("baseDn: required, e.g. dc=example,dc=com")
	case len(c.Attributes) == 0:
		return errors.New("attributes: list the attributes to read")
	case c.PoolSize < 1, c.CacheSize < 1:
		return errors.New("poolSize, cacheSize: must be positive")
	case c.DialTimeout < 0, c.Timeout < 0, c.CacheTTL < 0, c.NegativeTTL < 0:
		return errors.New("dialTimeout, timeout, cacheTtl, negativeTtl: must not be negative")
	}
	if _, err := ldap.ParseDN(c.BaseDN); err != nil {
		return fmt.Errorf("baseDn: %q is not a DN: %v", c.BaseDN, err)
	}
	has := false
	for _, p := range placeholders {
		has = has || strings.Contains(c.Filter, p)
	}
	if !has {
		return fmt.Errorf("filter: %q has no {value} placeholder", c.Filter)
	}
	if _, err := ldap.CompileFilter(fill(c.Filter, "x")); err != nil {
		return fmt.Errorf("filter: %q is not an LDAP filter: %v", c.Filter, err)
	}
	for _, a := range c.Attributes {
		if a == "" || strings.ContainsAny(a, " ()*=") {
			return fmt.Errorf("attributes: %q is not an attribute description", a)
		}
	}
	return nil
}

// MaxValueLen bounds a looked-up value (an address is at most 254 bytes).
const MaxValueLen = 1024

// Errors that Lookup's errors match with errors.Is.
var (
	ErrInvalid     = errors.New("value cannot be looked up")
	ErrNotFound    = errors.New("no directory entry matches")
	ErrAmbiguous   = errors.New("more than one directory entry matches")
	ErrUnavailable = errors.New("directory unavailable")
)

// errNotFound, errAmbiguous and unavailable are what Lookup returns: domain
// errors whose messages are safe for API callers and whose chains hold the
// sentinels above.
var (
	errNotFound  = mailpush.WrapError(mailpush.ENotFound, "no directory entry matches", ErrNotFound)
	errAmbiguous = mailpush.WrapError(mailpush.EConflict, "more than one directory entry matches", ErrAmbiguous)
)

// unavailable keeps of cause only what logs may carry (logSafe): the API
// logs the cause of a 503.
func unavailable(cause error) error {
	return mailpush.WrapError(mailpush.EUnavailable, "directory unavailable", fmt.Errorf("%w: %s", ErrUnavailable, logSafe(cause)))
}

// Entry is the domain's directory entry (mailpush.DirectoryEntry): the
// DN and the attributes read, values as raw bytes.
type Entry = mailpush.DirectoryEntry

// Directory implements mailpush.Directory.
var _ mailpush.Directory = (*Directory)(nil)

// Directory looks entries up in one tenant's directory. It is safe for
// concurrent use; Close releases its connections.
type Directory struct {
	cfg      Config
	host     string // for logs
	log      *slog.Logger
	clock    mailpush.Clock
	tls      *tls.Config
	password string
	// slots holds one token per connection that may be open; idle holds
	// the open connections nobody uses.
	slots chan struct{}

	mu     sync.Mutex
	idle   []*conn
	closed bool
	cache  *cache
}

// New validates cfg (after Defaults) and returns a Directory. It reads the
// bind password file now, so a missing file fails at start; it does not
// connect (the directory may be down at start and come up later).
func New(cfg Config, logger *slog.Logger, clock mailpush.Clock) (*Directory, error) {
	cfg = cfg.Defaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	u, _ := url.Parse(cfg.URL)
	d := &Directory{
		cfg: cfg, host: u.Host, log: logger, clock: clock,
		slots: make(chan struct{}, cfg.PoolSize),
		cache: newCache(cfg.CacheSize),
	}
	if cfg.BindPasswordFile != "" {
		b, err := os.ReadFile(cfg.BindPasswordFile)
		if err != nil {
			return nil, fmt.Errorf("bindPasswordFile: %w", err)
		}
		d.password = strings.TrimRight(string(b), "\r\n")
		if d.password == "" {
			// An empty password would make the bind an unauthenticated
			// one (RFC 4513 5.1.2), which servers may accept as anonymous.
			return nil, fmt.Errorf("bindPasswordFile: %s is empty", cfg.BindPasswordFile)
		}
	}
	if u.Scheme == "ldaps" || cfg.StartTLS {
		d.tls = &tls.Config{ServerName: cfg.ServerName, MinVersion: tls.VersionTLS12}
		if d.tls.ServerName == "" {
			d.tls.ServerName = u.Hostname()
		}
		if cfg.CAFile != "" {
			pem, err := os.ReadFile(cfg.CAFile)
			if err != nil {
				return nil, fmt.Errorf("caFile: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("caFile: %s holds no PEM certificate", cfg.CAFile)
			}
			d.tls.RootCAs = pool
		}
	}
	return d, nil
}

// Lookup returns the one entry that the filter, filled with value, finds
// under the base DN. Its errors match ErrNotFound, ErrAmbiguous or
// ErrUnavailable; it returns within Config.Timeout (or ctx's deadline if
// sooner).
func (d *Directory) Lookup(ctx context.Context, value string) (Entry, error) {
	switch {
	case len(value) > MaxValueLen:
		return Entry{}, mailpush.WrapError(mailpush.EInvalid, fmt.Sprintf("value longer than %d bytes", MaxValueLen), ErrInvalid)
	case strings.IndexByte(value, 0) >= 0:
		return Entry{}, mailpush.WrapError(mailpush.EInvalid, "value holds a NUL character", ErrInvalid)
	case !utf8.ValidString(value):
		return Entry{}, mailpush.WrapError(mailpush.EInvalid, "value is not UTF-8", ErrInvalid)
	}
	now := d.clock.Now()
	if r, ok := d.cache.get(value, now); ok {
		return r.entry, r.err
	}
	ctx, cancel := context.WithTimeout(ctx, d.cfg.Timeout)
	defer cancel()
	entries, err := d.search(ctx, fill(d.cfg.Filter, value))
	if err != nil {
		return Entry{}, err
	}
	r := result{expires: d.clock.Now().Add(d.cfg.NegativeTTL)}
	switch len(entries) {
	case 0:
		r.err = errNotFound
	case 1:
		r.entry, r.expires = toEntry(entries[0]), d.clock.Now().Add(d.cfg.CacheTTL)
	default:
		r.err = errAmbiguous
	}
	d.cache.put(value, r)
	return r.entry, r.err
}

func toEntry(e *ldap.Entry) Entry {
	out := Entry{DN: e.DN, Attributes: make(map[string][][]byte, len(e.Attributes))}
	for _, a := range e.Attributes {
		out.Attributes[a.Name] = a.ByteValues
	}
	return out
}

// search runs one subtree search on a pooled connection. A size limit of 2
// is enough to tell one entry from several.
func (d *Directory) search(ctx context.Context, filter string) ([]*ldap.Entry, error) {
	req := ldap.NewSearchRequest(d.cfg.BaseDN, ldap.ScopeWholeSubtree, ldap.NeverDerefAliases,
		2, int(d.cfg.Timeout/time.Second)+1, false, filter, d.cfg.Attributes, nil)
	var res *ldap.SearchResult
	var c *conn
	for attempt := 0; ; attempt++ {
		var err error
		if c, err = d.get(ctx); err != nil {
			return nil, err
		}
		err = c.do(ctx, func() error {
			var err error
			res, err = c.l.Search(req)
			return err
		})
		// A pooled connection that the server closed while it was idle
		// (Active Directory drops idle LDAP connections after 15 minutes,
		// a restarted server drops them all) fails at once with a
		// connection error rather than an LDAP result: the others idle
		// since then are likely closed too, so they go, and the search
		// runs once more on a new connection.
		if attempt == 0 && c.reused && !c.broken && connectionError(err) {
			d.discard(c)
			d.dropIdle()
			continue
		}
		return d.searchDone(c, res, err)
	}
}

// connectionError reports whether err is the connection's rather than a
// result the server sent (go-ldap numbers its own errors from 200).
func connectionError(err error) bool {
	var le *ldap.Error
	return err != nil && (!errors.As(err, &le) || le.ResultCode >= ldap.ErrorNetwork)
}

// logSafe is what a log line may say of a search error: a server's
// diagnostic message may quote the filter, hence the looked-up value, so
// only the result code of an LDAP result is kept.
func logSafe(err error) string {
	var le *ldap.Error
	if errors.As(err, &le) && le.ResultCode < ldap.ErrorNetwork {
		return fmt.Sprintf("LDAP result %d (%s)", le.ResultCode, ldap.LDAPResultCodeMap[le.ResultCode])
	}
	return err.Error()
}

// dropIdle closes the idle connections.
func (d *Directory) dropIdle() {
	d.mu.Lock()
	idle := d.idle
	d.idle = nil
	d.mu.Unlock()
	for _, c := range idle {
		c.close()
	}
}

// searchDone returns c to the pool or closes it, and turns the outcome of
// a search into entries or an error.
func (d *Directory) searchDone(c *conn, res *ldap.SearchResult, err error) ([]*ldap.Entry, error) {
	switch {
	case err == nil:
		d.put(c)
		return res.Entries, nil
	case ldap.IsErrorWithCode(err, ldap.LDAPResultSizeLimitExceeded) && res != nil:
		d.put(c)
		return res.Entries, nil
	case ldap.IsErrorWithCode(err, ldap.LDAPResultNoSuchObject):
		// The base DN does not exist: a configuration error, not a
		// missing user; the operator needs to hear of it.
		d.put(c)
		d.log.Error("directory: base DN not found", "host", d.host, "baseDn", d.cfg.BaseDN)
		return nil, unavailable(err)
	default:
		d.discard(c)
		d.log.Warn("directory: search failed", "host", d.host, "err", logSafe(err))
		return nil, unavailable(err)
	}
}

// conn is a pooled connection: the go-ldap client and its socket, which do
// closes when an operation's deadline passes.
type conn struct {
	l      *ldap.Conn
	socket net.Conn
	broken bool // its deadline passed: the socket is closed
	reused bool // it came from the idle list
}

// do runs op, closing the socket if ctx ends first; a connection whose
// socket was closed is marked broken.
func (c *conn) do(ctx context.Context, op func() error) error {
	if dl, ok := ctx.Deadline(); ok {
		c.l.SetTimeout(time.Until(dl))
	}
	stop := context.AfterFunc(ctx, func() { c.socket.Close() })
	err := op()
	if !stop() {
		c.broken = true
		if err == nil {
			err = ctx.Err()
		}
		return fmt.Errorf("%w (%w)", err, ctx.Err())
	}
	return err
}

// get returns an idle connection or opens one, waiting for a free slot no
// longer than ctx allows.
func (d *Directory) get(ctx context.Context) (*conn, error) {
	select {
	case d.slots <- struct{}{}:
	case <-ctx.Done():
		d.log.Warn("directory: no free connection in time", "host", d.host, "poolSize", d.cfg.PoolSize)
		return nil, unavailable(fmt.Errorf("waiting for a pooled connection: %w", ctx.Err()))
	}
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		<-d.slots
		return nil, unavailable(errors.New("directory closed"))
	}
	if n := len(d.idle); n > 0 {
		c := d.idle[n-1]
		d.idle = d.idle[:n-1]
		d.mu.Unlock()
		c.reused = true
		return c, nil
	}
	d.mu.Unlock()
	c, err := d.dial(ctx)
	if err != nil {
		<-d.slots
		d.log.Warn("directory: cannot connect", "host", d.host, "err", err)
		return nil, unavailable(err)
	}
	return c, nil
}

func (d *Directory) put(c *conn) {
	if c.broken {
		d.discard(c)
		return
	}
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		c.close()
	} else {
		d.idle = append(d.idle, c)
		d.mu.Unlock()
	}
	<-d.slots
}

func (d *Directory) discard(c *conn) {
	c.close()
	<-d.slots
}

func (c *conn) close() {
	c.socket.Close() // first: go-ldap's Close then does not wait for the server
	c.l.Close()
}

// dial opens, secures and binds a connection.
func (d *Directory) dial(ctx context.Context) (*conn, error) {
	u, _ := url.Parse(d.cfg.URL)
	addr := u.Host
	if u.Port() == "" {
		port := ldap.DefaultLdapPort
		if u.Scheme == "ldaps" {
			port = ldap.DefaultLdapsPort
		}
		addr = net.JoinHostPort(u.Hostname(), port)
	}
	dctx, cancel := context.WithTimeout(ctx, d.cfg.DialTimeout)
	defer cancel()
	raw, err := (&net.Dialer{}).DialContext(dctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	var nc net.Conn = raw
	if u.Scheme == "ldaps" {
		tc := tls.Client(raw, d.tls)
		if err := tc.HandshakeContext(dctx); err != nil {
			raw.Close()
			return nil, fmt.Errorf("TLS: %w", err)
		}
		nc = tc
	}
	l := ldap.NewConn(nc, u.Scheme == "ldaps")
	l.Start()
	c := &conn{l: l, socket: raw}
	err = c.do(dctx, func() error {
		if d.cfg.StartTLS {
			if err := l.StartTLS(d.tls); err != nil {
				return fmt.Errorf("StartTLS: %w", err)
			}
		}
		if d.cfg.BindDN != "" {
			if err := l.Bind(d.cfg.BindDN, d.password); err != nil {
				return fmt.Errorf("bind as %s: %w", d.cfg.BindDN, err)
			}
		}
		return nil
	})
	if err != nil {
		c.close()
		return nil, err
	}
	return c, nil
}

// Close closes the idle connections; connections in use close when their
// operation ends. Lookups after Close fail with ErrUnavailable unless
// cached. Close is safe to call twice.
func (d *Directory) Close() error {
	d.mu.Lock()
	d.closed = true
	d.mu.Unlock()
	d.dropIdle()
	return nil
}

// result is a cached answer: an entry, or ErrNotFound/ErrAmbiguous.
type result struct {
	entry   Entry
	err     error
	expires time.Time
}

// cache is a bounded LRU of results by value.
type cache struct {
	mu    sync.Mutex
	max   int
	order *list.List // of *cacheItem, most recently used first
	items map[string]*list.Element
}

type cacheItem struct {
	key string
	r   result
}

func newCache(max int) *cache {
	return &cache{max: max, order: list.New(), items: make(map[string]*list.Element)}
}

func (c *cache) get(key string, now time.Time) (result, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.items[key]
	if !ok {
		return result{}, false
	}
	it := el.Value.(*cacheItem)
	if !now.Before(it.r.expires) {
		c.order.Remove(el)
		delete(c.items, key)
		return result{}, false
	}
	c.order.MoveToFront(el)
	return it.r, true
}

func (c *cache) put(key string, r result) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.items[key]; ok {
		el.Value.(*cacheItem).r = r
		c.order.MoveToFront(el)
		return
	}
	c.items[key] = c.order.PushFront(&cacheItem{key: key, r: r})
	for c.order.Len() > c.max {
		last := c.order.Back()
		c.order.Remove(last)
		delete(c.items, last.Value.(*cacheItem).key)
	}
}

// CacheLen returns how many values are cached (for tests and metrics).
func (d *Directory) CacheLen() int {
	d.cache.mu.Lock()
	defer d.cache.mu.Unlock()
	return d.cache.order.Len()
}
