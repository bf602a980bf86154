package main

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/mailpush/mailpush"
	"github.com/mailpush/mailpush/ews"
	"github.com/mailpush/mailpush/gate"
	"github.com/mailpush/mailpush/registrar"
	"go.yaml.in/yaml/v3"
)

// Config is the whole configuration: one YAML file (mailpush serve --config)
// with every key overridable from the environment as MAILPUSH_<PATH>, e.g.
// MAILPUSH_LISTEN or MAILPUSH_APNS_TEAM_ID (camelCase keys become SNAKE_CASE,
// nesting becomes "_"). Lists in the environment are comma-separated.
type Config struct {
	// Listen is the HTTP listen address.
	Listen string `yaml:"listen"`
	// PublicURL is how mail servers reach this service; callback URLs are
	// built on it. Default: http://<listen>.
	PublicURL string `yaml:"publicUrl"`
	// TLS serves HTTPS when both files are set (config_tls.go).
	TLS TLSConfig `yaml:"tls"`
	// Database is the store: the embedded SQLite file (default), or a
	// PostgreSQL database that several nodes share (docs/cluster.md).
	Database struct {
		Driver string `yaml:"driver"` // sqlite (default) or postgres
		// Path of the SQLite file.
		Path string `yaml:"path"`
		// URL of the PostgreSQL database (driver postgres), a libpq URL
		// or key=value string; a password belongs in a .pgpass file or
		// PGPASSWORD, not here.
		URL string `yaml:"url"`
		// Schema is the PostgreSQL schema (search_path); empty: the
		// server's default (public).
		Schema string `yaml:"schema"`
		// MaxConns bounds each node's PostgreSQL pool; 0: pgx's default.
		MaxConns int `yaml:"maxConns"`
	} `yaml:"database"`
	// NodeID names this node in a cluster (metrics label, heartbeats);
	// default: the host name and the listen port.
	NodeID string `yaml:"nodeId"`
	// KeyDir holds the service keyring (created on first start, mode 0700).
	KeyDir string `yaml:"keyDir"`
	Log    struct {
		Level  string `yaml:"level"`  // debug, info, warn, error
		Format string `yaml:"format"` // text or json
	} `yaml:"log"`
	// CAFile is an extra PEM bundle trusted for outbound TLS (mail servers,
	// push providers), beside the system roots.
	CAFile string `yaml:"caFile"`
	// RegistrationTTL is how long a registration lives without a check-in.
	RegistrationTTL time.Duration `yaml:"registrationTtl"`
	// Registrations bounds every tenant's live registrations; a tenant's
	// own tenants.<name>.registrations overrides it.
	Registrations RegistrationQuotas `yaml:"registrations"`
	EWS           struct {
		// StatusFrequency is the minutes between Exchange's status events.
		StatusFrequency int `yaml:"statusFrequency"`
		// AllowInsecureHTTP permits http:// EWS URLs. Never in production:
		// credentials would cross the network in clear.
		AllowInsecureHTTP bool `yaml:"allowInsecureHttp"`
		// HealthInterval is how often silent subscriptions are looked for
		// (default: half the status frequency).
		HealthInterval time.Duration `yaml:"healthInterval"`
		// ResubscribeRate caps resubscriptions started per second (default 100).
		ResubscribeRate int `yaml:"resubscribeRate"`
		// MaxPerHost and MaxPerAccount cap concurrent EWS requests of
		// resubscription per Exchange host (default 32) and per account
		// (default 8; Exchange allows 27).
		MaxPerHost    int `yaml:"maxPerHost"`
		MaxPerAccount int `yaml:"maxPerAccount"`
		// Host-level dead-server detection: a host with at least
		// HostMinSubscriptions active subscriptions that sent nothing for
		// HostSilence while HostOverdue of its subscriptions are that late
		// with their status event has lost them all; they are resubscribed
		// at once. Checked every HostCheckInterval.
		HostMinSubscriptions int           `yaml:"hostMinSubscriptions"`
		HostSilence          time.Duration `yaml:"hostSilence"`
		HostOverdue          int           `yaml:"hostOverdue"`
		HostCheckInterval    time.Duration `yaml:"hostCheckInterval"`
		// FetchRate and FetchBurst bound, per mailbox, the GetFolder and
		// GetItem calls that notifications trigger: per minute, and at once
		// (default 20 and 10), so replayed or forged notifications cannot
		// become a fetch storm against Exchange.
		FetchRate  int `yaml:"fetchRate"`
		FetchBurst int `yaml:"fetchBurst"`
		// CallbackMaxAge is how long a callback URL is honoured after it was
		// issued (default 2160h, 90 days); then it is answered Unsubscribe
		// and the mailbox resubscribed with a fresh URL.
		CallbackMaxAge time.Duration `yaml:"callbackMaxAge"`
	} `yaml:"ews"`
	// APNs and FCM are the push credentials of every tenant that has none
	// of its own in Tenants.
	APNs APNsConfig `yaml:"apns"`
	// FCM pushes to Android devices (Firebase Cloud Messaging HTTP v1).
	FCM FCMConfig `yaml:"fcm"`
	// Graph tunes the Microsoft Graph source (config_graph.go).
	Graph GraphConfig `yaml:"graph"`
	// Tenants holds per-tenant settings by tenant name (see tenants.go).
	Tenants map[string]TenantConfig `yaml:"tenants"`
	// Push tunes the durable outbox and its delivery (see package pipeline).
	Push struct {
		Workers     int           `yaml:"workers"`     // concurrent provider calls
		BatchSize   int           `yaml:"batchSize"`   // pushes claimed per transaction
		MaxAttempts int           `yaml:"maxAttempts"` // then a dead letter
		RetryBase   time.Duration `yaml:"retryBase"`   // first backoff, doubling
		RetryMax    time.Duration `yaml:"retryMax"`    // backoff cap
		SyncPerHour int           `yaml:"syncPerHour"` // background pushes per device per hour
		TenantRate  int           `yaml:"tenantRate"`  // pushes per second per tenant; 0: no limit
		TenantBurst int           `yaml:"tenantBurst"`
		// Lease is how long a claimed push is held; after a crash, pushes
		// that were in flight are sent again when it ends.
		Lease time.Duration `yaml:"lease"`
	} `yaml:"push"`
	// Gate is the ActiveSync access gate; it is on when gate.tenant is set
	// (see docs/gate.md). Its rules seed the stored rules that the admin console edits (gaterules.go).
	Gate gate.Config `yaml:"gate"`
	// Console is the admin console at /admin/ (console.go).
	Console ConsoleConfig `yaml:"console"`
	// Debug holds operator-only diagnostics (pprof.go).
	Debug DebugConfig `yaml:"debug"`
}

