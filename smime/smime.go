// Package smime serves recipients' S/MIME encryption certificates to mail
// apps from the tenant's directory, so that an app encrypts to every
// recipient or knows exactly why it cannot (encryption is all or none), and
// classifies certificates and PKCS#12 files as signing-only,
// encryption-only or both. It implements mailpush.SMIME.
//
// # Which certificate is usable (RFC 8550, RFC 8551)
//
// For each recipient the tenant's directory (mailpush.Directory) is asked
// for the entry of the address; the certificates are read from the
// configured attributes (default userCertificate;binary and
// userSMIMECertificate), each value a DER certificate or a PKCS#7
// certs-only bundle (Active Directory's userSMIMECertificate). CA
// certificates found there serve as intermediates beside the tenant's
// configured ones. Every other certificate is checked, in this order; the
// first failed check is its reason:
//
//  1. extended key usage absent or holding emailProtection, else it is no
//     S/MIME certificate (no_certificate);
//  2. key usage absent or allowing encryption for its key type:
//     keyEncipherment for RSA, keyAgreement for EC (signing_only);
//  3. the address in a SAN rfc822Name, or in the subject's emailAddress
//     when the certificate has no rfc822Name (wrong_email); compared
//     case-insensitively;
//  4. now within NotBefore..NotAfter (not_yet_valid, expired);
//  5. a chain to the tenant's roots (rootsFile), through its configured
//     and the directory's intermediates, each valid now and allowed
//     emailProtection (untrusted_chain);
//  6. not revoked by a CRL of its issuer among the tenant's configured CRL
//     URLs (revoked). CRLs are fetched from those URLs only — never from a
//     certificate's distribution points, so a certificate cannot make
//     mailpush fetch anything (no SSRF) — without redirects, size-capped,
//     signature-checked against the issuer, kept until their nextUpdate
//     (or crlRefresh, if sooner). When a configured CRL cannot be had, the
//     revocation status of every certificate is unknown, and the
//     certificate is refused as untrusted_chain (fail closed).
//
// Every certificate that passes is returned, newest first (latest
// NotBefore, then latest NotAfter): the first is the one to use, so that a
// renewed certificate wins over the one it replaces. When none passes, the
// reason is that of the certificate that got furthest through the checks
// (the newest among equals). A directory that does not answer within its
// timeout gives directory_unavailable; the whole lookup is bounded by
// Config.Timeout, however many recipients. No entry, several entries and an
// entry without certificates all answer no_certificate with the same
// sentence: the app token ships inside the app, and the lookup must not
// tell anyone which addresses exist in the directory. Verified chains are
// cached per certificate until the earliest NotAfter in the chain (the
// signature checks are most of a lookup's CPU). The verdict is encrypt_all when
// every recipient has a certificate, else cannot_encrypt with the blocking
// recipients.
//
// # Classification
//
// Classify (POST /api/v1/smime/classify, mailpush smime classify) reads
// PEM (CERTIFICATE, TRUSTED CERTIFICATE, PKCS7), DER certificates, PKCS#7
// certs-only bundles and PKCS#12 files, and names each certificate
// signing_only, encryption_only, both, neither (extended key usage without
// emailProtection) or ca, by the rules of checks 1 and 2 above. This agrees
// with `openssl x509 -purpose` (S/MIME signing, S/MIME encryption) except
// where OpenSSL looks for keyEncipherment on an EC key, which cannot do key
// transport: there the keyAgreement bit decides (RFC 8550 4.4.2), and
// Ed25519 keys never encrypt. A PKCS#12 asking for more than
// MaxPKCS12Iterations key-derivation iterations is refused unopened (the
// count is the file maker's choice, and go-pkcs12 would run any), and the
// service runs at most two classifications at once.
//
// # Privacy
//
// Looked-up addresses are never logged in clear: the lookup log line
// carries the tenant, counts, the verdict and keyed hashes
// (mailpush.AddressHasher) of the blocking recipients.
//
// # Dependencies
//
// PKCS#7 certificate bundles are read with github.com/smallstep/pkcs7, the
// maintained fork of mozilla/pkcs7 (archived) that step-ca uses, and the
// one the tests use to encrypt and sign CMS messages that openssl cms
// opens and verifies (its encryption choices are package variables, so
// mailpush itself only parses with it); PKCS#12 with software.sslmate.com/src/go-pkcs12,
// which the module already used for APNs certificates.
package smime

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/asn1"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/mail"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/smallstep/pkcs7"

	"github.com/mailpush/mailpush"
)

