package smime_test

import (
	"bytes"
	"context"
	"crypto/x509"
	"os"
	"path/filepath"
	"testing"

	"github.com/smallstep/pkcs7"

	"github.com/mailpush/mailpush"
	"github.com/mailpush/mailpush/smime/smimetest"
)

// TestOpenSSLInterop: what a mail app does with a certificate that
// mailpush returns, checked against openssl cms both ways: a message that
// Go (github.com/smallstep/pkcs7) encrypts to it is decrypted by `openssl
// cms -decrypt`, one that openssl encrypts is decrypted by Go; a message
// that Go signs verifies with `openssl cms -verify` against the tenant's
// root, and one that openssl signs verifies in Go.
func TestOpenSSLInterop(t *testing.T) {
	requireOpenSSL(t)
	w := newWorld(t)
	res, err := w.svc.LookupCertificates(context.Background(), w.tenant, []string{"alice@example.com"})
	if err != nil || res.Verdict != mailpush.SMIMEVerdictEncryptAll {
		t.Fatalf("lookup: %+v %v", res, err)
	}
	cert, err := x509.ParseCertificate(res.Recipients[0].Certificates[0].DER)
	if err != nil {
		t.Fatal(err)
	}
	key := w.certs["alice"].Key
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	certFile := write("alice.pem", smimetest.PEM(cert))
	keyFile := write("alice.key", smimetest.KeyPEM(t, key))
	rootFile := write("root.pem", smimetest.PEM(w.root.Cert))
	interFile := write("inter.pem", smimetest.PEM(w.inter.Cert))
	msg := []byte("Content-Type: text/plain\r\n\r\nQuarterly numbers, for Ålice only.\r\n")

	// pkcs7's algorithm choices are package variables; OpenSSL 3 refuses
	// its default DES, so the test picks AES-256-CBC (what apps use).
	pkcs7.ContentEncryptionAlgorithm = pkcs7.EncryptionAlgorithmAES256CBC

	t.Run("go encrypts, openssl decrypts", func(t *testing.T) {
		der, err := pkcs7.Encrypt(msg, []*x509.Certificate{cert})
		if err != nil {
			t.Fatal(err)
		}
		in := write("go.p7m", der)
		out := openssl(t, nil, "cms", "-decrypt", "-inform", "DER", "-in", in, "-recip", certFile, "-inkey", keyFile)
		if out != string(msg) {
			t.Errorf("openssl decrypted %q", out)
		}
	})
	t.Run("openssl encrypts, go decrypts", func(t *testing.T) {
		in := write("msg.txt", msg)
		out := filepath.Join(dir, "openssl.p7m")
		openssl(t, nil, "cms", "-encrypt", "-aes256", "-binary", "-outform", "DER", "-in", in, "-out", out, certFile)
		der, _ := os.ReadFile(out)
		p7, err := pkcs7.Parse(der)
		if err != nil {
			t.Fatal(err)
		}
		got, err := p7.Decrypt(cert, key)
		if err != nil || !bytes.Equal(got, msg) {
			t.Errorf("go decrypted %q, %v", got, err)
		}
	})
	t.Run("go signs, openssl verifies", func(t *testing.T) {
		sd, err := pkcs7.NewSignedData(msg)
		if err != nil {
			t.Fatal(err)
		}
		sd.SetDigestAlgorithm(pkcs7.OIDDigestAlgorithmSHA256)
		if err := sd.AddSignerChain(cert, key, []*x509.Certificate{w.inter.Cert}, pkcs7.SignerInfoConfig{}); err != nil {
			t.Fatal(err)
		}
		der, err := sd.Finish()
		if err != nil {
			t.Fatal(err)
		}
		in := write("signed-go.p7m", der)
		content := filepath.Join(dir, "verified.txt")
		status := openssl(t, nil, "cms", "-verify", "-inform", "DER", "-in", in, "-CAfile", rootFile, "-binary", "-out", content)
		got, _ := os.ReadFile(content)
		if !bytes.Contains([]byte(status), []byte("Verification successful")) || !bytes.Equal(got, msg) {
			t.Errorf("openssl: %s; content %q", status, got)
		}
	})
	t.Run("openssl signs, go verifies", func(t *testing.T) {
		in := write("msg2.txt", msg)
		out := filepath.Join(dir, "signed-openssl.p7m")
		openssl(t, nil, "cms", "-sign", "-binary", "-nodetach", "-outform", "DER", "-in", in, "-out", out,
			"-signer", certFile, "-inkey", keyFile, "-certfile", interFile, "-md", "sha256")
		der, _ := os.ReadFile(out)
		p7, err := pkcs7.Parse(der)
		if err != nil {
			t.Fatal(err)
		}
		roots := x509.NewCertPool()
		roots.AddCert(w.root.Cert)
		if err := p7.VerifyWithChain(roots); err != nil {
			t.Errorf("go verify: %v", err)
		}
		if !bytes.Equal(p7.Content, msg) || !bytes.Equal(p7.GetOnlySigner().Raw, cert.Raw) {
			t.Errorf("signed content or signer differ")
		}
		// A tampered message does not verify.
		i := bytes.Index(der, []byte("Quarterly"))
		der[i] ^= 1
		if p7, err := pkcs7.Parse(der); err == nil && p7.VerifyWithChain(roots) == nil {
			t.Errorf("a tampered message verified")
		}
	})
	// An EC certificate that mailpush returns (keyAgreement) is one that
	// openssl encrypts to by ECDH (RFC 5753) and decrypts with its key;
	// github.com/smallstep/pkcs7 does RSA key transport only, so Go's part
	// for EC recipients is signing.
	t.Run("EC: openssl encrypts and decrypts, go signs", func(t *testing.T) {
		res, err := w.svc.LookupCertificates(context.Background(), w.tenant, []string{"eve@example.com"})
		if err != nil || res.Verdict != mailpush.SMIMEVerdictEncryptAll {
			t.Fatalf("lookup: %+v %v", res, err)
		}
		ec, _ := x509.ParseCertificate(res.Recipients[0].Certificates[0].DER)
		ecCert := write("eve.pem", smimetest.PEM(ec))
		ecKey := write("eve.key", smimetest.KeyPEM(t, w.certs["eve"].Key))
		in := write("msg3.txt", msg)
		enc := filepath.Join(dir, "eve.p7m")
		openssl(t, nil, "cms", "-encrypt", "-aes256", "-binary", "-outform", "DER", "-in", in, "-out", enc, ecCert)
		dec := filepath.Join(dir, "eve.txt")
		openssl(t, nil, "cms", "-decrypt", "-binary", "-inform", "DER", "-in", enc, "-recip", ecCert, "-inkey", ecKey, "-out", dec)
		if got, _ := os.ReadFile(dec); !bytes.Equal(got, msg) {
			t.Errorf("openssl decrypted %q", got)
		}
		sd, err := pkcs7.NewSignedData(msg)
		if err != nil {
			t.Fatal(err)
		}
		sd.SetDigestAlgorithm(pkcs7.OIDDigestAlgorithmSHA256)
		if err := sd.AddSignerChain(ec, w.certs["eve"].Key, []*x509.Certificate{w.inter.Cert}, pkcs7.SignerInfoConfig{}); err != nil {
			t.Fatal(err)
		}
		der, err := sd.Finish()
		if err != nil {
			t.Fatal(err)
		}
		status := openssl(t, nil, "cms", "-verify", "-inform", "DER", "-in", write("eve-signed.p7m", der), "-CAfile", rootFile, "-binary", "-out", filepath.Join(dir, "eve-verified.txt"))
		if !bytes.Contains([]byte(status), []byte("Verification successful")) {
			t.Errorf("openssl: %s", status)
		}
	})
}