// RegistrationQuotas are the registrations.* keys: beyond the quotas a new
// registration gets 429 quota_exceeded, beyond the rates a registration
// call gets 429 rate_limited with Retry-After, each naming the key.
type RegistrationQuotas struct {
	MaxPerTenant  int `yaml:"maxPerTenant"`  // live registrations of a tenant (default 100000)
	MaxPerMailbox int `yaml:"maxPerMailbox"` // live registrations (devices) of one mailbox (default 20)
	// Rate and Burst bound a tenant's create and check-in calls made with
	// app tokens, per second and at once (default 50 and 200); BackendRate
	// and BackendBurst those made with backend tokens (default 500 and
	// 2000). With several nodes each allows rate/(live nodes).
	Rate         float64 `yaml:"rate"`
	Burst        int     `yaml:"burst"`
	BackendRate  float64 `yaml:"backendRate"`
	BackendBurst int     `yaml:"backendBurst"`
}

// quotas are the limits that apply to a tenant: its own where it sets them,
// else the top-level ones.
func (c *Config) quotas(t *mailpush.Tenant) registrar.Quotas {
	top, own := c.Registrations, c.Tenants[t.Name].Registrations
	return registrar.Quotas{
		PerTenant:   cmp.Or(own.MaxPerTenant, top.MaxPerTenant),
		PerMailbox:  cmp.Or(own.MaxPerMailbox, top.MaxPerMailbox),
		Rate:        registrar.Rate{PerSecond: cmp.Or(own.Rate, top.Rate), Burst: cmp.Or(own.Burst, top.Burst)},
		BackendRate: registrar.Rate{PerSecond: cmp.Or(own.BackendRate, top.BackendRate), Burst: cmp.Or(own.BackendBurst, top.BackendBurst)},
	}
}

