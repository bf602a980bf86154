package ewsfake

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"sync"
	"time"

	"software.sslmate.com/src/go-pkcs12"
)

// Certificate-based authentication, as Exchange does it with IIS's
// clientCertificateMappingAuthentication: the TLS endpoint asks for a
// client certificate (without requiring one: Basic, NTLM and bearer
// tokens keep working), and a request that presents one is the user whose
// userPrincipalName is in the certificate's subject alternative name
// (otherName 1.3.6.1.4.1.311.20.2.3, UTF8String). Only the UPN maps, as in
// Exchange; an rfc822Name alone maps nobody. The certificate must chain to
// the fake's client CA (ClientCA), be valid by the fake's clock, allow TLS
// client authentication, and not be revoked (RevokeClientCert, or POST
// /control/revoke). A refused certificate is 401; the Authorization header
// of a request with a certificate is ignored. A certificate's user may
// open its own mailbox and those it is a delegate of, as with every other
// way of signing in.

// OIDUPN is the otherName type of a userPrincipalName in a subject
// alternative name (Microsoft's szOID_NT_PRINCIPAL_NAME).
var OIDUPN = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 311, 20, 2, 3}

var oidSAN = asn1.ObjectIdentifier{2, 5, 29, 17}

// CA is a test certificate authority that issues client certificates.
type CA struct {
	Certificate *x509.Certificate
	key         crypto.Signer
	mu          sync.Mutex
	serial      int64
}

// NewCA makes a CA valid from a day before now for ten years. A CA that
// the fake does not trust is how a test presents an unknown issuer.
func NewCA(name string, now time.Time) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             now.Add(-24 * time.Hour),
		NotAfter:              now.Add(10 * 365 * 24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &CA{Certificate: cert, key: key, serial: 1}, nil
}

// PEM returns the CA certificate in PEM.
func (ca *CA) PEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Certificate.Raw})
}

// ClientCertOptions describe a client certificate to issue. The zero
// value (with a UPN) is a certificate for TLS client authentication valid
// from an hour ago for a year, with an RSA-2048 key, as an MDM issues.
type ClientCertOptions struct {
	UPN       string // otherName UPN in the subject alternative name
	Email     string // rfc822Name in the subject alternative name
	NotBefore time.Time
	NotAfter  time.Time
	// ExtKeyUsage nil means clientAuth; an empty non-nil slice means none.
	ExtKeyUsage []x509.ExtKeyUsage
	// KeyUsage 0 means digitalSignature | keyEncipherment.
	KeyUsage x509.KeyUsage
	// EC makes a P-256 key instead of RSA-2048.
	EC bool
	// Now is when "an hour ago" and "a year" count from; zero is time.Now.
	Now time.Time
}

// ClientCert is an issued client certificate with its key.
type ClientCert struct {
	Certificate *x509.Certificate
	Key         crypto.Signer
	CA          *CA
}

// Issue makes a client certificate signed by the CA.
func (ca *CA) Issue(o ClientCertOptions) (*ClientCert, error) {
	now := o.Now
	if now.IsZero() {
		now = time.Now()
	}
	if o.NotBefore.IsZero() {
		o.NotBefore = now.Add(-time.Hour)
	}
	if o.NotAfter.IsZero() {
		o.NotAfter = now.Add(365 * 24 * time.Hour)
	}
	if o.ExtKeyUsage == nil {
		o.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	}
	if o.KeyUsage == 0 {
		o.KeyUsage = x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment
	}
	var key crypto.Signer
	var err error
	if o.EC {
		key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	} else {
		key, err = rsa.GenerateKey(rand.Reader, 2048)
	}
	if err != nil {
		return nil, err
	}
	san, err := subjectAltName(o.UPN, o.Email)
	if err != nil {
		return nil, err
	}
	ca.mu.Lock()
	ca.serial++
	serial := ca.serial
	ca.mu.Unlock()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial),
		Subject:      pkix.Name{CommonName: o.UPN + o.Email},
		NotBefore:    o.NotBefore,
		NotAfter:     o.NotAfter,
		KeyUsage:     o.KeyUsage,
		ExtKeyUsage:  o.ExtKeyUsage,
	}
	if san != nil {
		tmpl.ExtraExtensions = []pkix.Extension{*san}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Certificate, key.Public(), ca.key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &ClientCert{Certificate: cert, Key: key, CA: ca}, nil
}

// CertificatePEM is the certificate followed by its CA's.
func (c *ClientCert) CertificatePEM() string {
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Certificate.Raw})) + string(c.CA.PEM())
}

