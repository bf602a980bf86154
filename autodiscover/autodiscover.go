// Package autodiscover finds a mailbox's EWS URL from its e-mail address, as
// Outlook and the EWS Managed API do, so that apps need not know it.
//
// For address user@domain it tries, in order (MS-OXDSCLI, "Autodiscover for
// Exchange"):
//
//  1. for host domain, then autodiscover.domain: the JSON v2 endpoint
//     GET https://host/autodiscover/autodiscover.json/v1.0/{address}?Protocol=EWS
//     (anonymous; {"Protocol":"EWS","Url":…}), then the POX endpoint
//     POST https://host/autodiscover/autodiscover.xml (outlook request and
//     response schemas; EwsUrl of the EXCH or EXPR protocol);
//  2. the HTTP redirect method: GET http://autodiscover.domain/autodiscover/autodiscover.xml
//     whose 301/302 Location names the https POX URL to use;
//  3. the DNS SRV record _autodiscover._tcp.domain: POX at its target and port.
//
// An answer may redirect: Action redirectAddr restarts with another address,
// redirectUrl (or an HTTP 301/302 to the POX POST) names another POX URL.
// At most MaxHops redirections are followed and a loop is refused.
//
// No SSRF: every host and port (candidates, redirect targets, SRV targets,
// the EWS URL found) is checked against the tenant's allowed mail-server
// hosts (host[:port], no port meaning 443) BEFORE any request is sent to
// it; a refused host is logged and skipped. Only https is ever POSTed to:
// the redirect method's GET over http carries nothing, and is sent only to a
// host whose https origin the tenant allows. HTTP redirects are never
// followed by net/http (Client turns them off whatever its HTTP client
// says): a POX POST answered 301/302 is followed by discovery itself, only
// to an https URL on an allowed host and port, re-checked at every hop. Answers are size-capped; results are cached per tenant and
// address for TTL in a bounded map. The resolver, the ports and the HTTP
// client are injectable so that tests point "domain" at loopback servers.
//
// The package also holds the other side, the Responder (responder.go): it
// answers these protocols (and Thunderbird autoconfig and Apple
// configuration profiles) for the tenants' own domains. Client and
// responder share the schemas and message shapes, and each is tested
// against the other, which is why they are one package.
package autodiscover

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/mailpush/mailpush"
)

// Limits.
const (
	MaxHops         = 10
	MaxResponseSize = 256 << 10
	DefaultTTL      = 24 * time.Hour
	DefaultMaxCache = 100_000
)

// Resolver looks up SRV records (a *net.Resolver).
type Resolver interface {
	LookupSRV(ctx context.Context, service, proto, name string) (string, []*net.SRV, error)
}

// Client discovers EWS URLs. The zero value is not usable: set HTTP, Logger
// and Clock. HTTP's CheckRedirect is ignored: Client checks every hop itself.
type Client struct {
	HTTP     *http.Client
	Resolver Resolver // nil means net.DefaultResolver
	// HTTPSPort and HTTPPort are the ports of the candidate hosts
	// (0 means 443 and 80); tests point them at loopback servers.
	HTTPSPort, HTTPPort int
	TTL                 time.Duration // 0 means DefaultTTL
	MaxCache            int           // 0 means DefaultMaxCache
	Logger              *slog.Logger
	Clock               mailpush.Clock

	mu    sync.Mutex
	cache map[string]cached
	hc    *http.Client // HTTP without redirects
}

// httpClient is HTTP with redirects turned off: a redirect is an answer
// that discovery checks, never something net/http follows with the
// request's credentials.
func (c *Client) httpClient() *http.Client {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.hc == nil {
		hc := *c.HTTP
		hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
		c.hc = &hc
	}
	return c.hc
}

type cached struct {
	url     string
	expires time.Time
}

var _ mailpush.EWSLocator = (*Client)(nil)

