// Package smimetest makes a small PKI for S/MIME tests: roots,
// intermediates, user certificates with any key usage, extended key usage,
// key type, addresses and validity, CRLs, and the LDIF that puts them in a
// slapdtest directory.
package smimetest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"math/big"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Keys are expensive to make (RSA); a process makes a few and reuses them.
var (
	keysOnce sync.Once
	rsaKeys  []*rsa.PrivateKey
	ecKeys   []*ecdsa.PrivateKey
	next     atomic.Int64
)

func key(kind string) crypto.Signer {
	keysOnce.Do(func() {
		for range 4 {
			k, err := rsa.GenerateKey(rand.Reader, 2048)
			if err != nil {
				panic(err)
			}
			rsaKeys = append(rsaKeys, k)
			e, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			ecKeys = append(ecKeys, e)
		}
	})
	n := int(next.Add(1))
	switch kind {
	case "ec":
		return ecKeys[n%len(ecKeys)]
	case "ed25519":
		_, k, _ := ed25519.GenerateKey(rand.Reader)
		return k
	default:
		return rsaKeys[n%len(rsaKeys)]
	}
}

var serial atomic.Int64

// CA is a certificate authority.
type CA struct {
	Cert *x509.Certificate
	Key  crypto.Signer
}

// NewRoot makes a self-signed root CA named name, valid from a day ago for
// ten years.
func NewRoot(t testing.TB, name string) *CA {
	t.Helper()
	k := key("ec")
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial.Add(1)), Subject: pkix.Name{CommonName: name, Organization: []string{"mailpush test"}},
		NotBefore: time.Now().Add(-24 * time.Hour), NotAfter: time.Now().Add(10 * 365 * 24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	return &CA{Cert: create(t, tmpl, tmpl, k.Public(), k), Key: k}
}

// Intermediate makes a CA signed by ca, valid for five years.
func (ca *CA) Intermediate(t testing.TB, name string) *CA {
	t.Helper()
	return ca.IntermediateUntil(t, name, time.Now().Add(5*365*24*time.Hour))
}

// IntermediateUntil makes a CA signed by ca that expires at notAfter.
func (ca *CA) IntermediateUntil(t testing.TB, name string, notAfter time.Time) *CA {
	t.Helper()
	k := key("ec")
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial.Add(1)), Subject: pkix.Name{CommonName: name, Organization: []string{"mailpush test"}},
		NotBefore: time.Now().Add(-24 * time.Hour), NotAfter: notAfter,
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	return &CA{Cert: create(t, tmpl, ca.Cert, k.Public(), ca.Key), Key: k}
}

// Leaf describes a user certificate. The zero value is an RSA certificate
// with neither key usage nor extended key usage extension, valid from an
// hour ago for a year.
type Leaf struct {
	Emails       []string // SAN rfc822Names
	SubjectEmail string   // subject emailAddress attribute
	Name         string   // subject CN
	Key          string   // "rsa" (default), "ec" or "ed25519"
	KeyUsage     x509.KeyUsage
	ExtKeyUsage  []x509.ExtKeyUsage
	NotBefore    time.Time
	NotAfter     time.Time
	CRLURLs      []string // CRL distribution points
}

// Issued is a certificate and its private key.
type Issued struct {
	Cert *x509.Certificate
	Key  crypto.Signer
}

var oidEmailAddress = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 1}

// Issue signs a user certificate.
func (ca *CA) Issue(t testing.TB, l Leaf) Issued {
	t.Helper()
	k := key(l.Key)
	if l.NotBefore.IsZero() {
		l.NotBefore = time.Now().Add(-time.Hour)
	}
	if l.NotAfter.IsZero() {
		l.NotAfter = l.NotBefore.Add(365 * 24 * time.Hour)
	}
	if l.Name == "" {
		l.Name = "user"
	}
	subj := pkix.Name{CommonName: l.Name}
	if l.SubjectEmail != "" {
		subj.ExtraNames = []pkix.AttributeTypeAndValue{{Type: oidEmailAddress, Value: l.SubjectEmail}}
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial.Add(1)), Subject: subj, EmailAddresses: l.Emails,
		NotBefore: l.NotBefore, NotAfter: l.NotAfter, KeyUsage: l.KeyUsage, ExtKeyUsage: l.ExtKeyUsage,
		BasicConstraintsValid: true, CRLDistributionPoints: l.CRLURLs,
	}
	return Issued{Cert: create(t, tmpl, ca.Cert, k.Public(), ca.Key), Key: k}
}

// CRL returns a DER CRL of ca revoking certs, valid from an hour ago until
// next.
func (ca *CA) CRL(t testing.TB, next time.Time, certs ...*x509.Certificate) []byte {
	t.Helper()
	var entries []x509.RevocationListEntry
	for _, c := range certs {
		entries = append(entries, x509.RevocationListEntry{SerialNumber: c.SerialNumber, RevocationTime: time.Now().Add(-time.Minute)})
	}
	der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{
		Number: big.NewInt(serial.Add(1)), ThisUpdate: time.Now().Add(-time.Hour), NextUpdate: next,
		RevokedCertificateEntries: entries,
	}, ca.Cert, ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func create(t testing.TB, tmpl, parent *x509.Certificate, pub crypto.PublicKey, signer crypto.Signer) *x509.Certificate {
	t.Helper()
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, signer)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// PEM encodes certificates.
func PEM(certs ...*x509.Certificate) []byte {
	var out []byte
	for _, c := range certs {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return out
}

// KeyPEM encodes a private key as PKCS#8.
func KeyPEM(t testing.TB, k crypto.Signer) []byte {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}
