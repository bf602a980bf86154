package main

import (
	"fmt"
	"path/filepath"
	"sort"

	"github.com/mailpush/mailpush/directory"
	"github.com/mailpush/mailpush/smime"
)

// APNsConfig holds APNs credentials and defaults: the top-level apns block,
// and tenants.<name>.apns for a tenant's own. Credentials are either token
// (teamId, keyId, keyFile: the .p8 key) or certificate (certFile: the .p12,
// with certPassword or certPasswordFile).
type APNsConfig struct {
	TeamID           string `yaml:"teamId"`
	KeyID            string `yaml:"keyId"`
	KeyFile          string `yaml:"keyFile"`          // the .p8 file
	CertFile         string `yaml:"certFile"`         // the .p12 file
	CertPassword     string `yaml:"certPassword"`     // its password, or
	CertPasswordFile string `yaml:"certPasswordFile"` // a file holding it
	Topic            string `yaml:"topic"`            // the app's bundle ID
	// Environment is production or sandbox, for devices registered
	// without one; default production.
	Environment   string `yaml:"environment"`
	ProductionURL string `yaml:"productionUrl"`
	SandboxURL    string `yaml:"sandboxUrl"`
}

// FCMConfig holds FCM credentials and endpoints: the top-level fcm block,
// and tenants.<name>.fcm for a tenant's own project.
type FCMConfig struct {
	ProjectID       string `yaml:"projectId"`
	CredentialsFile string `yaml:"credentialsFile"` // service-account JSON key
	Endpoint        string `yaml:"endpoint"`        // default https://fcm.googleapis.com
	TokenURL        string `yaml:"tokenUrl"`        // default: the key file's token_uri
}

// TenantConfig is what the file says about one tenant (tenants.<name>, the
// name given to `mailpush tenant add`). Every block is optional: what a
// tenant does not set comes from the top-level block. Other subsystems add
// their own per-tenant blocks here.
type TenantConfig struct {
	APNs APNsConfig `yaml:"apns"`
	FCM  FCMConfig  `yaml:"fcm"`
	// Dovecot lets the tenant's Dovecot post to /dovecot/notify.
	Dovecot *DovecotConfig `yaml:"dovecot"`
	// EWS holds the tenant's Exchange settings (config_ews.go).
	EWS TenantEWSConfig `yaml:"ews"`
	// Graph is the tenant's Entra ID app for Microsoft Graph (config_graph.go).
	Graph *TenantGraphConfig `yaml:"graph"`
	// Registrations overrides the top-level registrations quotas.
	Registrations RegistrationQuotas `yaml:"registrations"`
	// Autodiscover makes the responder answer for the tenant's mail domains.
	Autodiscover *AutodiscoverConfig `yaml:"autodiscover"`
	// AppConfig is the managed app configuration (config_appconfig.go).
	AppConfig *AppConfigConfig `yaml:"appConfig"`
	// Directory is the tenant's LDAP / Active Directory, read by the
	// S/MIME lookup and managed app configuration (config_directory.go).
	Directory *directory.Config `yaml:"directory"`
	// SMIME serves the tenant's recipients' certificates (cmd/mailpush/smime.go).
	SMIME *smime.Config `yaml:"smime"`
}

func (a APNsConfig) enabled() bool { return a.KeyFile != "" || a.CertFile != "" }

// over returns a's settings over the defaults d: a's credentials when it has
// any (they are never mixed with d's), each other field when set.
func (a APNsConfig) over(d APNsConfig) APNsConfig {
	out := d
	if a.enabled() || a.TeamID != "" || a.KeyID != "" {
		out.TeamID, out.KeyID, out.KeyFile = a.TeamID, a.KeyID, a.KeyFile
		out.CertFile, out.CertPassword, out.CertPasswordFile = a.CertFile, a.CertPassword, a.CertPasswordFile
	}
	for _, f := range []struct {
		dst *string
		v   string
	}{
		{&out.Topic, a.Topic}, {&out.Environment, a.Environment}, {&out.ProductionURL, a.ProductionURL}, {&out.SandboxURL, a.SandboxURL},
	} {
		if f.v != "" {
			*f.dst = f.v
		}
	}
	return out
}

