package ews

import (
	"bytes"
	"context"
	"encoding/xml"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mailpush/mailpush"
)

const secret = "s3cret-Pa55word"

var basic = mailpush.Credentials{Username: `CONTOSO\alice`, Password: secret}

// Answers in the shape Exchange 2013–2019 gives them.
const (
	subscribeOK = `<?xml version="1.0" encoding="utf-8"?>
<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/">
<s:Header><h:ServerVersionInfo MajorVersion="15" MinorVersion="1" MajorBuildNumber="2507" MinorBuildNumber="6" Version="V2017_07_11" xmlns:h="http://schemas.microsoft.com/exchange/services/2006/types" xmlns="http://schemas.microsoft.com/exchange/services/2006/types" xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"/></s:Header>
<s:Body xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xmlns:xsd="http://www.w3.org/2001/XMLSchema">
<m:SubscribeResponse xmlns:m="http://schemas.microsoft.com/exchange/services/2006/messages" xmlns:t="http://schemas.microsoft.com/exchange/services/2006/types">
<m:ResponseMessages><m:SubscribeResponseMessage ResponseClass="Success"><m:ResponseCode>NoError</m:ResponseCode>
<m:SubscriptionId>JABleGNoMDEuY29udG9zby5jb20QAAAA</m:SubscriptionId><m:Watermark>AQAAAGJhA2lZuE6i1N+1rkdEZQeygpQx</m:Watermark>
</m:SubscribeResponseMessage></m:ResponseMessages></m:SubscribeResponse></s:Body></s:Envelope>`

	subscribeBadWatermark = `<?xml version="1.0" encoding="utf-8"?>
<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body>
<m:SubscribeResponse xmlns:m="http://schemas.microsoft.com/exchange/services/2006/messages" xmlns:t="http://schemas.microsoft.com/exchange/services/2006/types">
<m:ResponseMessages><m:SubscribeResponseMessage ResponseClass="Error"><m:MessageText>The watermark used for creating this subscription was not found.</m:MessageText>
<m:ResponseCode>ErrorInvalidWatermark</m:ResponseCode><m:DescriptiveLinkKey>0</m:DescriptiveLinkKey>
</m:SubscribeResponseMessage></m:ResponseMessages></m:SubscribeResponse></s:Body></s:Envelope>`

	serverBusyFault = `<?xml version="1.0" encoding="utf-8"?>
<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><s:Fault>
<faultcode xmlns:a="http://schemas.microsoft.com/exchange/services/2006/types">a:ErrorServerBusy</faultcode>
<faultstring xml:lang="en-US">The server cannot service this request right now. Try again later.</faultstring>
<detail><e:ResponseCode xmlns:e="http://schemas.microsoft.com/exchange/services/2006/errors">ErrorServerBusy</e:ResponseCode>
<e:Message xmlns:e="http://schemas.microsoft.com/exchange/services/2006/errors">The server cannot service this request right now. Try again later.</e:Message>
<t:MessageXml xmlns:t="http://schemas.microsoft.com/exchange/services/2006/types"><t:Value Name="BackOffMilliseconds">297749</t:Value></t:MessageXml>
</detail></s:Fault></s:Body></s:Envelope>`

	schemaFault = `<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><s:Fault>
<faultcode xmlns:a="http://schemas.microsoft.com/exchange/services/2006/types">a:ErrorSchemaValidation</faultcode>
<faultstring xml:lang="en-US">The request failed schema validation.</faultstring></s:Fault></s:Body></s:Envelope>`

	getFolderOK = `<?xml version="1.0" encoding="utf-8"?>
<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body>
<m:GetFolderResponse xmlns:m="http://schemas.microsoft.com/exchange/services/2006/messages" xmlns:t="http://schemas.microsoft.com/exchange/services/2006/types">
<m:ResponseMessages><m:GetFolderResponseMessage ResponseClass="Success"><m:ResponseCode>NoError</m:ResponseCode>
<m:Folders><t:Folder><t:FolderId Id="AAMkAGI2=" ChangeKey="AQAAABYA"/><t:UnreadCount>12</t:UnreadCount></t:Folder></m:Folders>
</m:GetFolderResponseMessage></m:ResponseMessages></m:GetFolderResponse></s:Body></s:Envelope>`

	getItemMixed = `<?xml version="1.0" encoding="utf-8"?>
<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body>
<m:GetItemResponse xmlns:m="http://schemas.microsoft.com/exchange/services/2006/messages" xmlns:t="http://schemas.microsoft.com/exchange/services/2006/types">
<m:ResponseMessages>
<m:GetItemResponseMessage ResponseClass="Success"><m:ResponseCode>NoError</m:ResponseCode><m:Items>
<t:Message><t:ItemId Id="id-1" ChangeKey="ck"/><t:Subject>Quarterly &amp; numbers</t:Subject>
<t:From><t:Mailbox><t:Name>Bob Example</t:Name><t:EmailAddress>bob@example.com</t:EmailAddress><t:RoutingType>SMTP</t:RoutingType></t:Mailbox></t:From></t:Message>
</m:Items></m:GetItemResponseMessage>
<m:GetItemResponseMessage ResponseClass="Error"><m:MessageText>The specified object was not found in the store.</m:MessageText><m:ResponseCode>ErrorItemNotFound</m:ResponseCode><m:DescriptiveLinkKey>0</m:DescriptiveLinkKey><m:Items/></m:GetItemResponseMessage>
<m:GetItemResponseMessage ResponseClass="Success"><m:ResponseCode>NoError</m:ResponseCode><m:Items>
<t:MeetingRequest><t:ItemId Id="id-3" ChangeKey="ck"/><t:Subject>Sync</t:Subject>
<t:From><t:Mailbox><t:Name>Carol</t:Name><t:EmailAddress>carol@example.com</t:EmailAddress></t:Mailbox></t:From></t:MeetingRequest>
</m:Items></m:GetItemResponseMessage>
</m:ResponseMessages></m:GetItemResponse></s:Body></s:Envelope>`

	getItemNotFound = `<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body>
<m:GetItemResponse xmlns:m="http://schemas.microsoft.com/exchange/services/2006/messages"><m:ResponseMessages>
<m:GetItemResponseMessage ResponseClass="Error"><m:MessageText>The specified object was not found in the store.</m:MessageText><m:ResponseCode>ErrorItemNotFound</m:ResponseCode></m:GetItemResponseMessage>
</m:ResponseMessages></m:GetItemResponse></s:Body></s:Envelope>`
)