// LocateEWS returns the EWS URL of address, on one of t's allowed hosts.
// creds, when not empty, authenticate the POX requests (Basic).
func (c *Client) LocateEWS(ctx context.Context, t *mailpush.Tenant, address string, creds mailpush.Credentials) (string, error) {
	key := t.ID + "\x00" + strings.ToLower(address)
	now := c.Clock.Now()
	c.mu.Lock()
	if e, ok := c.cache[key]; ok && now.Before(e.expires) {
		c.mu.Unlock()
		return e.url, nil
	}
	c.mu.Unlock()

	r := &run{c: c, t: t, creds: creds, seen: map[string]bool{}}
	u, err := r.discover(ctx, address)
	if err != nil {
		return "", err
	}
	ttl := c.TTL
	if ttl <= 0 {
		ttl = DefaultTTL
	}
	maxCache := c.MaxCache
	if maxCache <= 0 {
		maxCache = DefaultMaxCache
	}
	c.mu.Lock()
	if c.cache == nil {
		c.cache = map[string]cached{}
	}
	if len(c.cache) >= maxCache {
		for k := range c.cache {
			delete(c.cache, k)
			break
		}
	}
	c.cache[key] = cached{url: u, expires: now.Add(ttl)}
	c.mu.Unlock()
	return u, nil
}

// run is one discovery: its hops, what it has seen and why it failed.
type run struct {
	c         *Client
	t         *mailpush.Tenant
	creds     mailpush.Credentials
	hops      int
	seen      map[string]bool // addresses and URLs already tried (loops)
	forbidden []string        // hosts refused
	hopErr    error           // too many hops or a loop: ends the discovery
}

var errNotFound = errors.New("no EWS URL here")

func (r *run) discover(ctx context.Context, address string) (string, error) {
	_, domain, ok := strings.Cut(address, "@")
	if !ok || domain == "" {
		return "", mailpush.Errorf(mailpush.EInvalid, "mailbox.address has no domain to autodiscover")
	}
	domain = strings.ToLower(strings.TrimSuffix(domain, "."))
	if !r.hop("addr:" + strings.ToLower(address)) {
		return "", r.hopErr
	}
	for _, host := range []string{domain, "autodiscover." + domain} {
		if !r.candidate(host) {
			continue
		}
		base := "https://" + r.hostPort(host, r.c.HTTPSPort, 443)
		if u, err := r.jsonV2(ctx, base, address); err == nil {
			return u, nil
		}
		if u, err := r.pox(ctx, base+"/autodiscover/autodiscover.xml", address); err == nil || r.hopErr != nil {
			return u, err
		}
	}
	// The HTTP redirect method: a GET over http that carries nothing, to a
	// host whose https origin the tenant allows.
	if host := "autodiscover." + domain; r.candidate(host) {
		if target, err := r.redirectMethod(ctx, "http://"+r.hostPort(host, r.c.HTTPPort, 80)+"/autodiscover/autodiscover.xml"); err == nil {
			if u, err := r.pox(ctx, target, address); err == nil || r.hopErr != nil {
				return u, err
			}
		}
	}
	// DNS SRV.
	res := r.c.Resolver
	if res == nil {
		res = net.DefaultResolver
	}
	if _, srvs, err := res.LookupSRV(ctx, "autodiscover", "tcp", domain); err == nil {
		for _, srv := range srvs {
			hostPort := net.JoinHostPort(strings.TrimSuffix(srv.Target, "."), strconv.Itoa(int(srv.Port)))
			if !r.allowed(hostPort) {
				continue
			}
			target := "https://" + hostPort + "/autodiscover/autodiscover.xml"
			if u, err := r.pox(ctx, target, address); err == nil || r.hopErr != nil {
				return u, err
			}
		}
	} else {
		r.c.Logger.Debug("autodiscover: no SRV record", "domain", domain, "err", err)
	}
	if r.hopErr != nil {
		return "", r.hopErr
	}
	if len(r.forbidden) > 0 {
		return "", mailpush.Errorf(mailpush.EForbidden, "autodiscover led only to hosts outside the tenant's allowed mail-server hosts (%s); send mailbox.ewsUrl or allow the host",
			strings.Join(r.forbidden, ", "))
	}
	return "", mailpush.Errorf(mailpush.EUnsupported, "autodiscover found no EWS URL for this address; send mailbox.ewsUrl")
}

