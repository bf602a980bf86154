package ews_test

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"software.sslmate.com/src/go-pkcs12"

	"github.com/mailpush/mailpush"
	"github.com/mailpush/mailpush/ews"
	"github.com/mailpush/mailpush/fake/ewsfake"
)

const p12Password = "p12-Pa55-Wörd"

func issue(t testing.TB, ca *ewsfake.CA, o ewsfake.ClientCertOptions) *ewsfake.ClientCert {
	t.Helper()
	c, err := ca.Issue(o)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func p12(t testing.TB, c *ewsfake.ClientCert) string {
	t.Helper()
	b, err := c.PKCS12(p12Password)
	if err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(b)
}

func b64(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return base64.StdEncoding.EncodeToString(b)
}

func pemCreds(c *ewsfake.ClientCert) mailpush.Credentials {
	return mailpush.Credentials{CertificatePEM: c.CertificatePEM(), PrivateKeyPEM: c.KeyPEM()}
}

// TestOpenIdentity: what a client identity must be to sign in, and the
// precise refusal of everything else.
func TestOpenIdentity(t *testing.T) {
	now := time.Now()
	ca, err := ewsfake.NewCA("test CA", now)
	if err != nil {
		t.Fatal(err)
	}
	good := issue(t, ca, ewsfake.ClientCertOptions{UPN: "alice@example.com", Now: now})
	other := issue(t, ca, ewsfake.ClientCertOptions{UPN: "bob@example.com", Now: now, EC: true})
	expired := issue(t, ca, ewsfake.ClientCertOptions{UPN: "alice@example.com", NotBefore: now.Add(-48 * time.Hour), NotAfter: now.Add(-time.Hour)})
	future := issue(t, ca, ewsfake.ClientCertOptions{UPN: "alice@example.com", NotBefore: now.Add(time.Hour), NotAfter: now.Add(48 * time.Hour)})
	smime := issue(t, ca, ewsfake.ClientCertOptions{UPN: "alice@example.com", Now: now, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageEmailProtection}})
	signOnly := issue(t, ca, ewsfake.ClientCertOptions{UPN: "alice@example.com", Now: now, ExtKeyUsage: []x509.ExtKeyUsage{}, KeyUsage: x509.KeyUsageContentCommitment})
	noEKU := issue(t, ca, ewsfake.ClientCertOptions{UPN: "alice@example.com", Now: now, ExtKeyUsage: []x509.ExtKeyUsage{}, EC: true})
	trustStore, err := pkcs12.Modern.EncodeTrustStore([]*x509.Certificate{good.Certificate}, p12Password)
	if err != nil {
		t.Fatal(err)
	}
	// A key and chain in the wrong order: the key's certificate leads.
	reversed := mailpush.Credentials{CertificatePEM: string(ca.PEM()) + string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: good.Certificate.Raw})), PrivateKeyPEM: good.KeyPEM()}

	for _, tc := range []struct {
		name  string
		creds mailpush.Credentials
		code  string // "" means accepted
		want  string // in the message
	}{
		{"PKCS#12", mailpush.Credentials{PKCS12: p12(t, good), PKCS12Password: p12Password}, "", ""},
		{"PEM key and chain", pemCreds(good), "", ""},
		{"PEM, EC key", pemCreds(other), "", ""},
		{"PEM, chain in another order", reversed, "", ""},
		{"no extended key usage", pemCreds(noEKU), "", ""},
		{"wrong password", mailpush.Credentials{PKCS12: p12(t, good), PKCS12Password: "guess"}, mailpush.EBadPassword, "pkcs12Password does not open pkcs12"},
		{"PKCS#12 without a key", mailpush.Credentials{PKCS12: base64.StdEncoding.EncodeToString(trustStore), PKCS12Password: p12Password}, mailpush.EBadSealed, "no private key"},
		{"PKCS#12 not in base64", mailpush.Credentials{PKCS12: "MIIJ*", PKCS12Password: p12Password}, mailpush.EBadSealed, "not standard base64"},
		{"PKCS#12 that is not one", mailpush.Credentials{PKCS12: base64.StdEncoding.EncodeToString([]byte("MIIJ not DER at all")), PKCS12Password: p12Password}, mailpush.EBadSealed, "not a PKCS#12 file"},
		{"truncated PKCS#12", mailpush.Credentials{PKCS12: p12(t, good)[:400], PKCS12Password: p12Password}, mailpush.EBadSealed, "pkcs12"},
		{"oversized PKCS#12", mailpush.Credentials{PKCS12: base64.StdEncoding.EncodeToString(make([]byte, mailpush.MaxIdentity+3)), PKCS12Password: p12Password}, mailpush.EBadSealed, "longer than"},
		{"expired", mailpush.Credentials{PKCS12: p12(t, expired), PKCS12Password: p12Password}, mailpush.ECredentials, "expired on"},
		{"not yet valid", pemCreds(future), mailpush.ECredentials, "not valid before"},
		{"e-mail protection only", mailpush.Credentials{PKCS12: p12(t, smime), PKCS12Password: p12Password}, mailpush.ECredentials, "lacks clientAuth"},
		{"signing only (non-repudiation)", pemCreds(signOnly), mailpush.ECredentials, "lacks digitalSignature"},
		{"key of another certificate", mailpush.Credentials{CertificatePEM: good.CertificatePEM(), PrivateKeyPEM: other.KeyPEM()}, mailpush.EBadSealed, "matches none"},
		{"malformed certificate PEM", mailpush.Credentials{CertificatePEM: "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n", PrivateKeyPEM: good.KeyPEM()}, mailpush.EBadSealed, "cannot be parsed"},
		{"not PEM at all", mailpush.Credentials{CertificatePEM: "hello", PrivateKeyPEM: good.KeyPEM()}, mailpush.EBadSealed, "not a PEM certificate chain"},
		{"garbage after the chain", mailpush.Credentials{CertificatePEM: good.CertificatePEM() + "trailing", PrivateKeyPEM: good.KeyPEM()}, mailpush.EBadSealed, "not a PEM certificate chain"},
		{"a key in the chain", mailpush.Credentials{CertificatePEM: good.KeyPEM(), PrivateKeyPEM: good.KeyPEM()}, mailpush.EBadSealed, "only CERTIFICATE blocks"},
		{"a certificate for the key", mailpush.Credentials{CertificatePEM: good.CertificatePEM(), PrivateKeyPEM: good.CertificatePEM()}, mailpush.EBadSealed, "not one PEM private key"},
		{"encrypted key", mailpush.Credentials{CertificatePEM: good.CertificatePEM(), PrivateKeyPEM: "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIB\n-----END ENCRYPTED PRIVATE KEY-----\n"}, mailpush.EBadSealed, "encrypted"},
		{"malformed key", mailpush.Credentials{CertificatePEM: good.CertificatePEM(), PrivateKeyPEM: "-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----\n"}, mailpush.EBadSealed, "cannot be parsed"},
		{"oversized PEM", mailpush.Credentials{CertificatePEM: strings.Repeat(good.CertificatePEM(), 20), PrivateKeyPEM: good.KeyPEM()}, mailpush.EBadSealed, "longer than"},
		{"too long a chain", mailpush.Credentials{CertificatePEM: strings.Repeat(string(ca.PEM()), 11), PrivateKeyPEM: good.KeyPEM()}, mailpush.EBadSealed, "more than 10"},
		{"key without certificate", mailpush.Credentials{PrivateKeyPEM: good.KeyPEM()}, mailpush.EBadSealed, "go together"},
		{"both forms", mailpush.Credentials{PKCS12: p12(t, good), PKCS12Password: p12Password, CertificatePEM: good.CertificatePEM(), PrivateKeyPEM: good.KeyPEM()}, mailpush.EBadSealed, "not both"},
		{"with a password too", mailpush.Credentials{PKCS12: p12(t, good), PKCS12Password: p12Password, Username: "alice", Password: "x"}, mailpush.EBadSealed, "goes alone"},
	} {
		id, err := ews.OpenIdentity(tc.creds, now)
		if tc.code == "" {
			if err != nil || len(id.Fingerprint) != 64 {
				t.Errorf("%s: %v, want accepted", tc.name, err)
			}
			continue
		}
		if mailpush.ErrorCode(err) != tc.code || !strings.Contains(mailpush.ErrorMessage(err), tc.want) {
			t.Errorf("%s: %v, want %s with %q", tc.name, err, tc.code, tc.want)
			continue
		}
		// A refusal names what is wrong, never the secret.
		for _, secret := range []string{p12Password, good.KeyPEM()[40:80]} {
			if strings.Contains(err.Error(), secret) {
				t.Errorf("%s: the error holds a secret: %v", tc.name, err)
			}
		}
	}
}

