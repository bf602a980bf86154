package graph

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v4"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
)

// Defaults of an app's configuration.
const (
	DefaultAuthority = "https://login.microsoftonline.com"
	DefaultBaseURL   = "https://graph.microsoft.com/v1.0"
	// NotificationAppID is Microsoft Graph change tracking's app ID: the
	// audience-issuing app of validation tokens (their azp/appid).
	NotificationAppID = "0bf30f3b-4a52-48df-9a82-234910c4a086"
)

// App is a tenant's Entra ID app registration: mailpush calls Graph with
// app-only tokens (client credentials) and checks user tokens issued for it.
type App struct {
	TenantID string // the Entra ID tenant (directory) ID
	ClientID string // the app's (client) ID: the audience of user and validation tokens
	// One of: a client secret, or a certificate and its key (a signed client
	// assertion, which Microsoft recommends over secrets).
	ClientSecret string
	Certificate  *x509.Certificate
	Key          crypto.Signer
	Authority    string // default DefaultAuthority
	BaseURL      string // default DefaultBaseURL
}

func (a *App) authority() string {
	return strings.TrimSuffix(orString(a.Authority, DefaultAuthority), "/")
}

// BaseURL returns the Graph base URL without a trailing slash.
func (a *App) baseURL() string { return strings.TrimSuffix(orString(a.BaseURL, DefaultBaseURL), "/") }

// TokenURL is the app's token endpoint.
func (a *App) TokenURL() string {
	return a.authority() + "/" + url.PathEscape(a.TenantID) + "/oauth2/v2.0/token"
}

// Issuer is the issuer of the tenant's v2.0 tokens.
func (a *App) Issuer() string { return a.authority() + "/" + a.TenantID + "/v2.0" }

// JWKSURL is where the tenant's token signing keys are published.
func (a *App) JWKSURL() string {
	return a.authority() + "/" + url.PathEscape(a.TenantID) + "/discovery/v2.0/keys"
}

func orString(v, def string) string {
	if v == "" {
		return def
	}
	return v
}

// Scope is what app-only tokens for Graph ask for.
func (a *App) scope() string {
	u, err := url.Parse(a.baseURL())
	if err != nil {
		return "https://graph.microsoft.com/.default"
	}
	return u.Scheme + "://" + u.Host + "/.default"
}

// TokenSource returns the app's app-only token source, cached until shortly
// before expiry, using hc for the token endpoint.
//
// golang.org/x/oauth2/clientcredentials, not MSAL for Go: mailpush needs
// only the client-credentials grant (with a secret or a signed assertion),
// x/oauth2 is already its dependency (FCM), and it caches and refreshes the
// token itself; MSAL's confidential client adds its own cache, instance
// discovery requests and a larger dependency tree for features (user flows,
// token cache serialization) that mailpush never uses.
func (a *App) TokenSource(ctx context.Context, hc *http.Client) (oauth2.TokenSource, error) {
	if a.TenantID == "" || a.ClientID == "" {
		return nil, errors.New("graph: the app needs a tenant ID and a client ID")
	}
	if hc != nil {
		ctx = context.WithValue(ctx, oauth2.HTTPClient, hc)
	}
	switch {
	case a.ClientSecret != "":
		c := clientcredentials.Config{ClientID: a.ClientID, ClientSecret: a.ClientSecret, TokenURL: a.TokenURL(),
			Scopes: []string{a.scope()}, AuthStyle: oauth2.AuthStyleInParams}
		return c.TokenSource(ctx), nil
	case a.Certificate != nil && a.Key != nil:
		return oauth2.ReuseTokenSource(nil, &assertionSource{ctx: ctx, app: a}), nil
	}
	return nil, errors.New("graph: the app needs a client secret or a certificate with its key")
}

// assertionSource gets a token with a fresh signed client assertion each
// time (the assertion is short-lived, so it cannot be a fixed parameter).
type assertionSource struct {
	ctx context.Context
	app *App
}

func (s *assertionSource) Token() (*oauth2.Token, error) {
	assertion, err := s.app.clientAssertion(time.Now())
	if err != nil {
		return nil, err
	}
	c := clientcredentials.Config{ClientID: s.app.ClientID, TokenURL: s.app.TokenURL(), Scopes: []string{s.app.scope()},
		AuthStyle: oauth2.AuthStyleInParams,
		EndpointParams: url.Values{
			"client_assertion_type": {"urn:ietf:params:oauth:client-assertion-type:jwt-bearer"},
			"client_assertion":      {assertion},
		}}
	return c.Token(s.ctx)
}

// clientAssertion is the JWT that proves the app holds its certificate's key
// (RFC 7523, as Entra ID wants it: RS256 or PS256, x5t#S256 of the certificate).
func (a *App) clientAssertion(now time.Time) (string, error) {
	jti := make([]byte, 16)
	rand.Read(jti)
	claims := jwt.RegisteredClaims{
		Issuer: a.ClientID, Subject: a.ClientID, Audience: jwt.ClaimStrings{a.TokenURL()},
		ID: hex.EncodeToString(jti), IssuedAt: jwt.NewNumericDate(now), NotBefore: jwt.NewNumericDate(now),
		ExpiresAt: jwt.NewNumericDate(now.Add(10 * time.Minute)),
	}
	if _, ok := a.Key.Public().(*rsa.PublicKey); !ok {
		return "", errors.New("graph: the app's certificate key must be RSA")
	}
	tok := jwt.NewWithClaims(jwt.SigningMethodPS256, claims)
	s256 := sha256.Sum256(a.Certificate.Raw)
	s1 := sha1.Sum(a.Certificate.Raw)
	tok.Header["x5t#S256"] = base64.RawURLEncoding.EncodeToString(s256[:])
	tok.Header["x5t"] = base64.RawURLEncoding.EncodeToString(s1[:])
	return tok.SignedString(a.Key)
}