// DovecotConfig is a tenant's Dovecot push_notification endpoint: the basic
// auth secret its Dovecot sends, and how a Dovecot user names a mailbox.
type DovecotConfig struct {
	Username     string `yaml:"username"`
	Password     string `yaml:"password"`
	PasswordFile string `yaml:"passwordFile"` // instead of password; one line
	UserMapping  string `yaml:"userMapping"`  // address (default) or login
	Domain       string `yaml:"domain"`       // appended to users without "@"
	// IMAP is where an app's sealed IMAP password is checked by a LOGIN
	// (then forgotten): the per-user proof that lets the app token
	// register that user. Without it, service mode needs a backend token.
	IMAP struct {
		Address string `yaml:"address"` // host:port
		TLS     string `yaml:"tls"`     // tls (default), starttls, or none (labs only)
	} `yaml:"imap"`
}

// DefaultConfig is the configuration with no file and no environment: SQLite
// in ./mailpush.db, HTTP on 127.0.0.1:8080, push providers off.
func DefaultConfig() Config {
	var c Config
	c.Listen = "127.0.0.1:8080"
	c.TLS.MinVersion = "1.2"
	c.TLS.CipherSuites = slices.Clone(defaultCipherSuites)
	c.Database.Driver = "sqlite"
	c.Database.Path = "mailpush.db"
	c.KeyDir = "mailpush-keys"
	c.Log.Level = "info"
	c.Log.Format = "text"
	c.RegistrationTTL = 30 * 24 * time.Hour
	c.Registrations.MaxPerTenant = registrar.DefaultMaxPerTenant
	c.Registrations.MaxPerMailbox = registrar.DefaultMaxPerMailbox
	c.Registrations.Rate = registrar.DefaultRate
	c.Registrations.Burst = registrar.DefaultBurst
	c.Registrations.BackendRate = registrar.DefaultBackendRate
	c.Registrations.BackendBurst = registrar.DefaultBackendBurst
	c.EWS.StatusFrequency = 5
	c.EWS.FetchRate = ews.DefaultFetchRate
	c.EWS.FetchBurst = ews.DefaultFetchBurst
	c.EWS.CallbackMaxAge = ews.DefaultCallbackMaxAge
	c.EWS.HostMinSubscriptions = 20
	c.EWS.HostSilence = time.Minute
	c.EWS.HostOverdue = 5
	c.EWS.HostCheckInterval = 10 * time.Second
	c.APNs.ProductionURL = "https://api.push.apple.com"
	c.APNs.SandboxURL = "https://api.sandbox.push.apple.com"
	c.Push.Workers = 64
	c.Push.BatchSize = 512
	c.Push.MaxAttempts = 12
	c.Push.RetryBase = time.Second
	c.Push.RetryMax = 15 * time.Minute
	c.Push.SyncPerHour = 3
	c.Push.Lease = 2 * time.Minute
	c.Console.IdleTimeout = 30 * time.Minute
	c.Console.MaxAge = 12 * time.Hour
	return c
}

// LoadConfig reads the file (if path is not empty), applies the environment
// and validates the result.
func LoadConfig(path string, environ []string) (Config, error) {
	c := DefaultConfig()
	if path != "" {
		data, err := os.ReadFile(path)
		if err != nil {
			return c, fmt.Errorf("config: %w", err)
		}
		if err := decodeConfig(path, data, &c); err != nil {
			return c, err
		}
	}
	if err := applyEnv(&c, environ); err != nil {
		return c, err
	}
	return c, c.Validate()
}