// canned is an EWS server that records requests and gives one fixed answer.
type canned struct {
	status int
	ctype  string
	body   string

	mu   sync.Mutex
	reqs []*http.Request
	raw  [][]byte
}

func (c *canned) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	c.mu.Lock()
	c.reqs = append(c.reqs, r)
	c.raw = append(c.raw, b)
	c.mu.Unlock()
	ct := c.ctype
	if ct == "" {
		ct = "text/xml; charset=utf-8"
	}
	w.Header().Set("Content-Type", ct)
	w.WriteHeader(c.status)
	io.WriteString(w, c.body)
}

func (c *canned) last(t *testing.T) (*http.Request, []byte) {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.reqs) == 0 {
		t.Fatal("no request reached the server")
	}
	return c.reqs[len(c.reqs)-1], c.raw[len(c.raw)-1]
}

func serve(t *testing.T, status int, body string) (*canned, Endpoint) {
	t.Helper()
	c := &canned{status: status, body: body}
	srv := httptest.NewServer(c)
	t.Cleanup(srv.Close)
	return c, Endpoint{URL: srv.URL + "/EWS/Exchange.asmx", Credentials: basic}
}

// elements lists the elements of doc in document order as "ns:local", then
// their attributes and non-blank text, for checking request shapes.
func elements(t *testing.T, doc []byte) []string {
	t.Helper()
	short := map[string]string{NamespaceSOAP: "envelope", NamespaceMessages: "messages", NamespaceTypes: "types"}
	d := xml.NewDecoder(bytes.NewReader(doc))
	var out []string
	open := -1 // index in out of the element whose text may follow
	for {
		tok, err := d.Token()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatalf("request is not XML: %v\n%s", err, doc)
		}
		switch tok := tok.(type) {
		case xml.StartElement:
			s := short[tok.Name.Space] + ":" + tok.Name.Local
			for _, a := range tok.Attr {
				if a.Name.Space != "xmlns" && a.Name.Local != "xmlns" {
					s += " " + a.Name.Local + "=" + a.Value
				}
			}
			out = append(out, s)
			open = len(out) - 1
		case xml.CharData:
			if text := bytes.TrimSpace(tok); open >= 0 && len(text) > 0 {
				out[open] += " [" + string(text) + "]"
			}
		case xml.EndElement:
			open = -1
		}
	}
}