// credentials identifies the APNs credentials and endpoints: tenants with
// the same share one client, hence one connection per environment.
func (a APNsConfig) credentials() string {
	abs := func(p string) string {
		if p == "" {
			return ""
		}
		if q, err := filepath.Abs(p); err == nil {
			return q
		}
		return p
	}
	return fmt.Sprintf("%s|%s|%s|%s|%s|%s", a.TeamID, a.KeyID, abs(a.KeyFile), abs(a.CertFile), a.ProductionURL, a.SandboxURL)
}

// over returns f's settings over the defaults d: f's project and key when
// it names a project, each endpoint when set.
func (f FCMConfig) over(d FCMConfig) FCMConfig {
	out := d
	if f.ProjectID != "" || f.CredentialsFile != "" {
		out.ProjectID, out.CredentialsFile = f.ProjectID, f.CredentialsFile
	}
	if f.Endpoint != "" {
		out.Endpoint = f.Endpoint
	}
	if f.TokenURL != "" {
		out.TokenURL = f.TokenURL
	}
	return out
}

func (f FCMConfig) credentials() string {
	key := f.CredentialsFile
	if q, err := filepath.Abs(key); err == nil {
		key = q
	}
	return f.ProjectID + "|" + key + "|" + f.Endpoint + "|" + f.TokenURL
}

// TenantAPNs is the APNs configuration that applies to the named tenant.
func (c *Config) TenantAPNs(name string) APNsConfig {
	return c.Tenants[name].APNs.over(c.APNs)
}

// TenantFCM is the FCM configuration that applies to the named tenant.
func (c *Config) TenantFCM(name string) FCMConfig {
	return c.Tenants[name].FCM.over(c.FCM)
}

// tenantNames lists the configured tenants in order.
func (c *Config) tenantNames() []string {
	names := make([]string, 0, len(c.Tenants))
	for n := range c.Tenants {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// validateProviders checks the top-level apns and fcm blocks and each
// tenant's effective ones; bad names the key.
func (c *Config) validateProviders(bad func(key, format string, args ...any)) {
	checkAPNs := func(prefix string, a APNsConfig) {
		switch {
		case a.KeyFile != "" && a.CertFile != "":
			bad(prefix+"certFile", "is set together with keyFile: use token (keyFile) or certificate (certFile) authentication, not both")
		case a.KeyFile != "":
			for key, v := range map[string]string{"teamId": a.TeamID, "keyId": a.KeyID, "topic": a.Topic} {
				if v == "" {
					bad(prefix+key, "is required when %skeyFile is set", prefix)
				}
			}
		case a.CertFile != "":
			if a.Topic == "" {
				bad(prefix+"topic", "is required when %scertFile is set", prefix)
			}
			if a.CertPassword != "" && a.CertPasswordFile != "" {
				bad(prefix+"certPasswordFile", "is set together with certPassword: give one of them")
			}
		case a.TeamID != "" || a.KeyID != "":
			bad(prefix+"keyFile", "is missing: APNs needs the .p8 key file beside teamId, keyId and topic")
		}
		if a.Environment != "" && a.Environment != "production" && a.Environment != "sandbox" {
			bad(prefix+"environment", "%q must be production or sandbox", a.Environment)
		}
	}
	checkFCM := func(prefix string, f FCMConfig) {
		if (f.ProjectID == "") != (f.CredentialsFile == "") {
			bad(prefix+"", "set both projectId and credentialsFile (the service-account JSON key), or neither")
		}
	}
	checkAPNs("apns.", c.APNs)
	if !c.APNs.enabled() && c.APNs.Topic != "" && len(c.Tenants) == 0 {
		bad("apns.keyFile", "is missing: APNs needs the .p8 key file (or certFile) beside the topic")
	}
	checkFCM("fcm", c.FCM)
	for _, name := range c.tenantNames() {
		if name == "" || len(name) > 64 {
			bad("tenants", "tenant names are 1 to 64 characters, as in `mailpush tenant add NAME`")
		}
		checkAPNs("tenants."+name+".apns.", c.TenantAPNs(name))
		checkFCM("tenants."+name+".fcm", c.TenantFCM(name))
	}
}
