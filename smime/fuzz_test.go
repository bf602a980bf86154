package smime_test

import (
	"crypto/x509"
	"testing"

	"github.com/smallstep/pkcs7"
	"software.sslmate.com/src/go-pkcs12"

	"github.com/mailpush/mailpush"
	"github.com/mailpush/mailpush/smime"
	"github.com/mailpush/mailpush/smime/smimetest"
)

// FuzzClassify: whatever the bytes and password, Classify answers a class
// for every certificate or a stable 4xx code, and never panics.
func FuzzClassify(f *testing.F) {
	ca := smimetest.NewRoot(f, "Fuzz Root")
	leaf := ca.Issue(f, smimetest.Leaf{Key: "ec", Emails: []string{"f@example.com"}})
	p12, err := pkcs12.Passwordless.Encode(leaf.Key, leaf.Cert, []*x509.Certificate{ca.Cert}, "")
	if err != nil {
		f.Fatal(err)
	}
	p12pw, _ := pkcs12.LegacyRC2.Encode(leaf.Key, leaf.Cert, nil, "pw")
	p7, _ := pkcs7.DegenerateCertificate(leaf.Cert.Raw)
	f.Add(leaf.Cert.Raw, "")
	f.Add(smimetest.PEM(leaf.Cert, ca.Cert), "")
	f.Add(p12, "")
	f.Add(p12pw, "pw")
	f.Add(p7, "")
	f.Add([]byte("-----BEGIN PKCS7-----\nMAA=\n-----END PKCS7-----\n"), "")
	f.Add([]byte{0x30, 0x80, 0x02, 0x01, 0x03, 0, 0}, "x")
	f.Fuzz(func(t *testing.T, file []byte, password string) {
		got, err := smime.Classify(file, password)
		if err != nil {
			switch mailpush.ErrorCode(err) {
			case mailpush.EInvalid, mailpush.ETooLarge, mailpush.EBadPassword:
			default:
				t.Fatalf("error code %q: %v", mailpush.ErrorCode(err), err)
			}
			return
		}
		if len(got) == 0 {
			t.Fatal("no certificate and no error")
		}
		for _, c := range got {
			switch c.Class {
			case mailpush.SMIMEClassBoth, mailpush.SMIMESigningOnly, mailpush.SMIMEClassEncryptionOnly, mailpush.SMIMEClassNeither, mailpush.SMIMEClassCA:
			default:
				t.Fatalf("class %q", c.Class)
			}
		}
	})
}
