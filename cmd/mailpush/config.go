package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"reflect"
	"strconv"
	"strings"
	"time"

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
	// TLS serves HTTPS when both files are set.
	TLS struct {
		CertFile string `yaml:"certFile"`
		KeyFile  string `yaml:"keyFile"`
	} `yaml:"tls"`
	Database struct {
		// Path of the SQLite file.
		Path string `yaml:"path"`
	} `yaml:"database"`
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
	EWS             struct {
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
	} `yaml:"ews"`
	APNs struct {
		TeamID        string `yaml:"teamId"`
		KeyID         string `yaml:"keyId"`
		KeyFile       string `yaml:"keyFile"` // the .p8 file
		Topic         string `yaml:"topic"`   // the app's bundle ID
		ProductionURL string `yaml:"productionUrl"`
		SandboxURL    string `yaml:"sandboxUrl"`
	} `yaml:"apns"`
	Push struct {
		Workers   int `yaml:"workers"`
		QueueSize int `yaml:"queueSize"`
	} `yaml:"push"`
	// Tenants holds settings per tenant name.
	Tenants map[string]TenantConfig `yaml:"tenants"`
}

// DefaultConfig is the configuration with no file and no environment: SQLite
// in ./mailpush.db, HTTP on 127.0.0.1:8080, push providers off.
func DefaultConfig() Config {
	var c Config
	c.Listen = "127.0.0.1:8080"
	c.Database.Path = "mailpush.db"
	c.KeyDir = "mailpush-keys"
	c.Log.Level = "info"
	c.Log.Format = "text"
	c.RegistrationTTL = 30 * 24 * time.Hour
	c.EWS.StatusFrequency = 5
	c.APNs.ProductionURL = "https://api.push.apple.com"
	c.APNs.SandboxURL = "https://api.sandbox.push.apple.com"
	c.Push.Workers = 16
	c.Push.QueueSize = 10_000
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
		dec := yaml.NewDecoder(bytes.NewReader(data))
		dec.KnownFields(true)
		if err := dec.Decode(&c); err != nil && !errors.Is(err, io.EOF) {
			return c, fmt.Errorf("config %s: %w", path, err)
		}
	}
	if err := applyEnv(&c, environ); err != nil {
		return c, err
	}
	return c, c.Validate()
}

// APNsEnabled reports whether APNs credentials are configured.
func (c *Config) APNsEnabled() bool { return c.APNs.KeyFile != "" }

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
	if c.Database.Path == "" {
		bad("database.path", "is empty: give the SQLite file, e.g. mailpush.db")
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
	if c.RegistrationTTL < time.Hour {
		bad("registrationTtl", "%v is too short: use at least 1h (default 720h)", c.RegistrationTTL)
	}
	if c.EWS.StatusFrequency < 1 || c.EWS.StatusFrequency > 1440 {
		bad("ews.statusFrequency", "%d must be 1 to 1440 minutes (Exchange's range)", c.EWS.StatusFrequency)
	}
	if c.APNsEnabled() {
		for key, v := range map[string]string{"apns.teamId": c.APNs.TeamID, "apns.keyId": c.APNs.KeyID, "apns.topic": c.APNs.Topic} {
			if v == "" {
				bad(key, "is required when apns.keyFile is set")
			}
		}
	} else if c.APNs.TeamID != "" || c.APNs.KeyID != "" || c.APNs.Topic != "" {
		bad("apns.keyFile", "is missing: APNs needs the .p8 key file beside teamId, keyId and topic")
	}
	if c.Push.Workers < 1 || c.Push.Workers > 1024 {
		bad("push.workers", "%d must be 1 to 1024", c.Push.Workers)
	}
	if c.Push.QueueSize < 1 {
		bad("push.queueSize", "%d must be positive", c.Push.QueueSize)
	}
	c.validateTenants(bad)
	if c.EWS.MaxPerAccount > 27 {
		bad("ews.maxPerAccount", "%d is over Exchange's 27 concurrent requests per account", c.EWS.MaxPerAccount)
	}
	if c.EWS.HealthInterval < 0 || c.EWS.ResubscribeRate < 0 || c.EWS.MaxPerHost < 0 || c.EWS.MaxPerAccount < 0 {
		bad("ews", "healthInterval, resubscribeRate, maxPerHost and maxPerAccount must not be negative (0 means the default)")
	}
	return errors.Join(errs...)
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
	case reflect.Slice:
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
