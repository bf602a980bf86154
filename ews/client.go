package ews

import (
	"bytes"
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/mailpush/mailpush"
)

// MaxResponseSize caps the EWS response bodies the client reads.
const MaxResponseSize = 4 << 20

// MaxGetItems is the most item IDs one GetItems call accepts.
const MaxGetItems = 100

// serverVersion is sent as RequestServerVersion: the schema this client
// writes and reads.
const serverVersion = "Exchange2013"

// Client calls the EWS operations a push service needs. The zero value is
// usable; set HTTP to a client with timeouts (and the right TLS roots) in
// production. Client has no Unsubscribe: EWS cannot end a push subscription
// by request; answer StatusUnsubscribe to its next notification instead.
//
// Client never follows an HTTP redirect, whatever HTTP.CheckRedirect says:
// every request carries the user's credentials (Basic, NTLM or a bearer
// token), and a redirect could take them to a host or a port the tenant
// never allowed, or down to plain http. Exchange answers EWS requests
// itself; a 3xx means a misconfigured or hostile server, and is an error
// with code ERedirect that names where it pointed, so that the admin can
// allow that URL and the app send it as its ewsUrl.
type Client struct {
	HTTP      *http.Client // nil means http.DefaultClient; its CheckRedirect is ignored
	UserAgent string       // empty means "mailpush/<version>"
	// Clock decides when an OAuth access token is due for refresh; nil is
	// the system clock.
	Clock mailpush.Clock
	// MaxIdentities bounds the per-identity connection pools of
	// certificate-based authentication (identity.go); 0 means
	// DefaultMaxIdentities.
	MaxIdentities int
	// Grants, when set, shares OAuth refreshes with the other nodes
	// through the store (oauth.go): one node refreshes a grant, the
	// others use its tokens. Nil keeps them in this process's memory.
	Grants mailpush.OAuthGrantStore

	once  sync.Once
	hc    *http.Client  // HTTP without redirects
	auth  authState     // NTLM hosts and connections, affinity cookies
	oauth oauthState    // refreshed OAuth tokens (oauth.go)
	ids   identityPools // one connection pool per client identity (identity.go)
}

func (c *Client) now() time.Time {
	if c.Clock == nil {
		return time.Now()
	}
	return c.Clock.Now()
}

// httpClient is HTTP with redirects turned off.
func (c *Client) httpClient() *http.Client {
	c.once.Do(func() {
		base := c.HTTP
		if base == nil {
			base = http.DefaultClient
		}
		hc := *base
		hc.CheckRedirect = noRedirects
		c.hc = &hc
	})
	return c.hc
}

