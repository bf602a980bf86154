package main

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mailpush/mailpush"
	"github.com/mailpush/mailpush/directory/slapdtest"
	"github.com/mailpush/mailpush/smime/smimetest"
	"software.sslmate.com/src/go-pkcs12"
)

// TestSMIMEEndToEnd: the binary's wiring, over real sockets, against a
// real slapd: tenants.acme.directory and .smime in the config file, an app
// token looks up two recipients (one usable, one signing-only), an admin
// token may not, classify reads a PKCS#12, and no looked-up address
// reaches the logs (debug level).
func TestSMIMEEndToEnd(t *testing.T) {
	slapdtest.Require(t)
	root := smimetest.NewRoot(t, "E2E Root")
	enc := root.Issue(t, smimetest.Leaf{Emails: []string{"carol@example.com"}, KeyUsage: x509.KeyUsageKeyEncipherment | x509.KeyUsageDigitalSignature})
	sig := root.Issue(t, smimetest.Leaf{Emails: []string{"dave@example.com"}, KeyUsage: x509.KeyUsageDigitalSignature})
	var ldif strings.Builder
	ldif.WriteString("dn: ou=people,dc=example,dc=com\nobjectClass: organizationalUnit\nou: people\n\n")
	for _, u := range []struct {
		uid  string
		cert *x509.Certificate
	}{{"carol", enc.Cert}, {"dave", sig.Cert}} {
		fmt.Fprintf(&ldif, "dn: uid=%s,ou=people,dc=example,dc=com\nobjectClass: inetOrgPerson\nuid: %s\ncn: %s\nsn: %s\nmail: %s@example.com\nuserCertificate;binary:: %s\n\n",
			u.uid, u.uid, u.uid, u.uid, u.uid, base64.StdEncoding.EncodeToString(u.cert.Raw))
	}
	srv := slapdtest.Start(t, ldif.String(), slapdtest.Options{})
	w := newWorldWith(t, "debug", worldOptions{extra: func(w *world) (string, []*x509.Certificate) {
		roots := filepath.Join(w.dir, "roots.pem")
		os.WriteFile(roots, smimetest.PEM(root.Cert), 0o600)
		pw := filepath.Join(w.dir, "ldap.pw")
		os.WriteFile(pw, []byte(slapdtest.AdminPassword+"\n"), 0o600)
		return fmt.Sprintf(`tenants:
  acme:
    directory:
      url: %s
      bindDn: %s
      bindPasswordFile: %s
      baseDn: %s
      attributes: [mail, "userCertificate;binary", userSMIMECertificate]
    smime:
      rootsFile: %s
      maxRecipients: 5
`, srv.URL, slapdtest.AdminDN, pw, slapdtest.BaseDN, roots), nil
	}})
	app := w.addTenant(t, "acme")
	admin := w.addToken(t, "acme", mailpush.ScopeAdmin)

	st, out := w.call(t, "POST", "/api/v1/smime/lookup", app, map[string]any{"recipients": []string{"carol@example.com", "dave@example.com"}})
	if st != 200 || out["verdict"] != "cannot_encrypt" {
		t.Fatalf("lookup: %d %v", st, out)
	}
	recips := out["recipients"].([]any)
	carol, dave := recips[0].(map[string]any), recips[1].(map[string]any)
	certs := carol["certificates"].([]any)
	if len(certs) != 1 || !strings.Contains(certs[0].(map[string]any)["pem"].(string), base64.StdEncoding.EncodeToString(enc.Cert.Raw)[:40]) {
		t.Errorf("carol: %v", carol)
	}
	if dave["reason"] != "signing_only" {
		t.Errorf("dave: %v", dave)
	}
	st, out = w.call(t, "POST", "/api/v1/smime/lookup", app, map[string]any{"recipients": []string{"a@x.com", "b@x.com", "c@x.com", "d@x.com", "e@x.com", "f@x.com"}})
	if st != 400 || !strings.Contains(fmt.Sprint(out), "at most 5") {
		t.Errorf("six recipients: %d %v", st, out)
	}
	if st, out = w.call(t, "POST", "/api/v1/smime/lookup", admin, map[string]any{"recipients": []string{"carol@example.com"}}); st != 403 {
		t.Errorf("admin token: %d %v", st, out)
	}
	// A tenant without S/MIME is told so.
	other := w.addTenant(t, "globex")
	if st, out = w.call(t, "POST", "/api/v1/smime/lookup", other, map[string]any{"recipients": []string{"carol@example.com"}}); st != 422 {
		t.Errorf("globex: %d %v", st, out)
	}

	p12, err := pkcs12.Modern.Encode(enc.Key, enc.Cert, nil, "pw")
	if err != nil {
		t.Fatal(err)
	}
	st, out = w.call(t, "POST", "/api/v1/smime/classify", app, map[string]any{"file": base64.StdEncoding.EncodeToString(p12), "password": "pw"})
	if st != 200 || out["certificates"].([]any)[0].(map[string]any)["class"] != "both" {
		t.Errorf("classify: %d %v", st, out)
	}
	st, out = w.call(t, "POST", "/api/v1/smime/classify", app, map[string]any{"file": base64.StdEncoding.EncodeToString(p12), "password": "nope"})
	if st != 400 || out["error"].(map[string]any)["code"] != "wrong_password" {
		t.Errorf("classify, wrong password: %d %v", st, out)
	}

	logs := w.logs.String()
	if !strings.Contains(logs, "smime lookup") {
		t.Fatalf("no lookup in the logs:\n%s", logs)
	}
	for _, secret := range []string{"carol@example.com", "dave@example.com", "carol", "nope", slapdtest.AdminPassword} {
		if strings.Contains(logs, secret) {
			t.Errorf("the logs carry %q", secret)
		}
	}
}

// TestSMIMEClassifyCommand runs `mailpush smime classify` on a PEM and on a
// PKCS#12 with --password-file.
func TestSMIMEClassifyCommand(t *testing.T) {
	root := smimetest.NewRoot(t, "CLI Root")
	leaf := root.Issue(t, smimetest.Leaf{Key: "ec", KeyUsage: x509.KeyUsageKeyAgreement})
	dir := t.TempDir()
	pemFile, p12File, pwFile := filepath.Join(dir, "c.pem"), filepath.Join(dir, "c.p12"), filepath.Join(dir, "pw")
	os.WriteFile(pemFile, smimetest.PEM(leaf.Cert), 0o600)
	p12, _ := pkcs12.Modern.Encode(leaf.Key, leaf.Cert, []*x509.Certificate{root.Cert}, "pw")
	os.WriteFile(p12File, p12, 0o600)
	os.WriteFile(pwFile, []byte("pw\n"), 0o600)
	for _, args := range [][]string{{pemFile}, {p12File, "--password-file", pwFile}, {"--password-file", pwFile, p12File}} {
		var out, errOut bytes.Buffer
		if err := run(context.Background(), append([]string{"smime", "classify"}, args...), &out, &errOut, nil); err != nil {
			t.Fatalf("%v: %v %s", args, err, errOut.String())
		}
		var got []mailpush.SMIMEClassified
		if err := json.Unmarshal(out.Bytes(), &got); err != nil || len(got) == 0 || got[0].Class != mailpush.SMIMEClassEncryptionOnly {
			t.Errorf("%v: %s", args, out.String())
		}
	}
	var out, errOut bytes.Buffer
	err := run(context.Background(), []string{"smime", "classify", p12File}, &out, &errOut, nil)
	if err == nil || !strings.Contains(err.Error(), "wrong_password") {
		t.Errorf("no password: %v", err)
	}
}
