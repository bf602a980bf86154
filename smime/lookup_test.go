package smime_test

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/smallstep/pkcs7"

	"github.com/mailpush/mailpush"
	"github.com/mailpush/mailpush/clocktest"
	"github.com/mailpush/mailpush/directory"
	"github.com/mailpush/mailpush/directory/slapdtest"
	"github.com/mailpush/mailpush/smime"
	"github.com/mailpush/mailpush/smime/smimetest"
)

// user is a directory entry of the test.
type user struct {
	uid   string
	mail  string
	certs []*x509.Certificate   // userCertificate;binary values
	p7    [][]*x509.Certificate // userSMIMECertificate values (PKCS#7 bundles)
}

func ldif(t testing.TB, users []user) string {
	var b strings.Builder
	b.WriteString("dn: ou=people,dc=example,dc=com\nobjectClass: organizationalUnit\nou: people\n\n")
	for _, u := range users {
		fmt.Fprintf(&b, "dn: uid=%s,ou=people,dc=example,dc=com\nobjectClass: inetOrgPerson\nuid: %s\ncn: %s\nsn: %s\nmail: %s\n", u.uid, u.uid, u.uid, u.uid, u.mail)
		for _, c := range u.certs {
			fmt.Fprintf(&b, "userCertificate;binary:: %s\n", base64.StdEncoding.EncodeToString(c.Raw))
		}
		for _, bundle := range u.p7 {
			var raw []byte
			for _, c := range bundle {
				raw = append(raw, c.Raw...)
			}
			der, err := pkcs7.DegenerateCertificate(raw)
			if err != nil {
				t.Fatal(err)
			}
			fmt.Fprintf(&b, "userSMIMECertificate:: %s\n", base64.StdEncoding.EncodeToString(der))
		}
		b.WriteString("\n")
	}
	return b.String()
}

// hasher is a stand-in keyed hash for the lookup log.
type hasher struct{}

func (hasher) HashAddress(tenantID, address string) []byte {
	return []byte(fmt.Sprintf("%x", len(tenantID)*31+len(address)))
}

type world struct {
	svc     *smime.Service
	tenant  *mailpush.Tenant
	clock   *clocktest.Clock
	logs    *bytes.Buffer
	root    *smimetest.CA
	inter   *smimetest.CA
	certs   map[string]smimetest.Issued
	crlHits *atomic.Int64
	crlFail *atomic.Bool
	// elsewhere counts requests to a server that only certificates name
	// (their CRL distribution point): it must stay 0.
	elsewhere *atomic.Int64
	slapd     *slapdtest.Server
}

var emailEnc = []x509.ExtKeyUsage{x509.ExtKeyUsageEmailProtection}

const dualKU = x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment

