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
// (mailpush.Credentials.Refreshable). The client then keeps, in memory,
// the newest access token (and refresh token) per identity, refreshes it
// through golang.org/x/oauth2's refresh grant a minute before it expires
// (by the injected clock, from the answer's expires_in) and once more when
// Exchange answers 401, and sends requests with the newest one.
//
// The callback URL Exchange holds is the only lasting home of these
// credentials, so a provider that rotates refresh tokens leaves it holding
// a dead one: Source notices that this client's own refresh rotated the
// token the URL carried (Rotated) and subscribes again with a new sealed
// URL carrying the new refresh token (never the access token: it is
// short-lived and derivable, and the URL must stay short). The entry is
// reachable under every refresh token it held, so that the old URL's last
// notifications and the new URL's first ones find the same access token
// instead of refreshing (and rotating) again.
//
// Several nodes (Client.Grants set: the store's OAuthGrantStore;
// cmd/mailpush sets it with the PostgreSQL store, so that one node on
// SQLite keeps every token in memory, as before). Each
// node has its own memory, and two notifications of one mailbox may reach
// two nodes that both find the access token expired. Refreshing on both
// would send the token endpoint one refresh token twice, and a provider
// that rotates refresh tokens and revokes the grant when an old one comes
// back would then take the mailbox away. So the memory is only the first
// level: a request whose access token is fresh there costs nothing more,
// and only a due refresh (or a 401) goes to the grant the nodes share in
// the store. There, under a refresh lease, the node either finds that
// another node has refreshed already (it takes the stored tokens, no call
// to the token endpoint) or refreshes with the stored refresh token — the
// newest of the grant, whichever old one its callback URL carried — and
// stores the result. A node that finds the lease taken waits for the
// holder's result (polling the store) instead of refreshing.
//
// Why a lease taken before the call, and not optimism or a lock held
// across it: an optimistic refresh (read the version, refresh, then
// compare and swap) lets the loser find out only after it has sent its
// old refresh token to the provider, which is exactly what costs the
// grant. A transaction holding a row or advisory lock through the token
// endpoint's answer would keep a pooled connection (and a transaction,
// with its snapshot) open across a network call of up to refreshTimeout,
// once per refreshing grant and once per waiting node, which mailpush
// never does (docs/cluster.md): a slow token endpoint would drain the pool
// the outbox needs. The lease is a row's holder and end, set and cleared
// by short transactions; it runs 2 × refreshTimeout, longer than a refresh
// can take, so a holder that dies leaves it to run out and another node
// takes the grant over. It works the same on SQLite (one node: the lease
// then only orders the node's own requests).
//
// Only the node whose refresh rotated the refresh token subscribes again
// with a new URL; the others, which took the stored tokens, do not (one
// new subscription per rotation, not one per node). A node that
// refreshed but dies before it resubscribes leaves the old URL in place:
// the grant still answers to its refresh token (every refresh token the
// grant held names it), and the next refresh, by whichever node, comes
// with its own resubscription.
//
// A refused refresh (revoked, consent withdrawn, a malformed or oversized
// answer) is an error with ErrRefresh and ErrUnauthorized in its chain:
// the devices are asked to check in, as for a refused password, and the
// shared grant is deleted. Stored grants expire: one unused for
// OAuthGrantIdle (30 days: every live subscription's grant is used at
// least once an access token's life) is deleted, and a superseded refresh
// token stops naming its grant OAuthSupersededKeep (a day) after the
// rotation, long after the resubscription replaced the URL that carried
// it; each refresh deletes up to 100 of each.

// ErrRefresh is in the chain of the error returned when the token endpoint
// does not give a new access token.
var ErrRefresh = errors.New("ews: OAuth refresh refused")