// decodeConfig checks the YAML document against Config (checkYAML: every
// mistake named by line and key path) and only then decodes it over c.
func decodeConfig(path string, data []byte, c *Config) error {
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil // an empty file: the defaults
		}
		return fmt.Errorf("config %s: not valid YAML: %s", path, strings.TrimPrefix(err.Error(), "yaml: "))
	}
	var more yaml.Node
	if err := dec.Decode(&more); !errors.Is(err, io.EOF) {
		return fmt.Errorf("config %s line %d: a second YAML document: the configuration is one document", path, more.Line)
	}
	if errs := checkYAML(path, &doc, reflect.TypeFor[Config]()); len(errs) > 0 {
		return errors.Join(errs...)
	}
	if err := doc.Decode(c); err != nil {
		// checkYAML accepts only what decodes; this is a safety net.
		return fmt.Errorf("config %s: %w", path, err)
	}
	return nil
}

// APNsEnabled reports whether APNs credentials are configured.
func (c *Config) APNsEnabled() bool { return c.APNs.enabled() }

// Validate checks every key and names the key and the fix in its error.
func (c *Config) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("config key %s: %s", key, fmt.Sprintf(format, args...)))
	}
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		bad("listen", "%q is not host:port (for example 127.0.0.1:8080)", c.Listen)
	}
	if c.PublicURL != "" {
		u, err := url.Parse(c.PublicURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			bad("publicUrl", "%q is not an absolute http(s) URL such as https://push.example.com", c.PublicURL)
		}
	}
	if (c.TLS.CertFile == "") != (c.TLS.KeyFile == "") {
		bad("tls", "set both certFile and keyFile, or neither")
	}
	c.TLS.validate(bad)
	switch c.Database.Driver {
	case "sqlite":
		if c.Database.Path == "" {
			bad("database.path", "is empty: give the SQLite file, e.g. mailpush.db")
		}
	case "postgres":
		if c.Database.URL == "" {
			bad("database.url", "is empty: give the PostgreSQL URL, e.g. postgres://mailpush@db.example.com/mailpush")
		}
		if c.Database.Schema != "" && !validSchema(c.Database.Schema) {
			bad("database.schema", "%q must be a plain identifier: lower-case letters, digits and _", c.Database.Schema)
		}
		if c.Database.MaxConns < 0 {
			bad("database.maxConns", "must not be negative")
		}
	default:
		bad("database.driver", "%q must be sqlite or postgres", c.Database.Driver)
	}
	if c.KeyDir == "" {
		bad("keyDir", "is empty: give a directory for the service keys")
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		bad("log.level", "%q must be debug, info, warn or error", c.Log.Level)
	}
	if c.Log.Format != "text" && c.Log.Format != "json" {
		bad("log.format", "%q must be text or json", c.Log.Format)
	}
	checkQuotas := func(prefix string, q RegistrationQuotas) {
		if q.MaxPerTenant < 0 {
			bad(prefix+"maxPerTenant", "%d must not be negative", q.MaxPerTenant)
		}
		if q.MaxPerMailbox < 0 {
			bad(prefix+"maxPerMailbox", "%d must not be negative", q.MaxPerMailbox)
		}
		for key, v := range map[string]float64{"rate": q.Rate, "burst": float64(q.Burst), "backendRate": q.BackendRate, "backendBurst": float64(q.BackendBurst)} {
			if v < 0 {
				bad(prefix+key, "%g must not be negative (0 means the default)", v)
			}
		}
	}
	checkQuotas("registrations.", c.Registrations)
	for name, tc := range c.Tenants {
		checkQuotas("tenants."+name+".registrations.", tc.Registrations)
	}
	if c.RegistrationTTL < time.Hour {
		bad("registrationTtl", "%v is too short: use at least 1h (default 720h)", c.RegistrationTTL)
	}
	if c.EWS.StatusFrequency < 1 || c.EWS.StatusFrequency > 1440 {
		bad("ews.statusFrequency", "%d must be 1 to 1440 minutes (Exchange's range)", c.EWS.StatusFrequency)
	}
	c.validateProviders(bad)
	if c.Push.Workers < 1 || c.Push.Workers > 1024 {
		bad("push.workers", "%d must be 1 to 1024", c.Push.Workers)
	}
	if c.Push.BatchSize < 1 || c.Push.BatchSize > 5000 {
		bad("push.batchSize", "%d must be 1 to 5000", c.Push.BatchSize)
	}
	if c.Push.MaxAttempts < 1 {
		bad("push.maxAttempts", "%d must be at least 1", c.Push.MaxAttempts)
	}
	if c.Push.RetryBase <= 0 || c.Push.RetryMax < c.Push.RetryBase {
		bad("push.retryBase", "%v must be positive and at most push.retryMax (%v)", c.Push.RetryBase, c.Push.RetryMax)
	}
	if c.Push.Lease < time.Second {
		bad("push.lease", "%v is too short: use at least 1s (default 2m)", c.Push.Lease)
	}
	if c.Push.SyncPerHour < 1 {
		bad("push.syncPerHour", "%d must be at least 1", c.Push.SyncPerHour)
	}
	if c.Push.TenantRate < 0 || c.Push.TenantBurst < 0 {
		bad("push.tenantRate", "rate and burst must not be negative")
	}
	dovecotUsers := map[string]string{}
	for name, tc := range c.Tenants {
		d := tc.Dovecot
		if d == nil {
			continue
		}
		key := "tenants." + name + ".dovecot"
		if d.Username == "" || strings.Contains(d.Username, ":") {
			bad(key+".username", "must be set, without ':' (it is the HTTP basic-auth user Dovecot sends)")
		} else if other, dup := dovecotUsers[d.Username]; dup {
			bad(key+".username", "%q is also tenant %s's: each tenant needs its own", d.Username, other)
		}
		dovecotUsers[d.Username] = name
		if (d.Password == "") == (d.PasswordFile == "") {
			bad(key+".password", "set password or passwordFile (one of them)")
		}
		switch d.UserMapping {
		case "", "address":
		case "login":
			if d.Domain == "" {
				bad(key+".domain", "is required with userMapping login (the address is login@domain)")
			}
		default:
			bad(key+".userMapping", "%q must be address or login", d.UserMapping)
		}
	}
	c.validateTenants(bad)
	c.validateGraph(bad)
	c.validateAutodiscover(bad)
	c.validateAppConfigs(bad)
	c.validateDirectories(bad)
	c.validateSMIME(bad)
	if c.EWS.MaxPerAccount > 27 {
		bad("ews.maxPerAccount", "%d is over Exchange's 27 concurrent requests per account", c.EWS.MaxPerAccount)
	}
	if c.EWS.HealthInterval < 0 || c.EWS.ResubscribeRate < 0 || c.EWS.MaxPerHost < 0 || c.EWS.MaxPerAccount < 0 {
		bad("ews", "healthInterval, resubscribeRate, maxPerHost and maxPerAccount must not be negative (0 means the default)")
	}
	c.validateHostRule(bad)
	c.validateConsole(bad)
	c.validateDebug(bad)
	if c.EWS.FetchRate < 1 || c.EWS.FetchBurst < 1 {
		bad("ews.fetchRate", "fetchRate (%d per minute) and fetchBurst (%d) must be at least 1", c.EWS.FetchRate, c.EWS.FetchBurst)
	}
	if c.EWS.CallbackMaxAge < time.Hour {
		bad("ews.callbackMaxAge", "%v is too short: use at least 1h (default 2160h); callback URLs are renewed at every resubscription", c.EWS.CallbackMaxAge)
	}
	errs = append(errs, c.validateGate()...)
	return errors.Join(errs...)
}

