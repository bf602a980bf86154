package console

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"
)

// OIDC is the OpenID Connect sign-in: the authorization code flow with
// state, nonce and PKCE, the ID token verified by go-oidc (signature from
// the provider's JWKS, issuer, audience = client ID, expiry).
type OIDC struct {
	provider *oidc.Provider
	verifier *oidc.IDTokenVerifier
	oauth    oauth2.Config
	// admins are the subjects or emails admitted as operators.
	admins []string
}

// OIDCConfig is the console.oidc block of the configuration.
type OIDCConfig struct {
	Issuer       string
	ClientID     string
	ClientSecret string
	RedirectURL  string // https://push.example.com/admin/oidc/callback
	// Admins lists who may sign in: ID-token subjects or verified emails.
	Admins []string
	// HTTP is the client for discovery, JWKS and the token endpoint.
	HTTP *http.Client
}

// NewOIDC discovers the provider (its /.well-known/openid-configuration
// must name the configured issuer exactly).
func NewOIDC(ctx context.Context, c OIDCConfig) (*OIDC, error) {
	if c.HTTP != nil {
		ctx = oidc.ClientContext(ctx, c.HTTP)
	}
	p, err := oidc.NewProvider(ctx, c.Issuer)
	if err != nil {
		return nil, fmt.Errorf("console: OIDC provider %s: %w", c.Issuer, err)
	}
	return &OIDC{
		provider: p,
		verifier: p.Verifier(&oidc.Config{ClientID: c.ClientID}),
		oauth: oauth2.Config{ClientID: c.ClientID, ClientSecret: c.ClientSecret, RedirectURL: c.RedirectURL,
			Endpoint: p.Endpoint(), Scopes: []string{oidc.ScopeOpenID, "email", "profile"}},
		admins: c.Admins,
	}, nil
}

// pendingSignIn is kept in a short-lived cookie between the redirect and
// the callback: state, nonce and PKCE verifier, bound to this browser.
func encodePending(state, nonce, verifier string) string {
	return state + "." + nonce + "." + verifier
}

func decodePending(v string) (state, nonce, verifier string, ok bool) {
	parts := strings.Split(v, ".")
	if len(parts) != 3 {
		return "", "", "", false
	}
	return parts[0], parts[1], parts[2], true
}

func (c *Console) oidcStart(w http.ResponseWriter, r *http.Request) {
	o := c.cfg.OIDC
	if o == nil {
		c.fail(w, r, http.StatusNotFound, "oidc_off", "OpenID Connect sign-in is not configured")
		return
	}
	state, nonce, verifier := randomString(), randomString(), oauth2.GenerateVerifier()
	c.setCookie(w, pendingCookie, encodePending(state, nonce, verifier), 10*time.Minute, http.SameSiteLaxMode)
	url := o.oauth.AuthCodeURL(state, oidc.Nonce(nonce), oauth2.S256ChallengeOption(verifier))
	http.Redirect(w, r, url, http.StatusFound)
}

func (c *Console) oidcCallback(w http.ResponseWriter, r *http.Request) {
	o := c.cfg.OIDC
	if o == nil {
		c.fail(w, r, http.StatusNotFound, "oidc_off", "OpenID Connect sign-in is not configured")
		return
	}
	ck, err := r.Cookie(pendingCookie)
	c.clearCookie(w, pendingCookie)
	if err != nil {
		c.fail(w, r, http.StatusBadRequest, "oidc_no_pending", "no sign-in was started in this browser (or it took more than 10 minutes): start again")
		return
	}
	state, nonce, verifier, ok := decodePending(ck.Value)
	got := r.URL.Query().Get("state")
	if !ok || got == "" || subtle.ConstantTimeCompare([]byte(got), []byte(state)) != 1 {
		c.fail(w, r, http.StatusBadRequest, "oidc_state", "the sign-in answer does not belong to the sign-in started in this browser (state mismatch)")
		return
	}
	if e := r.URL.Query().Get("error"); e != "" {
		c.fail(w, r, http.StatusUnauthorized, "oidc_refused", "the identity provider refused the sign-in: "+e)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 15*time.Second)
	defer cancel()
	tok, err := o.oauth.Exchange(ctx, r.URL.Query().Get("code"), oauth2.VerifierOption(verifier))
	if err != nil {
		c.cfg.Logger.Warn("OIDC code exchange failed", "err", err)
		c.fail(w, r, http.StatusUnauthorized, "oidc_exchange", "the identity provider did not accept the sign-in code")
		return
	}
	raw, _ := tok.Extra("id_token").(string)
	if raw == "" {
		c.fail(w, r, http.StatusUnauthorized, "oidc_no_id_token", "the identity provider returned no ID token")
		return
	}
	idt, err := o.verifier.Verify(ctx, raw)
	if err != nil {
		c.cfg.Logger.Warn("OIDC ID token refused", "err", err)
		c.fail(w, r, http.StatusUnauthorized, "oidc_id_token", "the ID token is not valid for this console (issuer, audience, signature or expiry)")
		return
	}
	if subtle.ConstantTimeCompare([]byte(idt.Nonce), []byte(nonce)) != 1 {
		c.fail(w, r, http.StatusUnauthorized, "oidc_nonce", "the ID token was not issued for this sign-in (nonce mismatch)")
		return
	}
	var claims struct {
		Email         string `json:"email"`
		EmailVerified bool   `json:"email_verified"`
	}
	idt.Claims(&claims)
	admitted := slices.Contains(o.admins, idt.Subject) || (claims.Email != "" && claims.EmailVerified && slices.Contains(o.admins, claims.Email))
	if !admitted {
		c.fail(w, r, http.StatusForbidden, "not_an_admin", "this account is not one of the console's administrators (console.oidc.admins)")
		return
	}
	display := claims.Email
	if display == "" {
		display = idt.Subject
	}
	// The audit log names the operator by a hash of issuer and subject.
	h := sha256.Sum256([]byte(idt.Issuer + "\x00" + idt.Subject))
	actor := "oidc:" + base64.RawURLEncoding.EncodeToString(h[:9])
	c.signIn(w, r, &session{actor: actor, Display: display})
}