func (r *run) hostPort(host string, port, def int) string {
	if port == 0 {
		port = def
	}
	if port == def {
		return host
	}
	return net.JoinHostPort(host, strconv.Itoa(port))
}

// allowed checks a host and port before any request goes to it.
func (r *run) allowed(hostPort string) bool {
	if r.t.HostAllowed(hostPort) {
		return true
	}
	r.c.Logger.Warn("autodiscover: host not allowed for the tenant; skipped", "tenant", r.t.Name, "host", hostPort)
	r.forbidden = append(r.forbidden, hostPort)
	return false
}

// candidate checks a host that discovery guesses from the domain, at the
// https port it will be asked on; a guess outside the tenant's hosts is
// skipped quietly (it is no one's answer).
func (r *run) candidate(host string) bool {
	if r.t.HostAllowed(r.hostPort(host, r.c.HTTPSPort, 443)) {
		return true
	}
	r.c.Logger.Debug("autodiscover: candidate host not allowed for the tenant; skipped", "tenant", r.t.Name, "host", host)
	return false
}

// allowedURL checks an absolute https URL's host and port (443 when it
// names none).
func (r *run) allowedURL(raw string) (*url.URL, bool) {
	u, err := url.Parse(raw)
	if err != nil || u.Scheme != "https" || u.Host == "" || u.User != nil {
		r.c.Logger.Warn("autodiscover: ignoring a URL that is not an absolute https URL", "tenant", r.t.Name)
		return nil, false
	}
	port := u.Port()
	if port == "" {
		port = "443"
	}
	return u, r.allowed(net.JoinHostPort(u.Hostname(), port))
}

// hop counts a redirection; it fails on a loop or past MaxHops.
func (r *run) hop(key string) bool {
	if r.seen[key] {
		r.c.Logger.Warn("autodiscover: redirect loop refused", "tenant", r.t.Name)
		r.hopErr = mailpush.Errorf(mailpush.EUpstream, "autodiscover redirects in a loop; send mailbox.ewsUrl")
		return false
	}
	r.seen[key] = true
	if r.hops++; r.hops > MaxHops+1 { // the first address is not a redirection
		r.c.Logger.Warn("autodiscover: too many redirections", "tenant", r.t.Name, "max", MaxHops)
		r.hopErr = mailpush.Errorf(mailpush.EUpstream, "autodiscover redirects more than %d times; send mailbox.ewsUrl", MaxHops)
		return false
	}
	return true
}

func (r *run) get(ctx context.Context, method, target string, body []byte, contentType string) (*http.Response, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, target, bytes.NewReader(body))
	if err != nil {
		return nil, nil, err
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	req.Header.Set("User-Agent", "mailpush/"+mailpush.Version)
	if !r.creds.Empty() && r.creds.AccessToken == "" && method == http.MethodPost {
		req.SetBasicAuth(r.creds.Username, r.creds.Password)
	} else if r.creds.AccessToken != "" && method == http.MethodPost {
		req.Header.Set("Authorization", "Bearer "+r.creds.AccessToken)
	}
	resp, err := r.c.httpClient().Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, MaxResponseSize+1))
	if err != nil {
		return nil, nil, err
	}
	if len(data) > MaxResponseSize {
		return nil, nil, fmt.Errorf("answer over %d bytes", MaxResponseSize)
	}
	return resp, data, nil
}

// jsonV2 asks the anonymous JSON endpoint.
func (r *run) jsonV2(ctx context.Context, base, address string) (string, error) {
	resp, data, err := r.get(ctx, http.MethodGet, base+"/autodiscover/autodiscover.json/v1.0/"+url.PathEscape(address)+"?Protocol=EWS", nil, "")
	if err != nil {
		r.c.Logger.Debug("autodiscover: JSON endpoint unreachable", "err", err)
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", errNotFound
	}
	var ans struct {
		Protocol string `json:"Protocol"`
		URL      string `json:"Url"`
	}
	if err := json.Unmarshal(data, &ans); err != nil || !strings.EqualFold(ans.Protocol, "EWS") || ans.URL == "" {
		r.c.Logger.Warn("autodiscover: JSON answer without an EWS Url; ignored", "tenant", r.t.Name)
		return "", errNotFound
	}
	if _, ok := r.allowedURL(ans.URL); !ok {
		return "", errNotFound
	}
	return ans.URL, nil
}

