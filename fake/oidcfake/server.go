// Package oidcfake is a fake OpenID Connect identity provider as a real
// loopback HTTP server, for the admin console's tests: discovery
// (/.well-known/openid-configuration), the JWKS, the authorization endpoint
// (code flow; the user is taken as already signed in at the provider) and
// the token endpoint (client secret, redirect URI and PKCE S256 checked,
// codes single-use), issuing RS256 ID tokens as OpenID Connect Core 1.0
// describes them.
//
// Misbehave lets a test make the provider lie (another issuer or audience,
// a wrong nonce, an expired token, a foreign signing key) to prove that the
// console refuses each.
package oidcfake

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"time"
)

// User is who the provider signs in.
type User struct {
	Subject       string
	Email         string
	EmailVerified bool
}

// Misbehaviour makes the provider issue ID tokens a relying party must
// refuse.
type Misbehaviour struct {
	Issuer   string // claim another issuer
	Audience string // issue for another client
	Nonce    string // answer with another nonce
	Expired  bool   // already expired
	Foreign  bool   // signed with a key not in the JWKS
}

// Server is the fake provider.
type Server struct {
	ClientID, ClientSecret string

	srv     *httptest.Server
	key     *rsa.PrivateKey
	foreign *rsa.PrivateKey

	mu          sync.Mutex
	user        User
	misbehave   Misbehaviour
	redirectURI string
	codes       map[string]grant
}

type grant struct {
	nonce, challenge, redirectURI string
	user                          User
}

// Start starts the provider for one client; redirectURI is the client's
// only registered redirect URI.
func Start(clientID, clientSecret, redirectURI string, user User) *Server {
	s := &Server{ClientID: clientID, ClientSecret: clientSecret, redirectURI: redirectURI, user: user, codes: map[string]grant{}}
	s.key, _ = rsa.GenerateKey(rand.Reader, 2048)
	s.foreign, _ = rsa.GenerateKey(rand.Reader, 2048)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/openid-configuration", s.discovery)
	mux.HandleFunc("GET /jwks", s.jwks)
	mux.HandleFunc("GET /authorize", s.authorize)
	mux.HandleFunc("POST /token", s.token)
	s.srv = httptest.NewServer(mux)
	return s
}

// URL is the issuer.
func (s *Server) URL() string { return s.srv.URL }

// Close stops the server.
func (s *Server) Close() { s.srv.Close() }

// SetUser changes who is signed in at the provider.
func (s *Server) SetUser(u User) {
	s.mu.Lock()
	s.user = u
	s.mu.Unlock()
}

// SetRedirectURI changes the client's registered redirect URI.
func (s *Server) SetRedirectURI(uri string) {
	s.mu.Lock()
	s.redirectURI = uri
	s.mu.Unlock()
}

// Misbehave makes the next ID tokens wrong in the given ways (the zero
// value restores honest behaviour).
func (s *Server) Misbehave(m Misbehaviour) {
	s.mu.Lock()
	s.misbehave = m
	s.mu.Unlock()
}

func (s *Server) discovery(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{
		"issuer":                                s.URL(),
		"authorization_endpoint":                s.URL() + "/authorize",
		"token_endpoint":                        s.URL() + "/token",
		"jwks_uri":                              s.URL() + "/jwks",
		"response_types_supported":              []string{"code"},
		"subject_types_supported":               []string{"public"},
		"id_token_signing_alg_values_supported": []string{"RS256"},
		"code_challenge_methods_supported":      []string{"S256"},
		"token_endpoint_auth_methods_supported": []string{"client_secret_basic", "client_secret_post"},
		"scopes_supported":                      []string{"openid", "email", "profile"},
	})
}

func (s *Server) jwks(w http.ResponseWriter, r *http.Request) {
	pub := s.key.PublicKey
	writeJSON(w, http.StatusOK, map[string]any{"keys": []map[string]string{{
		"kty": "RSA", "use": "sig", "alg": "RS256", "kid": "k1",
		"n": b64(pub.N.Bytes()), "e": b64(big.NewInt(int64(pub.E)).Bytes()),
	}}})
}