// validateHostRule checks the keys of host-level dead-server detection.
func (c *Config) validateHostRule(bad func(key, format string, args ...any)) {
	e := &c.EWS
	if e.HostMinSubscriptions < 1 {
		bad("ews.hostMinSubscriptions", "%d must be at least 1", e.HostMinSubscriptions)
	}
	if e.HostOverdue < 1 || e.HostOverdue > e.HostMinSubscriptions {
		bad("ews.hostOverdue", "%d must be 1 to ews.hostMinSubscriptions (%d)", e.HostOverdue, e.HostMinSubscriptions)
	}
	if sf := time.Duration(e.StatusFrequency) * time.Minute; e.HostSilence < 10*time.Second || e.HostSilence >= 2*sf && sf > 0 {
		bad("ews.hostSilence", "%v must be at least 10s and less than twice ews.statusFrequency (%v)", e.HostSilence, 2*sf)
	}
	if e.HostCheckInterval < time.Second || e.HostCheckInterval > e.HostSilence && e.HostSilence > 0 {
		bad("ews.hostCheckInterval", "%v must be at least 1s and at most ews.hostSilence (%v)", e.HostCheckInterval, e.HostSilence)
	}
}

// applyEnv sets every field that has a MAILPUSH_… variable.
func applyEnv(c *Config, environ []string) error {
	env := map[string]string{}
	for _, kv := range environ {
		if k, v, ok := strings.Cut(kv, "="); ok && strings.HasPrefix(k, "MAILPUSH_") {
			env[k] = v
		}
	}
	if len(env) == 0 {
		return nil
	}
	known := map[string]bool{}
	var errs []error
	walkFields(reflect.ValueOf(c).Elem(), "MAILPUSH", func(name string, v reflect.Value) {
		known[name] = true
		s, ok := env[name]
		if !ok {
			return
		}
		if err := setFromString(v, s); err != nil {
			errs = append(errs, fmt.Errorf("environment %s: %w", name, err))
		}
	})
	for k := range env {
		if !known[k] && k != "MAILPUSH_CONFIG" {
			errs = append(errs, fmt.Errorf("environment %s: no such setting (see the README's configuration section)", k))
		}
	}
	return errors.Join(errs...)
}

