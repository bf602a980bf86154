package ews

import (
	"bytes"
	"container/list"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/asn1"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"software.sslmate.com/src/go-pkcs12"

	"github.com/mailpush/mailpush"
)

// Certificate-based authentication (CBA). The app seals a client identity
// (mailpush.Credentials.PKCS12 and PKCS12Password, or CertificatePEM and
// PrivateKeyPEM) as it seals a password; OpenIdentity opens it in memory
// and checks it, and the client presents it as the TLS client certificate
// of that mailbox's EWS requests, which Exchange maps to its user
// (clientCertificateMappingAuthentication: the UPN in the certificate's
// subject alternative name). No Authorization header goes with it.
//
// One identity, one connection pool: each identity gets its own
// *http.Transport (cloned from the client's, so with the same roots and
// timeouts) with its own TLS session cache. A TLS session, or a kept-alive
// connection, authenticated with one user's certificate must never carry
// another user's request, and a resumed session skips the certificate
// exchange altogether. The pools are bounded (MaxIdentities); the least
// recently used gives way and its idle connections are closed.
//
// The identity is too big for a callback URL (docs/SECURITY.md): the URL
// carries its leaf certificate's SHA-256 (CallbackToken.Identity), the
// Source keeps the opened identity in its in-memory credential cache, and a
// notification whose identity is gone (a restart, an eviction) asks the
// devices to check in, as does one Exchange refuses the certificate for
// (revoked) and one that arrives after the certificate expired.

// DefaultMaxIdentities bounds the per-identity connection pools a Client
// keeps.
const DefaultMaxIdentities = 10_000

// maxChain caps the certificates of one identity (leaf and intermediates).
const maxChain = 10

// Identity is a client identity opened in memory: a certificate chain and
// its private key. It must never be logged or stored.
type Identity struct {
	cert tls.Certificate
	leaf *x509.Certificate
	// Fingerprint is the hex SHA-256 of the leaf certificate: what a
	// callback URL carries to name the identity.
	Fingerprint string
}

// String hides the key from fmt and slog.
func (Identity) String() string { return "Identity{…}" }

// GoString hides the key from %#v.
func (id Identity) GoString() string { return id.String() }

// LogValue hides the key from slog.
func (id Identity) LogValue() slog.Value { return slog.StringValue(id.String()) }

// fingerprint is id's Fingerprint, "" for nil.
func (id *Identity) fingerprint() string {
	if id == nil {
		return ""
	}
	return id.Fingerprint
}

// NotAfter is when the leaf certificate expires.
func (id *Identity) NotAfter() time.Time { return id.leaf.NotAfter }

// OpenIdentity opens the client identity c carries and checks that it can
// sign in by TLS at now: a private key that matches a certificate of the
// chain, the certificate valid at now, and usable for TLS client
// authentication (extended key usage clientAuth, or none; key usage
// digitalSignature, or none). Malformed input is EBadSealed, a wrong
// PKCS#12 password EBadPassword, a certificate that cannot sign in (expired,
// not yet valid, for e-mail or signing only) ECredentials. Messages never
// hold the password or key.
func OpenIdentity(c mailpush.Credentials, now time.Time) (*Identity, error) {
	if !c.HasIdentity() {
		return nil, mailpush.Errorf(mailpush.EBadSealed, "sealed credentials hold no client identity")
	}
	if err := c.CheckIdentity(); err != nil {
		return nil, err
	}
	var (
		key   crypto.PrivateKey
		certs []*x509.Certificate
		err   error
	)
	if c.PKCS12 != "" {
		der, derr := base64.StdEncoding.DecodeString(c.PKCS12)
		if derr != nil {
			return nil, mailpush.Errorf(mailpush.EBadSealed, "pkcs12 is not standard base64")
		}
		key, certs, err = openPKCS12(der, c.PKCS12Password)
	} else {
		key, certs, err = openPEM(c.CertificatePEM, c.PrivateKeyPEM)
	}
	if err != nil {
		return nil, err
	}
	return checkIdentity(key, certs, now)
}

func openPKCS12(data []byte, password string) (crypto.PrivateKey, []*x509.Certificate, error) {
	if n := mailpush.PKCS12Iterations(data); n > mailpush.MaxPKCS12Iterations {
		return nil, nil, mailpush.Errorf(mailpush.EBadSealed, "pkcs12 asks for %d key-derivation iterations; at most %d are accepted", n, mailpush.MaxPKCS12Iterations)
	}
	key, leaf, cas, err := pkcs12.DecodeChain(data, password)
	switch {
	case errors.Is(err, pkcs12.ErrIncorrectPassword):
		return nil, nil, mailpush.Errorf(mailpush.EBadPassword, "pkcs12Password does not open pkcs12")
	case err != nil && strings.Contains(err.Error(), "private key missing"):
		return nil, nil, mailpush.Errorf(mailpush.EBadSealed, "pkcs12 holds no private key: export the client certificate with its key")
	case err != nil && strings.Contains(err.Error(), "certificate missing"):
		return nil, nil, mailpush.Errorf(mailpush.EBadSealed, "pkcs12 holds no certificate")
	case err != nil:
		return nil, nil, mailpush.WrapError(mailpush.EBadSealed, "pkcs12 is not a PKCS#12 file mailpush can read (DER, password-protected, with one key and its certificates)", err)
	}
	if len(cas)+1 > maxChain {
		return nil, nil, mailpush.Errorf(mailpush.EBadSealed, "pkcs12 holds %d certificates; at most %d", len(cas)+1, maxChain)
	}
	return key, append([]*x509.Certificate{leaf}, cas...), nil
}

