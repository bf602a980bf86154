// Package slapdtest starts a real OpenLDAP slapd for tests: its own temp
// directory, its own slapd.conf with the mdb backend, a loopback port, the
// standard core/cosine/inetorgperson schemas plus Active Directory's
// proxyAddresses, userPrincipalName and sAMAccountName (with their AD OIDs,
// in the auxiliary class mailpushTestUser), loaded with the
// LDIF that the test supplies.
//
// Without slapd on the machine (Debian: apt-get install slapd ldap-utils)
// Start skips the test with a message saying so — except under CI (the CI
// environment variable set), where it fails it: CI must exercise the real
// server.
package slapdtest

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// BaseDN is the suffix of the test directory; Start creates its entry.
const BaseDN = "dc=example,dc=com"

// AdminDN and AdminPassword are the rootdn, which may also write.
const (
	AdminDN       = "cn=admin," + BaseDN
	AdminPassword = "admin-secret"
)

// Options change how the server runs.
type Options struct {
	// Anonymous lets unauthenticated clients read; otherwise only bound
	// users (and the admin) may.
	Anonymous bool
	// TLS also serves ldaps:// (LDAPSURL) and StartTLS on the ldap://
	// port with a certificate for 127.0.0.1 signed by a fresh CA (CAFile).
	TLS bool
}

// Server is a running slapd.
type Server struct {
	URL      string // ldap://127.0.0.1:port
	LDAPSURL string // ldaps://127.0.0.1:port when Options.TLS
	CAFile   string // PEM of the CA that signed the server certificate when Options.TLS
	Dir      string
	cmd      *exec.Cmd
	done     chan struct{}
}

const schema = `
attributetype ( 1.3.6.1.4.1.55555.1.1 NAME 'proxyAddresses'
	DESC 'Active Directory proxyAddresses, e.g. smtp:alias@example.com'
	EQUALITY caseIgnoreMatch SUBSTR caseIgnoreSubstringsMatch
	SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 )
attributetype ( 1.2.840.113556.1.4.656 NAME 'userPrincipalName'
	DESC 'Active Directory userPrincipalName, e.g. alice@corp.example.com'
	EQUALITY caseIgnoreMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 SINGLE-VALUE )
attributetype ( 1.2.840.113556.1.4.221 NAME 'sAMAccountName'
	DESC 'Active Directory pre-Windows 2000 logon name'
	EQUALITY caseIgnoreMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 SINGLE-VALUE )
objectclass ( 1.3.6.1.4.1.55555.2.1 NAME 'mailpushTestUser' SUP top AUXILIARY
	MAY ( proxyAddresses $ userPrincipalName $ sAMAccountName ) )
`

// Binary returns the slapd path, or "" when it is not installed.
func Binary() string {
	for _, p := range []string{"/usr/sbin/slapd", "/usr/local/libexec/slapd", "/usr/libexec/slapd"} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if p, err := exec.LookPath("slapd"); err == nil {
		return p
	}
	return ""
}

// Require skips t (fails it under CI) when slapd is not installed, and
// returns the slapd path.
func Require(t testing.TB) string {
	t.Helper()
	bin := Binary()
	if bin == "" {
		if os.Getenv("CI") != "" {
			t.Fatal("slapd is not installed but CI is set: install it (apt-get install slapd ldap-utils; .ci/run does)")
		}
		t.Skip("slapd is not installed (apt-get install slapd ldap-utils); skipping the real-directory test")
	}
	return bin
}

