package graph

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/mailpush/mailpush"
)

// Lifetimes of the encryption certificate that Graph encrypts rich
// notifications to.
const (
	CertLifetime = 90 * 24 * time.Hour
	// CertRenewBefore: a certificate this close to its end is replaced, so
	// that every subscription (at most 1,440 minutes with resource data) is
	// renewed onto the new one well before the old one ends.
	CertRenewBefore = 30 * 24 * time.Hour
)

// Certs is mailpush's encryption certificate for rich notifications: made
// by mailpush, kept with its private key in the store (SharedKeyStore:
// sealed with the keyring's field key, never in clear in the database or in
// a log), so that every node of a cluster opens what Graph encrypted to a
// certificate any node made. It rotates before expiry and keeps the
// previous keys, so that notifications encrypted to them in flight still
// open.
//
// A key this node does not hold is looked for in the store (another node
// made it since this one last read them), at most once a second: the
// certificate ID of a notification is only read once its batch's
// validationTokens are checked, but a stream of such notifications must
// not become a stream of reads. Before making a new certificate a node
// reads the store too, and takes one another node made; two nodes that
// rotate at the same instant each keep their own, and both open everywhere.
//
// A key is retired (forgotten and deleted) once its certificate has ended,
// whether the process restarted or not. No subscription can still name it
// then: a subscription with resource data lives at most 1,440 minutes and
// is renewed at half of that, and every renewal carries the current
// certificate, which replaces the old one CertRenewBefore (30 days) before
// the old one ends. A subscription that failed to renew for 30 days has
// long expired on Graph's side and is recreated, with the current
// certificate, by the subscription engine.
//
// Dir is where keys were kept before they were stored: a key file found
// there is moved into the store (and the file removed) at the first use.
type Certs struct {
	Store mailpush.SharedKeyStore
	Dir   string
	Clock mailpush.Clock

	mu     sync.Mutex
	keys   map[string]certKey // certificate ID → key
	cur    *x509.Certificate
	readAt time.Time // when the store was last read; zero: never
}

// certKind is the certificates' kind in the SharedKeyStore.
const certKind = "graph-encryption"

// rereadEvery bounds the store reads for a certificate this node does not hold.
const rereadEvery = time.Second

type certKey struct {
	key      *rsa.PrivateKey
	cert     *x509.Certificate
	notAfter time.Time
}

// Current returns the certificate to give Graph (base64 DER) and its ID,
// making a new one when there is none or it nears its end (after looking
// for one another node made).
func (c *Certs) Current() (id, cert string, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.Clock.Now()
	if c.readAt.IsZero() {
		if err := c.readLocked(now); err != nil {
			return "", "", err
		}
	}
	c.retireLocked(now)
	if c.cur == nil || c.cur.NotAfter.Sub(now) < CertRenewBefore {
		if err := c.readLocked(now); err != nil {
			return "", "", err
		}
	}
	if c.cur == nil || c.cur.NotAfter.Sub(now) < CertRenewBefore {
		if err := c.makeLocked(now); err != nil {
			return "", "", err
		}
	}
	return c.cur.SerialNumber.Text(16), base64.StdEncoding.EncodeToString(c.cur.Raw), nil
}

// Key returns the private key of the certificate with the ID, reading the
// store for one this node does not hold (at most once per rereadEvery).
func (c *Certs) Key(id string) (*rsa.PrivateKey, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.Clock.Now()
	c.retireLocked(now)
	k, ok := c.keys[id]
	if !ok && (c.readAt.IsZero() || now.Sub(c.readAt) >= rereadEvery) {
		if c.readLocked(now) != nil {
			return nil, false
		}
		k, ok = c.keys[id]
	}
	return k.key, ok
}

// retireLocked forgets the keys whose certificates have ended and deletes
// them from the store: nothing can be encrypted to them any more.
func (c *Certs) retireLocked(now time.Time) {
	retired := false
	for id, k := range c.keys {
		if now.After(k.notAfter) {
			delete(c.keys, id)
			retired = true
			if c.cur != nil && c.cur.SerialNumber.Text(16) == id {
				c.cur = nil
			}
		}
	}
	if retired {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c.Store.DeleteSharedKeys(ctx, certKind, now) // a failure: the next retirement deletes them
	}
}

// readLocked reads the stored certificates (after moving any key file of
// Dir into the store) and makes the latest-ending one current.
func (c *Certs) readLocked(now time.Time) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if c.readAt.IsZero() {
		if err := c.importDir(ctx, now); err != nil {
			return err
		}
	}
	stored, err := c.Store.SharedKeys(ctx, certKind, now)
	if err != nil {
		return err
	}
	keys := map[string]certKey{}
	var cur *x509.Certificate
	for _, sk := range stored {
		k, err := parseCertKey(sk.Value)
		if err != nil {
			return fmt.Errorf("graph: stored encryption certificate %s: %w", sk.ID, err)
		}
		keys[sk.ID] = k
		if cur == nil || k.notAfter.After(cur.NotAfter) {
			cur = k.cert
		}
	}
	c.keys, c.cur, c.readAt = keys, cur, now
	return nil
}

// importDir moves the key files of Dir (where keys were kept before the
// store kept them) into the store, and removes them.
func (c *Certs) importDir(ctx context.Context, now time.Time) error {
	if c.Dir == "" {
		return nil
	}
	files, _ := filepath.Glob(filepath.Join(c.Dir, "*.pem"))
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		k, err := parseCertKey(b)
		if err != nil {
			return fmt.Errorf("graph: %s: %w", filepath.Base(f), err)
		}
		if now.Before(k.notAfter) {
			if err := c.Store.PutSharedKey(ctx, certKind, k.cert.SerialNumber.Text(16), b, k.notAfter); err != nil {
				return err
			}
		}
		os.Remove(f)
	}
	return nil
}

// parseCertKey reads a certificate and its private key, both PEM.
func parseCertKey(b []byte) (certKey, error) {
	var k certKey
	for blk, rest := pem.Decode(b); blk != nil; blk, rest = pem.Decode(rest) {
		switch blk.Type {
		case "CERTIFICATE":
			k.cert, _ = x509.ParseCertificate(blk.Bytes)
		case "PRIVATE KEY":
			if pk, err := x509.ParsePKCS8PrivateKey(blk.Bytes); err == nil {
				k.key, _ = pk.(*rsa.PrivateKey)
			}
		}
	}
	if k.cert == nil || k.key == nil {
		return certKey{}, errors.New("not an encryption certificate with its key")
	}
	k.notAfter = k.cert.NotAfter
	return k, nil
}

func (c *Certs) makeLocked(now time.Time) error {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return err
	}
	serial, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 64))
	tmpl := &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{CommonName: "mailpush Graph notification encryption"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(CertLifetime), KeyUsage: x509.KeyUsageKeyEncipherment}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return err
	}
	cert, _ := x509.ParseCertificate(der)
	pk, _ := x509.MarshalPKCS8PrivateKey(key)
	out := append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pk})...)
	defer clear(out)
	id := serial.Text(16)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Store.PutSharedKey(ctx, certKind, id, out, cert.NotAfter); err != nil {
		return err
	}
	c.keys[id], c.cur = certKey{key, cert, cert.NotAfter}, cert
	return nil
}