// TestOpenIdentityFromOpenSSL: identities made by OpenSSL 3, the way an
// admin or an MDM exports them (PKCS#12 with AES-256 and PBKDF2, a legacy
// 3DES one, and PEM with a PKCS#1 RSA key), open.
func TestOpenIdentityFromOpenSSL(t *testing.T) {
	bin, err := exec.LookPath("openssl")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("openssl is not installed but CI is set")
		}
		t.Skip("openssl is not installed")
	}
	dir := t.TempDir()
	run := func(args ...string) {
		t.Helper()
		cmd := exec.Command(bin, args...)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("openssl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "k.pem", "-out", "c.pem", "-days", "30", "-subj", "/CN=alice",
		"-addext", "subjectAltName=otherName:1.3.6.1.4.1.311.20.2.3;UTF8:alice@example.com",
		"-addext", "extendedKeyUsage=clientAuth", "-addext", "keyUsage=digitalSignature")
	run("pkcs12", "-export", "-inkey", "k.pem", "-in", "c.pem", "-passout", "pass:"+p12Password, "-out", "modern.p12")
	run("pkcs12", "-export", "-legacy", "-inkey", "k.pem", "-in", "c.pem", "-passout", "pass:"+p12Password, "-out", "legacy.p12")
	run("rsa", "-in", "k.pem", "-traditional", "-out", "k1.pem")
	read := func(name string) []byte {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	cert := read("c.pem")
	block, _ := pem.Decode(cert)
	leaf, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if ewsfake.UPNOf(leaf) != "alice@example.com" {
		t.Errorf("UPN of OpenSSL's certificate = %q", ewsfake.UPNOf(leaf))
	}
	for name, c := range map[string]mailpush.Credentials{
		"PKCS#12 (OpenSSL 3 default)": {PKCS12: b64(read("modern.p12")), PKCS12Password: p12Password},
		"PKCS#12 (legacy)":            {PKCS12: b64(read("legacy.p12")), PKCS12Password: p12Password},
		"PEM, PKCS#8 key":             {CertificatePEM: string(cert), PrivateKeyPEM: string(read("k.pem"))},
		"PEM, PKCS#1 key":             {CertificatePEM: string(cert), PrivateKeyPEM: string(read("k1.pem"))},
	} {
		if _, err := ews.OpenIdentity(c, time.Now()); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	c := mailpush.Credentials{PKCS12: b64(read("modern.p12")), PKCS12Password: "wrong"}
	if _, err := ews.OpenIdentity(c, time.Now()); mailpush.ErrorCode(err) != mailpush.EBadPassword {
		t.Errorf("OpenSSL PKCS#12, wrong password: %v", err)
	}
}

// TestPKCS12IterationCap: a PKCS#12 asking for more key-derivation work
// than any tool uses is refused before any is done (the app token is
// public: anyone could send one).
func TestPKCS12IterationCap(t *testing.T) {
	ca, _ := ewsfake.NewCA("test CA", time.Now())
	c := issue(t, ca, ewsfake.ClientCertOptions{UPN: "alice@example.com"})
	enc := pkcs12.Modern.WithIterations(mailpush.MaxPKCS12Iterations + 1)
	b, err := enc.Encode(c.Key, c.Certificate, nil, p12Password)
	if err != nil {
		t.Fatal(err)
	}
	_, err = ews.OpenIdentity(mailpush.Credentials{PKCS12: b64(b), PKCS12Password: p12Password}, time.Now())
	if mailpush.ErrorCode(err) != mailpush.EBadSealed || !strings.Contains(mailpush.ErrorMessage(err), "iterations") {
		t.Fatalf("%v, want the iteration count refused", err)
	}
}

// TestCertificateBasedAuthentication: the client presents each identity
// on connections of its own; Exchange maps the certificate's UPN to the
// user, refuses unknown issuers, expired and revoked certificates, and lets
// a certificate open only its user's mailbox or one it is a delegate of.
func TestCertificateBasedAuthentication(t *testing.T) {
	fake := ewsfake.New(ewsfake.Options{})
	defer fake.Close()
	fake.AddUser("alice@example.com", `EXAMPLE\alice`, "alice's password")
	fake.AddUser("bob@example.com", `EXAMPLE\bob`, "bob's password")
	fake.AddUser("carol@example.com", `EXAMPLE\carol`, "carol's password")
	if err := fake.AddDelegate("carol@example.com", "alice@example.com"); err != nil {
		t.Fatal(err)
	}
	fake.Deliver("alice@example.com", "a", "x", "x@example.com")
	fake.Deliver("bob@example.com", "b", "x", "x@example.com")
	fake.Deliver("bob@example.com", "c", "x", "x@example.com")
	fake.Deliver("carol@example.com", "d", "x", "x@example.com")
	fake.Deliver("carol@example.com", "e", "x", "x@example.com")
	fake.Deliver("carol@example.com", "f", "x", "x@example.com")
	open := func(c *ewsfake.ClientCert) *ews.Identity {
		t.Helper()
		id, err := ews.OpenIdentity(pemCreds(c), time.Now())
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
	issueFor := func(upn string, o ewsfake.ClientCertOptions) *ewsfake.ClientCert {
		t.Helper()
		c, err := fake.IssueClientCert(upn, o)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	aliceCert, bobCert := issueFor("alice@example.com", ewsfake.ClientCertOptions{}), issueFor("bob@example.com", ewsfake.ClientCertOptions{EC: true})
	alice, bob := open(aliceCert), open(bobCert)
	c := &ews.Client{HTTP: fake.HTTPClient(), MaxIdentities: 2}
	ctx := context.Background()
	unread := func(id *ews.Identity, mailbox string) (int, error) {
		return c.GetInboxUnread(ctx, ews.Endpoint{URL: fake.URL(), Identity: id, Mailbox: mailbox})
	}
	// Interleaved: a connection or TLS session of one identity never
	// serves the other.
	for range 3 {
		if n, err := unread(alice, "alice@example.com"); err != nil || n != 1 {
			t.Fatalf("alice: %d, %v", n, err)
		}
		if n, err := unread(bob, ""); err != nil || n != 2 {
			t.Fatalf("bob: %d, %v", n, err)
		}
	}
	if n := c.Identities(); n != 2 {
		t.Errorf("%d connection pools, want one per identity", n)
	}
	if n := fake.Requests("Certificate"); n != 6 {
		t.Errorf("%d requests authenticated by certificate, want 6", n)
	}
	// A delegate's certificate opens the mailbox; anyone else's does not.
	if n, err := unread(alice, "carol@example.com"); err != nil || n != 3 {
		t.Errorf("alice as carol's delegate: %d, %v", n, err)
	}
	if _, err := unread(alice, "bob@example.com"); mailpush.ErrorCode(err) == "" {
		t.Error("alice's certificate opened bob's mailbox")
	}

	// Refused certificates: 401, as Exchange answers.
	stranger, err := ewsfake.NewCA("not trusted", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	unknownCA := issue(t, stranger, ewsfake.ClientCertOptions{UPN: "alice@example.com"})
	expiring := issueFor("alice@example.com", ewsfake.ClientCertOptions{NotAfter: time.Now().Add(-time.Minute), NotBefore: time.Now().Add(-time.Hour)})
	noUPN, err := fake.ClientCA().Issue(ewsfake.ClientCertOptions{Email: "alice@example.com"})
	if err != nil {
		t.Fatal(err)
	}
	for name, cert := range map[string]*ewsfake.ClientCert{"unknown CA": unknownCA, "rfc822Name only": noUPN} {
		before := fake.Requests("CertificateRefused")
		if _, err := unread(open(cert), ""); !errors.Is(err, ews.ErrUnauthorized) {
			t.Errorf("%s: %v, want refused", name, err)
		}
		if fake.Requests("CertificateRefused") != before+1 {
			t.Errorf("%s: not refused for its certificate", name)
		}
	}
	// An expired certificate is refused by mailpush before Exchange sees
	// it; Exchange refuses it too.
	if _, err := ews.OpenIdentity(pemCreds(expiring), time.Now()); mailpush.ErrorCode(err) != mailpush.ECredentials {
		t.Errorf("expired: %v", err)
	}
	// Revoked: refused from the next request on, on a kept-alive
	// connection (and a resumed TLS session) too.
	fake.RevokeClientCert(aliceCert.Certificate.SerialNumber)
	if _, err := unread(alice, "alice@example.com"); !errors.Is(err, ews.ErrUnauthorized) {
		t.Errorf("revoked: %v, want refused", err)
	}
	if n, err := unread(bob, ""); err != nil || n != 2 {
		t.Errorf("bob after alice's revocation: %d, %v", n, err)
	}
	if n := c.Identities(); n != 2 {
		t.Errorf("%d connection pools, want at most MaxIdentities (2)", n)
	}
}

// TestIdentityNeverLeaks: an Identity prints as nothing, however it is
// printed or logged.
func TestIdentityNeverLeaks(t *testing.T) {
	ca, _ := ewsfake.NewCA("test CA", time.Now())
	c := issue(t, ca, ewsfake.ClientCertOptions{UPN: "alice@example.com"})
	id, err := ews.OpenIdentity(pemCreds(c), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	slog.New(slog.NewJSONHandler(&b, nil)).Info("x", "id", id, "value", *id, "creds", pemCreds(c))
	fmt.Fprintf(&b, "%v %+v %#v %v %+v %#v", id, id, id, *id, *id, *id)
	der, _ := x509.MarshalPKCS8PrivateKey(c.Key)
	for _, secret := range [][]byte{[]byte("PRIVATE KEY"), der[20:40], []byte(fmt.Sprint(c.Key)[:30])} {
		if bytes.Contains(b.Bytes(), secret) {
			t.Fatalf("printed identity leaks its key: %s", b.String())
		}
	}
	if !strings.Contains(b.String(), "Identity{…}") {
		t.Fatalf("printed identity: %s", b.String())
	}
}

// FuzzOpenIdentity: whatever an app seals as its client identity, opening
// it returns an identity or a 4xx error naming what is wrong, never a
// panic, another code or the password.
func FuzzOpenIdentity(f *testing.F) {
	ca, err := ewsfake.NewCA("fuzz CA", time.Now())
	if err != nil {
		f.Fatal(err)
	}
	c := issue(f, ca, ewsfake.ClientCertOptions{UPN: "alice@example.com", EC: true})
	der, err := c.PKCS12(p12Password)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(der, p12Password, "", "")
	f.Add(der[:300], p12Password, "", "")
	f.Add([]byte{0x30, 0x82, 0x01, 0x00, 0x02, 0x01, 0x03}, "", "", "")
	f.Add([]byte(nil), "", c.CertificatePEM(), c.KeyPEM())
	f.Add([]byte(nil), "", c.CertificatePEM()[:200], c.KeyPEM())
	f.Add([]byte(nil), "", "-----BEGIN CERTIFICATE-----\n\n-----END CERTIFICATE-----", "-----BEGIN EC PRIVATE KEY-----\nMA==\n-----END EC PRIVATE KEY-----")
	f.Fuzz(func(t *testing.T, data []byte, password, certPEM, keyPEM string) {
		creds := mailpush.Credentials{PKCS12: b64(data), PKCS12Password: password, CertificatePEM: certPEM, PrivateKeyPEM: keyPEM}
		id, err := ews.OpenIdentity(creds, time.Now())
		if err == nil {
			if id == nil || len(id.Fingerprint) != 64 {
				t.Fatalf("accepted without an identity: %v", id)
			}
			return
		}
		switch mailpush.ErrorCode(err) {
		case mailpush.EBadSealed, mailpush.EBadPassword, mailpush.ECredentials:
		default:
			t.Fatalf("code %s: %v", mailpush.ErrorCode(err), err)
		}
		if len(password) >= 8 && strings.Contains(mailpush.ErrorMessage(err), password) {
			t.Fatalf("the message holds the password: %v", err)
		}
	})
}

// BenchmarkOpenIdentity: what opening a client identity costs, by form.
// The PKCS#12 cost is the key derivation its maker chose: go-pkcs12's
// Modern (as OpenSSL 3) uses 2,048 iterations; the cap is
// mailpush.MaxPKCS12Iterations (100,000).
func BenchmarkOpenIdentity(b *testing.B) {
	ca, err := ewsfake.NewCA("bench CA", time.Now())
	if err != nil {
		b.Fatal(err)
	}
	c := issue(b, ca, ewsfake.ClientCertOptions{UPN: "alice@example.com"})
	maxIter, err := pkcs12.Modern.WithIterations(mailpush.MaxPKCS12Iterations).Encode(c.Key, c.Certificate, []*x509.Certificate{ca.Certificate}, p12Password)
	if err != nil {
		b.Fatal(err)
	}
	for name, creds := range map[string]mailpush.Credentials{
		"pem":                   pemCreds(c),
		"pkcs12-2048-iter":      {PKCS12: p12(b, c), PKCS12Password: p12Password},
		"pkcs12-at-the-cap":     {PKCS12: b64(maxIter), PKCS12Password: p12Password},
		"pkcs12-wrong-password": {PKCS12: p12(b, c), PKCS12Password: "wrong"},
	} {
		b.Run(name, func(b *testing.B) {
			for b.Loop() {
				ews.OpenIdentity(creds, time.Now())
			}
		})
	}
}

// BenchmarkGetInboxUnreadAuth: one GetFolder against the fake Exchange
// over loopback TLS, signed in with a password (Basic) or a client
// certificate (on the identity's kept-alive connection), and the first
// request of an identity (a new pool: a full TLS handshake with the client
// certificate).
func BenchmarkGetInboxUnreadAuth(b *testing.B) {
	fake := ewsfake.New(ewsfake.Options{})
	defer fake.Close()
	fake.AddUser("alice@example.com", `EXAMPLE\alice`, "alice's password")
	cert, err := fake.IssueClientCert("alice@example.com", ewsfake.ClientCertOptions{})
	if err != nil {
		b.Fatal(err)
	}
	id, err := ews.OpenIdentity(pemCreds(cert), time.Now())
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	basic := ews.Endpoint{URL: fake.URL(), Credentials: mailpush.Credentials{Username: `EXAMPLE\alice`, Password: "alice's password"}}
	withCert := ews.Endpoint{URL: fake.URL(), Identity: id}
	run := func(b *testing.B, c func() *ews.Client, ep ews.Endpoint) {
		for b.Loop() {
			if _, err := c().GetInboxUnread(ctx, ep); err != nil {
				b.Fatal(err)
			}
		}
	}
	shared := &ews.Client{HTTP: fake.HTTPClient()}
	b.Run("basic", func(b *testing.B) { run(b, func() *ews.Client { return shared }, basic) })
	b.Run("certificate", func(b *testing.B) { run(b, func() *ews.Client { return shared }, withCert) })
	b.Run("certificate-first-request", func(b *testing.B) {
		run(b, func() *ews.Client {
			return &ews.Client{HTTP: &http.Client{Transport: fake.HTTPClient().Transport.(*http.Transport).Clone()}}
		}, withCert)
	})
}

// TestPrepareCredentials: the registrar opens a PKCS#12 once, through
// PrepareCredentials, and hands on PEM that Watch opens again to the same
// identity; a wrong password is refused there, with Watch's error.
func TestPrepareCredentials(t *testing.T) {
	ca, err := ewsfake.NewCA("prepare CA", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	c := issue(t, ca, ewsfake.ClientCertOptions{UPN: "alice@example.com"})
	src := &ews.Source{Clock: mailpush.SystemClock{}, Logger: slog.New(slog.DiscardHandler)}
	tn := &mailpush.Tenant{Name: "acme"}
	got, err := src.PrepareCredentials(context.Background(), tn, mailpush.Credentials{PKCS12: p12(t, c), PKCS12Password: p12Password})
	if err != nil {
		t.Fatal(err)
	}
	if got.PKCS12 != "" || got.PKCS12Password != "" || got.CertificatePEM == "" || got.PrivateKeyPEM == "" {
		t.Fatal("prepared credentials are not PEM alone")
	}
	if err := got.CheckIdentity(); err != nil {
		t.Fatalf("prepared PEM fails the shape check: %v", err)
	}
	again, err := ews.OpenIdentity(got, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	want, err := ews.OpenIdentity(pemCreds(c), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if again.Fingerprint != want.Fingerprint {
		t.Error("the prepared PEM opens another identity")
	}
	if _, err := src.PrepareCredentials(context.Background(), tn, mailpush.Credentials{PKCS12: p12(t, c), PKCS12Password: "wrong"}); mailpush.ErrorCode(err) != mailpush.EBadPassword {
		t.Errorf("wrong password: %v, want wrong_password", err)
	}
	plain := mailpush.Credentials{Username: "u", Password: "p"}
	if got, err := src.PrepareCredentials(context.Background(), tn, plain); err != nil || got != plain {
		t.Errorf("a password came back as %v, %v", got, err)
	}
}
