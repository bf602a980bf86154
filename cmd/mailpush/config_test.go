package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestDefaultConfigIsValid(t *testing.T) {
	c, err := LoadConfig("", nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.Listen != "127.0.0.1:8080" || c.Database.Path != "mailpush.db" || c.APNsEnabled() {
		t.Errorf("defaults = %+v", c)
	}
}

func TestConfigFileAndEnvironment(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mailpush.yaml")
	os.WriteFile(path, []byte("listen: 127.0.0.1:9000\nregistrationTtl: 48h\news:\n  statusFrequency: 3\n"), 0o600)
	c, err := LoadConfig(path, []string{"MAILPUSH_EWS_STATUS_FREQUENCY=7", "MAILPUSH_PUBLIC_URL=https://push.example.com", "OTHER=1"})
	if err != nil {
		t.Fatal(err)
	}
	if c.Listen != "127.0.0.1:9000" || c.RegistrationTTL != 48*time.Hour || c.EWS.StatusFrequency != 7 || c.PublicURL != "https://push.example.com" {
		t.Errorf("loaded %+v", c)
	}
}

func TestConfigErrorsNameTheKey(t *testing.T) {
	dir := t.TempDir()
	write := func(body string) string {
		p := filepath.Join(dir, "c.yaml")
		os.WriteFile(p, []byte(body), 0o600)
		return p
	}
	cases := []struct {
		name, file string
		env        []string
		want       string
	}{
		{"unknown key", "lisen: x\n", nil, "line 1: lisen: unknown key; did you mean `listen`?"},
		{"bad listen", "listen: nowhere\n", nil, "config key listen"},
		{"status frequency", "ews:\n  statusFrequency: 2000\n", nil, "config key ews.statusFrequency"},
		{"apns incomplete", "apns:\n  keyFile: k.p8\n", nil, "config key apns.teamId"},
		{"apns key missing", "apns:\n  teamId: T\n", nil, "config key apns.keyFile"},
		{"env unknown", "", []string{"MAILPUSH_NOPE=1"}, "MAILPUSH_NOPE: no such setting"},
		{"env bad int", "", []string{"MAILPUSH_PUSH_WORKERS=many"}, "MAILPUSH_PUSH_WORKERS"},
		{"env bad duration", "", []string{"MAILPUSH_REGISTRATION_TTL=soon"}, "MAILPUSH_REGISTRATION_TTL"},
		{"public url", "publicUrl: ftp://x\n", nil, "config key publicUrl"},
		{"log level", "log:\n  level: loud\n", nil, "config key log.level"},
		{"database driver", "database: {driver: mysql}\n", nil, "config key database.driver"},
		{"postgres without url", "database: {driver: postgres}\n", nil, "config key database.url"},
		{"postgres schema", "database: {driver: postgres, url: postgres://db/x, schema: \"a;drop\"}\n", nil, "config key database.schema"},
		{"dovecot no secret", "tenants:\n  acme:\n    dovecot:\n      username: d\n", nil, "config key tenants.acme.dovecot.password"},
		{"dovecot two secrets", "tenants:\n  acme:\n    dovecot:\n      username: d\n      password: p\n      passwordFile: f\n", nil, "config key tenants.acme.dovecot.password"},
		{"directory no base", "tenants:\n  acme:\n    directory: {url: ldap://dc.example.com, attributes: [mail]}\n", nil, "config key tenants.acme.directory.baseDn"},
		{"directory filter", "tenants:\n  acme:\n    directory: {url: ldap://dc, baseDn: dc=x, attributes: [mail], filter: (mail=x)}\n", nil, "config key tenants.acme.directory.filter"},
		{"smime without directory", "tenants:\n  acme:\n    smime: {rootsFile: r.pem}\n", nil, "config key tenants.acme.smime: needs tenants.acme.directory"},
		{"smime no roots", "tenants:\n  acme:\n    directory: {url: ldap://dc, baseDn: dc=x, attributes: [mail, userCertificate;binary, userSMIMECertificate]}\n    smime: {maxRecipients: 5}\n", nil, "config key tenants.acme.smime.rootsFile"},
		{"smime attributes not read", "tenants:\n  acme:\n    directory: {url: ldap://dc, baseDn: dc=x, attributes: [mail]}\n    smime: {rootsFile: r.pem}\n", nil, "config key tenants.acme.directory.attributes"},
		{"smime crl url", "tenants:\n  acme:\n    directory: {url: ldap://dc, baseDn: dc=x, attributes: [userCertificate;binary, userSMIMECertificate]}\n    smime: {rootsFile: r.pem, crls: [file:///etc/passwd]}\n", nil, "config key tenants.acme.smime.crls"},
		{"dovecot no user", "tenants:\n  acme:\n    dovecot:\n      password: p\n", nil, "config key tenants.acme.dovecot.username"},
		{"dovecot mapping", "tenants:\n  acme:\n    dovecot:\n      username: d\n      password: p\n      userMapping: uid\n", nil, "config key tenants.acme.dovecot.userMapping"},
		{"dovecot login domain", "tenants:\n  acme:\n    dovecot:\n      username: d\n      password: p\n      userMapping: login\n", nil, "config key tenants.acme.dovecot.domain"},
		{"dovecot shared user", "tenants:\n  a:\n    dovecot: {username: d, password: p}\n  b:\n    dovecot: {username: d, password: q}\n", nil, "each tenant needs its own"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := ""
			if tc.file != "" {
				path = write(tc.file)
			}
			_, err := LoadConfig(path, tc.env)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want it to mention %q", err, tc.want)
			}
		})
	}
}

func TestSnake(t *testing.T) {
	for in, want := range map[string]string{"teamId": "TEAM_ID", "listen": "LISTEN", "publicUrl": "PUBLIC_URL", "allowInsecureHttp": "ALLOW_INSECURE_HTTP"} {
		if got := snake(in); got != want {
			t.Errorf("snake(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestREADMEConfigLoads keeps the README's configuration block honest: it
// must load and validate as it stands.
func TestREADMEConfigLoads(t *testing.T) {
	block := readmeConfigBlock(t)
	path := filepath.Join(t.TempDir(), "readme.yaml")
	os.WriteFile(path, []byte(block), 0o600)
	if _, err := LoadConfig(path, nil); err != nil {
		t.Errorf("the README's configuration does not load: %v", err)
	}
}

// readmeConfigBlock is the README's configuration block.
func readmeConfigBlock(t *testing.T) string {
	t.Helper()
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(readme), "The keys, with their defaults:\n\n```yaml\n")
	block, _, ok2 := strings.Cut(rest, "```")
	if !ok || !ok2 {
		t.Fatal("README has no configuration block")
	}
	return block
}