func TestSubscribeRequest(t *testing.T) {
	srv, ep := serve(t, 200, subscribeOK)
	c := &Client{UserAgent: "mailpush-test"}
	got, err := c.Subscribe(context.Background(), ep, SubscribeRequest{
		EventTypes:      []EventType{NewMailEvent, ModifiedEvent},
		Watermark:       "AQAA<&>",
		StatusFrequency: 15,
		URL:             "https://push.example.com/ews/cb?t=a&b=c",
	})
	if err != nil {
		t.Fatalf("Subscribe: %v", err)
	}
	if want := (SubscribeResult{SubscriptionID: "JABleGNoMDEuY29udG9zby5jb20QAAAA", Watermark: "AQAAAGJhA2lZuE6i1N+1rkdEZQeygpQx"}); got != want {
		t.Errorf("Subscribe = %+v, want %+v", got, want)
	}

	r, body := srv.last(t)
	headers := map[string]string{
		"SOAPAction":   `"http://schemas.microsoft.com/exchange/services/2006/messages/Subscribe"`,
		"Content-Type": "text/xml; charset=utf-8",
		"User-Agent":   "mailpush-test",
	}
	for k, want := range headers {
		if got := r.Header.Get(k); got != want {
			t.Errorf("header %s = %q, want %q", k, got, want)
		}
	}
	if u, p, ok := r.BasicAuth(); !ok || u != basic.Username || p != secret {
		t.Errorf("basic auth = %q, %q, %v", u, p, ok)
	}
	if r.Method != http.MethodPost || r.URL.Path != "/EWS/Exchange.asmx" {
		t.Errorf("request %s %s", r.Method, r.URL.Path)
	}
	want := []string{
		"envelope:Envelope",
		"envelope:Header",
		"types:RequestServerVersion Version=Exchange2013",
		"envelope:Body",
		"messages:Subscribe",
		"messages:PushSubscriptionRequest",
		"types:FolderIds",
		"types:DistinguishedFolderId Id=inbox",
		"types:EventTypes",
		"types:EventType [NewMailEvent]",
		"types:EventType [ModifiedEvent]",
		"types:Watermark [AQAA<&>]",
		"types:StatusFrequency [15]",
		"types:URL [https://push.example.com/ews/cb?t=a&b=c]",
	}
	if got := elements(t, body); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("request elements:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestSubscribeDefaultsAndBearer(t *testing.T) {
	srv, ep := serve(t, 200, subscribeOK)
	ep.Credentials = mailpush.Credentials{AccessToken: "tok-123", Username: "ignored", Password: "ignored"}
	if _, err := new(Client).Subscribe(context.Background(), ep, SubscribeRequest{StatusFrequency: 1, URL: "http://127.0.0.1:9/cb"}); err != nil {
		t.Fatal(err)
	}
	r, body := srv.last(t)
	if got := r.Header.Get("Authorization"); got != "Bearer tok-123" {
		t.Errorf("Authorization = %q", got)
	}
	var types []string
	for _, e := range elements(t, body) {
		if s, ok := strings.CutPrefix(e, "types:EventType ["); ok {
			types = append(types, strings.TrimSuffix(s, "]"))
		}
		if strings.Contains(e, "Watermark") {
			t.Errorf("empty Watermark was sent: %s", e)
		}
	}
	if got, want := strings.Join(types, ","), "NewMailEvent,CreatedEvent,DeletedEvent,ModifiedEvent,MovedEvent,CopiedEvent"; got != want {
		t.Errorf("default event types %s, want %s", got, want)
	}
	if !strings.HasPrefix(r.Header.Get("User-Agent"), "mailpush/") {
		t.Errorf("default User-Agent %q", r.Header.Get("User-Agent"))
	}
}

func TestSubscribeValidation(t *testing.T) {
	srv, ep := serve(t, 200, subscribeOK)
	ok := SubscribeRequest{StatusFrequency: 1, URL: "https://push.example.com/cb"}
	tests := []struct {
		name string
		ep   func(Endpoint) Endpoint
		req  func(SubscribeRequest) SubscribeRequest
	}{
		{"StatusFrequency 0", nil, func(r SubscribeRequest) SubscribeRequest { r.StatusFrequency = 0; return r }},
		{"StatusFrequency 1441", nil, func(r SubscribeRequest) SubscribeRequest { r.StatusFrequency = 1441; return r }},
		{"relative URL", nil, func(r SubscribeRequest) SubscribeRequest { r.URL = "/cb"; return r }},
		{"ftp URL", nil, func(r SubscribeRequest) SubscribeRequest { r.URL = "ftp://x/cb"; return r }},
		{"StatusEvent", nil, func(r SubscribeRequest) SubscribeRequest { r.EventTypes = []EventType{StatusEvent}; return r }},
		{"unknown event", nil, func(r SubscribeRequest) SubscribeRequest { r.EventTypes = []EventType{"BogusEvent"}; return r }},
		{"folder injection", nil, func(r SubscribeRequest) SubscribeRequest { r.Folder = `inbox"/><x y="`; return r }},
		{"no credentials", func(e Endpoint) Endpoint { e.Credentials = mailpush.Credentials{Username: "u"}; return e }, nil},
		{"credentials in URL", func(e Endpoint) Endpoint {
			e.URL = strings.Replace(e.URL, "http://", "http://u:"+secret+"@", 1)
			return e
		}, nil},
		{"bad EWS URL", func(e Endpoint) Endpoint { e.URL = "mail.example.com/EWS"; return e }, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, r := ep, ok
			if tt.ep != nil {
				e = tt.ep(e)
			}
			if tt.req != nil {
				r = tt.req(r)
			}
			_, err := new(Client).Subscribe(context.Background(), e, r)
			if got := mailpush.ErrorCode(err); got != mailpush.EInvalid {
				t.Errorf("code %q, want %q (error %v)", got, mailpush.EInvalid, err)
			}
			if err != nil && strings.Contains(err.Error(), secret) {
				t.Errorf("error %q holds the password", err)
			}
		})
	}
	srv.mu.Lock()
	defer srv.mu.Unlock()
	if len(srv.reqs) != 0 {
		t.Errorf("%d invalid requests reached the server", len(srv.reqs))
	}
}