func openPEM(certPEM, keyPEM string) (crypto.PrivateKey, []*x509.Certificate, error) {
	var certs []*x509.Certificate
	rest := []byte(certPEM)
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			return nil, nil, mailpush.Errorf(mailpush.EBadSealed, "certificatePem holds a %q block; only CERTIFICATE blocks (leaf first, then intermediates)", truncate(b.Type))
		}
		if len(certs) == maxChain {
			return nil, nil, mailpush.Errorf(mailpush.EBadSealed, "certificatePem holds more than %d certificates", maxChain)
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, nil, mailpush.WrapError(mailpush.EBadSealed, fmt.Sprintf("certificatePem: certificate %d cannot be parsed", len(certs)+1), err)
		}
		certs = append(certs, c)
	}
	if len(bytes.TrimSpace(rest)) > 0 || len(certs) == 0 {
		return nil, nil, mailpush.Errorf(mailpush.EBadSealed, "certificatePem is not a PEM certificate chain (CERTIFICATE blocks only)")
	}
	b, rest := pem.Decode([]byte(keyPEM))
	if b == nil || len(bytes.TrimSpace(rest)) > 0 {
		return nil, nil, mailpush.Errorf(mailpush.EBadSealed, "privateKeyPem is not one PEM private key")
	}
	if b.Type == "ENCRYPTED PRIVATE KEY" || b.Headers["Proc-Type"] != "" {
		return nil, nil, mailpush.Errorf(mailpush.EBadSealed, "privateKeyPem is encrypted: send it unencrypted (the sealing protects it) or send pkcs12 with pkcs12Password")
	}
	var (
		key crypto.PrivateKey
		err error
	)
	switch b.Type {
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(b.Bytes)
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(b.Bytes)
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(b.Bytes)
	default:
		return nil, nil, mailpush.Errorf(mailpush.EBadSealed, "privateKeyPem holds a %q block; want PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY", truncate(b.Type))
	}
	if err != nil {
		return nil, nil, mailpush.Errorf(mailpush.EBadSealed, "privateKeyPem: the %s cannot be parsed", b.Type)
	}
	return key, certs, nil
}

var oidKeyUsage = asn1.ObjectIdentifier{2, 5, 29, 15}

