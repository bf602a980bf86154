package autodiscover

import (
	"crypto"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/smallstep/pkcs7"
	"howett.net/plist"

	"github.com/mailpush/mailpush"
)

// ProfileSigner signs Apple configuration profiles (CMS SignedData, the
// profile as encapsulated content), so that iOS and macOS show the profile
// as verified by the signer's certificate.
//
// CMS signing uses github.com/smallstep/pkcs7: the maintained fork of
// fullsailor/pkcs7 (go.mozilla.org/pkcs7 is archived), used by step-ca for
// exactly this kind of work, with SHA-256 digests and RSA or ECDSA keys.
// The standard library has no CMS, and hand-written ASN.1 for a signature
// format is what a well-kept library is for.
type ProfileSigner struct {
	cert  *x509.Certificate
	chain []*x509.Certificate // intermediates sent beside it
	key   crypto.PrivateKey
}

// LoadProfileSigner reads a PEM certificate (its chain may follow it in the
// same file) and its PEM private key.
func LoadProfileSigner(certFile, keyFile string) (*ProfileSigner, error) {
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, err
	}
	s := &ProfileSigner{key: pair.PrivateKey}
	for i, der := range pair.Certificate {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fmt.Errorf("%s: certificate %d: %w", certFile, i+1, err)
		}
		if i == 0 {
			s.cert = c
		} else {
			s.chain = append(s.chain, c)
		}
	}
	return s, nil
}

// Sign returns the DER CMS SignedData holding content.
func (s *ProfileSigner) Sign(content []byte) ([]byte, error) {
	sd, err := pkcs7.NewSignedData(content)
	if err != nil {
		return nil, err
	}
	sd.SetDigestAlgorithm(pkcs7.OIDDigestAlgorithmSHA256)
	if err := sd.AddSignerChain(s.cert, s.key, s.chain, pkcs7.SignerInfoConfig{}); err != nil {
		return nil, err
	}
	return sd.Finish()
}

// profile is a configuration profile (Apple's "Configuration" payload).
type profile struct {
	PayloadType         string    `plist:"PayloadType"`
	PayloadVersion      int       `plist:"PayloadVersion"`
	PayloadIdentifier   string    `plist:"PayloadIdentifier"`
	PayloadUUID         string    `plist:"PayloadUUID"`
	PayloadDisplayName  string    `plist:"PayloadDisplayName"`
	PayloadDescription  string    `plist:"PayloadDescription"`
	PayloadOrganization string    `plist:"PayloadOrganization,omitempty"`
	PayloadContent      []payload `plist:"PayloadContent"`
}

// payload is one account: com.apple.eas.account (Exchange ActiveSync) or
// com.apple.mail.managed (IMAP and SMTP).
type payload struct {
	PayloadType        string `plist:"PayloadType"`
	PayloadVersion     int    `plist:"PayloadVersion"`
	PayloadIdentifier  string `plist:"PayloadIdentifier"`
	PayloadUUID        string `plist:"PayloadUUID"`
	PayloadDisplayName string `plist:"PayloadDisplayName"`
	EmailAddress       string `plist:"EmailAddress"`
	// com.apple.eas.account
	Host     string `plist:"Host,omitempty"`
	SSL      *bool  `plist:"SSL,omitempty"`
	UserName string `plist:"UserName,omitempty"`
	// com.apple.mail.managed
	EmailAccountType                       string `plist:"EmailAccountType,omitempty"`
	EmailAccountDescription                string `plist:"EmailAccountDescription,omitempty"`
	IncomingMailServerHostName             string `plist:"IncomingMailServerHostName,omitempty"`
	IncomingMailServerPortNumber           int    `plist:"IncomingMailServerPortNumber,omitempty"`
	IncomingMailServerUseSSL               *bool  `plist:"IncomingMailServerUseSSL,omitempty"`
	IncomingMailServerUsername             string `plist:"IncomingMailServerUsername,omitempty"`
	IncomingMailServerAuthentication       string `plist:"IncomingMailServerAuthentication,omitempty"`
	OutgoingMailServerHostName             string `plist:"OutgoingMailServerHostName,omitempty"`
	OutgoingMailServerPortNumber           int    `plist:"OutgoingMailServerPortNumber,omitempty"`
	OutgoingMailServerUseSSL               *bool  `plist:"OutgoingMailServerUseSSL,omitempty"`
	OutgoingMailServerUsername             string `plist:"OutgoingMailServerUsername,omitempty"`
	OutgoingMailServerAuthentication       string `plist:"OutgoingMailServerAuthentication,omitempty"`
	OutgoingPasswordSameAsIncomingPassword *bool  `plist:"OutgoingPasswordSameAsIncomingPassword,omitempty"`
}

