package smime

import (
	"bytes"
	"context"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/asn1"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"

	"github.com/smallstep/pkcs7"
	"software.sslmate.com/src/go-pkcs12"

	"github.com/mailpush/mailpush"
)

// MaxFileSize caps a classified file: a PKCS#12 with a long chain is a few
// kilobytes.
const MaxFileSize = 256 << 10

// MaxPKCS12Iterations caps the key-derivation iterations of a PKCS#12 that
// Classify opens (mailpush.MaxPKCS12Iterations says why).
const MaxPKCS12Iterations = mailpush.MaxPKCS12Iterations

var oidKeyUsage = asn1.ObjectIdentifier{2, 5, 29, 15}

// usage is what a certificate may do for mail.
type usage struct {
	ca      bool
	email   bool // no extended key usage, or one with emailProtection
	sign    bool // may sign mail (key usage and key type)
	encrypt bool // may be encrypted to (key usage and key type)
}

// usageOf applies RFC 8550 section 4.4: the key usage extension, when
// present, must allow digitalSignature or nonRepudiation to sign, and
// keyEncipherment (RSA key transport) or keyAgreement (EC key agreement)
// to encrypt — which of the two depends on the key; an Ed25519 key cannot
// encrypt at all. The extended key usage, when present, must hold
// emailProtection (anyExtendedKeyUsage alone is not enough, as in OpenSSL).
func usageOf(c *x509.Certificate) usage {
	u := usage{ca: c.BasicConstraintsValid && c.IsCA}
	u.email = len(c.ExtKeyUsage) == 0 && len(c.UnknownExtKeyUsage) == 0
	for _, e := range c.ExtKeyUsage {
		u.email = u.email || e == x509.ExtKeyUsageEmailProtection
	}
	hasKU := false
	for _, e := range c.Extensions {
		hasKU = hasKU || e.Id.Equal(oidKeyUsage)
	}
	allows := func(bits x509.KeyUsage) bool { return !hasKU || c.KeyUsage&bits != 0 }
	switch c.PublicKey.(type) {
	case *rsa.PublicKey:
		u.sign = allows(x509.KeyUsageDigitalSignature | x509.KeyUsageContentCommitment)
		u.encrypt = allows(x509.KeyUsageKeyEncipherment)
	case *ecdsa.PublicKey:
		u.sign = allows(x509.KeyUsageDigitalSignature | x509.KeyUsageContentCommitment)
		u.encrypt = allows(x509.KeyUsageKeyAgreement)
	case ed25519.PublicKey:
		u.sign = allows(x509.KeyUsageDigitalSignature | x509.KeyUsageContentCommitment)
	case *ecdh.PublicKey: // X25519: agreement only
		u.encrypt = allows(x509.KeyUsageKeyAgreement)
	}
	return u
}

// class names what a certificate is for.
func (u usage) class() string {
	switch {
	case u.ca:
		return mailpush.SMIMEClassCA
	case !u.email:
		return mailpush.SMIMEClassNeither
	case u.sign && u.encrypt:
		return mailpush.SMIMEClassBoth
	case u.sign:
		return mailpush.SMIMESigningOnly
	case u.encrypt:
		return mailpush.SMIMEClassEncryptionOnly
	}
	return mailpush.SMIMEClassNeither
}

// Classify says what each certificate of a PEM (certificates, PKCS#7),
// DER (certificate, PKCS#7 certs-only) or PKCS#12 file may do. A PKCS#12
// needs its password (a wrong one is the wrong_password error). It does
// no I/O; at most classifyWorkers classifications run at once, the others
// wait while ctx allows.
func (s *Service) Classify(ctx context.Context, file []byte, password string) ([]mailpush.SMIMEClassified, error) {
	select {
	case s.classifying <- struct{}{}:
		defer func() { <-s.classifying }()
	case <-ctx.Done():
		return nil, mailpush.WrapError(mailpush.EUnavailable, "too many classifications at once; try again", ctx.Err())
	}
	return Classify(file, password)
}

// Classify is Service.Classify without a service (the CLI uses it).
func Classify(file []byte, password string) ([]mailpush.SMIMEClassified, error) {
	if len(file) > MaxFileSize {
		return nil, mailpush.Errorf(mailpush.ETooLarge, "the file is %d bytes; at most %d", len(file), MaxFileSize)
	}
	if len(file) == 0 {
		return nil, mailpush.Errorf(mailpush.EInvalid, "the file is empty")
	}
	certs, keyFor, err := parseFile(file, password)
	if err != nil {
		return nil, err
	}
	out := make([]mailpush.SMIMEClassified, 0, len(certs))
	for _, c := range certs {
		out = append(out, describe(c, keyFor != nil && bytes.Equal(c.Raw, keyFor.Raw)))
	}
	return out, nil
}

