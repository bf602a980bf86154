package ewsfake

import (
	"encoding/json"
	"net/http"
	"time"
)

// OAuth, as Exchange Online with Entra ID does it: a token endpoint under
// an authority (AuthorityURL, TokenURL) issues short-lived bearer tokens
// for a mailbox, which the EWS endpoint accepts until they expire (by the
// fake's clock) and answers 401 with a Bearer challenge afterwards. The
// refresh grant (RFC 6749 §6, client_id in the form) ROTATES the refresh
// token: each use gives a new one and the old one stops working, which is
// what makes a service that forgets a rotation lose the mailbox.
// RevokeTokens withdraws a user's grants (consent withdrawn, password
// reset, admin revocation); SetTokenAnswer makes the next answer of the
// token endpoint whatever a test needs (malformed, oversized).
//
// A refresh token used again after its rotation is counted
// (Requests("token-reuse")); with Options.RevokeOnReuse the fake then
// revokes the whole grant — every refresh and access token descending
// from the same sign-in — as providers with reuse detection do (Entra ID
// for single-page apps, Okta, Auth0): two refreshes racing with one
// refresh token cost the user the grant. Each token knows its generation
// (0 for IssueTokens', n after n refreshes): AccessTokenGeneration.

const oauthAuthorityPath = "/oauth/tenant/"
const tokenPath = oauthAuthorityPath + "oauth2/v2.0/token"

type accessGrant struct {
	mb      *mailbox
	expires time.Time
	family  string // the sign-in it descends from
	gen     int
}

type refreshGrant struct {
	mb       *mailbox
	clientID string
	lifetime time.Duration // of the access tokens it gives
	family   string
	gen      int
}

type tokenAnswer struct {
	status int
	body   string
}

// AuthorityURL is the fake's OAuth authority: the token endpoint is under it.
func (s *Server) AuthorityURL() string { return s.ts.URL + oauthAuthorityPath }

// TokenURL is the fake's OAuth token endpoint.
func (s *Server) TokenURL() string { return s.ts.URL + tokenPath }

// IssueTokens signs the user of address in for clientID, as the mail app
// does interactively: an access token valid for lifetime (by the fake's
// clock, also the lifetime of the tokens refreshes give) and a refresh
// token. It returns ErrNotFound for an unknown address.
func (s *Server) IssueTokens(address, clientID string, lifetime time.Duration) (access, refresh string, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	mb := s.mailboxes[lower(address)]
	if mb == nil {
		return "", "", ErrNotFound
	}
	access, refresh = s.issueLocked(refreshGrant{mb: mb, clientID: clientID, lifetime: lifetime, family: randomID("f", 8)})
	return access, refresh, nil
}

// issueLocked gives a new access and refresh token of g's family and
// generation.
func (s *Server) issueLocked(g refreshGrant) (access, refresh string) {
	if s.access == nil {
		s.access, s.refresh, s.spent = map[string]accessGrant{}, map[string]refreshGrant{}, map[string]refreshGrant{}
	}
	access, refresh = randomID("eyJ0eXAi.", 48), randomID("0.AR8A", 48)
	s.access[access] = accessGrant{mb: g.mb, expires: s.clock.Now().Add(g.lifetime), family: g.family, gen: g.gen}
	s.refresh[refresh] = g
	return access, refresh
}

// AccessTokenGeneration says how many refreshes after the sign-in the
// access token was issued, and whether it is known (issued and not
// revoked; it may have expired).
func (s *Server) AccessTokenGeneration(token string) (int, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	g, ok := s.access[token]
	return g.gen, ok
}

// revokeFamilyLocked withdraws every token descending from one sign-in.
func (s *Server) revokeFamilyLocked(family string) {
	for k, g := range s.access {
		if g.family == family {
			delete(s.access, k)
		}
	}
	for k, g := range s.refresh {
		if g.family == family {
			delete(s.refresh, k)
		}
	}
}

// RevokeTokens withdraws every access and refresh token of the user of
// address.
func (s *Server) RevokeTokens(address string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, g := range s.access {
		if lower(g.mb.address) == lower(address) {
			delete(s.access, k)
		}
	}
	for k, g := range s.refresh {
		if lower(g.mb.address) == lower(address) {
			delete(s.refresh, k)
		}
	}
	s.notifyLocked()
}

// SetTokenAnswer makes the token endpoint's next answer status and body
// (application/json) instead of a grant.
func (s *Server) SetTokenAnswer(status int, body string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tokenAnswer = &tokenAnswer{status: status, body: body}
}

// bearer returns the mailbox whose unexpired access token this is.
func (s *Server) bearer(token string) *mailbox {
	s.mu.Lock()
	defer s.mu.Unlock()
	g, ok := s.access[token]
	if !ok || !s.clock.Now().Before(g.expires) {
		return nil
	}
	return g.mb
}

// handleToken serves the refresh grant.
func (s *Server) handleToken(w http.ResponseWriter, r *http.Request) {
	s.count("token")
	fail := func(status int, code, desc string) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		json.NewEncoder(w).Encode(map[string]string{"error": code, "error_description": desc})
	}
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	if err := r.ParseForm(); err != nil {
		fail(http.StatusBadRequest, "invalid_request", "the body is not a form")
		return
	}
	s.mu.Lock()
	if a := s.tokenAnswer; a != nil {
		s.tokenAnswer = nil
		s.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(a.status)
		w.Write([]byte(a.body))
		return
	}
	defer s.mu.Unlock()
	if r.PostForm.Get("grant_type") != "refresh_token" {
		fail(http.StatusBadRequest, "unsupported_grant_type", "only refresh_token is served")
		return
	}
	old := r.PostForm.Get("refresh_token")
	if g, reused := s.spent[old]; reused {
		s.requests["token-reuse"]++
		if s.revokeOnReuse {
			s.revokeFamilyLocked(g.family)
		}
		s.notifyLocked()
	}
	g, ok := s.refresh[old]
	if !ok || g.clientID != r.PostForm.Get("client_id") {
		fail(http.StatusBadRequest, "invalid_grant", "AADSTS70000: the refresh token is invalid, expired or revoked")
		return
	}
	delete(s.refresh, old) // rotation: a refresh token works once
	s.spent[old] = g
	g.gen++
	access, refresh := s.issueLocked(g)
	s.notifyLocked()
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	json.NewEncoder(w).Encode(map[string]any{
		"token_type": "Bearer", "access_token": access, "refresh_token": refresh,
		"expires_in": int64(g.lifetime / time.Second),
	})
}
