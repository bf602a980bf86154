package main

import (
	"crypto"
	"crypto/tls"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/mailpush/mailpush/graph"
)

// GraphConfig tunes the Microsoft Graph source (all tenants).
type GraphConfig struct {
	// SubscriptionLifetime of a Graph subscription (at most 10080m for
	// messages); renewed at about half of it. Default 72h.
	SubscriptionLifetime time.Duration `yaml:"subscriptionLifetime"`
	// RenewRate caps subscription renewals and re-creations started per
	// second (Graph allows 1,000 subscription writes per 20 s per app and
	// tenant). Default 20.
	RenewRate int `yaml:"renewRate"`
	// Workers fetch unread counts and messages after the acknowledgement.
	Workers int `yaml:"workers"`
	// QueueSize bounds the lifecycle events waiting for their workers.
	QueueSize int `yaml:"queueSize"`
	// RichNotifications asks Graph to include the message's subject, sender
	// and read state, encrypted to a certificate mailpush makes and rotates
	// (its key in keyDir/graph-encryption): no fetch for the content.
	// Subscriptions then last at most 1,440 minutes.
	RichNotifications bool `yaml:"richNotifications"`
}

// TenantGraphConfig is a tenant's Entra ID app for Microsoft Graph: its
// app-only tokens come from the client-credentials grant with a client
// secret (read from a file or an environment variable, never the config
// file) or a certificate and key (a signed client assertion).
type TenantGraphConfig struct {
	TenantID         string `yaml:"tenantId"`
	ClientID         string `yaml:"clientId"`
	ClientSecretFile string `yaml:"clientSecretFile"`
	ClientSecretEnv  string `yaml:"clientSecretEnv"`
	CertificateFile  string `yaml:"certificateFile"` // PEM certificate and RSA key in one file, or …
	KeyFile          string `yaml:"keyFile"`         // … the key in its own file
	Authority        string `yaml:"authority"`       // default https://login.microsoftonline.com
	GraphURL         string `yaml:"graphUrl"`        // default https://graph.microsoft.com/v1.0
}

func (c *Config) validateGraph(bad func(key, format string, args ...any)) {
	if l := c.Graph.SubscriptionLifetime; l < 0 || l > 10080*time.Minute {
		bad("graph.subscriptionLifetime", "%v must be at most 10080m (Graph's limit for messages)", l)
	} else if l != 0 && l < 10*time.Minute {
		bad("graph.subscriptionLifetime", "%v is too short: at least 10m", l)
	}
	if c.Graph.RenewRate < 0 || c.Graph.Workers < 0 || c.Graph.QueueSize < 0 {
		bad("graph", "renewRate, workers and queueSize must not be negative (0 means the default)")
	}
	for name, tc := range c.Tenants {
		g := tc.Graph
		if g == nil {
			continue
		}
		key := "tenants." + name + ".graph"
		if g.TenantID == "" || g.ClientID == "" {
			bad(key, "tenantId and clientId are required (the Entra ID tenant and the app's client ID)")
		}
		secrets := 0
		for _, v := range []string{g.ClientSecretFile, g.ClientSecretEnv, g.CertificateFile} {
			if v != "" {
				secrets++
			}
		}
		if secrets != 1 {
			bad(key, "set exactly one of clientSecretFile, clientSecretEnv and certificateFile")
		}
		for _, u := range []struct{ k, v string }{{"authority", g.Authority}, {"graphUrl", g.GraphURL}} {
			if u.v != "" && !strings.HasPrefix(u.v, "https://") {
				bad(key+"."+u.k, "must be an https URL")
			}
		}
	}
}

// graphApps reads the tenants' Graph app credentials.
func (c *Config) graphApps() (map[string]*graph.App, error) {
	out := map[string]*graph.App{}
	for name, tc := range c.Tenants {
		g := tc.Graph
		if g == nil {
			continue
		}
		key := "tenants." + name + ".graph"
		a := &graph.App{TenantID: g.TenantID, ClientID: g.ClientID, Authority: g.Authority, BaseURL: g.GraphURL}
		switch {
		case g.ClientSecretFile != "":
			b, err := os.ReadFile(g.ClientSecretFile)
			if err != nil {
				return nil, fmt.Errorf("config key %s.clientSecretFile: %w", key, err)
			}
			a.ClientSecret, _, _ = strings.Cut(string(b), "\n")
			a.ClientSecret = strings.TrimRight(a.ClientSecret, "\r")
		case g.ClientSecretEnv != "":
			a.ClientSecret = os.Getenv(g.ClientSecretEnv)
		case g.CertificateFile != "":
			keyFile := g.KeyFile
			if keyFile == "" {
				keyFile = g.CertificateFile
			}
			pair, err := tls.LoadX509KeyPair(g.CertificateFile, keyFile)
			if err != nil {
				return nil, fmt.Errorf("config key %s.certificateFile: %w", key, err)
			}
			signer, ok := pair.PrivateKey.(crypto.Signer)
			if !ok {
				return nil, fmt.Errorf("config key %s.keyFile: not a signing key", key)
			}
			a.Certificate, a.Key = pair.Leaf, signer
		}
		if a.ClientSecret == "" && a.Certificate == nil {
			return nil, fmt.Errorf("config key %s: the client secret is empty", key)
		}
		out[name] = a
	}
	return out, nil
}