func TestClientErrors(t *testing.T) {
	tests := []struct {
		name      string
		status    int
		ctype     string
		body      string
		wantCode  string
		wantResp  *ResponseError // nil: no *ResponseError in the chain
		wantText  string
		wantUnath bool
	}{
		{name: "401", status: 401, body: "", wantCode: mailpush.EUnauthorized, wantUnath: true, wantText: "HTTP 401"},
		{name: "403", status: 403, body: "<html>Forbidden</html>", wantCode: mailpush.EUnauthorized, wantUnath: true, wantText: "HTTP 403"},
		{name: "server busy fault", status: 500, body: serverBusyFault, wantCode: mailpush.EUnavailable,
			wantResp: &ResponseError{Op: "Subscribe", Code: "ErrorServerBusy", Message: "The server cannot service this request right now. Try again later.", BackOff: 297749 * time.Millisecond, Fault: true}},
		{name: "schema fault without detail", status: 500, body: schemaFault, wantCode: mailpush.EUpstream,
			wantResp: &ResponseError{Op: "Subscribe", Code: "ErrorSchemaValidation", Message: "The request failed schema validation.", Fault: true}},
		{name: "invalid watermark", status: 200, body: subscribeBadWatermark, wantCode: mailpush.EUpstream,
			wantResp: &ResponseError{Op: "Subscribe", Code: "ErrorInvalidWatermark", Message: "The watermark used for creating this subscription was not found."}},
		{name: "plain text 503", status: 503, ctype: "text/plain", body: "Service Unavailable", wantCode: mailpush.EUpstream, wantText: "not XML (HTTP 503"},
		{name: "HTML 200", status: 200, ctype: "text/html", body: "<html><body>Sign in</body></html>", wantCode: mailpush.EUpstream, wantText: "not a valid EWS response"},
		{name: "empty 200", status: 200, body: "", wantCode: mailpush.EUpstream, wantText: "not XML"},
		{name: "XML 502 without fault", status: 502, body: subscribeOK, wantCode: mailpush.EUpstream, wantText: "HTTP 502 without a SOAP fault"},
		{name: "wrong response element", status: 200, body: getFolderOK, wantCode: mailpush.EUpstream, wantText: "GetFolderResponse"},
		{name: "no response element", status: 200, body: `<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body/></s:Envelope>`, wantCode: mailpush.EUpstream, wantText: "no SubscribeResponse"},
		{name: "too large", status: 200, body: strings.Repeat("x", MaxResponseSize+1), wantCode: mailpush.EUpstream, wantText: "over"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, ep := serve(t, tt.status, tt.body)
			srv.ctype = tt.ctype
			_, err := new(Client).Subscribe(context.Background(), ep, SubscribeRequest{StatusFrequency: 1, URL: "https://push.example.com/cb"})
			if err == nil {
				t.Fatal("Subscribe succeeded, want an error")
			}
			if got := mailpush.ErrorCode(err); got != tt.wantCode {
				t.Errorf("code %q, want %q (error %v)", got, tt.wantCode, err)
			}
			if got := errors.Is(err, ErrUnauthorized); got != tt.wantUnath {
				t.Errorf("errors.Is(ErrUnauthorized) = %v, want %v (error %v)", got, tt.wantUnath, err)
			}
			var re *ResponseError
			if errors.As(err, &re) != (tt.wantResp != nil) {
				t.Fatalf("error %v: *ResponseError present = %v, want %v", err, re != nil, tt.wantResp != nil)
			}
			if tt.wantResp != nil && *re != *tt.wantResp {
				t.Errorf("ResponseError\n got %+v\nwant %+v", *re, *tt.wantResp)
			}
			if !strings.Contains(err.Error(), tt.wantText) {
				t.Errorf("error %q does not mention %q", err, tt.wantText)
			}
			if strings.Contains(err.Error(), secret) || strings.Contains(err.Error(), "alice") {
				t.Errorf("error %q holds a credential", err)
			}
		})
	}
}

