package graph

import (
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
	"strings"
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
// by mailpush, its private key only in Dir (mode 0600), never in the
// database or a log. It rotates before expiry and keeps the previous keys,
// so that notifications encrypted to them in flight still open.
//
// A key is retired (forgotten and its file removed) once its certificate
// has ended, whether the process restarted or not. No subscription can
// still name it then: a subscription with resource data lives at most
// 1,440 minutes and is renewed at half of that, and every renewal carries
// the current certificate, which replaces the old one CertRenewBefore
// (30 days) before the old one ends. A subscription that failed to renew
// for 30 days has long expired on Graph's side and is recreated, with the
// current certificate, by the subscription engine.
type Certs struct {
	Dir   string
	Clock mailpush.Clock

	mu   sync.Mutex
	keys map[string]certKey // certificate ID → key
	cur  *x509.Certificate
}

type certKey struct {
	key      *rsa.PrivateKey
	notAfter time.Time
	file     string
}

// Current returns the certificate to give Graph (base64 DER) and its ID,
// making a new one when there is none or it nears its end.
func (c *Certs) Current() (id, cert string, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.loadLocked(); err != nil {
		return "", "", err
	}
	now := c.Clock.Now()
	c.retireLocked(now)
	if c.cur == nil || c.cur.NotAfter.Sub(now) < CertRenewBefore {
		if err := c.makeLocked(now); err != nil {
			return "", "", err
		}
	}
	return c.cur.SerialNumber.Text(16), base64.StdEncoding.EncodeToString(c.cur.Raw), nil
}

// Key returns the private key of the certificate with the ID.
func (c *Certs) Key(id string) (*rsa.PrivateKey, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.loadLocked() != nil {
		return nil, false
	}
	c.retireLocked(c.Clock.Now())
	k, ok := c.keys[id]
	return k.key, ok
}

// retireLocked forgets the keys whose certificates have ended and removes
// their files: nothing can be encrypted to them any more.
func (c *Certs) retireLocked(now time.Time) {
	for id, k := range c.keys {
		if now.After(k.notAfter) {
			os.Remove(k.file)
			delete(c.keys, id)
			if c.cur != nil && c.cur.SerialNumber.Text(16) == id {
				c.cur = nil
			}
		}
	}
}

func (c *Certs) loadLocked() error {
	if c.keys != nil {
		return nil
	}
	c.keys = map[string]certKey{}
	if err := os.MkdirAll(c.Dir, 0o700); err != nil {
		return err
	}
	files, _ := filepath.Glob(filepath.Join(c.Dir, "*.pem"))
	now := c.Clock.Now()
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		var cert *x509.Certificate
		var key *rsa.PrivateKey
		for blk, rest := pem.Decode(b); blk != nil; blk, rest = pem.Decode(rest) {
			switch blk.Type {
			case "CERTIFICATE":
				cert, _ = x509.ParseCertificate(blk.Bytes)
			case "PRIVATE KEY":
				if k, err := x509.ParsePKCS8PrivateKey(blk.Bytes); err == nil {
					key, _ = k.(*rsa.PrivateKey)
				}
			}
		}
		if cert == nil || key == nil {
			return fmt.Errorf("graph: %s is not an encryption certificate with its key", filepath.Base(f))
		}
		if now.After(cert.NotAfter) {
			os.Remove(f) // nothing can be encrypted to it any more
			continue
		}
		c.keys[cert.SerialNumber.Text(16)] = certKey{key, cert.NotAfter, f}
		if c.cur == nil || cert.NotAfter.After(c.cur.NotAfter) {
			c.cur = cert
		}
	}
	return nil
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
	id := serial.Text(16)
	if strings.ContainsAny(id, "/\\.") {
		return errors.New("graph: bad certificate ID")
	}
	tmp := filepath.Join(c.Dir, id+".pem.tmp")
	if err := os.WriteFile(tmp, out, 0o600); err != nil {
		return err
	}
	file := filepath.Join(c.Dir, id+".pem")
	if err := os.Rename(tmp, file); err != nil {
		return err
	}
	c.keys[id], c.cur = certKey{key, cert.NotAfter, file}, cert
	return nil
}
