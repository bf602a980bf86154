package apnsfake

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"fmt"
	"math/big"
	"net/http"
	"time"

	"software.sslmate.com/src/go-pkcs12"
)

// Certificate authentication, as Apple does it: the provider presents a
// client certificate that Apple issued for an app, and then sends no
// provider token. The certificate names its topics: the bundle ID in the
// subject's UID, and every topic (the bundle ID and its .voip, .complication
// … variants) in the extension 1.2.840.113635.100.6.3.6, a sequence of
// UTF8String topics each followed by a sequence of its push types. A push
// whose apns-topic is not among them is refused (400 TopicDisallowed); a push
// without apns-topic goes to the subject's bundle ID.
var (
	oidUID          = asn1.ObjectIdentifier{0, 9, 2342, 19200300, 100, 1, 1}
	oidAPNsTopics   = asn1.ObjectIdentifier{1, 2, 840, 113635, 100, 6, 3, 6}
	clientCAName    = pkix.Name{CommonName: "apnsfake Apple Worldwide Developer Relations CA"}
	certificateLife = 365 * 24 * time.Hour
)

// clientCA is the fake's stand-in for Apple's certificate authority.
type clientCA struct {
	key  *ecdsa.PrivateKey
	cert *x509.Certificate
	pool *x509.CertPool
}

func newClientCA() (*clientCA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: clientCAName, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(certificateLife),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &clientCA{key: key, cert: cert, pool: pool}, nil
}

// IssueCertificate makes an APNs client certificate for topics (the first
// is the app's bundle ID), signed by the fake's CA so that the fake trusts
// it, and returns it as a .p12 file encrypted with password, as the
// Keychain exports it.
func (s *Server) IssueCertificate(password string, topics ...string) ([]byte, error) {
	if len(topics) == 0 {
		return nil, fmt.Errorf("apnsfake: a certificate needs at least one topic")
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	var ext []asn1.RawValue
	for _, t := range topics {
		topic, err := asn1.MarshalWithParams(t, "utf8")
		if err != nil {
			return nil, err
		}
		types, err := asn1.Marshal([]string{"app"})
		if err != nil {
			return nil, err
		}
		ext = append(ext, asn1.RawValue{FullBytes: topic}, asn1.RawValue{FullBytes: types})
	}
	extValue, err := asn1.Marshal(ext)
	if err != nil {
		return nil, err
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject: pkix.Name{CommonName: "Apple Push Services: " + topics[0], Organization: []string{"Example Corp"},
			ExtraNames: []pkix.AttributeTypeAndValue{{Type: oidUID, Value: topics[0]}}},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(certificateLife),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		ExtraExtensions: []pkix.Extension{{Id: oidAPNsTopics, Value: extValue}},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, s.ca.cert, &key.PublicKey, s.ca.key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return pkcs12.Modern.Encode(key, cert, nil, password)
}

// certTopics returns the topics a client certificate allows, the bundle ID
// (its subject's UID) first.
func certTopics(cert *x509.Certificate) []string {
	var topics []string
	for _, n := range cert.Subject.Names {
		if n.Type.Equal(oidUID) {
			if v, ok := n.Value.(string); ok {
				topics = append(topics, v)
			}
		}
	}
	for _, e := range cert.Extensions {
		if !e.Id.Equal(oidAPNsTopics) {
			continue
		}
		var items []asn1.RawValue
		if _, err := asn1.Unmarshal(e.Value, &items); err != nil {
			continue
		}
		for _, it := range items {
			if it.Class == asn1.ClassUniversal && it.Tag == asn1.TagUTF8String {
				topics = append(topics, string(it.Bytes))
			}
		}
	}
	return topics
}

// certificate returns the verified client certificate of r, if any.
func certificate(r *http.Request) *x509.Certificate {
	if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 {
		return nil
	}
	return r.TLS.VerifiedChains[0][0]
}

// serverTLS asks for a client certificate without requiring one (token
// authentication sends none) and verifies it against the fake's CA.
func (ca *clientCA) serverTLS() *tls.Config {
	return &tls.Config{ClientAuth: tls.VerifyClientCertIfGiven, ClientCAs: ca.pool}
}