func TestClientTransportErrors(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	srv.Close() // nothing listens there any more
	ep := Endpoint{URL: srv.URL + "/EWS/Exchange.asmx", Credentials: basic}
	_, err := new(Client).GetInboxUnread(context.Background(), ep)
	if got := mailpush.ErrorCode(err); got != mailpush.EUnavailable {
		t.Errorf("closed server: code %q, want %q (%v)", got, mailpush.EUnavailable, err)
	}

	block := make(chan struct{})
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-block:
		case <-r.Context().Done():
		}
	}))
	defer slow.Close()
	defer close(block)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = new(Client).GetInboxUnread(ctx, Endpoint{URL: slow.URL, Credentials: basic})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled context: %v, want context.Canceled in the chain", err)
	}
}

func TestGetInboxUnread(t *testing.T) {
	srv, ep := serve(t, 200, getFolderOK)
	n, err := new(Client).GetInboxUnread(context.Background(), ep)
	if err != nil || n != 12 {
		t.Fatalf("GetInboxUnread = %d, %v; want 12", n, err)
	}
	r, body := srv.last(t)
	if got := r.Header.Get("SOAPAction"); got != `"http://schemas.microsoft.com/exchange/services/2006/messages/GetFolder"` {
		t.Errorf("SOAPAction %q", got)
	}
	want := []string{
		"envelope:Envelope", "envelope:Header", "types:RequestServerVersion Version=Exchange2013", "envelope:Body",
		"messages:GetFolder", "messages:FolderShape", "types:BaseShape [IdOnly]", "types:AdditionalProperties",
		"types:FieldURI FieldURI=folder:UnreadCount", "messages:FolderIds", "types:DistinguishedFolderId Id=inbox",
	}
	if got := elements(t, body); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("request elements:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	noCount := strings.Replace(getFolderOK, "<t:UnreadCount>12</t:UnreadCount>", "", 1)
	_, ep = serve(t, 200, noCount)
	if _, err := new(Client).GetInboxUnread(context.Background(), ep); mailpush.ErrorCode(err) != mailpush.EUpstream {
		t.Errorf("answer without UnreadCount: %v", err)
	}
}

func TestGetItems(t *testing.T) {
	srv, ep := serve(t, 200, getItemMixed)
	got, err := new(Client).GetItems(context.Background(), ep, []string{"id-1", "id-2", "id-3"})
	if err != nil {
		t.Fatal(err)
	}
	want := []Item{
		{ID: "id-1", Subject: "Quarterly & numbers", FromName: "Bob Example", FromAddress: "bob@example.com"},
		{ID: "id-3", Subject: "Sync", FromName: "Carol", FromAddress: "carol@example.com"},
	}
	if len(got) != len(want) {
		t.Fatalf("GetItems = %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("item %d = %+v, want %+v", i, got[i], want[i])
		}
	}
	r, body := srv.last(t)
	if got := r.Header.Get("SOAPAction"); got != `"http://schemas.microsoft.com/exchange/services/2006/messages/GetItem"` {
		t.Errorf("SOAPAction %q", got)
	}
	wantEl := []string{
		"envelope:Envelope", "envelope:Header", "types:RequestServerVersion Version=Exchange2013", "envelope:Body",
		"messages:GetItem", "messages:ItemShape", "types:BaseShape [IdOnly]", "types:AdditionalProperties",
		"types:FieldURI FieldURI=item:Subject", "types:FieldURI FieldURI=message:From",
		"messages:ItemIds", "types:ItemId Id=id-1", "types:ItemId Id=id-2", "types:ItemId Id=id-3",
	}
	if got := elements(t, body); strings.Join(got, "\n") != strings.Join(wantEl, "\n") {
		t.Errorf("request elements:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(wantEl, "\n"))
	}

	_, ep = serve(t, 200, getItemNotFound)
	_, err = new(Client).GetItems(context.Background(), ep, []string{"gone"})
	var re *ResponseError
	if mailpush.ErrorCode(err) != mailpush.ENotFound || !errors.As(err, &re) || re.Code != "ErrorItemNotFound" {
		t.Errorf("all items gone: %v, want ENotFound with ErrorItemNotFound", err)
	}

	if items, err := new(Client).GetItems(context.Background(), ep, nil); err != nil || len(items) != 0 {
		t.Errorf("GetItems(nil) = %v, %v", items, err)
	}
	if _, err := new(Client).GetItems(context.Background(), ep, make([]string, MaxGetItems+1)); mailpush.ErrorCode(err) != mailpush.EInvalid {
		t.Errorf("too many IDs: %v", err)
	}
}
