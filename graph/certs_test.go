package graph_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/mailpush/mailpush"
	"github.com/mailpush/mailpush/clocktest"
	"github.com/mailpush/mailpush/graph"
	"github.com/mailpush/mailpush/sqlite"
	"github.com/mailpush/mailpush/storetest"
)

func TestEncryptionCertificateRotatesBeforeExpiry(t *testing.T) {
	ctx := context.Background()
	clock := clocktest.New(time.Date(2026, 12, 1, 8, 0, 0, 0, time.UTC))
	path := filepath.Join(t.TempDir(), "t.db")
	store, err := sqlite.Open(ctx, path, storetest.Keyring(t), clock)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	c := &graph.Certs{Store: store, Clock: clock}
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
	// After the first one's end, the running Certs forgets it and deletes
	// it from the store, without waiting for a restart.
	clock.Advance(graph.CertRenewBefore)
	if _, ok := c.Key(id1); ok {
		t.Error("a running Certs keeps an ended certificate's key")
	}
	keys, err := store.SharedKeys(ctx, "graph-encryption", clock.Now().Add(-graph.CertLifetime))
	if err != nil || len(keys) != 1 || keys[0].ID != id2 {
		t.Errorf("stored certificates after the first one's end = %v, %v; want only %s", keys, err, id2)
	}
	// A restart (a new Certs) keeps the current one.
	c = &graph.Certs{Store: store, Clock: clock}
	if cur, _, _ := c.Current(); cur != id2 {
		t.Errorf("after a restart the current certificate is %s, want %s", cur, id2)
	}
	if _, ok := c.Key(id1); ok {
		t.Error("an expired certificate's key is kept")
	}
	// The private key is sealed in the database, never in clear.
	store.Close()
	for _, f := range []string{path, path + "-wal"} {
		b, _ := os.ReadFile(f)
		if bytes.Contains(b, []byte("PRIVATE KEY")) || bytes.Contains(b, []byte("BEGIN CERTIFICATE")) {
			t.Errorf("%s holds the certificate's key in clear", filepath.Base(f))
		}
	}
}

// TestEncryptionCertificateFilesMoveIntoTheStore: a key file left in the
// key directory by an older mailpush (where keys were kept before the store
// kept them) is moved into the store at the first use and removed, so that
// subscriptions that name it keep opening on every node.
func TestEncryptionCertificateFilesMoveIntoTheStore(t *testing.T) {
	ctx := context.Background()
	now := time.Now()
	dir := t.TempDir()
	key, _ := rsa.GenerateKey(rand.Reader, 2048)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(0xabc123), Subject: pkix.Name{CommonName: "an older mailpush's certificate"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(80 * 24 * time.Hour), KeyUsage: x509.KeyUsageKeyEncipherment}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	pk, _ := x509.MarshalPKCS8PrivateKey(key)
	file := filepath.Join(dir, "abc123.pem")
	os.WriteFile(file, append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pk})...), 0o600)
	store, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "t.db"), storetest.Keyring(t), mailpush.SystemClock{})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	c := &graph.Certs{Store: store, Dir: dir, Clock: mailpush.SystemClock{}}
	if id, _, err := c.Current(); err != nil || id != "abc123" {
		t.Fatalf("Current = %s, %v; want the older certificate abc123 (young enough to stay current)", id, err)
	}
	if got, ok := (&graph.Certs{Store: store, Clock: mailpush.SystemClock{}}).Key("abc123"); !ok || !got.Equal(key) {
		t.Fatal("another Certs on the store does not find the moved key")
	}
	if _, err := os.Stat(file); !os.IsNotExist(err) {
		t.Errorf("the key file is still in the key directory (%v)", err)
	}
}