// noRedirects makes net/http hand back the 3xx answer itself.
func noRedirects(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

// redirectError describes a 3xx answer: where it pointed, without any user
// info or query (they could carry secrets), and that it was not followed.
func redirectError(op string, resp *http.Response) error {
	where := "nowhere (no Location)"
	if loc, err := resp.Location(); err == nil {
		loc.User, loc.RawQuery, loc.Fragment = nil, "", ""
		where = loc.String()
	}
	return mailpush.WrapError(mailpush.ERedirect,
		fmt.Sprintf("the mail server answered HTTP %d redirecting to %s; mailpush never follows a mail server's redirect (credentials would go with it): use the final EWS URL, on an allowed host", resp.StatusCode, where),
		fmt.Errorf("ews: %s: HTTP %d redirect not followed", op, resp.StatusCode))
}

// Endpoint is an EWS URL and the credentials to use there: a bearer token
// when AccessToken is set, otherwise Username and Password with Basic, or
// NTLM when the host asks for it (see auth.go).
type Endpoint struct {
	URL         string // e.g. https://mail.example.com/EWS/Exchange.asmx
	Credentials mailpush.Credentials
	// Impersonate is the SMTP address of the mailbox to act on as a service
	// account holding the ApplicationImpersonation role: it goes into
	// t:ExchangeImpersonation and X-AnchorMailbox.
	Impersonate string
	// Affinity names whose server-affinity cookie (X-BackEndOverrideCookie)
	// the request sends and keeps, e.g. a mailbox ID; empty means none.
	Affinity string
	// Mailbox is the SMTP address whose own Inbox Subscribe and GetFolder
	// name (t:DistinguishedFolderId with t:Mailbox/t:EmailAddress): Exchange
	// then checks that the credentials may open that very mailbox (the
	// owner's or a delegate's), so credentials of one user can never watch
	// another's Inbox under that other's address. Empty names the
	// authenticated user's own Inbox.
	Mailbox string
	// Identity, when set, is the TLS client certificate the requests
	// present (certificate-based authentication, identity.go) instead of
	// Credentials.
	Identity *Identity
}

// inboxFolderID is the Inbox of ep.Mailbox (or of the caller).
func inboxFolderID(ep Endpoint) string {
	if ep.Mailbox == "" {
		return `<t:DistinguishedFolderId Id="inbox"/>`
	}
	return `<t:DistinguishedFolderId Id="inbox"><t:Mailbox><t:EmailAddress>` + escape(ep.Mailbox) + `</t:EmailAddress></t:Mailbox></t:DistinguishedFolderId>`
}

// SubscribeRequest describes a push subscription.
type SubscribeRequest struct {
	Folder          string      // distinguished folder ID; empty means "inbox"
	EventTypes      []EventType // empty means every item event (NewMail, Created, Deleted, Modified, Moved, Copied)
	Watermark       string      // optional: resume after this watermark
	StatusFrequency int         // minutes between StatusEvents when idle, 1..1440
	URL             string      // the listener's absolute http(s) URL
}

// SubscribeResult is Exchange's answer to Subscribe.
type SubscribeResult struct {
	SubscriptionID string
	Watermark      string
}

// Item is the part of a mail item a push may show.
type Item struct {
	ID          string
	Subject     string
	FromName    string
	FromAddress string
}

// Subscribe creates a push subscription. Exchange sends the first
// notification right away, possibly before Subscribe returns: the listener at
// req.URL must already be up and must accept a subscription ID it has not
// seen yet.
func (c *Client) Subscribe(ctx context.Context, ep Endpoint, req SubscribeRequest) (SubscribeResult, error) {
	folder := req.Folder
	if folder == "" {
		folder = "inbox"
	}
	if !isFolderName(folder) {
		return SubscribeResult{}, invalid("Subscribe: folder %q is not a distinguished folder ID", truncate(folder))
	}
	types := req.EventTypes
	if len(types) == 0 {
		types = []EventType{NewMailEvent, CreatedEvent, DeletedEvent, ModifiedEvent, MovedEvent, CopiedEvent}
	}
	for _, t := range types {
		if !t.known() || t == StatusEvent {
			return SubscribeResult{}, invalid("Subscribe: %q cannot be subscribed to", truncate(string(t)))
		}
	}
	if req.StatusFrequency < 1 || req.StatusFrequency > 1440 {
		return SubscribeResult{}, invalid("Subscribe: StatusFrequency %d is out of 1..1440 minutes", req.StatusFrequency)
	}
	if u, err := url.Parse(req.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return SubscribeResult{}, invalid("Subscribe: the listener URL must be an absolute http(s) URL")
	}

	var b strings.Builder
	b.WriteString(`<m:Subscribe><m:PushSubscriptionRequest>`)
	if folder == "inbox" {
		b.WriteString(`<t:FolderIds>` + inboxFolderID(ep) + `</t:FolderIds>`)
	} else {
		b.WriteString(`<t:FolderIds><t:DistinguishedFolderId Id="` + folder + `"/></t:FolderIds>`)
	}
	b.WriteString(`<t:EventTypes>`)
	for _, t := range types {
		b.WriteString(`<t:EventType>` + string(t) + `</t:EventType>`)
	}
	b.WriteString(`</t:EventTypes>`)
	if req.Watermark != "" {
		b.WriteString(`<t:Watermark>` + escape(req.Watermark) + `</t:Watermark>`)
	}
	b.WriteString(`<t:StatusFrequency>` + strconv.Itoa(req.StatusFrequency) + `</t:StatusFrequency>`)
	b.WriteString(`<t:URL>` + escape(req.URL) + `</t:URL>`)
	b.WriteString(`</m:PushSubscriptionRequest></m:Subscribe>`)

	status, ct, data, err := c.call(ctx, ep, "Subscribe", b.String())
	if err != nil {
		return SubscribeResult{}, err
	}
	return parseSubscribeResponse(status, ct, data)
}

// GetInboxUnread returns the number of unread items in the Inbox (of
// ep.Mailbox when set), from GetFolder with folder:UnreadCount.
func (c *Client) GetInboxUnread(ctx context.Context, ep Endpoint) (int, error) {
	body := `<m:GetFolder>` +
		`<m:FolderShape><t:BaseShape>IdOnly</t:BaseShape>` +
		`<t:AdditionalProperties><t:FieldURI FieldURI="folder:UnreadCount"/></t:AdditionalProperties>` +
		`</m:FolderShape>` +
		`<m:FolderIds>` + inboxFolderID(ep) + `</m:FolderIds>` +
		`</m:GetFolder>`
	status, ct, data, err := c.call(ctx, ep, "GetFolder", body)
	if err != nil {
		return 0, err
	}
	return parseGetFolderResponse(status, ct, data)
}

// GetItems returns the subject and sender of the items with the given IDs,
// in the order asked, from GetItem with item:Subject and message:From. Items
// that no longer exist (ErrorItemNotFound: deleted or moved since the
// notification) are left out; when none of them exists the error has code
// ENotFound. An empty ids is answered without a request.
func (c *Client) GetItems(ctx context.Context, ep Endpoint, ids []string) ([]Item, error) {
	if len(ids) == 0 {
		return []Item{}, nil
	}
	if len(ids) > MaxGetItems {
		return nil, invalid("GetItems: %d item IDs, at most %d in one call", len(ids), MaxGetItems)
	}
	var b strings.Builder
	b.WriteString(`<m:GetItem><m:ItemShape><t:BaseShape>IdOnly</t:BaseShape><t:AdditionalProperties>`)
	b.WriteString(`<t:FieldURI FieldURI="item:Subject"/><t:FieldURI FieldURI="message:From"/>`)
	b.WriteString(`</t:AdditionalProperties></m:ItemShape><m:ItemIds>`)
	for _, id := range ids {
		if id == "" {
			return nil, invalid("GetItems: empty item ID")
		}
		b.WriteString(`<t:ItemId Id="` + escape(id) + `"/>`)
	}
	b.WriteString(`</m:ItemIds></m:GetItem>`)
	status, ct, data, err := c.call(ctx, ep, "GetItem", b.String())
	if err != nil {
		return nil, err
	}
	return parseGetItemResponse(status, ct, data)
}

// call POSTs the SOAP envelope around body and returns the HTTP status,
// content type and body of the answer. It handles transport errors, the size
// cap and HTTP 401/403; decoding the answer is the caller's.
func (c *Client) call(ctx context.Context, ep Endpoint, op, body string) (int, string, []byte, error) {
	u, err := url.Parse(ep.URL)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return 0, "", nil, invalid("%s: the EWS URL must be an absolute http(s) URL", op)
	}
	if u.User != nil {
		return 0, "", nil, invalid("%s: the EWS URL must not hold credentials", op)
	}
	cred := ep.Credentials
	if cred.Empty() && ep.Identity == nil {
		return 0, "", nil, invalid("%s: no credentials for the EWS endpoint", op)
	}

	var env bytes.Buffer
	env.Grow(len(body) + 512)
	env.WriteString(`<?xml version="1.0" encoding="utf-8"?>`)
	env.WriteString(`<soap:Envelope xmlns:soap="` + NamespaceSOAP + `" xmlns:m="` + NamespaceMessages + `" xmlns:t="` + NamespaceTypes + `">`)
	env.WriteString(`<soap:Header><t:RequestServerVersion Version="` + serverVersion + `"/>`)
	if ep.Impersonate != "" {
		env.WriteString(`<t:ExchangeImpersonation><t:ConnectingSID><t:SmtpAddress>` + escape(ep.Impersonate) + `</t:SmtpAddress></t:ConnectingSID></t:ExchangeImpersonation>`)
	}
	env.WriteString(`</soap:Header>`)
	env.WriteString(`<soap:Body>` + body + `</soap:Body></soap:Envelope>`)

	ua := c.UserAgent
	if ua == "" {
		ua = "mailpush/" + mailpush.Version
	}
	newRequest := func() (*http.Request, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.String(), bytes.NewReader(env.Bytes()))
		if err != nil {
			return nil, mailpush.WrapError(mailpush.EInternal, "cannot build the EWS request", err)
		}
		req.Header.Set("Content-Type", "text/xml; charset=utf-8")
		req.Header.Set("Accept", "text/xml")
		req.Header.Set("SOAPAction", `"`+NamespaceMessages+`/`+op+`"`)
		req.Header.Set("User-Agent", ua)
		if ep.Impersonate != "" {
			req.Header.Set("X-AnchorMailbox", ep.Impersonate)
		}
		c.auth.addAffinity(req, ep.Affinity)
		return req, nil
	}
	resp, err := c.do(u, cred, ep.Identity, newRequest)
	if err != nil {
		var me *mailpush.Error
		if errors.As(err, &me) {
			return 0, "", nil, err
		}
		// *url.Error names the URL (net/http strips any password from it)
		// and never the Authorization header.
		if ctx.Err() != nil {
			return 0, "", nil, mailpush.WrapError(mailpush.EUnavailable, "EWS request cancelled", fmt.Errorf("ews: %s: %w", op, ctx.Err()))
		}
		return 0, "", nil, mailpush.WrapError(mailpush.EUnavailable, "mail server unreachable", fmt.Errorf("ews: %s: %w", op, err))
	}
	c.auth.keepAffinity(resp, ep.Affinity)
	defer resp.Body.Close()

	if resp.StatusCode >= 300 && resp.StatusCode < 400 {
		io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		return 0, "", nil, redirectError(op, resp)
	}
	if resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden {
		io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10)) // lets the connection be reused
		return 0, "", nil, mailpush.WrapError(mailpush.EUnauthorized, "the mail server refused the credentials",
			fmt.Errorf("ews: %s: HTTP %d: %w", op, resp.StatusCode, ErrUnauthorized))
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, MaxResponseSize+1))
	if err != nil {
		return 0, "", nil, mailpush.WrapError(mailpush.EUnavailable, "mail server answer cut short", fmt.Errorf("ews: %s: %w", op, err))
	}
	if len(data) > MaxResponseSize {
		return 0, "", nil, mailpush.Errorf(mailpush.EUpstream, "ews: %s: answer is over %d bytes", op, MaxResponseSize)
	}
	return resp.StatusCode, resp.Header.Get("Content-Type"), data, nil
}

// isFolderName reports whether s looks like a distinguished folder ID
// ("inbox", "msgfolderroot"): it is written into an attribute unescaped.
func isFolderName(s string) bool {
	if len(s) > 64 {
		return false
	}
	for _, r := range s {
		if (r < 'a' || r > 'z') && (r < 'A' || r > 'Z') {
			return false
		}
	}
	return s != ""
}

// escape returns s escaped for XML text and attribute values.
func escape(s string) string {
	var b strings.Builder
	xml.EscapeText(&b, []byte(s)) // writes to a strings.Builder never fail
	return b.String()
}
