package graph_test

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/mailpush/mailpush/clocktest"
	"github.com/mailpush/mailpush/graph"
)

func TestEncryptionCertificateRotatesBeforeExpiry(t *testing.T) {
	dir := t.TempDir()
	clock := clocktest.New(time.Date(2026, 12, 1, 8, 0, 0, 0, time.UTC))
	c := &graph.Certs{Dir: dir, Clock: clock}
	id1, _, err := c.Current()
	if err != nil {
		t.Fatal(err)
	}
	if again, _, _ := c.Current(); again != id1 {
		t.Fatal("a new certificate while the first is young")
	}
	clock.Advance(graph.CertLifetime - graph.CertRenewBefore + time.Hour)
	id2, _, _ := c.Current()
	if id2 == id1 {
		t.Fatal("not rotated within CertRenewBefore of its end")
	}
	if _, ok := c.Key(id1); !ok {
		t.Fatal("the previous key is gone while notifications may still use it")
	}
	files, _ := filepath.Glob(filepath.Join(dir, "*.pem"))
	for _, f := range files {
		if fi, _ := os.Stat(f); fi.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %v, want 0600", filepath.Base(f), fi.Mode().Perm())
		}
	}
	// After the first one's end, the running Certs forgets it and removes
	// its file, without waiting for a restart.
	clock.Advance(graph.CertRenewBefore)
	if _, ok := c.Key(id1); ok {
		t.Error("a running Certs keeps an ended certificate's key")
	}
	if _, err := os.Stat(filepath.Join(dir, id1+".pem")); !os.IsNotExist(err) {
		t.Errorf("the ended certificate's key file is still on disk (%v)", err)
	}
	// A restart (a new Certs) keeps the current one.
	c = &graph.Certs{Dir: dir, Clock: clock}
	if cur, _, _ := c.Current(); cur != id2 {
		t.Errorf("after a restart the current certificate is %s, want %s", cur, id2)
	}
	if _, ok := c.Key(id1); ok {
		t.Error("an expired certificate's key is kept")
	}
}
