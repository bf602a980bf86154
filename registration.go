package mailpush

import (
	"encoding/base64"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Platform is a device's push platform.
type Platform string

const (
	PlatformIOS     Platform = "ios"     // APNs
	PlatformAndroid Platform = "android" // FCM
)

// Environment is the APNs environment a token belongs to.
type Environment string

const (
	EnvProduction Environment = "production"
	EnvSandbox    Environment = "sandbox"
)

// Source is the kind of mail server that watches a mailbox.
type Source string

const (
	SourceEWS     Source = "ews"
	SourceGraph   Source = "graph"
	SourceDovecot Source = "dovecot"
)

// Mode says who subscribes on the mail server (see DESIGN.md).
type Mode string

const (
	ModeSealed           Mode = "sealed"            // mailpush subscribes with credentials sealed by the device
	ModeDeviceSubscribed Mode = "device-subscribed" // the app subscribes with mailpush's callback URL
	ModeService          Mode = "service"           // mailpush subscribes with the tenant's service identity
)

// ContentMode is how much of a message a push may carry, in increasing order.
type ContentMode string

const (
	ContentBadge         ContentMode = "badge"
	ContentSubject       ContentMode = "subject"
	ContentSubjectSender ContentMode = "subject_sender"
)

// Rank orders content modes; an unknown mode ranks -1.
func (c ContentMode) Rank() int {
	switch c {
	case ContentBadge:
		return 0
	case ContentSubject:
		return 1
	case ContentSubjectSender:
		return 2
	}
	return -1
}

// Status is the state of a registration or of a mailbox's subscription.
type Status string

const (
	StatusActive   Status = "active"   // subscribed; pushes flow
	StatusPending  Status = "pending"  // waiting for the mail server to confirm
	StatusInactive Status = "inactive" // ended: deleted, dead token, expired
)

// Tenant is an organisation using the server. Its API credentials are Tokens.
type Tenant struct {
	ID           string
	Name         string
	AllowedHosts []string    // mail-server hosts: "host[:port]" or "*.example.com[:port]"; no port means 443
	MaxContent   ContentMode // the most a push of this tenant may carry
	// DeviceSubscribed says whether the tenant accepts device-subscribed
	// registrations. Such a registration proves only that someone could
	// POST to its callback URL, so its pushes are confined to it; tenants
	// created after this setting existed have it off.
	DeviceSubscribed bool
	CreatedAt        time.Time
}

// HostAllowed reports whether hostport (a host name or IP, optionally with
// ":port"; no port means 443, https's) is one of the tenant's allowed
// mail-server hosts. Entries are "host" (port 443 only), "host:port" (that
// port only), "*.example.com" or "*.example.com:port" (any name under
// example.com, not example.com itself). Matching ignores case and a trailing
// dot. The port matters: credentials go to whatever listens there, and an
// admin who allowed https://mail.example.com did not allow port 22.
func (t *Tenant) HostAllowed(hostport string) bool {
	host, port, ok := splitHostPort(hostport)
	if !ok {
		return false
	}
	for _, a := range t.AllowedHosts {
		ah, ap, ok := splitHostPort(a)
		if !ok || ap != port {
			continue
		}
		if suffix, wild := strings.CutPrefix(ah, "*."); wild {
			if strings.HasSuffix(host, "."+suffix) {
				return true
			}
			continue
		}
		if host == ah {
			return true
		}
	}
	return false
}

// URLAllowed reports whether u is an http(s) URL whose host and port (the
// scheme's default when u names none) the tenant allows. Whether plain http
// is acceptable at all is the caller's decision.
func (t *Tenant) URLAllowed(u *url.URL) bool {
	port := u.Port()
	switch {
	case port != "":
	case u.Scheme == "https":
		port = "443"
	case u.Scheme == "http":
		port = "80"
	default:
		return false
	}
	return u.Hostname() != "" && t.HostAllowed(net.JoinHostPort(u.Hostname(), port))
}

// ValidAllowedHost checks one entry of a tenant's allowed mail-server hosts
// and says what is wrong with it.
func ValidAllowedHost(entry string) error {
	host, _, ok := splitHostPort(entry)
	if !ok || strings.ContainsAny(entry, "/@?#") {
		return Errorf(EInvalid, "allowed host %q must be host, host:port or *.domain[:port] (port 1 to 65535; no scheme or path)", entry)
	}
	name := strings.TrimPrefix(host, "*.")
	if strings.Contains(name, "*") || name == "" {
		return Errorf(EInvalid, "allowed host %q: a wildcard is only allowed as the leading label, as in *.example.com", entry)
	}
	return nil
}

// splitHostPort lower-cases host, drops a trailing dot and IPv6 brackets,
// and gives port 443 when there is none. ok is false for an empty host or a
// port outside 1..65535.
func splitHostPort(s string) (host, port string, ok bool) {
	host, port = s, "443"
	if h, p, err := net.SplitHostPort(s); err == nil {
		host, port = h, p
	} else if strings.HasPrefix(s, "[") && strings.HasSuffix(s, "]") {
		host = s[1 : len(s)-1]
	}
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	n, err := strconv.Atoi(port)
	if host == "" || err != nil || n < 1 || n > 65535 || strconv.Itoa(n) != port {
		return "", "", false
	}
	return host, port, true
}

// CapContent lowers c to the tenant's maximum.
func (t *Tenant) CapContent(c ContentMode) ContentMode {
	if c.Rank() > t.MaxContent.Rank() {
		return t.MaxContent
	}
	return c
}

// Mailbox is one watched mail account of a tenant. Its address is kept only
// as a keyed hash; several registrations (devices) share one mailbox and one
// mail-server subscription.
type Mailbox struct {
	ID             string
	TenantID       string
	AddressHash    []byte // keyed hash of the normalised address
	Source         Source
	Mode           Mode
	ServerURL      string // EWS URL (not personal data: a server's address)
	SubscriptionID string // the mail server's subscription ID, once known
	Watermark      string // last watermark seen (EWS)
	Badge          int    // last unread count pushed, or NoBadge
	Seq            int64  // increases with every event; orders pushes
	Status         Status
	LastEventAt    time.Time // last notification of any kind (incl. status)
	CreatedAt      time.Time
	UpdatedAt      time.Time

	// Address is the mailbox's address while a request that carried it is
	// handled (service mode impersonates it). A store creating the mailbox
	// keeps it as StoredAddress; reading a mailbox never sets Address.
	Address string
	// StoredAddress is the address the store keeps for the mailbox, sealed
	// with its field cipher and bound to the mailbox's ID (StoreCodec's
	// SealAddress; never in clear on disk), for work that no request brings
	// it to: a Graph event resolved by whichever node claims it, a renewal
	// that must make the subscription again, the EWS to Graph cut-over. Set
	// from Address when the mailbox is created; a source that learns it
	// later sets it in UpdateMailbox (written only when it changes, in the
	// same statement). Empty when unknown: a mailbox created before
	// addresses were kept and not heard of since, or a seal that cannot be
	// opened.
	StoredAddress string
}

// NoBadge marks an unknown unread count.
const NoBadge = -1

// Device is the push target of a registration.
type Device struct {
	Platform    Platform
	Token       string // APNs hex token or FCM registration token
	Environment Environment
	ContentKey  []byte // optional X25519 public key for end-to-end encrypted content
	// ActiveSyncDeviceHash links the registration to the device's ActiveSync
	// DeviceId (ActiveSyncDeviceHash), so that the gate's block or wipe
	// removes it; nil when the app did not say.
	ActiveSyncDeviceHash []byte
}

// NormalizeDeviceToken validates a push token of platform p and returns it
// as stored: an APNs token is 64 to 200 hex digits (lower-cased); an FCM
// token is 32 to 4096 characters of [A-Za-z0-9_:-].
func NormalizeDeviceToken(p Platform, tok string) (string, error) {
	switch p {
	case PlatformIOS:
		tok = strings.ToLower(tok)
		if len(tok) < 64 || len(tok) > 200 || len(tok)%2 != 0 || strings.Trim(tok, "0123456789abcdef") != "" {
			return "", Errorf(EInvalid, "device.token is not an APNs device token: it must be 64 to 200 hexadecimal digits")
		}
	case PlatformAndroid:
		if len(tok) < 32 || len(tok) > 4096 || strings.IndexFunc(tok, func(r rune) bool {
			return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-' || r == ':')
		}) >= 0 {
			return "", Errorf(EInvalid, "device.token is not an FCM registration token: 32 to 4096 characters of letters, digits, '_', '-' and ':'")
		}
	default:
		return "", Errorf(EInvalid, "device.platform must be ios or android, not %q", p)
	}
	return tok, nil
}

// Registration binds one device to one mailbox.
type Registration struct {
	ID        string
	TenantID  string
	MailboxID string
	Device    Device
	Content   ContentMode // already capped by tenant policy
	Status    Status
	CreatedAt time.Time
	UpdatedAt time.Time
	ExpiresAt time.Time
}

// Credentials are a user's mail-server credentials, opened from a sealed value
// in memory only. They must never be stored, logged or put in a metric.
//
// OAuth credentials that outlive their first hour carry a refresh token with
// the token endpoint and the client (app) ID it was issued to: the EWS
// source refreshes the access token itself (package ews, oauth.go). The
// token endpoint must lie under one of the tenant's configured OAuth
// authorities, checked before any request is made.
type Credentials struct {
	Username     string `json:"username,omitempty"`
	Password     string `json:"password,omitempty"`
	AccessToken  string `json:"accessToken,omitempty"`
	RefreshToken string `json:"refreshToken,omitempty"`
	TokenURL     string `json:"tokenUrl,omitempty"`
	ClientID     string `json:"clientId,omitempty"`
	// ExpiresAt is when AccessToken expires (Unix seconds); 0 means unknown
	// (it is then used until the mail server refuses it).
	ExpiresAt int64 `json:"expiresAt,omitempty"`

	// A client identity for certificate-based authentication (CBA): the
	// mail server maps the TLS client certificate to its user. Either a
	// PKCS#12 file (standard base64) with its password, or a PEM private
	// key with its PEM certificate chain (leaf first). Package ews opens
	// and checks it in memory; it never travels in a callback URL (too
	// big: see docs/SECURITY.md) and goes with no other credential.
	PKCS12         string `json:"pkcs12,omitempty"`
	PKCS12Password string `json:"pkcs12Password,omitempty"`
	CertificatePEM string `json:"certificatePem,omitempty"`
	PrivateKeyPEM  string `json:"privateKeyPem,omitempty"`
}

// Size caps of OAuth credentials: the refresh token travels in the sealed
// callback URL, which must stay short enough for Exchange to keep.
const (
	MaxRefreshToken = 2 << 10
	MaxAccessToken  = 8 << 10
	MaxTokenURL     = 512
)

// CheckOAuth checks the shape of OAuth credentials: a refresh token comes
// with its token endpoint (an absolute https URL without user info) and
// client ID, and nothing is oversized. Whether the endpoint is one the
// tenant allows is the source's to check.
func (c Credentials) CheckOAuth() error {
	if len(c.AccessToken) > MaxAccessToken {
		return Errorf(EBadSealed, "sealed credentials: accessToken is longer than %d bytes", MaxAccessToken)
	}
	if c.RefreshToken == "" && c.TokenURL == "" && c.ClientID == "" {
		return nil
	}
	if c.RefreshToken == "" || c.TokenURL == "" || c.ClientID == "" {
		return Errorf(EBadSealed, "sealed credentials: refreshToken, tokenUrl and clientId go together (all three or none)")
	}
	if len(c.RefreshToken) > MaxRefreshToken {
		return Errorf(EBadSealed, "sealed credentials: refreshToken is longer than %d bytes", MaxRefreshToken)
	}
	if len(c.ClientID) > 256 {
		return Errorf(EBadSealed, "sealed credentials: clientId is longer than 256 bytes")
	}
	u, err := url.Parse(c.TokenURL)
	if err != nil || len(c.TokenURL) > MaxTokenURL || u.Scheme != "https" || u.Host == "" || u.User != nil || u.Fragment != "" {
		return Errorf(EBadSealed, "sealed credentials: tokenUrl must be an absolute https URL of at most %d bytes, without user info", MaxTokenURL)
	}
	return nil
}

// MaxIdentity caps a PKCS#12 client identity: an identity with a few
// intermediates is a few KiB. MaxIdentityPEM caps each part of a PEM one
// (the chain, the key): half as much again, so that whatever a PKCS#12
// under MaxIdentity holds fits in PEM form (base64 and the armour add about
// a third), which is the form the registrar hands on once it has opened a
// PKCS#12 (CredentialPreparer).
const (
	MaxIdentity    = 16 << 10
	MaxIdentityPEM = MaxIdentity * 3 / 2
)

// HasIdentity reports whether c carries a client identity (CBA).
func (c Credentials) HasIdentity() bool {
	return c.PKCS12 != "" || c.PKCS12Password != "" || c.CertificatePEM != "" || c.PrivateKeyPEM != ""
}

// CheckIdentity checks the shape of a client identity: a PKCS#12 or a PEM
// key and chain, not both, nothing oversized, and no other credential
// beside it. Opening it (password, key, validity, usage) is the source's.
func (c Credentials) CheckIdentity() error {
	if !c.HasIdentity() {
		return nil
	}
	if c.Username != "" || c.Password != "" || c.AccessToken != "" || c.RefreshToken != "" || c.TokenURL != "" || c.ClientID != "" {
		return Errorf(EBadSealed, "sealed credentials: a client identity (pkcs12 or certificatePem/privateKeyPem) goes alone, without username, password or tokens")
	}
	pem := c.CertificatePEM != "" || c.PrivateKeyPEM != ""
	switch {
	case c.PKCS12 != "" && pem:
		return Errorf(EBadSealed, "sealed credentials: send the client identity either as pkcs12 (with pkcs12Password) or as certificatePem and privateKeyPem, not both")
	case c.PKCS12 == "" && c.PKCS12Password != "":
		return Errorf(EBadSealed, "sealed credentials: pkcs12Password without pkcs12")
	case pem && (c.CertificatePEM == "" || c.PrivateKeyPEM == ""):
		return Errorf(EBadSealed, "sealed credentials: certificatePem and privateKeyPem go together")
	case len(c.PKCS12) > base64.StdEncoding.EncodedLen(MaxIdentity):
		return Errorf(EBadSealed, "sealed credentials: pkcs12 is longer than %d bytes (before base64)", MaxIdentity)
	case len(c.CertificatePEM) > MaxIdentityPEM:
		return Errorf(EBadSealed, "sealed credentials: certificatePem is longer than %d bytes", MaxIdentityPEM)
	case len(c.PrivateKeyPEM) > MaxIdentityPEM:
		return Errorf(EBadSealed, "sealed credentials: privateKeyPem is longer than %d bytes", MaxIdentityPEM)
	}
	return nil
}

// Refreshable reports whether c can get itself a new access token.
func (c Credentials) Refreshable() bool {
	return c.RefreshToken != "" && c.TokenURL != "" && c.ClientID != ""
}

// String hides the secrets from fmt and slog.
func (Credentials) String() string { return "Credentials{…}" }

// LogValue hides the secrets from slog, whatever its handler (a JSON
// handler would otherwise marshal every field).
func (c Credentials) LogValue() slog.Value { return slog.StringValue(c.String()) }

// GoString hides the secrets from %#v.
func (c Credentials) GoString() string { return c.String() }

// Empty reports whether c holds no usable credential.
func (c Credentials) Empty() bool {
	return (c.Username == "" || c.Password == "") && c.AccessToken == "" && !c.Refreshable() && !c.HasIdentity()
}

// WantsContent reports whether some registration may show subject or
// sender: only then does a source fetch them.
func WantsContent(regs []*Registration) bool {
	for _, r := range regs {
		if r.Content.Rank() >= ContentSubject.Rank() {
			return true
		}
	}
	return false
}

// Record counts an event in the mailbox: the next sequence number, and the
// event's badge when it knows one.
func (m *Mailbox) Record(ev Event) {
	m.Seq++
	if ev.Badge != NoBadge {
		m.Badge = ev.Badge
	}
}