// checkIdentity puts the certificate that key belongs to first and checks
// that it may sign in by TLS at now.
func checkIdentity(key crypto.PrivateKey, certs []*x509.Certificate, now time.Time) (*Identity, error) {
	signer, ok := key.(crypto.Signer)
	switch key.(type) {
	case *rsa.PrivateKey, *ecdsa.PrivateKey, ed25519.PrivateKey:
	default:
		ok = false
	}
	if !ok {
		return nil, mailpush.Errorf(mailpush.EBadSealed, "the client identity's private key is of type %T; RSA, ECDSA or Ed25519 can sign a TLS handshake", key)
	}
	leafAt := -1
	for i, c := range certs {
		if pub, ok := c.PublicKey.(interface{ Equal(crypto.PublicKey) bool }); ok && pub.Equal(signer.Public()) {
			leafAt = i
			break
		}
	}
	if leafAt < 0 {
		return nil, mailpush.Errorf(mailpush.EBadSealed, "the client identity's private key matches none of its certificates")
	}
	leaf := certs[leafAt]
	chain := [][]byte{leaf.Raw}
	for i, c := range certs {
		if i != leafAt {
			chain = append(chain, c.Raw)
		}
	}
	if now.Before(leaf.NotBefore) {
		return nil, mailpush.Errorf(mailpush.ECredentials, "the client certificate is not valid before %s", leaf.NotBefore.UTC().Format(time.RFC3339))
	}
	if now.After(leaf.NotAfter) {
		return nil, mailpush.Errorf(mailpush.ECredentials, "the client certificate expired on %s: get a new one from the MDM", leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	if !clientAuthEKU(leaf) {
		return nil, mailpush.Errorf(mailpush.ECredentials, "the client certificate is not for TLS client authentication (its extended key usage lacks clientAuth): an e-mail or signing certificate cannot sign in to Exchange")
	}
	hasKU := false
	for _, e := range leaf.Extensions {
		hasKU = hasKU || e.Id.Equal(oidKeyUsage)
	}
	if hasKU && leaf.KeyUsage&x509.KeyUsageDigitalSignature == 0 {
		return nil, mailpush.Errorf(mailpush.ECredentials, "the client certificate's key usage lacks digitalSignature: it cannot sign a TLS handshake (a signing-only or encryption-only certificate cannot sign in to Exchange)")
	}
	sum := sha256.Sum256(leaf.Raw)
	return &Identity{
		cert:        tls.Certificate{Certificate: chain, PrivateKey: signer, Leaf: leaf},
		leaf:        leaf,
		Fingerprint: hex.EncodeToString(sum[:]),
	}, nil
}

// clientAuthEKU reports whether the extended key usage, when present,
// allows TLS client authentication.
func clientAuthEKU(c *x509.Certificate) bool {
	if len(c.ExtKeyUsage) == 0 && len(c.UnknownExtKeyUsage) == 0 {
		return true
	}
	for _, u := range c.ExtKeyUsage {
		if u == x509.ExtKeyUsageClientAuth || u == x509.ExtKeyUsageAny {
			return true
		}
	}
	return false
}

var _ mailpush.CredentialPreparer = (*Source)(nil)

// PrepareCredentials opens a client identity (OpenIdentity) and returns it
// as PEM, which Watch opens again in a fraction of a millisecond: the
// registrar runs the costly part (a PKCS#12's key derivation, as many
// iterations as its maker chose up to mailpush.MaxPKCS12Iterations) here,
// before anything is stored, within its per-tenant and global bounds on
// such work. Credentials without an identity come back as they are.
func (s *Source) PrepareCredentials(ctx context.Context, t *mailpush.Tenant, c mailpush.Credentials) (mailpush.Credentials, error) {
	if !c.HasIdentity() {
		return c, nil
	}
	id, err := OpenIdentity(c, s.Clock.Now())
	if err != nil {
		s.Logger.Info("client identity refused at registration", "tenant", t.Name, "code", mailpush.ErrorCode(err), "why", mailpush.ErrorMessage(err))
		return mailpush.Credentials{}, err
	}
	return id.pem()
}

// pem is the identity as PEM credentials: the chain (leaf first) and the
// key as unencrypted PKCS#8, in memory only.
func (id *Identity) pem() (mailpush.Credentials, error) {
	key, err := x509.MarshalPKCS8PrivateKey(id.cert.PrivateKey)
	if err != nil {
		return mailpush.Credentials{}, mailpush.WrapError(mailpush.EInternal, "cannot re-encode the client identity's key", err)
	}
	var chain []byte
	for _, der := range id.cert.Certificate {
		chain = append(chain, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	}
	return mailpush.Credentials{CertificatePEM: string(chain), PrivateKeyPEM: string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: key}))}, nil
}

// identityPools are the per-identity HTTP clients, least recently used
// last.
type identityPools struct {
	mu  sync.Mutex
	m   map[string]*list.Element // by fingerprint
	lru *list.List               // of *identityPool
}

type identityPool struct {
	fingerprint string
	hc          *http.Client
	tr          *http.Transport
}

// identityClient returns the HTTP client that presents id, made on first
// use from base's transport.
func (c *Client) identityClient(base *http.Client, id *Identity) (*http.Client, error) {
	p := &c.ids
	p.mu.Lock()
	defer p.mu.Unlock()
	if e, ok := p.m[id.Fingerprint]; ok {
		p.lru.MoveToFront(e)
		return e.Value.(*identityPool).hc, nil
	}
	var tr *http.Transport
	switch t := base.Transport.(type) {
	case nil:
		tr = http.DefaultTransport.(*http.Transport).Clone()
	case *http.Transport:
		tr = t.Clone()
	default:
		return nil, mailpush.Errorf(mailpush.EInternal, "ews: certificate-based authentication needs an *http.Transport, not %T", base.Transport)
	}
	if tr.TLSClientConfig == nil {
		tr.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	cert := id.cert
	tr.TLSClientConfig.Certificates = nil
	// Always offered when Exchange asks: Exchange decides whether it maps.
	tr.TLSClientConfig.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cert, nil }
	tr.TLSClientConfig.ClientSessionCache = tls.NewLRUClientSessionCache(4)
	tr.MaxIdleConnsPerHost = 2
	if p.m == nil {
		p.m, p.lru = map[string]*list.Element{}, list.New()
	}
	limit := c.MaxIdentities
	if limit <= 0 {
		limit = DefaultMaxIdentities
	}
	for p.lru.Len() >= limit {
		old := p.lru.Remove(p.lru.Back()).(*identityPool)
		delete(p.m, old.fingerprint)
		old.tr.CloseIdleConnections()
	}
	pool := &identityPool{fingerprint: id.Fingerprint, tr: tr, hc: &http.Client{Transport: tr, Timeout: base.Timeout, CheckRedirect: noRedirects}}
	p.m[id.Fingerprint] = p.lru.PushFront(pool)
	return pool.hc, nil
}

// Identities returns how many per-identity connection pools the client
// holds.
func (c *Client) Identities() int {
	c.ids.mu.Lock()
	defer c.ids.mu.Unlock()
	if c.ids.lru == nil {
		return 0
	}
	return c.ids.lru.Len()
}
