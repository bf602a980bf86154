package main

import (
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/mailpush/mailpush"
	"github.com/mailpush/mailpush/appconfig"
	"github.com/mailpush/mailpush/directory"
)

// DefaultAppConfigFilter finds a user by any of the names an MDM knows.
const DefaultAppConfigFilter = "(|(userPrincipalName={user})(sAMAccountName={user})(mail={user}))"

// AppConfigConfig is tenants.<name>.appConfig: the managed app
// configuration template, expanded per user from tenants.<name>.directory.
type AppConfigConfig struct {
	// Filter finds the user named in GET /api/v1/appconfig/{user}; {user}
	// is the escaped name. Default DefaultAppConfigFilter.
	Filter string `yaml:"filter"`
	// Attributes are directory attributes the macros may name beyond
	// userPrincipalName, sAMAccountName, mail and displayName.
	Attributes []string `yaml:"attributes"`
	// AppTokenFile holds the tenant's app token (first line), the value
	// of ${tenant.appToken}; never the configuration file itself.
	AppTokenFile string `yaml:"appTokenFile"`
	// Keys are the configuration's keys and values (strings with macros,
	// numbers, booleans).
	Keys map[string]any `yaml:"keys"`
}

// appConfigVars are the macros other than ${user.…}: publicURL is the
// service's URL, and the app token is read from its file when read is set
// (validation only checks the names).
func (c *Config) appConfigVars(name, publicURL string, read bool) (map[string]string, error) {
	a := c.Tenants[name].AppConfig
	vars := map[string]string{"tenant.name": name, "mailpush.url": strings.TrimSuffix(publicURL, "/")}
	if a.AppTokenFile == "" {
		return vars, nil
	}
	vars["tenant.appToken"] = ""
	if read {
		b, err := os.ReadFile(a.AppTokenFile)
		if err != nil {
			return nil, fmt.Errorf("config key tenants.%s.appConfig.appTokenFile: %w", name, err)
		}
		tok, _, _ := strings.Cut(string(b), "\n")
		if tok = strings.TrimSpace(tok); tok == "" {
			return nil, fmt.Errorf("config key tenants.%s.appConfig.appTokenFile: %s is empty", name, a.AppTokenFile)
		}
		vars["tenant.appToken"] = tok
	}
	return vars, nil
}

// appConfigTemplate parses a tenant's template.
func (c *Config) appConfigTemplate(name, publicURL string, read bool) (*appconfig.Template, error) {
	a := c.Tenants[name].AppConfig
	vars, err := c.appConfigVars(name, publicURL, read)
	if err != nil {
		return nil, err
	}
	t, err := appconfig.Parse(a.Keys, appconfig.Options{Attributes: a.Attributes, Vars: vars})
	if err != nil {
		return nil, err
	}
	return t, nil
}

// appConfigDirectory is the tenant's directory block with the app
// configuration's filter and the attributes its template reads.
func (c *Config) appConfigDirectory(name string, t *appconfig.Template) directory.Config {
	cfg := *c.Tenants[name].Directory
	cfg.Filter = c.Tenants[name].AppConfig.Filter
	if cfg.Filter == "" {
		cfg.Filter = DefaultAppConfigFilter
	}
	cfg.Attributes = t.Attributes()
	if len(cfg.Attributes) == 0 {
		cfg.Attributes = []string{"mail"} // a search needs one; the template reads none
	}
	return cfg
}

func (c *Config) validateAppConfigs(bad func(key, format string, args ...any)) {
	for _, name := range c.tenantNames() {
		a := c.Tenants[name].AppConfig
		if a == nil {
			continue
		}
		key := "tenants." + name + ".appConfig"
		if c.Tenants[name].Directory == nil {
			bad(key, "needs tenants.%s.directory: macros are expanded from it", name)
			continue
		}
		if len(a.Keys) == 0 {
			bad(key+".keys", "is empty: list the keys of the app's configuration")
			continue
		}
		t, err := c.appConfigTemplate(name, c.PublicURL, false)
		if err != nil {
			for _, line := range strings.Split(err.Error(), "\n") {
				k, msg, _ := strings.Cut(line, ": ")
				bad(key+"."+k, "%s", msg)
			}
			continue
		}
		if err := c.appConfigDirectory(name, t).Defaults().Validate(); err != nil {
			k, msg, _ := strings.Cut(err.Error(), ": ")
			if k == "filter" {
				bad(key+".filter", "%s", msg)
			}
		}
	}
}

// openAppConfigs builds the app configuration service: each configured
// tenant's template and a directory (the tenant's, with the app
// configuration's filter and attributes). The caller closes the
// directories.
func (c *Config) openAppConfigs(publicURL string, logger *slog.Logger, clock mailpush.Clock) (*appconfig.Service, []*directory.Directory, error) {
	s := &appconfig.Service{Tenants: map[string]appconfig.Tenant{}}
	var dirs []*directory.Directory
	fail := func(err error) (*appconfig.Service, []*directory.Directory, error) {
		for _, d := range dirs {
			d.Close()
		}
		return nil, nil, err
	}
	for _, name := range c.tenantNames() {
		if c.Tenants[name].AppConfig == nil {
			continue
		}
		t, err := c.appConfigTemplate(name, publicURL, true)
		if err != nil {
			return fail(err)
		}
		d, err := directory.New(c.appConfigDirectory(name, t), logger.With("tenant", name, "for", "appconfig"), clock)
		if err != nil {
			return fail(fmt.Errorf("config key tenants.%s.directory: %w", name, err))
		}
		dirs = append(dirs, d)
		s.Tenants[name] = appconfig.Tenant{Template: t, Directory: d}
	}
	return s, dirs, nil
}
