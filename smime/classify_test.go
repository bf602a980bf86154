package smime_test

import (
	"bytes"
	"crypto/rand"
	"crypto/x509"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/smallstep/pkcs7"
	"software.sslmate.com/src/go-pkcs12"

	"github.com/mailpush/mailpush"
	"github.com/mailpush/mailpush/smime"
	"github.com/mailpush/mailpush/smime/smimetest"
)

// requireOpenSSL skips without openssl, fails under CI.
func requireOpenSSL(t testing.TB) string {
	t.Helper()
	p, err := exec.LookPath("openssl")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("openssl is not installed but CI is set")
		}
		t.Skip("openssl is not installed")
	}
	return p
}

func openssl(t testing.TB, stdin []byte, args ...string) string {
	t.Helper()
	cmd := exec.Command(requireOpenSSL(t), args...)
	cmd.Stdin = bytes.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("openssl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

type classCase struct {
	name string
	leaf smimetest.Leaf
	want string
}

func classCases() []classCase {
	sig := x509.KeyUsageDigitalSignature
	nr := x509.KeyUsageContentCommitment
	ke := x509.KeyUsageKeyEncipherment
	ka := x509.KeyUsageKeyAgreement
	email := []x509.ExtKeyUsage{x509.ExtKeyUsageEmailProtection}
	return []classCase{
		{"rsa dual", smimetest.Leaf{KeyUsage: sig | ke, ExtKeyUsage: email}, mailpush.SMIMEClassBoth},
		{"rsa no extensions", smimetest.Leaf{}, mailpush.SMIMEClassBoth},
		{"rsa signing", smimetest.Leaf{KeyUsage: sig, ExtKeyUsage: email}, mailpush.SMIMESigningOnly},
		{"rsa non-repudiation", smimetest.Leaf{KeyUsage: nr}, mailpush.SMIMESigningOnly},
		{"rsa encryption", smimetest.Leaf{KeyUsage: ke, ExtKeyUsage: email}, mailpush.SMIMEClassEncryptionOnly},
		{"rsa key agreement only", smimetest.Leaf{KeyUsage: ka}, mailpush.SMIMEClassNeither},
		{"rsa tls only", smimetest.Leaf{KeyUsage: sig | ke, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}, mailpush.SMIMEClassNeither},
		{"rsa any eku", smimetest.Leaf{KeyUsage: sig | ke, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}, mailpush.SMIMEClassNeither},
		{"rsa email and client", smimetest.Leaf{KeyUsage: sig, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageEmailProtection}}, mailpush.SMIMESigningOnly},
		{"ec dual", smimetest.Leaf{Key: "ec", KeyUsage: sig | ka, ExtKeyUsage: email}, mailpush.SMIMEClassBoth},
		{"ec signing", smimetest.Leaf{Key: "ec", KeyUsage: sig, ExtKeyUsage: email}, mailpush.SMIMESigningOnly},
		{"ec agreement", smimetest.Leaf{Key: "ec", KeyUsage: ka, ExtKeyUsage: email}, mailpush.SMIMEClassEncryptionOnly},
		{"ec keyEncipherment means nothing", smimetest.Leaf{Key: "ec", KeyUsage: sig | ke}, mailpush.SMIMESigningOnly},
		{"ed25519", smimetest.Leaf{Key: "ed25519"}, mailpush.SMIMESigningOnly},
	}
}

func TestClassify(t *testing.T) {
	ca := smimetest.NewRoot(t, "Classify Root")
	for _, tc := range classCases() {
		t.Run(tc.name, func(t *testing.T) {
			c := ca.Issue(t, tc.leaf).Cert
			for _, file := range [][]byte{c.Raw, smimetest.PEM(c)} {
				got, err := smime.Classify(file, "")
				if err != nil {
					t.Fatal(err)
				}
				if len(got) != 1 || got[0].Class != tc.want {
					t.Fatalf("class = %+v, want %s", got, tc.want)
				}
			}
		})
	}
	got, err := smime.Classify(smimetest.PEM(ca.Cert), "")
	if err != nil || got[0].Class != mailpush.SMIMEClassCA {
		t.Errorf("root: %+v %v", got, err)
	}
	// OpenSSL's TRUSTED CERTIFICATE form (certificate plus trust settings).
	if _, err := exec.LookPath("openssl"); err == nil {
		trusted := openssl(t, smimetest.PEM(ca.Cert), "x509", "-trustout", "-addtrust", "emailProtection")
		if got, err := smime.Classify([]byte(trusted), ""); err != nil || len(got) != 1 || got[0].Class != mailpush.SMIMEClassCA {
			t.Errorf("TRUSTED CERTIFICATE: %+v %v", got, err)
		}
	}
}

// TestClassifyAgreesWithOpenSSL: on the same certificates, our class
// agrees with `openssl x509 -purpose` (S/MIME signing, S/MIME encryption)
// and with the key usage bits openssl prints. One documented difference:
// OpenSSL's S/MIME encryption purpose looks for keyEncipherment only, so
// for EC keys (which encrypt by key agreement, RFC 8550 4.4.2) we follow
// the keyAgreement bit that `openssl x509 -ext keyUsage` shows.
func TestClassifyAgreesWithOpenSSL(t *testing.T) {
	requireOpenSSL(t)
	ca := smimetest.NewRoot(t, "Purpose Root")
	for _, tc := range classCases() {
		if tc.leaf.Key == "ed25519" {
			continue // openssl's purpose check ignores that Ed25519 cannot encrypt
		}
		t.Run(tc.name, func(t *testing.T) {
			c := ca.Issue(t, tc.leaf).Cert
			pemBytes := smimetest.PEM(c)
			purpose := openssl(t, pemBytes, "x509", "-noout", "-purpose")
			ext := openssl(t, pemBytes, "x509", "-noout", "-ext", "keyUsage")
			sslSign := strings.Contains(purpose, "S/MIME signing : Yes")
			sslEnc := strings.Contains(purpose, "S/MIME encryption : Yes")
			got, err := smime.Classify(pemBytes, "")
			if err != nil {
				t.Fatal(err)
			}
			class := got[0].Class
			sign := class == mailpush.SMIMEClassBoth || class == mailpush.SMIMESigningOnly
			enc := class == mailpush.SMIMEClassBoth || class == mailpush.SMIMEClassEncryptionOnly
			if sign != sslSign {
				t.Errorf("signing: ours %v, openssl -purpose %v\n%s", sign, sslSign, purpose)
			}
			if tc.leaf.Key == "ec" {
				emailOK := sslSign || !strings.Contains(ext, "Digital Signature") && !strings.Contains(ext, "Non Repudiation")
				hasKA := !strings.Contains(ext, "Key Usage") || strings.Contains(ext, "Key Agreement")
				if wantEnc := hasKA && emailOK && class != mailpush.SMIMEClassNeither; enc != wantEnc {
					t.Errorf("EC encryption: ours %v, key usage %q says %v", enc, ext, wantEnc)
				}
				if sslEnc && !strings.Contains(ext, "Key Encipherment") {
					t.Errorf("openssl says EC encryption without keyEncipherment: %s", purpose)
				}
			} else if enc != sslEnc {
				t.Errorf("encryption: ours %v, openssl -purpose %v\n%s\n%s", enc, sslEnc, purpose, ext)
			}
			// The key usage names we report are the bits openssl prints.
			for name, text := range map[string]string{"digitalSignature": "Digital Signature", "keyEncipherment": "Key Encipherment", "keyAgreement": "Key Agreement", "nonRepudiation": "Non Repudiation"} {
				if has := strings.Contains(strings.Join(got[0].KeyUsage, ","), name); has != strings.Contains(ext, text) {
					t.Errorf("key usage %s: ours %v, openssl %q", name, has, ext)
				}
			}
		})
	}
}

// TestClassifyPKCS12 reads files made by openssl and by go-pkcs12, with
// and without the right password.
func TestClassifyPKCS12(t *testing.T) {
	requireOpenSSL(t)
	ca := smimetest.NewRoot(t, "P12 Root")
	leaf := ca.Issue(t, smimetest.Leaf{KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageEmailProtection}, Emails: []string{"p12@example.com"}})
	dir := t.TempDir()
	certFile, keyFile, caFile := filepath.Join(dir, "c.pem"), filepath.Join(dir, "k.pem"), filepath.Join(dir, "ca.pem")
	os.WriteFile(certFile, smimetest.PEM(leaf.Cert), 0o600)
	os.WriteFile(keyFile, smimetest.KeyPEM(t, leaf.Key), 0o600)
	os.WriteFile(caFile, smimetest.PEM(ca.Cert), 0o600)
	p12File := filepath.Join(dir, "u.p12")
	openssl(t, nil, "pkcs12", "-export", "-in", certFile, "-inkey", keyFile, "-certfile", caFile, "-out", p12File, "-passout", "pass:s3cret")
	fromOpenSSL, _ := os.ReadFile(p12File)
	fromGo, err := pkcs12.Modern.Encode(leaf.Key, leaf.Cert, []*x509.Certificate{ca.Cert}, "s3cret")
	if err != nil {
		t.Fatal(err)
	}
	for name, file := range map[string][]byte{"openssl": fromOpenSSL, "go-pkcs12": fromGo} {
		t.Run(name, func(t *testing.T) {
			got, err := smime.Classify(file, "s3cret")
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != 2 || got[0].Class != mailpush.SMIMESigningOnly || !got[0].HasPrivateKey || got[1].Class != mailpush.SMIMEClassCA || got[1].HasPrivateKey {
				t.Errorf("classified %+v", got)
			}
			for _, pw := range []string{"", "wrong"} {
				if _, err := smime.Classify(file, pw); mailpush.ErrorCode(err) != mailpush.EBadPassword {
					t.Errorf("password %q: err = %v, want wrong_password", pw, err)
				}
			}
		})
	}
	// A trust store (certificates, no key) opens too.
	ts, err := pkcs12.Modern.EncodeTrustStore([]*x509.Certificate{ca.Cert}, "pw")
	if err != nil {
		t.Fatal(err)
	}
	if got, err := smime.Classify(ts, "pw"); err != nil || len(got) != 1 || got[0].Class != mailpush.SMIMEClassCA {
		t.Errorf("trust store: %+v %v", got, err)
	}
	// A file asking for absurd key derivation work is refused unopened.
	slow := filepath.Join(dir, "slow.p12")
	openssl(t, nil, "pkcs12", "-export", "-in", certFile, "-inkey", keyFile, "-out", slow, "-passout", "pass:x", "-iter", "700000", "-maciter")
	b, _ := os.ReadFile(slow)
	if _, err := smime.Classify(b, "x"); mailpush.ErrorCode(err) != mailpush.EInvalid || !strings.Contains(mailpush.ErrorMessage(err), "iterations") {
		t.Errorf("700000 iterations: %v", err)
	}
}

