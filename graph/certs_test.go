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
	// After the first one's end, a restart (a new Certs) forgets it.
	clock.Advance(graph.CertRenewBefore)
	c = &graph.Certs{Dir: dir, Clock: clock}
	if cur, _, _ := c.Current(); cur != id2 {
		t.Errorf("after a restart the current certificate is %s, want %s", cur, id2)
	}
	if _, ok := c.Key(id1); ok {
		t.Error("an expired certificate's key is kept")
	}
}