// Config is a tenant's S/MIME settings: tenants.<name>.smime.
type Config struct {
	// RootsFile is a PEM bundle of the CA certificates that recipients'
	// certificates must chain to.
	RootsFile string `yaml:"rootsFile"`
	// IntermediatesFile is an optional PEM bundle of intermediate CAs
	// (the directory's CA certificates are used too).
	IntermediatesFile string `yaml:"intermediatesFile"`
	// CertificateAttributes are the directory attributes holding
	// certificates; the directory must read them. Default
	// userCertificate;binary and userSMIMECertificate.
	CertificateAttributes []string `yaml:"certificateAttributes"`
	// MaxRecipients caps a lookup's recipient list; default 100.
	MaxRecipients int `yaml:"maxRecipients"`
	// Timeout bounds a whole lookup, however many recipients and however
	// slow the directory: recipients not answered by then are
	// directory_unavailable. Default 10s.
	Timeout time.Duration `yaml:"timeout"`
	// CRLs are the URLs (http or https) of the CRLs to check revocation
	// against; the only URLs mailpush fetches for S/MIME.
	CRLs       []string      `yaml:"crls"`
	CRLRefresh time.Duration `yaml:"crlRefresh"` // default 1h
	CRLTimeout time.Duration `yaml:"crlTimeout"` // one fetch; default 5s
}

// DefaultCertificateAttributes are Active Directory's and inetOrgPerson's.
var DefaultCertificateAttributes = []string{"userCertificate;binary", "userSMIMECertificate"}

// MaxCRLSize caps a fetched CRL.
const MaxCRLSize = 16 << 20

// Defaults fills the zero fields of c.
func (c Config) Defaults() Config {
	if len(c.CertificateAttributes) == 0 {
		c.CertificateAttributes = DefaultCertificateAttributes
	}
	if c.MaxRecipients == 0 {
		c.MaxRecipients = 100
	}
	if c.CRLRefresh == 0 {
		c.CRLRefresh = time.Hour
	}
	if c.Timeout == 0 {
		c.Timeout = 10 * time.Second
	}
	if c.CRLTimeout == 0 {
		c.CRLTimeout = 5 * time.Second
	}
	return c
}

// Validate reports the first problem of c (after Defaults), naming the key
// below the smime block.
func (c Config) Validate() error {
	switch {
	case c.RootsFile == "":
		return errors.New("rootsFile: required: the PEM bundle of the CAs recipients' certificates chain to")
	case c.MaxRecipients < 1 || c.MaxRecipients > 1000:
		return fmt.Errorf("maxRecipients: %d must be 1 to 1000", c.MaxRecipients)
	case c.CRLRefresh < time.Minute:
		return fmt.Errorf("crlRefresh: %v is too short: at least 1m", c.CRLRefresh)
	case c.CRLTimeout <= 0:
		return errors.New("crlTimeout: must be positive")
	case c.Timeout <= 0:
		return errors.New("timeout: must be positive")
	}
	for _, u := range c.CRLs {
		p, err := url.Parse(u)
		if err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" {
			return fmt.Errorf("crls: %q is not an http(s) URL", u)
		}
	}
	return nil
}

// Tenant is what New needs for one tenant.
type Tenant struct {
	Config    Config
	Directory mailpush.Directory
}

// Options are the service's dependencies.
type Options struct {
	Logger *slog.Logger
	Clock  mailpush.Clock
	Hasher mailpush.AddressHasher // for the lookup log
	// HTTP fetches CRLs; its redirects are turned off here. nil: a
	// client with no other settings.
	HTTP *http.Client
}

// Service implements mailpush.SMIME for the tenants configured.
type Service struct {
	opts    Options
	tenants map[string]*tenant // by tenant name
	// classifying bounds the classifications (PKCS#12 key derivation is
	// CPU work chosen by the file's maker) running at once.
	classifying chan struct{}
}