// redirectMethod GETs the http URL and returns the https Location it
// redirects to.
func (r *run) redirectMethod(ctx context.Context, target string) (string, error) {
	resp, _, err := r.get(ctx, http.MethodGet, target, nil, "")
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusFound && resp.StatusCode != http.StatusMovedPermanently {
		return "", errNotFound
	}
	loc := resp.Header.Get("Location")
	if _, ok := r.allowedURL(loc); !ok {
		return "", errNotFound
	}
	return loc, nil
}

const (
	requestSchema  = "http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006"
	responseSchema = "http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a"
)

type poxResponse struct {
	XMLName  xml.Name `xml:"Autodiscover"`
	Response struct {
		Error *struct {
			Code    string `xml:"ErrorCode"`
			Message string `xml:"Message"`
		} `xml:"Error"`
		Account struct {
			Action       string `xml:"Action"`
			RedirectAddr string `xml:"RedirectAddr"`
			RedirectURL  string `xml:"RedirectUrl"`
			Protocols    []struct {
				Type   string `xml:"Type"`
				EwsURL string `xml:"EwsUrl"`
			} `xml:"Protocol"`
		} `xml:"Account"`
	} `xml:"Response"`
}

// parsePOX reads an outlook-schema answer (untrusted: size-capped by the caller).
func parsePOX(data []byte) (*poxResponse, error) {
	var ans poxResponse
	if err := xml.Unmarshal(data, &ans); err != nil {
		return nil, err
	}
	return &ans, nil
}

// pox POSTs the outlook request to target (already host-checked) and
// follows the answer's redirections.
func (r *run) pox(ctx context.Context, target, address string) (string, error) {
	if !r.hop("url:" + target + "\x00" + strings.ToLower(address)) {
		return "", r.hopErr
	}
	var body bytes.Buffer
	body.WriteString(`<?xml version="1.0" encoding="utf-8"?><Autodiscover xmlns="` + requestSchema + `"><Request><EMailAddress>`)
	xml.EscapeText(&body, []byte(address))
	body.WriteString(`</EMailAddress><AcceptableResponseSchema>` + responseSchema + `</AcceptableResponseSchema></Request></Autodiscover>`)
	resp, data, err := r.get(ctx, http.MethodPost, target, body.Bytes(), "text/xml; charset=utf-8")
	if err != nil {
		r.c.Logger.Debug("autodiscover: POX endpoint unreachable", "err", err)
		return "", err
	}
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusFound, http.StatusMovedPermanently, http.StatusTemporaryRedirect, http.StatusPermanentRedirect:
		loc := resp.Header.Get("Location")
		if _, ok := r.allowedURL(loc); !ok {
			return "", errNotFound
		}
		return r.pox(ctx, loc, address)
	default:
		return "", errNotFound
	}
	ans, err := parsePOX(data)
	if err != nil {
		r.c.Logger.Warn("autodiscover: POX answer is not the outlook response schema; ignored", "tenant", r.t.Name)
		return "", errNotFound
	}
	if e := ans.Response.Error; e != nil {
		r.c.Logger.Info("autodiscover: POX error", "code", e.Code)
		return "", errNotFound
	}
	acct := ans.Response.Account
	switch acct.Action {
	case "redirectAddr":
		if !strings.Contains(acct.RedirectAddr, "@") {
			return "", errNotFound
		}
		return r.discover(ctx, acct.RedirectAddr)
	case "redirectUrl":
		if _, ok := r.allowedURL(acct.RedirectURL); !ok {
			return "", errNotFound
		}
		return r.pox(ctx, acct.RedirectURL, address)
	}
	for _, want := range []string{"EXCH", "EXPR"} {
		for _, p := range acct.Protocols {
			if p.Type == want && p.EwsURL != "" {
				if _, ok := r.allowedURL(p.EwsURL); ok {
					return p.EwsURL, nil
				}
			}
		}
	}
	return "", errNotFound
}
