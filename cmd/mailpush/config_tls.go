package main

import (
	"crypto/tls"
	"fmt"
	"slices"
	"strings"
)

// TLSConfig is how mailpush serves HTTPS. Every client of mailpush is
// modern (the mail apps, Exchange 2013 and later, reverse proxies), so the
// defaults are strict: TLS 1.2 at least, and with TLS 1.2 only ECDHE key
// exchange (forward secrecy) with AEAD ciphers (AES-GCM, ChaCha20-Poly1305),
// the GCM suites of the Exchange notification-server recommendation plus
// ChaCha20. CBC suites are off: they were the ones attacked by Lucky13 and
// friends, and an AEAD suite is there for every client. TLS 1.3 suites are
// all AEAD and not configurable in Go.
type TLSConfig struct {
	CertFile string `yaml:"certFile"`
	KeyFile  string `yaml:"keyFile"`
	// MinVersion is "1.2" (default) or "1.3".
	MinVersion string `yaml:"minVersion"`
	// CipherSuites are the TLS 1.2 suites offered, by their Go names
	// (crypto/tls), e.g. TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256.
	CipherSuites []string `yaml:"cipherSuites"`
}

// defaultCipherSuites are ECDHE with AEAD only.
var defaultCipherSuites = []string{
	"TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
	"TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
	"TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
	"TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
	"TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
	"TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
}

var tlsVersions = map[string]uint16{"1.2": tls.VersionTLS12, "1.3": tls.VersionTLS13}

// suiteID returns the ID of a TLS 1.2 suite that crypto/tls implements and
// considers secure.
func suiteID(name string) (uint16, bool) {
	for _, s := range tls.CipherSuites() {
		if s.Name == name && slices.Contains(s.SupportedVersions, tls.VersionTLS12) {
			return s.ID, true
		}
	}
	return 0, false
}

func (t *TLSConfig) validate(bad func(key, format string, args ...any)) {
	if _, ok := tlsVersions[t.MinVersion]; !ok {
		bad("tls.minVersion", "%q must be 1.2 or 1.3 (older versions are not served)", t.MinVersion)
	}
	if len(t.CipherSuites) == 0 && t.MinVersion != "1.3" {
		bad("tls.cipherSuites", "is empty: list TLS 1.2 suites by Go name (the default is %s)", strings.Join(defaultCipherSuites, ", "))
	}
	// HTTP/2 (RFC 7540 §9.2.2) needs an AES-128-GCM suite with TLS 1.2;
	// net/http refuses to serve without one.
	if len(t.CipherSuites) > 0 && t.MinVersion != "1.3" &&
		!slices.Contains(t.CipherSuites, "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256") && !slices.Contains(t.CipherSuites, "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256") {
		bad("tls.cipherSuites", "must include TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 or TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 (HTTP/2 requires one)")
	}
	for _, name := range t.CipherSuites {
		if _, ok := suiteID(name); ok {
			continue
		}
		for _, s := range tls.InsecureCipherSuites() {
			if s.Name == name {
				bad("tls.cipherSuites", "%s is insecure (crypto/tls lists it so) and is never served", name)
				return
			}
		}
		bad("tls.cipherSuites", "%q is not a TLS 1.2 cipher suite name of Go's crypto/tls, such as TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 (TLS 1.3 suites are not configurable)", name)
	}
}

// serverConfig loads the certificate and builds the server's TLS settings;
// the configuration is already validated.
func (t *TLSConfig) serverConfig() (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("config key tls.certFile/tls.keyFile: %w", err)
	}
	c := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tlsVersions[t.MinVersion]}
	for _, name := range t.CipherSuites {
		id, _ := suiteID(name)
		c.CipherSuites = append(c.CipherSuites, id)
	}
	return c, nil
}
