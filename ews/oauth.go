package ews

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"time"

	"golang.org/x/oauth2"

	"github.com/mailpush/mailpush"
)

// OAuth that outlives its first hour. Sealed credentials may carry a
// refresh token with its token endpoint and client ID
// (mailpush.Credentials.Refreshable). The client then keeps, in memory only,
// the newest access token (and refresh token) per identity, refreshes it
// through golang.org/x/oauth2's refresh grant a minute before it expires
// (by the injected clock, from the answer's expires_in) and once more when
// Exchange answers 401, and sends requests with the newest one.
//
// The callback URL Exchange holds is the only lasting home of these
// credentials, so a provider that rotates refresh tokens leaves it holding
// a dead one: Source notices the rotation (Current differs from what the
// URL carried) and subscribes again with a new sealed URL carrying the new
// refresh token (never the access token: it is short-lived and derivable,
// and the URL must stay short). The entry is reachable under every refresh
// token it held, so that the old URL's last notifications and the new
// URL's first ones find the same access token instead of refreshing (and
// rotating) again.
//
// A refused refresh (revoked, consent withdrawn, a malformed or oversized
// answer) is an error with ErrRefresh and ErrUnauthorized in its chain:
// the devices are asked to check in, as for a refused password.

// ErrRefresh is in the chain of the error returned when the token endpoint
// does not give a new access token.
var ErrRefresh = errors.New("ews: OAuth refresh refused")

const (
	maxOAuthEntries = 100_000
	refreshBefore   = time.Minute
)

type oauthState struct {
	mu sync.Mutex
	m  map[string]*oauthEntry // by hash of token URL, client ID and a refresh token it held
}

type oauthEntry struct {
	mu  sync.Mutex // one refresh at a time per identity
	cur mailpush.Credentials
}

func oauthKey(c mailpush.Credentials) string {
	sum := sha256.Sum256([]byte(c.TokenURL + "\x00" + c.ClientID + "\x00" + c.RefreshToken))
	return hex.EncodeToString(sum[:])
}

func (o *oauthState) entry(c mailpush.Credentials) *oauthEntry {
	k := oauthKey(c)
	o.mu.Lock()
	defer o.mu.Unlock()
	if e := o.m[k]; e != nil {
		return e
	}
	if o.m == nil {
		o.m = map[string]*oauthEntry{}
	}
	o.evictLocked()
	e := &oauthEntry{cur: c}
	o.m[k] = e
	return e
}

func (o *oauthState) alias(c mailpush.Credentials, e *oauthEntry) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.evictLocked()
	o.m[oauthKey(c)] = e
}

func (o *oauthState) evictLocked() {
	if len(o.m) < maxOAuthEntries {
		return
	}
	for k := range o.m {
		delete(o.m, k)
		break
	}
}

