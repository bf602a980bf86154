package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestTenantServiceAccountConfig(t *testing.T) {
	dir := t.TempDir()
	pw := filepath.Join(dir, "pw")
	os.WriteFile(pw, []byte("s3cret\n"), 0o600)
	load := func(body string) (Config, error) {
		p := filepath.Join(dir, "c.yaml")
		os.WriteFile(p, []byte(body), 0o600)
		return LoadConfig(p, nil)
	}
	c, err := load("tenants:\n  acme:\n    ews:\n      serviceAccount: {username: 'EXAMPLE\\svc', passwordFile: " + pw + "}\n")
	if err != nil {
		t.Fatal(err)
	}
	accounts, err := c.ewsServiceAccounts()
	if err != nil || accounts["acme"].Username != `EXAMPLE\svc` || accounts["acme"].Password != "s3cret" {
		t.Errorf("service accounts = %v, %v", accounts, err)
	}
	for _, tc := range []struct{ body, key string }{
		{"tenants:\n  acme:\n    ews:\n      serviceAccount: {passwordFile: x}\n", "tenants.acme.ews.serviceAccount.username"},
		{"tenants:\n  acme:\n    ews:\n      serviceAccount: {username: u, passwordFile: x, passwordEnv: Y}\n", "tenants.acme.ews.serviceAccount"},
		{"tenants:\n  acme:\n    ews:\n      serviceAccount: {username: u}\n", "tenants.acme.ews.serviceAccount"},
		{"ews:\n  maxPerAccount: 30\n", "ews.maxPerAccount"},
		{"ews:\n  resubscribeRate: -1\n", "ews"},
	} {
		if _, err := load(tc.body); err == nil || !strings.Contains(err.Error(), "config key "+tc.key) {
			t.Errorf("%q: error %v, want one naming %s", tc.body, err, tc.key)
		}
	}
	c, _ = load("tenants:\n  acme:\n    ews:\n      serviceAccount: {username: u, passwordFile: " + filepath.Join(dir, "missing") + "}\n")
	if _, err := c.ewsServiceAccounts(); err == nil || !strings.Contains(err.Error(), "passwordFile") {
		t.Errorf("missing password file: %v", err)
	}
}

func TestTenantOAuthAuthoritiesConfig(t *testing.T) {
	dir := t.TempDir()
	load := func(body string) (Config, error) {
		p := filepath.Join(dir, "c.yaml")
		os.WriteFile(p, []byte(body), 0o600)
		return LoadConfig(p, nil)
	}
	c, err := load("tenants:\n  acme:\n    ews:\n      oauthAuthorities: [https://login.microsoftonline.com/contoso.onmicrosoft.com/]\n")
	if err != nil {
		t.Fatal(err)
	}
	if got := c.ewsOAuthAuthorities()["acme"]; len(got) != 1 || got[0] != "https://login.microsoftonline.com/contoso.onmicrosoft.com/" {
		t.Fatalf("authorities = %v", got)
	}
	for _, bad := range []string{"http://login.example.com/t/", "login.example.com/t", "https://u:p@login.example.com/t/", "https://login.example.com/t/?x=1"} {
		_, err := load("tenants:\n  acme:\n    ews:\n      oauthAuthorities: [\"" + bad + "\"]\n")
		if err == nil || !strings.Contains(err.Error(), "tenants.acme.ews.oauthAuthorities[0]") {
			t.Errorf("%s: %v, want an error naming the key", bad, err)
		}
	}
}