const (
	maxOAuthEntries = 100_000
	refreshBefore   = time.Minute
	// oauthLease is how long a node's refresh lease on a shared grant
	// runs: longer than any refresh (refreshTimeout) and its store writes.
	oauthLease = 2 * refreshTimeout
	// oauthWaitMax bounds how long a node waits for another node's
	// refresh before it gives up (the notification is retried by Exchange).
	oauthWaitMax = refreshTimeout + 5*time.Second
	// OAuthGrantIdle is how long a shared grant stays unused before it is
	// deleted; OAuthSupersededKeep how long a rotated-away refresh token
	// still finds its grant.
	OAuthGrantIdle      = 30 * 24 * time.Hour
	OAuthSupersededKeep = 24 * time.Hour
)

type oauthState struct {
	mu sync.Mutex
	m  map[string]*oauthEntry // by hash of token URL, client ID and a refresh token it held
}

type oauthEntry struct {
	mu  sync.Mutex // one refresh at a time per identity
	cur mailpush.Credentials
	// mine is the refresh token this client's own refresh got (not one
	// read from the shared grant): a URL must be made to carry it.
	mine string
}

func oauthKey(c mailpush.Credentials) string {
	sum := sha256.Sum256([]byte(c.TokenURL + "\x00" + c.ClientID + "\x00" + c.RefreshToken))
	return hex.EncodeToString(sum[:])
}