func walkFields(v reflect.Value, prefix string, fn func(name string, v reflect.Value)) {
	t := v.Type()
	for i := range t.NumField() {
		tag, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ",")
		if tag == "" || tag == "-" {
			continue
		}
		name := prefix + "_" + snake(tag)
		if f := v.Field(i); f.Kind() == reflect.Struct {
			walkFields(f, name, fn)
		} else {
			fn(name, f)
		}
	}
}

// snake turns "teamId" into "TEAM_ID" and "publicUrl" into "PUBLIC_URL".
func snake(s string) string {
	var b strings.Builder
	for i, r := range s {
		if r >= 'A' && r <= 'Z' && i > 0 {
			b.WriteByte('_')
		}
		b.WriteRune(r)
	}
	return strings.ToUpper(b.String())
}

func setFromString(v reflect.Value, s string) error {
	switch v.Interface().(type) {
	case time.Duration:
		d, err := time.ParseDuration(s)
		if err != nil {
			return fmt.Errorf("%q is not a duration such as 720h", s)
		}
		v.SetInt(int64(d))
		return nil
	}
	switch v.Kind() {
	case reflect.String:
		v.SetString(s)
	case reflect.Int:
		n, err := strconv.Atoi(s)
		if err != nil {
			return fmt.Errorf("%q is not a whole number", s)
		}
		v.SetInt(int64(n))
	case reflect.Bool:
		b, err := strconv.ParseBool(s)
		if err != nil {
			return fmt.Errorf("%q is not true or false", s)
		}
		v.SetBool(b)
	case reflect.Map:
		return fmt.Errorf("this setting is a map: set it in the configuration file")
	case reflect.Slice:
		if v.Type().Elem().Kind() != reflect.String {
			return fmt.Errorf("this setting is a list of objects: set it in the configuration file")
		}
		var parts []string
		for p := range strings.SplitSeq(s, ",") {
			if p = strings.TrimSpace(p); p != "" {
				parts = append(parts, p)
			}
		}
		v.Set(reflect.ValueOf(parts))
	default:
		return fmt.Errorf("unsupported setting type %s", v.Type())
	}
	return nil
}

// validSchema reports whether name is a plain lower-case SQL identifier.
func validSchema(name string) bool {
	if name == "" || len(name) > 63 || name[0] >= '0' && name[0] <= '9' {
		return false
	}
	for _, c := range name {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}

// databaseName says where the store is, for messages: the SQLite file, or
// the PostgreSQL database without its password.
func (c *Config) databaseName() string {
	if c.Database.Driver != "postgres" {
		return c.Database.Path
	}
	if u, err := url.Parse(c.Database.URL); err == nil && u.Host != "" {
		return "postgres://" + u.Host + u.Path
	}
	return "the PostgreSQL database"
}
