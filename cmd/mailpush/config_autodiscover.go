package main

import (
	"fmt"
	"net/url"
	"strings"

	"github.com/mailpush/mailpush/autodiscover"
)

// AutodiscoverConfig is tenants.<name>.autodiscover: the mail domains the
// responder answers for and the endpoints it hands out (see package
// autodiscover's Site).
type AutodiscoverConfig struct {
	Domains     []string `yaml:"domains"`
	DisplayName string   `yaml:"displayName"`
	// EWSURL is Exchange's EWS URL.
	EWSURL string `yaml:"ewsUrl"`
	// ActiveSyncURL is the ActiveSync URL devices use: the reverse proxy
	// that asks mailpush's gate.
	ActiveSyncURL string `yaml:"activeSyncUrl"`
	// PushURL is mailpush's device API; default publicUrl + /api/v1 when
	// publicUrl is https.
	PushURL string            `yaml:"pushUrl"`
	IMAP    *MailServerConfig `yaml:"imap"`
	SMTP    *MailServerConfig `yaml:"smtp"`
	// Profile signs the Apple .mobileconfig when both files are set.
	Profile struct {
		CertFile string `yaml:"certFile"` // PEM, chain after the leaf
		KeyFile  string `yaml:"keyFile"`
	} `yaml:"profile"`
}

// MailServerConfig is an IMAP or SMTP server (security: SSL or STARTTLS).
type MailServerConfig struct {
	Host     string `yaml:"host"`
	Port     int    `yaml:"port"`
	Security string `yaml:"security"`
}

func (m *MailServerConfig) server() *autodiscover.MailServer {
	if m == nil {
		return nil
	}
	return &autodiscover.MailServer{Host: m.Host, Port: m.Port, Security: strings.ToUpper(m.Security)}
}

// autodiscoverSites returns the responder's sites; with signers it also
// loads the profile signing keys.
func (c *Config) autodiscoverSites(signers bool) ([]autodiscover.Site, error) {
	var sites []autodiscover.Site
	for _, name := range c.tenantNames() {
		a := c.Tenants[name].Autodiscover
		if a == nil {
			continue
		}
		s := autodiscover.Site{
			Tenant: name, Domains: a.Domains, DisplayName: a.DisplayName,
			EWSURL: a.EWSURL, ActiveSyncURL: a.ActiveSyncURL, PushURL: a.PushURL,
			IMAP: a.IMAP.server(), SMTP: a.SMTP.server(),
		}
		if s.PushURL == "" {
			if u, err := url.Parse(c.PublicURL); err == nil && u.Scheme == "https" {
				s.PushURL = strings.TrimSuffix(c.PublicURL, "/") + "/api/v1"
			}
		}
		p := a.Profile
		if (p.CertFile == "") != (p.KeyFile == "") {
			return nil, fmt.Errorf("config key tenants.%s.autodiscover.profile: set both certFile and keyFile, or neither", name)
		}
		if signers && p.CertFile != "" {
			signer, err := autodiscover.LoadProfileSigner(p.CertFile, p.KeyFile)
			if err != nil {
				return nil, fmt.Errorf("config key tenants.%s.autodiscover.profile: %w", name, err)
			}
			s.Profile = signer
		}
		sites = append(sites, s)
	}
	return sites, nil
}

// validateAutodiscover checks the tenants' autodiscover blocks.
func (c *Config) validateAutodiscover(bad func(key, format string, args ...any)) {
	sites, err := c.autodiscoverSites(false)
	if err == nil {
		_, err = autodiscover.NewResponder(sites, nil)
	}
	if err != nil {
		for _, line := range strings.Split(err.Error(), "\n") {
			key, msg, _ := strings.Cut(strings.TrimPrefix(line, "config key "), ": ")
			bad(key, "%s", msg)
		}
	}
}