// entry returns cred's entry, and whether it was made just now.
func (o *oauthState) entry(c mailpush.Credentials) (*oauthEntry, bool) {
	k := oauthKey(c)
	o.mu.Lock()
	defer o.mu.Unlock()
	if e := o.m[k]; e != nil {
		return e, false
	}
	if o.m == nil {
		o.m = map[string]*oauthEntry{}
	}
	o.evictLocked()
	e := &oauthEntry{cur: c}
	o.m[k] = e
	return e, true
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

func (o *oauthState) lookup(cred mailpush.Credentials) *oauthEntry {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.m[oauthKey(cred)]
}

// Current returns the newest credentials the client holds for cred's
// identity: a refreshed access token and, when the provider rotated it, a
// new refresh token. Credentials without a refresh token come back as they
// are.
func (c *Client) Current(cred mailpush.Credentials) mailpush.Credentials {
	cur, _ := c.Rotated(cred)
	return cur
}

// Rotated is Current, and reports whether this client's own refresh gave
// the identity a refresh token other than cred's: then a callback URL
// carrying cred's is to be replaced by one carrying the new one. A newer
// refresh token read from the shared grant (another node refreshed) is not
// this client's to carry.
func (c *Client) Rotated(cred mailpush.Credentials) (mailpush.Credentials, bool) {
	if !cred.Refreshable() {
		return cred, false
	}
	e := c.oauth.lookup(cred)
	if e == nil {
		return cred, false
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.cur, e.cur.RefreshToken != cred.RefreshToken && e.cur.RefreshToken == e.mine
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
// (of this node or, with Grants, of another) already did.
func (c *Client) bearer(ctx context.Context, cred mailpush.Credentials, refused string) (string, error) {
	if !cred.Refreshable() {
		return cred.AccessToken, nil
	}
	e, made := c.oauth.entry(cred)
	e.mu.Lock()
	defer e.mu.Unlock()
	if c.usable(e.cur, refused) {
		if made && c.Grants != nil {
			// Credentials with a live access token (a registration): the
			// other nodes get it too instead of refreshing for themselves.
			c.share(ctx, e.cur)
		}
		return e.cur.AccessToken, nil
	}
	next, mine, err := c.renew(ctx, e.cur, refused)
	if err != nil {
		return "", err
	}
	rotated := next.RefreshToken != e.cur.RefreshToken
	e.cur = next
	if mine {
		e.mine = next.RefreshToken
	}
	if rotated {
		c.oauth.alias(next, e)
	}
	return next.AccessToken, nil
}

// usable reports whether cur's access token may be sent: present, not
// within refreshBefore of its expiry, and not the one Exchange refused.
func (c *Client) usable(cur mailpush.Credentials, refused string) bool {
	valid := cur.AccessToken != "" && (cur.ExpiresAt == 0 || c.now().Add(refreshBefore).Before(time.Unix(cur.ExpiresAt, 0)))
	return valid && (refused == "" || cur.AccessToken != refused)
}

// renew gets cur's identity a usable access token, and reports whether it
// came from this client's own refresh. Without Grants it refreshes; with
// them it goes through the grant the nodes share.
func (c *Client) renew(ctx context.Context, cur mailpush.Credentials, refused string) (mailpush.Credentials, bool, error) {
	if c.Grants == nil {
		next, err := c.refresh(ctx, cur)
		return next, err == nil, err
	}
	due := func(g mailpush.OAuthGrant) bool { return !c.usable(withGrant(cur, g), refused) }
	wctx, cancel := context.WithTimeout(ctx, oauthWaitMax)
	defer cancel()
	var g mailpush.OAuthGrant
	var holder string
	// Real time, not the injected clock: this waits for another node's
	// store write (as the pipeline's claim poll does), not for a moment.
	for delay := 10 * time.Millisecond; ; delay = min(2*delay, 500*time.Millisecond) {
		holder = mailpush.NewID()
		var err error
		g, err = c.Grants.LeaseOAuthGrant(wctx, grantOf(cur), holder, c.now().Add(oauthLease), due)
		if err != nil {
			return cur, false, err
		}
		if !due(g) {
			return withGrant(cur, g), false, nil // another node refreshed
		}
		if g.Leased {
			break
		}
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-wctx.Done():
			t.Stop()
			return cur, false, mailpush.WrapError(mailpush.EUnavailable, "another node is refreshing this OAuth grant and has not finished", wctx.Err())
		}
	}
	// From here the refresh and its record run to their end, whoever
	// asked: the provider spends the old refresh token as it answers.
	ctx, cancelSave := context.WithTimeout(context.WithoutCancel(ctx), refreshTimeout+oauthStoreTimeout)
	defer cancelSave()
	next, err := c.refresh(ctx, withGrant(cur, g))
	if err != nil {
		if errors.Is(err, ErrUnauthorized) {
			c.Grants.DeleteOAuthGrant(ctx, g) // the grant is dead everywhere; a failed delete leaves it to expire
		} else {
			c.Grants.ReleaseOAuthGrant(ctx, g, holder) // else the lease runs out
		}
		return cur, false, err
	}
	g.AccessToken, g.RefreshToken, g.ExpiresAt = next.AccessToken, next.RefreshToken, next.ExpiresAt
	if _, err := c.Grants.SaveOAuthGrant(ctx, g, holder); err != nil {
		// The provider has answered: these are the grant's newest tokens
		// whatever the store says, and this node uses them (and carries
		// the new refresh token to a callback URL). The store still holds
		// the old one: see docs/cluster.md.
		return next, true, nil
	}
	// Best effort: what a failure leaves is deleted after the next refresh.
	now := c.now()
	c.Grants.DeleteIdleOAuthGrants(ctx, now.Add(-OAuthGrantIdle), now.Add(-OAuthSupersededKeep), 100)
	return next, true, nil
}

// oauthStoreTimeout bounds the store writes that follow a refresh.
const oauthStoreTimeout = 10 * time.Second

// share records credentials with a live access token as their grant's
// tokens when the store knows no grant of them yet (never leased: nothing
// is due). A failure only costs another node a refresh.
func (c *Client) share(ctx context.Context, cur mailpush.Credentials) {
	c.Grants.LeaseOAuthGrant(ctx, grantOf(cur), "", time.Time{}, func(mailpush.OAuthGrant) bool { return false })
}

func grantOf(c mailpush.Credentials) mailpush.OAuthGrant {
	return mailpush.OAuthGrant{TokenURL: c.TokenURL, ClientID: c.ClientID, AccessToken: c.AccessToken, RefreshToken: c.RefreshToken, ExpiresAt: c.ExpiresAt}
}

// withGrant is cur with the grant's tokens.
func withGrant(cur mailpush.Credentials, g mailpush.OAuthGrant) mailpush.Credentials {
	cur.AccessToken, cur.RefreshToken, cur.ExpiresAt = g.AccessToken, g.RefreshToken, g.ExpiresAt
	return cur
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
