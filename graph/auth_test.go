package graph_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"testing"
	"time"

	"github.com/mailpush/mailpush/fake/graphfake"
	"github.com/mailpush/mailpush/graph"
)

func selfSigned(t *testing.T) (*x509.Certificate, *rsa.PrivateKey) {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "mailpush"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return cert, key
}

// The app's app-only token with a certificate: a fresh signed client
// assertion per token request, refused when signed by another key.
func TestCertificateClientAssertion(t *testing.T) {
	fake := graphfake.New(graphfake.Options{})
	t.Cleanup(fake.Close)
	cert, key := selfSigned(t)
	fake.AddApp(clientID, "", cert)
	app := &graph.App{TenantID: fake.TenantID(), ClientID: clientID, Certificate: cert, Key: key, Authority: fake.Authority(), BaseURL: fake.GraphURL()}
	ts, err := app.TokenSource(context.Background(), fake.HTTPClient())
	if err != nil {
		t.Fatal(err)
	}
	tok, err := ts.Token()
	if err != nil || tok.AccessToken == "" {
		t.Fatalf("token with the certificate: %v", err)
	}
	_, otherKey := selfSigned(t)
	forged := &graph.App{TenantID: fake.TenantID(), ClientID: clientID, Certificate: cert, Key: otherKey, Authority: fake.Authority()}
	ts, _ = forged.TokenSource(context.Background(), fake.HTTPClient())
	if _, err := ts.Token(); err == nil {
		t.Fatal("an assertion signed by another key got a token")
	}
	wrongSecret := &graph.App{TenantID: fake.TenantID(), ClientID: clientID, ClientSecret: "guess", Authority: fake.Authority()}
	ts, _ = wrongSecret.TokenSource(context.Background(), fake.HTTPClient())
	if _, err := ts.Token(); err == nil {
		t.Fatal("a wrong client secret got a token")
	}
}
