package main

import (
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mailpush/mailpush"
)

func TestOpenDirectories(t *testing.T) {
	dir := t.TempDir()
	pw := filepath.Join(dir, "pw")
	os.WriteFile(pw, []byte("secret\n"), 0o600)
	path := filepath.Join(dir, "c.yaml")
	os.WriteFile(path, []byte("tenants:\n  acme:\n    directory:\n      url: ldap://127.0.0.1:1\n      bindDn: cn=svc,dc=example,dc=com\n      bindPasswordFile: "+pw+
		"\n      baseDn: dc=example,dc=com\n      attributes: [mail, userCertificate;binary]\n  globex: {}\n"), 0o600)
	c, err := LoadConfig(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	dirs, err := c.openDirectories(slog.New(slog.DiscardHandler), mailpush.SystemClock{})
	if err != nil {
		t.Fatal(err)
	}
	if len(dirs) != 1 || dirs["acme"] == nil {
		t.Errorf("opened %v, want acme's only", dirs)
	}
	for _, d := range dirs {
		d.Close()
	}

	os.Remove(pw)
	if _, err := c.openDirectories(slog.New(slog.DiscardHandler), mailpush.SystemClock{}); err == nil || !strings.Contains(err.Error(), "tenants.acme.directory: bindPasswordFile") {
		t.Errorf("missing password file: %v", err)
	}
}
