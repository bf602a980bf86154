package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
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

// writeRSACert writes a self-signed RSA certificate for 127.0.0.1 (RSA, so
// that the ECDHE-RSA suites are the ones negotiated) and returns the tls
// block of the configuration, with extra appended inside it.
func writeRSACert(t testing.TB, dir, extra string) string {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "mailpush test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}), 0o600)
	return fmt.Sprintf("tls:\n  certFile: %s\n  keyFile: %s\n%s", certFile, keyFile, extra)
}

// sClient runs a real `openssl s_client` handshake against addr and
// reports whether it succeeded, with everything openssl printed.
func sClient(t *testing.T, openssl, addr string, args ...string) (bool, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, openssl, append([]string{"s_client", "-connect", addr}, args...)...)
	cmd.Stdin = bytes.NewReader(nil) // EOF at once: quit after the handshake
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("openssl s_client %v did not finish: %s", args, out)
	}
	return err == nil, string(out)
}

// TestTLSServing is finding 9 with a real OpenSSL client: by default
// mailpush serves TLS 1.2 and 1.3 only, and with TLS 1.2 only ECDHE with
// AEAD suites. A CBC suite (ECDHE-RSA-AES128-SHA, accepted on today's main)
// and TLS 1.1 are refused by the server; GCM and ChaCha20 work. The control
// world that lists the CBC suite in tls.cipherSuites proves the client
// could have used it, so the refusal is the server's.
func TestTLSServing(t *testing.T) {
	openssl := requireBinary(t, "openssl")
	world := func(extra string) string {
		w := newWorldWith(t, "info", worldOptions{extra: func(w *world) (string, []*x509.Certificate) {
			return writeRSACert(t, w.dir, extra), nil
		}})
		if !strings.HasPrefix(w.main.URL(), "https://") {
			t.Fatalf("URL %s: not serving TLS", w.main.URL())
		}
		return strings.TrimPrefix(w.main.URL(), "https://")
	}
	addr := world("")
	for _, tc := range []struct {
		name string
		args []string
		ok   bool
		say  string // in openssl's output
	}{
		{"CBC suite refused", []string{"-tls1_2", "-cipher", "ECDHE-RSA-AES128-SHA"}, false, "handshake failure"},
		{"CBC SHA256 suite refused", []string{"-tls1_2", "-cipher", "ECDHE-RSA-AES128-SHA256"}, false, "handshake failure"},
		{"plain RSA key exchange refused", []string{"-tls1_2", "-cipher", "AES128-GCM-SHA256"}, false, "handshake failure"},
		{"TLS 1.1 refused", []string{"-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0"}, false, "protocol version"},
		{"AES-128-GCM", []string{"-tls1_2", "-cipher", "ECDHE-RSA-AES128-GCM-SHA256"}, true, "ECDHE-RSA-AES128-GCM-SHA256"},
		{"AES-256-GCM", []string{"-tls1_2", "-cipher", "ECDHE-RSA-AES256-GCM-SHA384"}, true, "ECDHE-RSA-AES256-GCM-SHA384"},
		{"ChaCha20", []string{"-tls1_2", "-cipher", "ECDHE-RSA-CHACHA20-POLY1305"}, true, "ECDHE-RSA-CHACHA20-POLY1305"},
		{"TLS 1.3", []string{"-tls1_3"}, true, "TLSv1.3"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ok, out := sClient(t, openssl, addr, tc.args...)
			if ok != tc.ok || !strings.Contains(out, tc.say) {
				t.Errorf("openssl s_client %v: success %v, want %v with %q in:\n%s", tc.args, ok, tc.ok, tc.say, out)
			}
		})
	}
	t.Run("configured CBC suite is served (control)", func(t *testing.T) {
		addr := world("  minVersion: \"1.2\"\n  cipherSuites: [TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA, TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256]\n")
		if ok, out := sClient(t, openssl, addr, "-tls1_2", "-cipher", "ECDHE-RSA-AES128-SHA"); !ok || !strings.Contains(out, "ECDHE-RSA-AES128-SHA") {
			t.Errorf("the client could not use the suite even when configured:\n%s", out)
		}
		if ok, out := sClient(t, openssl, addr, "-tls1_2", "-cipher", "ECDHE-RSA-AES128-GCM-SHA256"); ok {
			t.Errorf("a suite not listed was served:\n%s", out) // (the ECDSA one listed needs an ECDSA certificate)
		}
	})
	t.Run("minVersion 1.3", func(t *testing.T) {
		addr := world("  minVersion: \"1.3\"\n")
		if ok, out := sClient(t, openssl, addr, "-tls1_2", "-cipher", "ECDHE-RSA-AES128-GCM-SHA256"); ok {
			t.Errorf("TLS 1.2 served with minVersion 1.3:\n%s", out)
		}
	})
}

// TestTLSConfigValidation: bad TLS settings stop the start with the key named.
func TestTLSConfigValidation(t *testing.T) {
	for _, tc := range []struct {
		yaml, say string
	}{
		{"tls:\n  minVersion: \"1.1\"\n", "config key tls.minVersion"},
		{"tls:\n  minVersion: \"1.0\"\n", "config key tls.minVersion"},
		{"tls:\n  cipherSuites: [ECDHE-RSA-AES128-GCM-SHA256]\n", "config key tls.cipherSuites"}, // an OpenSSL name
		{"tls:\n  cipherSuites: [TLS_RSA_WITH_RC4_128_SHA]\n", "is insecure"},
		{"tls:\n  cipherSuites: [TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256]\n", "is insecure"},
		{"tls:\n  cipherSuites: [TLS_AES_128_GCM_SHA256]\n", "TLS 1.3 suites are not configurable"},
		{"tls:\n  cipherSuites: []\n", "config key tls.cipherSuites: is empty"},
		{"tls:\n  cipherSuites: [TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384]\n", "HTTP/2 requires one"},
	} {
		path := filepath.Join(t.TempDir(), "c.yaml")
		os.WriteFile(path, []byte(tc.yaml), 0o600)
		_, err := LoadConfig(path, nil)
		if err == nil || !strings.Contains(err.Error(), tc.say) {
			t.Errorf("%q: err = %v, want one saying %q", tc.yaml, err, tc.say)
		}
	}
	if _, err := LoadConfig("", []string{"MAILPUSH_TLS_CIPHER_SUITES=TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", "MAILPUSH_TLS_MIN_VERSION=1.3"}); err != nil {
		t.Errorf("valid TLS settings from the environment: %v", err)
	}
}