// Current returns the newest credentials the client holds for cred's
// identity: a refreshed access token and, when the provider rotated it, a
// new refresh token. Credentials without a refresh token come back as they
// are.
func (c *Client) Current(cred mailpush.Credentials) mailpush.Credentials {
	if !cred.Refreshable() {
		return cred
	}
	c.oauth.mu.Lock()
	e := c.oauth.m[oauthKey(cred)]
	c.oauth.mu.Unlock()
	if e == nil {
		return cred
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.cur
}

// Fresh makes sure cred's identity has an access token that is not about
// to expire, refreshing it if needed, and returns the newest credentials.
func (c *Client) Fresh(ctx context.Context, cred mailpush.Credentials) (mailpush.Credentials, error) {
	if !cred.Refreshable() {
		return cred, nil
	}
	if _, err := c.bearer(ctx, cred, ""); err != nil {
		return cred, err
	}
	return c.Current(cred), nil
}

// bearer returns the access token to send for cred. With refused set (the
// token Exchange just answered 401 to) it refreshes unless another request
// already did.
func (c *Client) bearer(ctx context.Context, cred mailpush.Credentials, refused string) (string, error) {
	if !cred.Refreshable() {
		return cred.AccessToken, nil
	}
	e := c.oauth.entry(cred)
	e.mu.Lock()
	defer e.mu.Unlock()
	now := c.now()
	valid := e.cur.AccessToken != "" && (e.cur.ExpiresAt == 0 || now.Add(refreshBefore).Before(time.Unix(e.cur.ExpiresAt, 0)))
	if valid && (refused == "" || e.cur.AccessToken != refused) {
		return e.cur.AccessToken, nil
	}
	next, err := c.refresh(ctx, e.cur)
	if err != nil {
		return "", err
	}
	rotated := next.RefreshToken != e.cur.RefreshToken
	e.cur = next
	if rotated {
		c.oauth.alias(next, e)
	}
	return next.AccessToken, nil
}

// refresh runs the OAuth refresh grant (RFC 6749 §6) with golang.org/x/oauth2
// over the client's HTTP client (no redirects: the refresh token never
// follows one). The answer is read by oauth2 up to 1 MiB; a longer one is
// cut and fails to parse.
//
// The grant does not end with the caller: a provider that rotates refresh
// tokens has spent the old one as soon as it answers, so a refresh abandoned
// halfway (the notification's request went away) would lose the only
// refresh token there is. It runs on its own deadline instead.
func (c *Client) refresh(ctx context.Context, cur mailpush.Credentials) (mailpush.Credentials, error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), refreshTimeout)
	defer cancel()
	cfg := oauth2.Config{ClientID: cur.ClientID, Endpoint: oauth2.Endpoint{TokenURL: cur.TokenURL, AuthStyle: oauth2.AuthStyleInParams}}
	rctx := context.WithValue(ctx, oauth2.HTTPClient, c.httpClient())
	t, err := cfg.TokenSource(rctx, &oauth2.Token{RefreshToken: cur.RefreshToken}).Token()
	if err != nil {
		return cur, refreshError(ctx, cur.TokenURL, err)
	}
	switch {
	case t.AccessToken == "":
		return cur, refreshError(ctx, cur.TokenURL, errors.New("the answer holds no access_token"))
	case len(t.AccessToken) > mailpush.MaxAccessToken:
		return cur, refreshError(ctx, cur.TokenURL, fmt.Errorf("the access_token is longer than %d bytes", mailpush.MaxAccessToken))
	case len(t.RefreshToken) > mailpush.MaxRefreshToken:
		return cur, refreshError(ctx, cur.TokenURL, fmt.Errorf("the refresh_token is longer than %d bytes", mailpush.MaxRefreshToken))
	case t.Type() != "Bearer":
		return cur, refreshError(ctx, cur.TokenURL, errors.New("the token_type is not Bearer"))
	}
	next := cur
	next.AccessToken, next.ExpiresAt = t.AccessToken, 0
	if t.RefreshToken != "" {
		next.RefreshToken = t.RefreshToken
	}
	if t.ExpiresIn > 0 {
		next.ExpiresAt = c.now().Unix() + t.ExpiresIn
	}
	return next, nil
}

// refreshTimeout bounds one refresh grant, whoever asked for it.
const refreshTimeout = 30 * time.Second

// refreshError says why a refresh failed without the tokens: oauth2's
// RetrieveError carries the answer's body, which may hold them, so only
// its OAuth error code and HTTP status are kept.
func refreshError(ctx context.Context, tokenURL string, err error) error {
	host := tokenURL
	if u, perr := url.Parse(tokenURL); perr == nil {
		host = u.Host
	}
	var re *oauth2.RetrieveError
	why := err.Error()
	if errors.As(err, &re) {
		why = "refused"
		if re.Response != nil {
			why = fmt.Sprintf("HTTP %d", re.Response.StatusCode)
		}
		if re.ErrorCode != "" {
			why += " " + re.ErrorCode
		}
	} else if strings.HasPrefix(why, "oauth2: cannot parse json") || strings.HasPrefix(why, "oauth2: cannot fetch token") {
		why = "a malformed or oversized answer"
	}
	if ctx.Err() != nil || (re == nil && isTransport(err)) {
		return mailpush.WrapError(mailpush.EUnavailable, "the OAuth token endpoint at "+host+" could not be reached", fmt.Errorf("%w: %s", ErrRefresh, why))
	}
	return mailpush.WrapError(mailpush.ECredentials, "the OAuth token endpoint at "+host+" refused to refresh the access token ("+why+"): sign in again",
		fmt.Errorf("%w (%s): %w", ErrRefresh, why, ErrUnauthorized))
}

// isTransport reports whether err is a network failure rather than an
// answer.
func isTransport(err error) bool {
	var ue *url.Error
	return errors.As(err, &ue)
}

// AllowedTokenURL reports whether tokenURL lies under one of the
// authorities (absolute https URLs such as
// https://login.microsoftonline.com/contoso.onmicrosoft.com/): same host,
// and a path under the authority's.
func AllowedTokenURL(tokenURL string, authorities []string) bool {
	u, err := url.Parse(tokenURL)
	if err != nil || u.Scheme != "https" || u.User != nil {
		return false
	}
	for _, a := range authorities {
		au, err := url.Parse(a)
		if err != nil || au.Scheme != "https" {
			continue
		}
		prefix := strings.TrimSuffix(au.Path, "/") + "/"
		if strings.EqualFold(u.Host, au.Host) && strings.HasPrefix(u.Path, prefix) && !strings.Contains(u.Path, "/../") {
			return true
		}
	}
	return false
}
