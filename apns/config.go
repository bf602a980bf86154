package apns

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/url"

	"github.com/sideshow/apns2/token"
)

// Apple's endpoints.
const (
	DefaultProductionURL = "https://api.push.apple.com"
	DefaultSandboxURL    = "https://api.sandbox.push.apple.com"
)

// Config configures a Client.
type Config struct {
	ProductionURL string // default DefaultProductionURL
	SandboxURL    string // default DefaultSandboxURL

	// Token authentication (preferred): the team's .p8 auth key.
	TeamID     string // the 10-character Team ID of the Apple developer account
	KeyID      string // the 10-character ID of the APNs auth key
	PrivateKey []byte // the auth key: contents of the AuthKey_<KeyID>.p8 file (PEM)
	// Certificate authentication, instead of the three above: the app's
	// APNs client certificate and key (LoadP12 reads the .p12 export).
	Certificate *tls.Certificate
	Topic       string // the app's bundle ID (default topic of the client)

	RootCAs *x509.CertPool // CAs to trust for APNs; nil means the system roots
	Logger  *slog.Logger   // nil discards
}

// DefaultConfig returns a Config with Apple's endpoints; the credentials and
// topic are left for the caller.
func DefaultConfig() Config {
	return Config{ProductionURL: DefaultProductionURL, SandboxURL: DefaultSandboxURL}
}

// Validate reports every problem of c, each naming the field and the fix.
// Empty URLs are valid: New uses Apple's.
func (c Config) Validate() error {
	var errs []error
	for _, u := range []struct{ field, value string }{
		{"ProductionURL", c.ProductionURL},
		{"SandboxURL", c.SandboxURL},
	} {
		if u.value == "" {
			continue
		}
		if err := checkURL(u.value); err != nil {
			errs = append(errs, fmt.Errorf("apns: Config.%s %q %v: use an https://host[:port] URL, or leave it empty for Apple's", u.field, u.value, err))
		}
	}
	if c.Certificate != nil {
		if c.TeamID != "" || c.KeyID != "" || len(c.PrivateKey) > 0 {
			errs = append(errs, errors.New("apns: Config.Certificate is set together with TeamID, KeyID or PrivateKey: use either certificate or token authentication"))
		}
		if len(c.Certificate.Certificate) == 0 || c.Certificate.PrivateKey == nil {
			errs = append(errs, errors.New("apns: Config.Certificate has no certificate or no private key: export both into the .p12 file"))
		}
		if c.Topic == "" {
			errs = append(errs, errors.New("apns: Config.Topic is empty: set it to the app's bundle ID, e.g. com.example.mail"))
		}
		return errors.Join(errs...)
	}
	if !alnum(c.TeamID) {
		errs = append(errs, errors.New("apns: Config.TeamID must be the Team ID (letters and digits, e.g. ABCDE12345) shown under Membership in the Apple Developer account"))
	}
	if !alnum(c.KeyID) {
		errs = append(errs, errors.New("apns: Config.KeyID must be the Key ID (letters and digits) of the APNs auth key, as in its AuthKey_<KeyID>.p8 file name"))
	}
	if len(c.PrivateKey) == 0 {
		errs = append(errs, errors.New("apns: Config.PrivateKey is empty: set it to the contents of the AuthKey_<KeyID>.p8 file"))
	} else if _, err := parseKey(c.PrivateKey); err != nil {
		errs = append(errs, fmt.Errorf("apns: Config.PrivateKey %w: set it to the unmodified contents of the AuthKey_<KeyID>.p8 file", err))
	}
	if c.Topic == "" {
		errs = append(errs, errors.New("apns: Config.Topic is empty: set it to the app's bundle ID, e.g. com.example.mail"))
	}
	return errors.Join(errs...)
}

func checkURL(s string) error {
	u, err := url.Parse(s)
	switch {
	case err != nil:
		return errors.New("does not parse")
	case u.Scheme != "https":
		return errors.New("is not https (APNs speaks HTTP/2 over TLS only)")
	case u.Host == "":
		return errors.New("has no host")
	case u.Path != "" && u.Path != "/", u.RawQuery != "", u.Fragment != "":
		return errors.New("has a path, query or fragment")
	}
	return nil
}

// parseKey reads an APNs auth key: a PEM PKCS #8 P-256 ECDSA private key.
func parseKey(pemBytes []byte) (*ecdsa.PrivateKey, error) {
	key, err := token.AuthKeyFromBytes(pemBytes)
	if err != nil {
		return nil, fmt.Errorf("is not a PEM PKCS #8 ECDSA key (%v)", err)
	}
	if key.Curve != elliptic.P256() {
		return nil, errors.New("is not a P-256 key (APNs signs with ES256)")
	}
	return key, nil
}

func alnum(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if !('0' <= r && r <= '9' || 'A' <= r && r <= 'Z' || 'a' <= r && r <= 'z') {
			return false
		}
	}
	return true
}
