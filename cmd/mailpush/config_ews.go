package main

import (
	"fmt"
	"net/url"
	"os"
	"strings"

	"github.com/mailpush/mailpush"
)

// TenantEWSConfig is a tenant's Exchange settings.
type TenantEWSConfig struct {
	// ServiceAccount holds the ApplicationImpersonation role on the
	// tenant's Exchange: registrations without sealed credentials then use
	// service mode (mailpush subscribes as this account, impersonating the
	// mailbox) instead of device-subscribed mode.
	ServiceAccount *ServiceAccountConfig `yaml:"serviceAccount"`
	// OAuthAuthorities are the OAuth authorities (absolute https URLs,
	// e.g. https://login.microsoftonline.com/contoso.onmicrosoft.com/)
	// under which the token endpoint of sealed OAuth credentials must lie:
	// mailpush sends the user's refresh token there. Empty refuses sealed
	// refresh tokens for the tenant.
	OAuthAuthorities []string `yaml:"oauthAuthorities"`
}

// ServiceAccountConfig names the account and where its password is: a file
// (first line) or an environment variable, never the config file itself.
type ServiceAccountConfig struct {
	Username     string `yaml:"username"` // DOMAIN\user or user@domain
	PasswordFile string `yaml:"passwordFile"`
	PasswordEnv  string `yaml:"passwordEnv"`
}

func (c *Config) validateTenants(bad func(key, format string, args ...any)) {
	for name, tc := range c.Tenants {
		for i, a := range tc.EWS.OAuthAuthorities {
			if u, err := url.Parse(a); err != nil || u.Scheme != "https" || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
				bad(fmt.Sprintf("tenants.%s.ews.oauthAuthorities[%d]", name, i), "must be an absolute https URL without user info, query or fragment, e.g. https://login.microsoftonline.com/contoso.onmicrosoft.com/")
			}
		}
		sa := tc.EWS.ServiceAccount
		if sa == nil {
			continue
		}
		key := "tenants." + name + ".ews.serviceAccount"
		if sa.Username == "" {
			bad(key+".username", "is required: the service account, e.g. EXAMPLE\\svc-mailpush")
		}
		if (sa.PasswordFile == "") == (sa.PasswordEnv == "") {
			bad(key, "set exactly one of passwordFile and passwordEnv")
		}
	}
}

// ewsOAuthAuthorities are the tenants' OAuth authorities, by tenant name.
func (c *Config) ewsOAuthAuthorities() map[string][]string {
	out := map[string][]string{}
	for name, tc := range c.Tenants {
		if len(tc.EWS.OAuthAuthorities) > 0 {
			out[name] = tc.EWS.OAuthAuthorities
		}
	}
	return out
}

// ewsServiceAccounts reads the tenants' service-account passwords.
func (c *Config) ewsServiceAccounts() (map[string]mailpush.Credentials, error) {
	out := map[string]mailpush.Credentials{}
	for name, tc := range c.Tenants {
		sa := tc.EWS.ServiceAccount
		if sa == nil {
			continue
		}
		key := "tenants." + name + ".ews.serviceAccount"
		var pw string
		if sa.PasswordFile != "" {
			b, err := os.ReadFile(sa.PasswordFile)
			if err != nil {
				return nil, fmt.Errorf("config key %s.passwordFile: %w", key, err)
			}
			pw, _, _ = strings.Cut(string(b), "\n")
			pw = strings.TrimRight(pw, "\r")
		} else {
			pw = os.Getenv(sa.PasswordEnv)
		}
		if pw == "" {
			return nil, fmt.Errorf("config key %s: the password is empty", key)
		}
		out[name] = mailpush.Credentials{Username: sa.Username, Password: pw}
	}
	return out, nil
}