// KeyPEM is the private key, PKCS#8, unencrypted.
func (c *ClientCert) KeyPEM() string {
	der, err := x509.MarshalPKCS8PrivateKey(c.Key)
	if err != nil {
		panic(err) // RSA and ECDSA keys always marshal
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
}

// PKCS12 is the key, the certificate and its CA in a PKCS#12 file sealed
// with password (go-pkcs12's Modern: AES-256, PBKDF2, as OpenSSL 3).
func (c *ClientCert) PKCS12(password string) ([]byte, error) {
	return pkcs12.Modern.Encode(c.Key, c.Certificate, []*x509.Certificate{c.CA.Certificate}, password)
}

// subjectAltName builds the SAN extension by hand: crypto/x509 writes no
// otherName.
func subjectAltName(upn, email string) (*pkix.Extension, error) {
	var names []asn1.RawValue
	if upn != "" {
		value, err := asn1.MarshalWithParams(upn, "utf8")
		if err != nil {
			return nil, err
		}
		oid, err := asn1.Marshal(OIDUPN)
		if err != nil {
			return nil, err
		}
		explicit, err := asn1.Marshal(asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 0, IsCompound: true, Bytes: value})
		if err != nil {
			return nil, err
		}
		names = append(names, asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 0, IsCompound: true, Bytes: append(oid, explicit...)})
	}
	if email != "" {
		names = append(names, asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 1, Bytes: []byte(email)})
	}
	if len(names) == 0 {
		return nil, nil
	}
	v, err := asn1.Marshal(names)
	if err != nil {
		return nil, err
	}
	return &pkix.Extension{Id: oidSAN, Value: v}, nil
}

// UPNOf returns the userPrincipalName in a certificate's subject
// alternative name, "" when it has none.
func UPNOf(c *x509.Certificate) string {
	for _, e := range c.Extensions {
		if !e.Id.Equal(oidSAN) {
			continue
		}
		var names []asn1.RawValue
		if _, err := asn1.Unmarshal(e.Value, &names); err != nil {
			return ""
		}
		for _, n := range names {
			if n.Class != asn1.ClassContextSpecific || n.Tag != 0 {
				continue
			}
			var oid asn1.ObjectIdentifier
			rest, err := asn1.Unmarshal(n.Bytes, &oid)
			if err != nil || !oid.Equal(OIDUPN) {
				continue
			}
			var explicit, value asn1.RawValue
			if _, err := asn1.Unmarshal(rest, &explicit); err != nil || explicit.Class != asn1.ClassContextSpecific || explicit.Tag != 0 {
				continue
			}
			if _, err := asn1.Unmarshal(explicit.Bytes, &value); err != nil || value.Tag != asn1.TagUTF8String {
				continue
			}
			return string(value.Bytes)
		}
	}
	return ""
}

// ClientCA returns the CA whose client certificates the fake maps to
// users, made on first use.
func (s *Server) ClientCA() *CA {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.clientCA == nil {
		ca, err := NewCA("ewsfake client CA", s.clock.Now())
		if err != nil {
			panic(err) // crypto/rand and ECDSA do not fail
		}
		s.clientCA = ca
	}
	return s.clientCA
}

// IssueClientCert issues a client certificate for the user of upn from the
// fake's client CA (o.UPN is set to upn, o.Now defaults to the fake's clock).
func (s *Server) IssueClientCert(upn string, o ClientCertOptions) (*ClientCert, error) {
	o.UPN = upn
	if o.Now.IsZero() {
		o.Now = s.clock.Now()
	}
	return s.ClientCA().Issue(o)
}

// RevokeClientCert revokes the certificate with the given serial number
// (hex, as in the control API): requests presenting it are refused from
// now on, on connections already open too.
func (s *Server) RevokeClientCert(serial *big.Int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.revoked == nil {
		s.revoked = map[string]bool{}
	}
	s.revoked[serialKey(serial)] = true
	s.notifyLocked()
}

func serialKey(n *big.Int) string { return hex.EncodeToString(n.Bytes()) }

// certificateUser returns the user a client certificate chain maps to, or
// why it maps to nobody.
func (s *Server) certificateUser(chain []*x509.Certificate) (*mailbox, error) {
	ca := s.ClientCA()
	roots, inter := x509.NewCertPool(), x509.NewCertPool()
	roots.AddCert(ca.Certificate)
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	leaf := chain[0]
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: s.clock.Now(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		return nil, fmt.Errorf("client certificate not accepted: %w", err)
	}
	upn := UPNOf(leaf)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.revoked[serialKey(leaf.SerialNumber)] {
		return nil, errors.New("client certificate revoked")
	}
	if upn == "" {
		return nil, errors.New("client certificate has no UPN in its subject alternative name")
	}
	mb := s.logins[lower(upn)]
	if mb == nil {
		return nil, errors.New("client certificate's UPN maps to no user")
	}
	return mb, nil
}