// classifyWorkers is how many classifications run at once; others wait.
const classifyWorkers = 2

type tenant struct {
	cfg           Config
	dir           mailpush.Directory
	roots         *x509.CertPool
	intermediates []*x509.Certificate
	crls          *crlSet
	chains        chainCache
}

// chainCache keeps the chains verified per certificate (by SHA-256): a
// chain that verified stays valid while now is within the validity of all
// its certificates (the roots are fixed for the process), and ECDSA/RSA
// verification is most of a lookup's CPU. Bounded: when full it is
// emptied.
type chainCache struct {
	mu sync.Mutex
	m  map[[32]byte]verifiedChain
}

type verifiedChain struct {
	chain       []*x509.Certificate
	from, until time.Time
}

const maxChainCache = 10000

func (c *chainCache) get(sum [32]byte, now time.Time) ([]*x509.Certificate, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	v, ok := c.m[sum]
	if !ok || now.Before(v.from) || !now.Before(v.until) {
		return nil, false
	}
	return v.chain, true
}

func (c *chainCache) put(sum [32]byte, chain []*x509.Certificate) {
	v := verifiedChain{chain: chain, until: chain[0].NotAfter, from: chain[0].NotBefore}
	for _, ct := range chain[1:] {
		if ct.NotBefore.After(v.from) {
			v.from = ct.NotBefore
		}
		if ct.NotAfter.Before(v.until) {
			v.until = ct.NotAfter
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil || len(c.m) >= maxChainCache {
		c.m = make(map[[32]byte]verifiedChain)
	}
	c.m[sum] = v
}

var _ mailpush.SMIME = (*Service)(nil)

// New validates each tenant's configuration, reads its roots and
// intermediates, and returns the service. Tenants are by name.
func New(opts Options, tenants map[string]Tenant) (*Service, error) {
	client := &http.Client{}
	if opts.HTTP != nil {
		c := *opts.HTTP
		client = &c
	}
	// A configured CRL URL must not lead anywhere else.
	client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	s := &Service{opts: opts, tenants: map[string]*tenant{}, classifying: make(chan struct{}, classifyWorkers)}
	for name, t := range tenants {
		cfg := t.Config.Defaults()
		if err := cfg.Validate(); err != nil {
			return nil, fmt.Errorf("tenants.%s.smime.%w", name, err)
		}
		if t.Directory == nil {
			return nil, fmt.Errorf("tenants.%s.smime: needs tenants.%s.directory", name, name)
		}
		roots, err := readPEMFile(cfg.RootsFile)
		if err != nil {
			return nil, fmt.Errorf("tenants.%s.smime.rootsFile: %w", name, err)
		}
		tn := &tenant{cfg: cfg, dir: t.Directory, roots: x509.NewCertPool(),
			crls: newCRLSet(cfg, client, opts.Clock, opts.Logger.With("tenant", name))}
		for _, c := range roots {
			tn.roots.AddCert(c)
		}
		if cfg.IntermediatesFile != "" {
			if tn.intermediates, err = readPEMFile(cfg.IntermediatesFile); err != nil {
				return nil, fmt.Errorf("tenants.%s.smime.intermediatesFile: %w", name, err)
			}
		}
		s.tenants[name] = tn
	}
	return s, nil
}

func readPEMFile(path string) ([]*x509.Certificate, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	certs, err := parsePEM(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %s", path, mailpush.ErrorMessage(err))
	}
	return certs, nil
}

// MaxAddressLen is RFC 5321's limit on a path: 254 octets of address.
const MaxAddressLen = 254

// checkRecipients refuses a malformed or oversized list; it returns the
// distinct addresses (case-insensitively), in order of first appearance.
func checkRecipients(list []string, max int) ([]string, error) {
	if len(list) == 0 {
		return nil, mailpush.Errorf(mailpush.EInvalid, "recipients: give at least one address")
	}
	if len(list) > max {
		return nil, mailpush.Errorf(mailpush.EInvalid, "recipients: %d addresses; at most %d per lookup", len(list), max)
	}
	seen := map[string]bool{}
	out := make([]string, 0, len(list))
	for i, a := range list {
		if len(a) > MaxAddressLen {
			return nil, mailpush.Errorf(mailpush.EInvalid, "recipients[%d]: longer than %d bytes", i, MaxAddressLen)
		}
		if strings.ContainsFunc(a, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
			return nil, mailpush.Errorf(mailpush.EInvalid, "recipients[%d]: holds a control character", i)
		}
		p, err := mail.ParseAddress(a)
		if err != nil || p.Address != a || p.Name != "" {
			return nil, mailpush.Errorf(mailpush.EInvalid, "recipients[%d]: not a bare email address (local@domain, without a name or angle brackets)", i)
		}
		if k := strings.ToLower(a); !seen[k] {
			seen[k] = true
			out = append(out, a)
		}
	}
	return out, nil
}

// lookupWorkers bounds the directory lookups one request runs at once
// (the directory's pool bounds them per tenant again).
const lookupWorkers = 8

// LookupCertificates implements mailpush.SMIME.
func (s *Service) LookupCertificates(ctx context.Context, t *mailpush.Tenant, recipients []string) (mailpush.SMIMELookup, error) {
	tn := s.tenants[t.Name]
	if tn == nil {
		return mailpush.SMIMELookup{}, mailpush.Errorf(mailpush.EUnsupported, "S/MIME lookup is not configured for this tenant (tenants.<name>.smime and .directory)")
	}
	addrs, err := checkRecipients(recipients, tn.cfg.MaxRecipients)
	if err != nil {
		return mailpush.SMIMELookup{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, tn.cfg.Timeout)
	defer cancel()
	res := mailpush.SMIMELookup{Recipients: make([]mailpush.SMIMERecipient, len(addrs)), Verdict: mailpush.SMIMEVerdictEncryptAll}
	var wg sync.WaitGroup
	sem := make(chan struct{}, lookupWorkers)
	for i, a := range addrs {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			res.Recipients[i] = s.recipient(ctx, tn, a)
		}()
	}
	wg.Wait()
	var hashes []string
	for _, r := range res.Recipients {
		if r.Reason != "" {
			res.Verdict = mailpush.SMIMEVerdictCannotEncrypt
			res.Blocking = append(res.Blocking, r.Address)
			hashes = append(hashes, s.hash(t.ID, r.Address)+":"+r.Reason)
		}
	}
	s.opts.Logger.Info("smime lookup", "tenant", t.ID, "recipients", len(addrs), "verdict", res.Verdict, "blocking", hashes)
	return res, nil
}

func (s *Service) hash(tenantID, addr string) string {
	if s.opts.Hasher == nil {
		return "-"
	}
	h := s.opts.Hasher.HashAddress(tenantID, strings.ToLower(addr))
	return hex.EncodeToString(h[:min(8, len(h))])
}

// recipient finds and checks one recipient's certificates.
func (s *Service) recipient(ctx context.Context, tn *tenant, addr string) mailpush.SMIMERecipient {
	r := mailpush.SMIMERecipient{Address: addr}
	// No entry, several entries, an entry without certificates: one answer,
	// so that the app token (which anyone may hold) does not tell which
	// addresses exist in the directory.
	const noCert = "the directory has no certificate for the address"
	e, err := tn.dir.Lookup(ctx, addr)
	switch mailpush.ErrorCode(err) {
	case "":
	case mailpush.ENotFound, mailpush.EConflict, mailpush.EInvalid:
		r.Reason, r.Detail = mailpush.SMIMENoCertificate, noCert
		return r
	default:
		r.Reason, r.Detail = mailpush.SMIMEDirectoryUnavailable, "the directory did not answer; try again later"
		return r
	}
	var leaves, cas []*x509.Certificate
	for _, attr := range tn.cfg.CertificateAttributes {
		for _, v := range e.Values(attr) {
			for _, c := range certsOf(v) {
				if c.BasicConstraintsValid && c.IsCA {
					cas = append(cas, c)
				} else {
					leaves = append(leaves, c)
				}
			}
		}
	}
	if len(leaves) == 0 {
		r.Reason, r.Detail = mailpush.SMIMENoCertificate, noCert
		return r
	}
	inter := x509.NewCertPool()
	for _, c := range append(cas, tn.intermediates...) {
		inter.AddCert(c)
	}
	// Newest first: the order of the answer, and the tie-break between
	// failures that got equally far.
	slices.SortStableFunc(leaves, func(a, b *x509.Certificate) int {
		if c := b.NotBefore.Compare(a.NotBefore); c != 0 {
			return c
		}
		return b.NotAfter.Compare(a.NotAfter)
	})
	now := s.opts.Clock.Now()
	best := -1
	seen := map[[32]byte]bool{}
	for _, c := range leaves {
		sum := sha256.Sum256(c.Raw)
		if seen[sum] {
			continue
		}
		seen[sum] = true
		stage, reason, detail := tn.check(ctx, c, sum, addr, inter, now)
		if reason == "" {
			r.Certificates = append(r.Certificates, mailpush.SMIMECertificate{
				DER: c.Raw, SHA256: hex.EncodeToString(sum[:]), Subject: c.Subject.String(), NotBefore: c.NotBefore, NotAfter: c.NotAfter,
			})
			continue
		}
		if stage > best {
			best, r.Reason, r.Detail = stage, reason, detail
		}
	}
	if len(r.Certificates) > 0 {
		r.Reason, r.Detail = "", ""
	}
	return r
}

// certsOf reads a directory value: a DER certificate or a PKCS#7 bundle.
// Values that are neither are skipped.
func certsOf(v []byte) []*x509.Certificate {
	if c, err := x509.ParseCertificate(v); err == nil {
		return []*x509.Certificate{c}
	}
	if p7, err := pkcs7.Parse(v); err == nil {
		return p7.Certificates
	}
	return nil
}

// check runs the checks of the package doc on c; it returns how many it
// passed and, when one failed, the reason and a sentence.
func (tn *tenant) check(ctx context.Context, c *x509.Certificate, sum [32]byte, addr string, inter *x509.CertPool, now time.Time) (int, string, string) {
	u := usageOf(c)
	if !u.email {
		return 0, mailpush.SMIMENoCertificate, "the certificate's extended key usage does not include emailProtection"
	}
	if !u.encrypt {
		return 1, mailpush.SMIMESigningOnly, "the certificate may sign but not encrypt (key usage)"
	}
	if !hasAddress(c, addr) {
		return 2, mailpush.SMIMEWrongEmail, "the certificate is for another address"
	}
	if now.Before(c.NotBefore) {
		return 3, mailpush.SMIMENotYetValid, "the certificate is valid from " + c.NotBefore.UTC().Format(time.RFC3339)
	}
	if now.After(c.NotAfter) {
		return 3, mailpush.SMIMEExpired, "the certificate expired on " + c.NotAfter.UTC().Format(time.RFC3339)
	}
	chain, ok := tn.chains.get(sum, now)
	if !ok {
		chains, err := c.Verify(x509.VerifyOptions{
			Roots: tn.roots, Intermediates: inter, CurrentTime: now,
			KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageEmailProtection},
		})
		if err != nil {
			return 4, mailpush.SMIMEUntrustedChain, "the certificate does not chain to the tenant's trusted roots"
		}
		chain = chains[0]
		tn.chains.put(sum, chain)
	}
	if len(tn.cfg.CRLs) == 0 {
		return 6, "", ""
	}
	revoked, err := tn.crls.revoked(ctx, chain)
	if err != nil {
		return 5, mailpush.SMIMEUntrustedChain, "the certificate's revocation status is unknown: a configured CRL cannot be had"
	}
	if revoked {
		return 5, mailpush.SMIMERevoked, "the certificate is revoked (CRL)"
	}
	return 6, "", ""
}

var oidEmailAddress = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 1}

// addressesOf lists the certificate's addresses: its SAN rfc822Names, or,
// when it has none, its subject's emailAddress attributes (RFC 8550
// section 3).
func addressesOf(c *x509.Certificate) []string {
	if len(c.EmailAddresses) > 0 {
		return c.EmailAddresses
	}
	var out []string
	for _, n := range c.Subject.Names {
		if s, ok := n.Value.(string); ok && n.Type.Equal(oidEmailAddress) {
			out = append(out, s)
		}
	}
	return out
}

func hasAddress(c *x509.Certificate, addr string) bool {
	for _, a := range addressesOf(c) {
		if strings.EqualFold(a, addr) {
			return true
		}
	}
	return false
}