// newWorld starts slapd with users covering every reason, a CRL server,
// and the service for tenant "acme".
func newWorld(t testing.TB) *world {
	root := smimetest.NewRoot(t, "Acme Root")
	inter := root.Intermediate(t, "Acme Mail CA")
	other := smimetest.NewRoot(t, "Evil Root")
	shortCA := root.IntermediateUntil(t, "Acme Short CA", time.Now().Add(48*time.Hour))
	now := time.Now()
	w := &world{root: root, inter: inter, certs: map[string]smimetest.Issued{}, crlHits: new(atomic.Int64), crlFail: new(atomic.Bool), elsewhere: new(atomic.Int64)}
	attacker := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) { w.elsewhere.Add(1) }))
	t.Cleanup(attacker.Close)
	issue := func(name string, ca *smimetest.CA, l smimetest.Leaf) *x509.Certificate {
		c := ca.Issue(t, l)
		w.certs[name] = c
		return c.Cert
	}
	users := []user{
		{uid: "alice", mail: "alice@example.com", certs: []*x509.Certificate{
			issue("alice", inter, smimetest.Leaf{Emails: []string{"alice@example.com"}, KeyUsage: dualKU, ExtKeyUsage: emailEnc, CRLURLs: []string{attacker.URL + "/internal"}}), inter.Cert}},
		{uid: "eve", mail: "eve@example.com", certs: []*x509.Certificate{
			issue("eve", inter, smimetest.Leaf{Key: "ec", Emails: []string{"eve@example.com"}, KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageKeyAgreement, ExtKeyUsage: emailEnc}), inter.Cert}},
		{uid: "sam", mail: "sam@example.com", certs: []*x509.Certificate{
			issue("sam", inter, smimetest.Leaf{Emails: []string{"sam@example.com"}, KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: emailEnc}), inter.Cert}},
		{uid: "ecsign", mail: "ecsign@example.com", certs: []*x509.Certificate{
			issue("ecsign", inter, smimetest.Leaf{Key: "ec", Emails: []string{"ecsign@example.com"}, KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment}), inter.Cert}},
		{uid: "old", mail: "old@example.com", certs: []*x509.Certificate{
			issue("old", inter, smimetest.Leaf{Emails: []string{"old@example.com"}, NotBefore: now.Add(-400 * 24 * time.Hour), NotAfter: now.Add(-24 * time.Hour)}), inter.Cert}},
		{uid: "future", mail: "future@example.com", certs: []*x509.Certificate{
			issue("future", inter, smimetest.Leaf{Emails: []string{"future@example.com"}, NotBefore: now.Add(24 * time.Hour)}), inter.Cert}},
		{uid: "rev", mail: "rev@example.com", certs: []*x509.Certificate{
			issue("rev", inter, smimetest.Leaf{Emails: []string{"rev@example.com"}}), inter.Cert}},
		{uid: "mallory", mail: "mallory@example.com", certs: []*x509.Certificate{
			issue("mallory", other, smimetest.Leaf{Emails: []string{"mallory@example.com"}})}},
		{uid: "wrong", mail: "wrong@example.com", certs: []*x509.Certificate{
			issue("wrong", inter, smimetest.Leaf{Emails: []string{"someone.else@example.com"}}), inter.Cert}},
		{uid: "tls", mail: "tls@example.com", certs: []*x509.Certificate{
			issue("tls", inter, smimetest.Leaf{Emails: []string{"tls@example.com"}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}), inter.Cert}},
		// Subject emailAddress only, chain in a PKCS#7 bundle (AD style).
		{uid: "legacy", mail: "legacy@example.com", p7: [][]*x509.Certificate{{
			issue("legacy", inter, smimetest.Leaf{SubjectEmail: "Legacy@Example.com"}), inter.Cert}}},
		// Renewed: the old one still valid, the new one wins; an expired
		// third is skipped.
		{uid: "renew", mail: "renew@example.com", certs: []*x509.Certificate{
			issue("renew-old", inter, smimetest.Leaf{Emails: []string{"renew@example.com"}, NotBefore: now.Add(-200 * 24 * time.Hour)}),
			issue("renew-new", inter, smimetest.Leaf{Emails: []string{"renew@example.com"}, NotBefore: now.Add(-2 * time.Hour)}),
			issue("renew-dead", inter, smimetest.Leaf{Emails: []string{"renew@example.com"}, NotBefore: now.Add(-800 * 24 * time.Hour), NotAfter: now.Add(-400 * 24 * time.Hour)}),
			inter.Cert}},
		{uid: "nocert", mail: "nocert@example.com"},
		// Its intermediate expires in two days, the certificate in a year.
		{uid: "shortca", mail: "shortca@example.com", certs: []*x509.Certificate{
			issue("shortca", shortCA, smimetest.Leaf{Emails: []string{"shortca@example.com"}}), shortCA.Cert}},
	}
	w.slapd = slapdtest.Start(t, ldif(t, users), slapdtest.Options{Anonymous: true})

	crl := inter.CRL(t, now.Add(24*time.Hour), w.certs["rev"].Cert)
	srv := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		w.crlHits.Add(1)
		if w.crlFail.Load() {
			http.Error(rw, "down", http.StatusInternalServerError)
			return
		}
		rw.Write(crl)
	}))
	t.Cleanup(srv.Close)

	dir := t.TempDir()
	rootsFile := filepath.Join(dir, "roots.pem")
	os.WriteFile(rootsFile, smimetest.PEM(root.Cert), 0o600)
	w.clock = clocktest.New(now)
	w.logs = new(bytes.Buffer)
	log := slog.New(slog.NewTextHandler(w.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	d, err := directory.New(directory.Config{URL: w.slapd.URL, BaseDN: slapdtest.BaseDN,
		Attributes: []string{"mail", "userCertificate;binary", "userSMIMECertificate"}, Timeout: 2 * time.Second}, log, w.clock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	w.svc, err = smime.New(smime.Options{Logger: log, Clock: w.clock, Hasher: hasher{}, HTTP: srv.Client()},
		map[string]smime.Tenant{"acme": {Directory: d, Config: smime.Config{RootsFile: rootsFile, CRLs: []string{srv.URL + "/acme.crl"}}}})
	if err != nil {
		t.Fatal(err)
	}
	w.tenant = &mailpush.Tenant{ID: "t1", Name: "acme"}
	return w
}

func TestLookupReasons(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	cases := []struct {
		addr   string
		reason string
		want   string // the certificate returned first, by name
	}{
		{"alice@example.com", "", "alice"},
		{"ALICE@example.com", "", "alice"},
		{"eve@example.com", "", "eve"},
		{"sam@example.com", mailpush.SMIMESigningOnly, ""},
		{"ecsign@example.com", mailpush.SMIMESigningOnly, ""},
		{"old@example.com", mailpush.SMIMEExpired, ""},
		{"future@example.com", mailpush.SMIMENotYetValid, ""},
		{"rev@example.com", mailpush.SMIMERevoked, ""},
		{"mallory@example.com", mailpush.SMIMEUntrustedChain, ""},
		{"wrong@example.com", mailpush.SMIMEWrongEmail, ""},
		{"tls@example.com", mailpush.SMIMENoCertificate, ""},
		{"legacy@example.com", "", "legacy"},
		{"renew@example.com", "", "renew-new"},
		{"nocert@example.com", mailpush.SMIMENoCertificate, ""},
		{"nobody@example.com", mailpush.SMIMENoCertificate, ""},
		{"*@example.com", mailpush.SMIMENoCertificate, ""},
	}
	for _, tc := range cases {
		t.Run(tc.addr, func(t *testing.T) {
			res, err := w.svc.LookupCertificates(ctx, w.tenant, []string{tc.addr})
			if err != nil {
				t.Fatal(err)
			}
			r := res.Recipients[0]
			if r.Reason != tc.reason {
				t.Fatalf("reason = %q (%s), want %q", r.Reason, r.Detail, tc.reason)
			}
			if tc.want == "" {
				if len(r.Certificates) != 0 || res.Verdict != mailpush.SMIMEVerdictCannotEncrypt || len(res.Blocking) != 1 || r.Detail == "" {
					t.Errorf("blocked recipient: %+v", res)
				}
				return
			}
			if len(r.Certificates) == 0 || !bytes.Equal(r.Certificates[0].DER, w.certs[tc.want].Cert.Raw) {
				t.Fatalf("first certificate is not %s's", tc.want)
			}
			if res.Verdict != mailpush.SMIMEVerdictEncryptAll || len(res.Blocking) != 0 {
				t.Errorf("verdict %s, blocking %v", res.Verdict, res.Blocking)
			}
		})
	}
	// renew: both valid certificates, newest first; the expired one not.
	res, _ := w.svc.LookupCertificates(ctx, w.tenant, []string{"renew@example.com"})
	if got := res.Recipients[0].Certificates; len(got) != 2 || !bytes.Equal(got[1].DER, w.certs["renew-old"].Cert.Raw) {
		t.Errorf("renew: %d certificates, want the new then the old", len(got))
	}
}

// TestVerdictAllOrNone: one recipient without a certificate blocks the
// message; the others are still answered.
func TestVerdictAllOrNone(t *testing.T) {
	w := newWorld(t)
	res, err := w.svc.LookupCertificates(context.Background(), w.tenant,
		[]string{"alice@example.com", "eve@example.com", "sam@example.com", "Alice@Example.com", "old@example.com"})
	if err != nil {
		t.Fatal(err)
	}
	if res.Verdict != mailpush.SMIMEVerdictCannotEncrypt || strings.Join(res.Blocking, ",") != "sam@example.com,old@example.com" {
		t.Errorf("verdict %s blocking %v", res.Verdict, res.Blocking)
	}
	if len(res.Recipients) != 4 {
		t.Errorf("%d recipients answered, want 4 (duplicates once)", len(res.Recipients))
	}
	for _, addr := range []string{"alice@example.com", "sam@example.com", "old@example.com", "eve@"} {
		if strings.Contains(strings.ToLower(w.logs.String()), addr) {
			t.Errorf("the log carries %q:\n%s", addr, w.logs.String())
		}
	}
	if !strings.Contains(w.logs.String(), "smime lookup") || !strings.Contains(w.logs.String(), ":signing_only") {
		t.Errorf("no lookup log line with hashed blockers:\n%s", w.logs.String())
	}
	res, _ = w.svc.LookupCertificates(context.Background(), w.tenant, []string{"alice@example.com", "eve@example.com"})
	if res.Verdict != mailpush.SMIMEVerdictEncryptAll {
		t.Errorf("verdict %s for two usable recipients", res.Verdict)
	}
}

func TestBadRecipientLists(t *testing.T) {
	w := newWorld(t)
	many := make([]string, 101)
	for i := range many {
		many[i] = fmt.Sprintf("u%d@example.com", i)
	}
	for _, tc := range []struct {
		name string
		list []string
		want string
	}{
		{"empty", nil, "at least one"},
		{"too many", many, "at most 100"},
		{"no at", []string{"alice"}, "recipients[0]"},
		{"display name", []string{"Alice <alice@example.com>"}, "recipients[0]"},
		{"angle", []string{"<alice@example.com>"}, "recipients[0]"},
		{"NUL", []string{"alice@example.com", "a\x00@example.com"}, "recipients[1]: holds a control character"},
		{"newline", []string{"a@example.com\n"}, "control character"},
		{"long", []string{strings.Repeat("a", 250) + "@example.com"}, "longer than 254"},
		{"two", []string{"a@example.com, b@example.com"}, "recipients[0]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := w.slapdQueries()
			_, err := w.svc.LookupCertificates(context.Background(), w.tenant, tc.list)
			if mailpush.ErrorCode(err) != mailpush.EInvalid || !strings.Contains(mailpush.ErrorMessage(err), tc.want) {
				t.Errorf("err = %v, want invalid_request naming %q", err, tc.want)
			}
			if w.slapdQueries() != before {
				t.Errorf("a refused list reached the directory")
			}
		})
	}
	if _, err := w.svc.LookupCertificates(context.Background(), &mailpush.Tenant{ID: "t2", Name: "globex"}, []string{"a@example.com"}); mailpush.ErrorCode(err) != mailpush.EUnsupported {
		t.Errorf("tenant without S/MIME: %v", err)
	}
}

// slapdQueries is a proxy for "nothing was asked": the lookup log lines.
func (w *world) slapdQueries() int { return strings.Count(w.logs.String(), "smime lookup") }

// TestDirectoryDown: a stopped directory is directory_unavailable per
// recipient, within the directory timeout, and cannot_encrypt.
func TestDirectoryDown(t *testing.T) {
	w := newWorld(t)
	w.slapd.Stop()
	res, err := w.svc.LookupCertificates(context.Background(), w.tenant, []string{"alice@example.com", "eve@example.com"})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range res.Recipients {
		if r.Reason != mailpush.SMIMEDirectoryUnavailable {
			t.Errorf("%s: %q", r.Address, r.Reason)
		}
	}
	if res.Verdict != mailpush.SMIMEVerdictCannotEncrypt || len(res.Blocking) != 2 {
		t.Errorf("verdict %+v", res)
	}
}

// TestCRLs: fetched once and reused until due; a CRL that cannot be had
// makes revocation unknown (untrusted_chain), never "not revoked".
func TestCRLs(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	for range 3 {
		w.svc.LookupCertificates(ctx, w.tenant, []string{"alice@example.com"})
	}
	if n := w.crlHits.Load(); n != 1 {
		t.Errorf("CRL fetched %d times for 3 lookups, want 1", n)
	}
	w.clock.Advance(2 * time.Hour) // past crlRefresh (1h): fetched again
	w.svc.LookupCertificates(ctx, w.tenant, []string{"alice@example.com"})
	if n := w.crlHits.Load(); n != 2 {
		t.Errorf("CRL fetched %d times after the refresh, want 2", n)
	}
}

// TestCRLUnavailable: a configured CRL that cannot be fetched makes every
// certificate's revocation status unknown: refused, fail closed. The CRL
// distribution point that a certificate names is never fetched (no SSRF).
func TestCRLUnavailable(t *testing.T) {
	w := newWorld(t)
	w.crlFail.Store(true)
	res, err := w.svc.LookupCertificates(context.Background(), w.tenant, []string{"alice@example.com"})
	if err != nil {
		t.Fatal(err)
	}
	if r := res.Recipients[0]; r.Reason != mailpush.SMIMEUntrustedChain || !strings.Contains(r.Detail, "revocation") {
		t.Errorf("CRL down: %q %q, want untrusted_chain (revocation unknown)", r.Reason, r.Detail)
	}
	w.crlFail.Store(false)
	res, _ = w.svc.LookupCertificates(context.Background(), w.tenant, []string{"alice@example.com"})
	if res.Verdict != mailpush.SMIMEVerdictEncryptAll {
		t.Errorf("CRL back: %+v", res.Recipients[0])
	}
	if n := w.elsewhere.Load(); n != 0 {
		t.Errorf("the certificate's own CRL distribution point was fetched %d times", n)
	}
}

// TestCachedChainExpires: a chain verified once is reused only while every
// certificate in it is valid: once the intermediate expires, the
// certificate is untrusted although it is itself still valid.
func TestCachedChainExpires(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	for range 2 {
		res, _ := w.svc.LookupCertificates(ctx, w.tenant, []string{"shortca@example.com"})
		if res.Verdict != mailpush.SMIMEVerdictEncryptAll {
			t.Fatalf("before the intermediate expires: %+v", res.Recipients[0])
		}
	}
	w.clock.Advance(72 * time.Hour)
	res, _ := w.svc.LookupCertificates(ctx, w.tenant, []string{"shortca@example.com"})
	if r := res.Recipients[0]; r.Reason != mailpush.SMIMEUntrustedChain {
		t.Errorf("after the intermediate expired: %q %q, want untrusted_chain", r.Reason, r.Detail)
	}
}

// TestDirectorySlow: a directory that accepts connections and never
// answers costs a lookup no more than the lookup's timeout (here shorter
// than the directory's, with more recipients than lookups run at once),
// then directory_unavailable for every recipient.
func TestDirectorySlow(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var held []net.Conn
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			held = append(held, c)
		}
	}()
	t.Cleanup(func() {
		l.Close()
		<-done
		for _, c := range held {
			c.Close()
		}
	})
	root := smimetest.NewRoot(t, "Slow Root")
	rootsFile := filepath.Join(t.TempDir(), "roots.pem")
	os.WriteFile(rootsFile, smimetest.PEM(root.Cert), 0o600)
	log := slog.New(slog.DiscardHandler)
	clock := clocktest.New(time.Now())
	d, err := directory.New(directory.Config{URL: "ldap://" + l.Addr().String(), BaseDN: slapdtest.BaseDN,
		Attributes: []string{"userCertificate;binary", "userSMIMECertificate"}, Timeout: time.Hour, DialTimeout: time.Hour}, log, clock) // without the lookup timeout: a hang
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	svc, err := smime.New(smime.Options{Logger: log, Clock: clock}, map[string]smime.Tenant{"acme": {Directory: d,
		Config: smime.Config{RootsFile: rootsFile, Timeout: 300 * time.Millisecond}}})
	if err != nil {
		t.Fatal(err)
	}
	var many []string
	for i := range 20 {
		many = append(many, fmt.Sprintf("u%d@example.com", i))
	}
	res, err := svc.LookupCertificates(context.Background(), &mailpush.Tenant{ID: "t", Name: "acme"}, many)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range res.Recipients {
		if r.Reason != mailpush.SMIMEDirectoryUnavailable {
			t.Errorf("%s: %q", r.Address, r.Reason)
		}
	}
	if res.Verdict != mailpush.SMIMEVerdictCannotEncrypt || len(res.Blocking) != 20 {
		t.Errorf("%+v", res)
	}
}

// TestNoExistenceOracle: the app token ships inside the app, so anyone may
// ask. An address with no entry, with an entry but no certificate, or
// shared by two entries gets the very same answer: the lookup does not
// tell which addresses exist in the directory.
func TestNoExistenceOracle(t *testing.T) {
	w := newWorld(t)
	var answers []mailpush.SMIMERecipient
	for _, a := range []string{"nocert@example.com", "nobody@example.com"} {
		res, err := w.svc.LookupCertificates(context.Background(), w.tenant, []string{a})
		if err != nil {
			t.Fatal(err)
		}
		r := res.Recipients[0]
		r.Address = ""
		answers = append(answers, r)
	}
	if fmt.Sprint(answers[0]) != fmt.Sprint(answers[1]) {
		t.Errorf("an existing entry without certificate answers %+v, a missing one %+v", answers[0], answers[1])
	}
}
