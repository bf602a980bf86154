package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestTenantConfigMerge(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.yaml")
	os.WriteFile(path, []byte(`apns:
  teamId: TEAM1
  keyId: KEY1
  keyFile: team.p8
  topic: com.example.mail
  productionUrl: https://apns.example.net
fcm:
  projectId: shared
  credentialsFile: shared.json
tenants:
  topiconly:
    apns:
      topic: com.other.mail
  cert:
    apns:
      certFile: cert.p12
      certPassword: pw
      topic: com.cert.mail
      environment: sandbox
    fcm:
      projectId: own
      credentialsFile: own.json
`), 0o600)
	c, err := LoadConfig(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	a := c.TenantAPNs("topiconly")
	if a.KeyFile != "team.p8" || a.TeamID != "TEAM1" || a.Topic != "com.other.mail" || a.ProductionURL != "https://apns.example.net" {
		t.Errorf("topiconly apns = %+v: want the team key with its own topic", a)
	}
	if a.credentials() != c.TenantAPNs("unconfigured").credentials() {
		t.Error("a tenant with only its own topic must share the default credentials")
	}
	a = c.TenantAPNs("cert")
	if a.KeyFile != "" || a.TeamID != "" || a.CertFile != "cert.p12" || a.Environment != "sandbox" || a.ProductionURL != "https://apns.example.net" {
		t.Errorf("cert apns = %+v: want the certificate only, endpoints inherited", a)
	}
	if f := c.TenantFCM("cert"); f.ProjectID != "own" || f.CredentialsFile != "own.json" {
		t.Errorf("cert fcm = %+v", f)
	}
	if f := c.TenantFCM("topiconly"); f.ProjectID != "shared" {
		t.Errorf("topiconly fcm = %+v: want the default", f)
	}
}

func TestTenantConfigErrorsNameTheKey(t *testing.T) {
	for _, tc := range []struct{ name, file, want string }{
		{"key and cert", "tenants:\n  a:\n    apns:\n      keyFile: k.p8\n      certFile: c.p12\n      teamId: T\n      keyId: K\n      topic: t\n", "config key tenants.a.apns.certFile"},
		{"cert without topic", "tenants:\n  a:\n    apns:\n      certFile: c.p12\n", "config key tenants.a.apns.topic"},
		{"two passwords", "tenants:\n  a:\n    apns:\n      certFile: c.p12\n      topic: t\n      certPassword: x\n      certPasswordFile: f\n", "config key tenants.a.apns.certPasswordFile"},
		{"environment", "tenants:\n  a:\n    apns:\n      certFile: c.p12\n      topic: t\n      environment: staging\n", "config key tenants.a.apns.environment"},
		{"fcm half", "tenants:\n  a:\n    fcm:\n      projectId: p\n", "config key tenants.a.fcm"},
		{"unknown tenant key", "tenants:\n  a:\n    apnz: {}\n", "line 3: tenants.a.apnz: unknown key; did you mean `tenants.a.apns`?"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "c.yaml")
			os.WriteFile(path, []byte(tc.file), 0o600)
			_, err := LoadConfig(path, nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want it to mention %q", err, tc.want)
			}
		})
	}
	if _, err := LoadConfig("", []string{"MAILPUSH_TENANTS=x"}); err == nil || !strings.Contains(err.Error(), "configuration file") {
		t.Errorf("tenants from the environment: %v", err)
	}
}