// Start runs slapd loaded with ldif (entries under BaseDN; the base entry
// itself is created here) and stops it when the test ends.
func Start(t testing.TB, ldif string, opts Options) *Server {
	t.Helper()
	bin := Require(t)
	dir := t.TempDir()
	s := &Server{Dir: dir, done: make(chan struct{})}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("slapdtest: %v", err)
		}
	}
	must(os.Mkdir(filepath.Join(dir, "db"), 0o700))
	must(os.WriteFile(filepath.Join(dir, "mailpush.schema"), []byte(schema), 0o600))

	schemaDir := "/etc/ldap/schema"
	modulePath := "/usr/lib/ldap"
	var conf strings.Builder
	for _, f := range []string{"core", "cosine", "inetorgperson"} {
		fmt.Fprintf(&conf, "include %s/%s.schema\n", schemaDir, f)
	}
	fmt.Fprintf(&conf, "include %s\n", filepath.Join(dir, "mailpush.schema"))
	fmt.Fprintf(&conf, "pidfile %s\nargsfile %s\n", filepath.Join(dir, "slapd.pid"), filepath.Join(dir, "slapd.args"))
	if _, err := os.Stat(filepath.Join(modulePath, "back_mdb.so")); err == nil {
		fmt.Fprintf(&conf, "modulepath %s\nmoduleload back_mdb\n", modulePath)
	}
	if opts.TLS {
		crt, key, ca := s.writeTLS(t)
		fmt.Fprintf(&conf, "TLSCertificateFile %s\nTLSCertificateKeyFile %s\nTLSCACertificateFile %s\n", crt, key, ca)
	}
	fmt.Fprintf(&conf, "database mdb\nmaxsize 67108864\nsuffix %q\nrootdn %q\nrootpw %s\ndirectory %s\n",
		BaseDN, AdminDN, AdminPassword, filepath.Join(dir, "db"))
	fmt.Fprintf(&conf, "index objectClass eq\nindex mail eq\nindex proxyAddresses eq\n")
	conf.WriteString("access to attrs=userPassword by anonymous auth by self read by * none\n")
	if opts.Anonymous {
		conf.WriteString("access to * by * read\n")
	} else {
		conf.WriteString("access to * by users read by anonymous auth by * none\n")
	}
	confFile := filepath.Join(dir, "slapd.conf")
	must(os.WriteFile(confFile, []byte(conf.String()), 0o600))

	base := "dn: " + BaseDN + "\nobjectClass: dcObject\nobjectClass: organization\ndc: example\no: Example\n\n"
	ldifFile := filepath.Join(dir, "data.ldif")
	must(os.WriteFile(ldifFile, []byte(base+strings.TrimSpace(ldif)+"\n"), 0o600))
	slapadd := exec.Command(bin, "-T", "add", "-q", "-f", confFile, "-l", ldifFile)
	if out, err := slapadd.CombinedOutput(); err != nil {
		t.Fatalf("slapdtest: slapadd: %v\n%s", err, out)
	}

	// The port is chosen by listening on :0 and closing: another process
	// may take it in between, so a failed start is retried on a new one.
	var lastOut []byte
	for attempt := 0; attempt < 5; attempt++ {
		port, tlsPort := freePort(t), ""
		urls := "ldap://127.0.0.1:" + port + "/"
		if opts.TLS {
			tlsPort = freePort(t)
			urls += " ldaps://127.0.0.1:" + tlsPort + "/"
		}
		var out bytes.Buffer
		// -d 0 keeps slapd in the foreground (its child to reap) without
		// debug output; -s 0 keeps syslog quiet.
		cmd := exec.Command(bin, "-d", "0", "-s", "0", "-f", confFile, "-h", urls)
		cmd.Stdout, cmd.Stderr = &out, &out
		must(cmd.Start())
		exited := make(chan struct{})
		go func() { cmd.Wait(); close(exited) }()
		if waitListening("127.0.0.1:"+port, exited) {
			s.cmd, s.done = cmd, exited
			s.URL = "ldap://127.0.0.1:" + port
			if opts.TLS {
				s.LDAPSURL = "ldaps://127.0.0.1:" + tlsPort
			}
			t.Cleanup(s.Stop)
			return s
		}
		cmd.Process.Kill()
		<-exited
		lastOut = out.Bytes()
	}
	t.Fatalf("slapdtest: slapd did not start:\n%s", lastOut)
	return nil
}

// Stop kills slapd and waits for it; safe to call twice (a test may stop
// the directory to see lookups fail).
func (s *Server) Stop() {
	if s.cmd == nil {
		return
	}
	s.cmd.Process.Kill()
	<-s.done
}

func freePort(t testing.TB) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("slapdtest: %v", err)
	}
	defer l.Close()
	_, port, _ := net.SplitHostPort(l.Addr().String())
	return port
}

// waitListening polls addr until it accepts a connection, slapd exits, or
// 30 s pass.
func waitListening(addr string, exited <-chan struct{}) bool {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			return false
		default:
		}
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			return true
		}
		time.Sleep(20 * time.Millisecond) // polling with a deadline, not waiting for an event
	}
	return false
}

// writeTLS makes a CA and a server certificate for 127.0.0.1 and writes
// them as PEM files.
func (s *Server) writeTLS(t testing.TB) (crt, key, ca string) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "slapdtest CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	srvKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	srvTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, DNSNames: []string{"localhost"},
	}
	srvDER, err := x509.CreateCertificate(rand.Reader, srvTmpl, caCert, &srvKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalPKCS8PrivateKey(srvKey)
	write := func(name, typ string, der []byte) string {
		p := filepath.Join(s.Dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	s.CAFile = write("ca.pem", "CERTIFICATE", caDER)
	return write("server.pem", "CERTIFICATE", srvDER), write("server.key", "PRIVATE KEY", keyDER), s.CAFile
}
