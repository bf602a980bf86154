package ews

import (
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"

	"github.com/Azure/go-ntlmssp"

	"github.com/mailpush/mailpush"
)

// How the client authenticates (every way Exchange does):
//
//   - OAuth: Credentials.AccessToken goes out as a bearer token; with a
//     refresh token, the newest access token, refreshed before it expires
//     and after a 401 (oauth.go).
//   - Basic: sent preemptively with Username and Password.
//   - NTLM, the on-premises default: when a host answers 401 offering NTLM or
//     Negotiate, the host is remembered and its requests go through
//     github.com/Azure/go-ntlmssp (NTLMv2). IIS binds NTLM authentication to
//     the TCP connection and serves later requests on it as that user without
//     any header, so NTLM requests never share a connection pool between
//     identities: each (user, password, host) gets its own transport, cloned
//     from the client's, in a bounded cache.
//   - Certificate-based authentication: a client identity presented as
//     the TLS client certificate, over connections of its own
//     (identity.go).
//   - A service account with the ApplicationImpersonation role: Basic or NTLM
//     as the service account, plus Endpoint.Impersonate (ExchangeImpersonation
//     header and X-AnchorMailbox).
//
// Server affinity: with Endpoint.Affinity set the request asks for it
// (X-PreferServerAffinity: true) and carries back the X-BackEndOverrideCookie
// Exchange handed out for that key, so that a mailbox's requests and its
// subscription stay on one mailbox server. The cookies are kept in memory.

const (
	maxNTLMClients   = 1024
	maxAffinityCache = 100_000
)

type authState struct {
	mu       sync.Mutex
	ntlmHost map[string]bool         // hosts that asked for NTLM
	ntlm     map[string]*http.Client // by identity and host
	cookies  map[string]string       // affinity key → X-BackEndOverrideCookie
}

// do sends the request that newRequest builds with the credentials, and
// switches the host to NTLM when it asks for it. With a client identity
// the request goes without an Authorization header, over the identity's
// own connections (identity.go).
func (c *Client) do(u *url.URL, cred mailpush.Credentials, id *Identity, newRequest func() (*http.Request, error)) (*http.Response, error) {
	hc := c.httpClient()
	req, err := newRequest()
	if err != nil {
		return nil, err
	}
	if id != nil {
		ic, err := c.identityClient(hc, id)
		if err != nil {
			return nil, err
		}
		return ic.Do(req)
	}
	if cred.AccessToken != "" || cred.Refreshable() {
		return c.doBearer(hc, cred, req, newRequest)
	}
	host := strings.ToLower(u.Host)
	if !c.auth.isNTLMHost(host) {
		req.SetBasicAuth(cred.Username, cred.Password)
		resp, err := hc.Do(req)
		if err != nil || resp.StatusCode != http.StatusUnauthorized || !offersNTLM(resp.Header) {
			return resp, err
		}
		io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
		c.auth.setNTLMHost(host)
		if req, err = newRequest(); err != nil {
			return nil, err
		}
	}
	nc, err := c.auth.ntlmClient(hc, cred, host)
	if err != nil {
		return nil, err
	}
	req.SetBasicAuth(cred.Username, cred.Password) // the Negotiator turns it into NTLM
	return nc.Do(req)
}

// doBearer sends the request with the identity's newest access token and,
// when Exchange answers 401 to refreshable credentials, refreshes once and
// sends it again (oauth.go).
func (c *Client) doBearer(hc *http.Client, cred mailpush.Credentials, req *http.Request, newRequest func() (*http.Request, error)) (*http.Response, error) {
	ctx := req.Context()
	tok, err := c.bearer(ctx, cred, "")
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := hc.Do(req)
	if err != nil || resp.StatusCode != http.StatusUnauthorized || !cred.Refreshable() {
		return resp, err
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if tok, err = c.bearer(ctx, cred, tok); err != nil {
		return nil, err
	}
	if req, err = newRequest(); err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	return hc.Do(req)
}

func offersNTLM(h http.Header) bool {
	for _, v := range h.Values("WWW-Authenticate") {
		scheme, _, _ := strings.Cut(strings.TrimSpace(v), " ")
		if strings.EqualFold(scheme, "NTLM") || strings.EqualFold(scheme, "Negotiate") {
			return true
		}
	}
	return false
}

func (a *authState) isNTLMHost(host string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.ntlmHost[host]
}

func (a *authState) setNTLMHost(host string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.ntlmHost == nil {
		a.ntlmHost = map[string]bool{}
	}
	if len(a.ntlmHost) < maxNTLMClients {
		a.ntlmHost[host] = true
	}
}

// ntlmClient returns the HTTP client for one identity at one host. The key
// hashes the password too: a connection authenticated with one password
// must never serve a caller holding another.
func (a *authState) ntlmClient(base *http.Client, cred mailpush.Credentials, host string) (*http.Client, error) {
	sum := sha256.Sum256([]byte(cred.Username + "\x00" + cred.Password + "\x00" + host))
	key := hex.EncodeToString(sum[:])
	a.mu.Lock()
	defer a.mu.Unlock()
	if nc := a.ntlm[key]; nc != nil {
		return nc, nil
	}
	var tr *http.Transport
	switch t := base.Transport.(type) {
	case nil:
		tr = http.DefaultTransport.(*http.Transport).Clone()
	case *http.Transport:
		tr = t.Clone()
	default:
		return nil, mailpush.Errorf(mailpush.EInternal, "ews: NTLM needs an *http.Transport, not %T", base.Transport)
	}
	tr.MaxIdleConnsPerHost = 2
	if a.ntlm == nil {
		a.ntlm = map[string]*http.Client{}
	}
	if len(a.ntlm) >= maxNTLMClients {
		for k, old := range a.ntlm {
			old.CloseIdleConnections()
			delete(a.ntlm, k)
			break
		}
	}
	nc := &http.Client{Transport: ntlmssp.Negotiator{RoundTripper: tr}, Timeout: base.Timeout, CheckRedirect: noRedirects}
	a.ntlm[key] = nc
	return nc, nil
}

const affinityCookieName = "X-BackEndOverrideCookie"

func (a *authState) addAffinity(req *http.Request, key string) {
	if key == "" {
		return
	}
	req.Header.Set("X-PreferServerAffinity", "true")
	a.mu.Lock()
	v := a.cookies[key]
	a.mu.Unlock()
	if v != "" {
		req.AddCookie(&http.Cookie{Name: affinityCookieName, Value: v})
	}
}

func (a *authState) keepAffinity(resp *http.Response, key string) {
	if key == "" {
		return
	}
	for _, c := range resp.Cookies() {
		if c.Name != affinityCookieName || c.Value == "" {
			continue
		}
		a.mu.Lock()
		if a.cookies == nil {
			a.cookies = map[string]string{}
		}
		if _, ok := a.cookies[key]; ok || len(a.cookies) < maxAffinityCache {
			a.cookies[key] = c.Value
		}
		a.mu.Unlock()
	}
}