func TestClassifyBadInput(t *testing.T) {
	ca := smimetest.NewRoot(t, "Bad Root")
	c := ca.Issue(t, smimetest.Leaf{}).Cert
	p7, _ := pkcs7.DegenerateCertificate(append(append([]byte{}, c.Raw...), ca.Cert.Raw...))
	if got, err := smime.Classify(p7, ""); err != nil || len(got) != 2 {
		t.Errorf("PKCS#7 bundle: %+v %v", got, err)
	}
	big := make([]byte, smime.MaxFileSize+1)
	rand.Read(big)
	for _, tc := range []struct {
		name string
		file []byte
		code string
	}{
		{"empty", nil, mailpush.EInvalid},
		{"garbage", []byte("hello, world"), mailpush.EInvalid},
		{"truncated DER", c.Raw[:len(c.Raw)/2], mailpush.EInvalid},
		{"bad PEM certificate", []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"), mailpush.EInvalid},
		{"PEM key only", smimetest.KeyPEM(t, ca.Key), mailpush.EInvalid},
		{"PFX shell", []byte{0x30, 0x03, 0x02, 0x01, 0x03}, mailpush.EInvalid},
		{"too large", big, mailpush.ETooLarge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := smime.Classify(tc.file, ""); mailpush.ErrorCode(err) != tc.code {
				t.Errorf("err = %v, want %s", err, tc.code)
			}
		})
	}
}