func describe(c *x509.Certificate, hasKey bool) mailpush.SMIMEClassified {
	sum := sha256.Sum256(c.Raw)
	d := mailpush.SMIMEClassified{
		Subject: c.Subject.String(), SHA256: hex.EncodeToString(sum[:]),
		Class: usageOf(c).class(), KeyAlgorithm: c.PublicKeyAlgorithm.String(),
		Emails: addressesOf(c), NotBefore: c.NotBefore, NotAfter: c.NotAfter, HasPrivateKey: hasKey,
	}
	for _, b := range []struct {
		bit  x509.KeyUsage
		name string
	}{
		{x509.KeyUsageDigitalSignature, "digitalSignature"}, {x509.KeyUsageContentCommitment, "nonRepudiation"},
		{x509.KeyUsageKeyEncipherment, "keyEncipherment"}, {x509.KeyUsageDataEncipherment, "dataEncipherment"},
		{x509.KeyUsageKeyAgreement, "keyAgreement"}, {x509.KeyUsageCertSign, "keyCertSign"},
		{x509.KeyUsageCRLSign, "cRLSign"}, {x509.KeyUsageEncipherOnly, "encipherOnly"}, {x509.KeyUsageDecipherOnly, "decipherOnly"},
	} {
		if c.KeyUsage&b.bit != 0 {
			d.KeyUsage = append(d.KeyUsage, b.name)
		}
	}
	names := map[x509.ExtKeyUsage]string{
		x509.ExtKeyUsageAny: "any", x509.ExtKeyUsageServerAuth: "serverAuth", x509.ExtKeyUsageClientAuth: "clientAuth",
		x509.ExtKeyUsageCodeSigning: "codeSigning", x509.ExtKeyUsageEmailProtection: "emailProtection",
		x509.ExtKeyUsageTimeStamping: "timeStamping", x509.ExtKeyUsageOCSPSigning: "OCSPSigning",
	}
	for _, e := range c.ExtKeyUsage {
		n, ok := names[e]
		if !ok {
			n = fmt.Sprintf("eku-%d", e)
		}
		d.ExtKeyUsage = append(d.ExtKeyUsage, n)
	}
	for _, o := range c.UnknownExtKeyUsage {
		d.ExtKeyUsage = append(d.ExtKeyUsage, o.String())
	}
	return d
}

// parseFile returns the certificates of file and, for a PKCS#12 with a
// key, the certificate that the key belongs to.
func parseFile(file []byte, password string) ([]*x509.Certificate, *x509.Certificate, error) {
	if bytes.Contains(file, []byte("-----BEGIN ")) {
		certs, err := parsePEM(file)
		return certs, nil, err
	}
	if c, err := x509.ParseCertificate(file); err == nil {
		return []*x509.Certificate{c}, nil, nil
	}
	if looksLikePFX(file) {
		return parsePKCS12(file, password)
	}
	if p7, err := pkcs7.Parse(file); err == nil && len(p7.Certificates) > 0 {
		return p7.Certificates, nil, nil
	}
	return nil, nil, mailpush.Errorf(mailpush.EInvalid, "the file is not a certificate (PEM or DER), a PKCS#7 certificate bundle or a PKCS#12 file")
}

func parsePEM(file []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	rest := file
	for n := 1; ; n++ {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		switch b.Type {
		case "CERTIFICATE", "X509 CERTIFICATE", "TRUSTED CERTIFICATE":
			der := b.Bytes
			if b.Type == "TRUSTED CERTIFICATE" {
				// OpenSSL's trusted form: the certificate, then its trust settings.
				var first asn1.RawValue
				if _, err := asn1.Unmarshal(der, &first); err == nil {
					der = first.FullBytes
				}
			}
			c, err := x509.ParseCertificate(der)
			if err != nil {
				return nil, mailpush.WrapError(mailpush.EInvalid, fmt.Sprintf("PEM block %d (%s) is not a valid certificate", n, b.Type), err)
			}
			certs = append(certs, c)
		case "PKCS7", "CMS":
			p7, err := pkcs7.Parse(b.Bytes)
			if err != nil {
				return nil, mailpush.WrapError(mailpush.EInvalid, fmt.Sprintf("PEM block %d (%s) is not a valid PKCS#7 structure", n, b.Type), err)
			}
			certs = append(certs, p7.Certificates...)
		}
		// Keys and other blocks are skipped: only certificates are classified.
	}
	if len(certs) == 0 {
		return nil, mailpush.Errorf(mailpush.EInvalid, "the PEM file holds no CERTIFICATE or PKCS7 block")
	}
	return certs, nil
}

// pemBytes returns the bytes of the first PEM block of type typ.
func pemBytes(b []byte, typ string) ([]byte, bool) {
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			return nil, false
		}
		if blk.Type == typ {
			return blk.Bytes, true
		}
	}
}

// looksLikePFX reports whether der starts like a PFX: SEQUENCE { INTEGER 3, …}.
func looksLikePFX(der []byte) bool {
	var pfx struct {
		Version int
		Rest    asn1.RawValue `asn1:"optional"`
		More    asn1.RawValue `asn1:"optional"`
	}
	_, err := asn1.Unmarshal(der, &pfx)
	return err == nil && pfx.Version == 3
}

func parsePKCS12(file []byte, password string) ([]*x509.Certificate, *x509.Certificate, error) {
	if n := mailpush.PKCS12Iterations(file); n > MaxPKCS12Iterations {
		return nil, nil, mailpush.Errorf(mailpush.EInvalid, "the PKCS#12 file asks for %d key-derivation iterations; at most %d are accepted", n, MaxPKCS12Iterations)
	}
	_, leaf, cas, err := pkcs12.DecodeChain(file, password)
	if errors.Is(err, pkcs12.ErrIncorrectPassword) {
		return nil, nil, mailpush.Errorf(mailpush.EBadPassword, "the PKCS#12 password is wrong")
	}
	if err == nil {
		return append([]*x509.Certificate{leaf}, cas...), leaf, nil
	}
	// A PKCS#12 without a key (a trust store) holds certificates only.
	if certs, err2 := pkcs12.DecodeTrustStore(file, password); err2 == nil && len(certs) > 0 {
		return certs, nil, nil
	} else if errors.Is(err2, pkcs12.ErrIncorrectPassword) {
		return nil, nil, mailpush.Errorf(mailpush.EBadPassword, "the PKCS#12 password is wrong")
	}
	return nil, nil, mailpush.WrapError(mailpush.EInvalid, "the PKCS#12 file cannot be read", err)
}