func (s *Server) authorize(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	s.mu.Lock()
	registered, user := s.redirectURI, s.user
	s.mu.Unlock()
	switch {
	case q.Get("client_id") != s.ClientID:
		http.Error(w, "unknown client_id", http.StatusBadRequest)
		return
	case q.Get("redirect_uri") != registered:
		// Never redirect to an unregistered URI (RFC 6749 §4.1.2.1).
		http.Error(w, "redirect_uri is not registered for this client", http.StatusBadRequest)
		return
	}
	back, _ := url.Parse(registered)
	v := url.Values{"state": {q.Get("state")}}
	switch {
	case q.Get("response_type") != "code":
		v.Set("error", "unsupported_response_type")
	case !strings.Contains(" "+q.Get("scope")+" ", " openid "):
		v.Set("error", "invalid_scope")
	case q.Get("code_challenge") == "" || q.Get("code_challenge_method") != "S256":
		v.Set("error", "invalid_request")
	default:
		code := random()
		s.mu.Lock()
		s.codes[code] = grant{nonce: q.Get("nonce"), challenge: q.Get("code_challenge"), redirectURI: registered, user: user}
		s.mu.Unlock()
		v.Set("code", code)
	}
	back.RawQuery = v.Encode()
	http.Redirect(w, r, back.String(), http.StatusFound)
}

func (s *Server) token(w http.ResponseWriter, r *http.Request) {
	r.ParseForm()
	id, secret, ok := r.BasicAuth()
	if !ok {
		id, secret = r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
	}
	if id != s.ClientID || secret != s.ClientSecret {
		writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "invalid_client"})
		return
	}
	s.mu.Lock()
	g, found := s.codes[r.PostForm.Get("code")]
	delete(s.codes, r.PostForm.Get("code")) // single use
	m := s.misbehave
	s.mu.Unlock()
	sum := sha256.Sum256([]byte(r.PostForm.Get("code_verifier")))
	switch {
	case r.PostForm.Get("grant_type") != "authorization_code":
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "unsupported_grant_type"})
		return
	case !found || r.PostForm.Get("redirect_uri") != g.redirectURI || b64(sum[:]) != g.challenge:
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "invalid_grant"})
		return
	}
	now := time.Now()
	claims := map[string]any{
		"iss": s.URL(), "sub": g.user.Subject, "aud": s.ClientID, "nonce": g.nonce,
		"iat": now.Unix(), "exp": now.Add(5 * time.Minute).Unix(),
	}
	if g.user.Email != "" {
		claims["email"], claims["email_verified"] = g.user.Email, g.user.EmailVerified
	}
	if m.Issuer != "" {
		claims["iss"] = m.Issuer
	}
	if m.Audience != "" {
		claims["aud"] = m.Audience
	}
	if m.Nonce != "" {
		claims["nonce"] = m.Nonce
	}
	if m.Expired {
		claims["iat"], claims["exp"] = now.Add(-time.Hour).Unix(), now.Add(-30*time.Minute).Unix()
	}
	key := s.key
	if m.Foreign {
		key = s.foreign
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"access_token": random(), "token_type": "Bearer", "expires_in": 300, "id_token": sign(key, claims),
	})
}

// sign makes a compact JWS (RS256) of the claims.
func sign(key *rsa.PrivateKey, claims map[string]any) string {
	header, _ := json.Marshal(map[string]string{"alg": "RS256", "typ": "JWT", "kid": "k1"})
	body, _ := json.Marshal(claims)
	input := b64(header) + "." + b64(body)
	h := sha256.Sum256([]byte(input))
	sig, _ := rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, h[:])
	return input + "." + b64(sig)
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

func random() string {
	b := make([]byte, 24)
	rand.Read(b)
	return b64(b)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}