// Profile returns the configuration profile of address for the built-in
// Mail app: an Exchange ActiveSync account when the site has an ActiveSync
// URL, else an IMAP/SMTP account. Its identifiers are derived from the
// domain and the address, so that installing it again replaces it.
func (r *Responder) Profile(address string) ([]byte, error) {
	_, domain, err := SplitAddress(address)
	if err != nil {
		return nil, err
	}
	site := r.site(domain)
	if site == nil || (site.ActiveSyncURL == "" && site.IMAP == nil) {
		return nil, mailpush.Errorf(mailpush.ENotFound, "no mail settings for this address")
	}
	yes := true
	ident := "mailpush." + reverseDomain(domain)
	name := site.DisplayName
	if name == "" {
		name = domain
	}
	p := profile{
		PayloadType: "Configuration", PayloadVersion: 1,
		PayloadIdentifier: ident, PayloadUUID: uuidOf("profile", address),
		PayloadDisplayName: name + " mail", PayloadDescription: "Sets up the mail account " + address + ".",
		PayloadOrganization: site.DisplayName,
	}
	acc := payload{PayloadVersion: 1, PayloadDisplayName: name, EmailAddress: address}
	if site.ActiveSyncURL != "" {
		u, _ := url.Parse(site.ActiveSyncURL) // checked by NewResponder
		acc.PayloadType, acc.PayloadIdentifier, acc.PayloadUUID = "com.apple.eas.account", ident+".eas", uuidOf("eas", address)
		acc.Host, acc.SSL, acc.UserName = u.Host, &yes, address
	} else {
		in, out := site.IMAP, site.SMTP
		acc.PayloadType, acc.PayloadIdentifier, acc.PayloadUUID = "com.apple.mail.managed", ident+".imap", uuidOf("imap", address)
		acc.EmailAccountType, acc.EmailAccountDescription = "EmailTypeIMAP", name
		acc.IncomingMailServerHostName, acc.IncomingMailServerPortNumber = in.Host, in.Port
		acc.IncomingMailServerUseSSL, acc.IncomingMailServerUsername, acc.IncomingMailServerAuthentication = &yes, address, "EmailAuthPassword"
		acc.OutgoingMailServerHostName, acc.OutgoingMailServerPortNumber = out.Host, out.Port
		acc.OutgoingMailServerUseSSL, acc.OutgoingMailServerUsername, acc.OutgoingMailServerAuthentication = &yes, address, "EmailAuthPassword"
		acc.OutgoingPasswordSameAsIncomingPassword = &yes
	}
	p.PayloadContent = []payload{acc}
	data, err := plist.MarshalIndent(p, plist.XMLFormat, "\t")
	if err != nil {
		return nil, err
	}
	if site.Profile == nil {
		return data, nil
	}
	signed, err := site.Profile.Sign(data)
	if err != nil {
		return nil, mailpush.WrapError(mailpush.EInternal, "cannot sign the configuration profile", err)
	}
	return signed, nil
}

func (r *Responder) serveMobileconfig(w http.ResponseWriter, req *http.Request) {
	data, err := r.Profile(req.URL.Query().Get("emailaddress"))
	if err != nil {
		status := http.StatusBadRequest
		switch mailpush.ErrorCode(err) {
		case mailpush.ENotFound:
			status = http.StatusNotFound
		case mailpush.EInternal:
			r.logger.Error("autodiscover: configuration profile", "err", err)
			status = http.StatusInternalServerError
		}
		http.Error(w, mailpush.ErrorCode(err)+": "+mailpush.ErrorMessage(err), status)
		return
	}
	w.Header().Set("Content-Type", "application/x-apple-aspen-config")
	w.Header().Set("Content-Disposition", `attachment; filename="mail.mobileconfig"`)
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Content-Length", strconv.Itoa(len(data)))
	w.Write(data)
}

// reverseDomain turns mail.example.com into com.example.mail.
func reverseDomain(d string) string {
	parts := strings.Split(d, ".")
	for i, j := 0, len(parts)-1; i < j; i, j = i+1, j-1 {
		parts[i], parts[j] = parts[j], parts[i]
	}
	return strings.Join(parts, ".")
}

// uuidOf is a name-based UUID (version 5 layout over SHA-256) of kind and
// the lower-cased address: stable across downloads, so a profile installed
// again replaces the old one instead of adding a second account.
func uuidOf(kind, address string) string {
	h := sha256.Sum256([]byte("mailpush-profile\x00" + kind + "\x00" + strings.ToLower(address)))
	h[6] = h[6]&0x0f | 0x50
	h[8] = h[8]&0x3f | 0x80
	return fmt.Sprintf("%X-%X-%X-%X-%X", h[0:4], h[4:6], h[6:8], h[8:10], h[10:16])
}
