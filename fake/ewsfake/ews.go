package ewsfake

import (
	"bytes"
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

const (
	ewsPath    = "/EWS/Exchange.asmx"
	nsSOAP     = "http://schemas.xmlsoap.org/soap/envelope/"
	nsMessages = "http://schemas.microsoft.com/exchange/services/2006/messages"
	nsTypes    = "http://schemas.microsoft.com/exchange/services/2006/types"
	nsErrors   = "http://schemas.microsoft.com/exchange/services/2006/errors"
	maxRequest = 1 << 20
)

// failure is an injected answer for the next request of an operation.
type failure struct {
	code    string
	backOff time.Duration
}

// subscribableTypes are the EventType values the schema allows in Subscribe.
var subscribableTypes = []string{newMailEvent, createdEvent, deletedEvent, modifiedEvent, movedEvent, copiedEvent, freeBusyEvent}

func (s *Server) count(op string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests[op]++
	s.notifyLocked()
}

func (s *Server) popFailure(op string) (failure, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	q := s.failures[op]
	if len(q) == 0 {
		return failure{}, false
	}
	f := q[0]
	s.failures[op] = q[1:]
	return f, true
}

// authenticate returns the user of the request: the user its TLS client
// certificate maps to (cba.go), Basic (unless the user is
// NTLM-only), NTLM or Negotiate (NTLMSSP inside), or the user an earlier
// NTLM handshake authenticated on this connection. When it returns nil it
// has answered 401 itself.
func (s *Server) authenticate(w http.ResponseWriter, r *http.Request) *mailbox {
	if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
		mb, err := s.certificateUser(r.TLS.PeerCertificates)
		if err != nil {
			s.count("CertificateRefused")
			s.unauthorized(w, err.Error())
			return nil
		}
		s.count("Certificate")
		return mb
	}
	st, _ := r.Context().Value(connKey{}).(*connState)
	scheme, token, _ := strings.Cut(r.Header.Get("Authorization"), " ")
	switch {
	case strings.EqualFold(scheme, "NTLM") || strings.EqualFold(scheme, "Negotiate"):
		if st == nil {
			s.unauthorized(w, "no connection state")
			return nil
		}
		return s.ntlmAuth(w, r, st, scheme, token)
	case strings.EqualFold(scheme, "Bearer"):
		if mb := s.bearer(token); mb != nil {
			return mb
		}
		// Exchange Online: expired or unknown tokens get a Bearer challenge.
		s.count("Unauthorized")
		w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
		http.Error(w, "401 - Unauthorized: the access token is invalid or has expired.", http.StatusUnauthorized)
		return nil
	case strings.EqualFold(scheme, "Basic"):
		user, pass, ok := r.BasicAuth()
		s.mu.Lock()
		mb := s.logins[lower(user)]
		s.mu.Unlock()
		if ok && mb != nil && !mb.ntlmOnly && mb.checkPassword(pass) {
			return mb
		}
	case scheme == "":
		if st != nil {
			st.mu.Lock()
			mb := st.user
			st.mu.Unlock()
			if mb != nil {
				return mb
			}
		}
		// An anonymous probe is a protocol step, not a refused credential.
		s.challenge(w)
		return nil
	}
	s.unauthorized(w, "invalid credentials")
	return nil
}

// unauthorized answers 401 offering Negotiate, NTLM and Basic, as IIS does.
func (s *Server) unauthorized(w http.ResponseWriter, why string) {
	s.count("Unauthorized")
	s.log.Debug("ewsfake: 401", "why", why)
	s.challenge(w)
}

func (s *Server) challenge(w http.ResponseWriter) {
	w.Header().Add("WWW-Authenticate", "Negotiate")
	w.Header().Add("WWW-Authenticate", "NTLM")
	w.Header().Add("WWW-Authenticate", `Basic realm="ewsfake"`)
	http.Error(w, "401 - Unauthorized: Access is denied due to invalid credentials.", http.StatusUnauthorized)
}

// handleEWS serves /EWS/Exchange.asmx (IIS matches the path without case).
func (s *Server) handleEWS(w http.ResponseWriter, r *http.Request) {
	if !strings.EqualFold(r.URL.Path, ewsPath) {
		http.NotFound(w, r)
		return
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	mb := s.authenticate(w, r)
	if mb == nil {
		return
	}
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "text/xml" && mt != "application/soap+xml" {
		http.Error(w, "unsupported media type", http.StatusUnsupportedMediaType)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxRequest))
	if err != nil {
		http.Error(w, "request too large", http.StatusRequestEntityTooLarge)
		return
	}
	d := xml.NewDecoder(bytes.NewReader(body))
	op, start, impersonate, err := findOperationAs(d)
	if err != nil {
		s.count("Invalid")
		writeFault(w, "ErrorSchemaValidation", "The request failed schema validation: "+err.Error(), 0)
		return
	}
	s.count(op)
	s.mu.Lock()
	s.inflight[op]++
	s.maxInflight[op] = max(s.maxInflight[op], s.inflight[op])
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.inflight[op]--
		s.mu.Unlock()
	}()
	s.affinity(w, r)
	if impersonate != "" {
		s.mu.Lock()
		allowed := mb.impersonator
		target, _ := s.mailboxLocked(impersonate)
		s.mu.Unlock()
		switch {
		case !allowed:
			s.count("ImpersonationDenied")
			writeFault(w, "ErrorImpersonateUserDenied", "The account does not have permission to impersonate the requested user.", 0)
			return
		case target == nil:
			writeFault(w, "ErrorNonExistentMailbox", "The SMTP address has no mailbox associated with it.", 0)
			return
		}
		s.count("Impersonated")
		mb = target
	}
	if action := soapAction(r); action != "" && action != op {
		writeFault(w, "ErrorInvalidRequest", fmt.Sprintf("The request is invalid: SOAPAction names %s but the body holds %s.", truncate(action), op), 0)
		return
	}
	if !s.slow(r, op) {
		return // the client went away while Exchange was slow
	}
	if f, ok := s.popFailure(op); ok {
		writeFailure(w, op, f)
		return
	}
	switch op {
	case "Subscribe":
		s.subscribe(w, r, d, start, mb)
	case "GetFolder":
		s.getFolder(w, d, start, mb)
	case "GetItem":
		s.getItem(w, d, start, mb)
	default:
		writeFault(w, "ErrorInvalidRequest", "The request is invalid: ewsfake does not implement "+op+".", 0)
	}
}

// soapAction returns the operation the SOAPAction header names, "" if none.
func soapAction(r *http.Request) string {
	a := strings.Trim(r.Header.Get("SOAPAction"), `" `)
	if a == "" {
		return ""
	}
	return a[strings.LastIndexByte(a, '/')+1:]
}

// findOperation reads up to the first element of the SOAP body and returns
// its local name, the EWS operation.
func findOperation(d *xml.Decoder) (string, xml.StartElement, error) {
	op, start, _, err := findOperationAs(d)
	return op, start, err
}

// findOperationAs is findOperation that also returns the address of
// t:ExchangeImpersonation/t:ConnectingSID/t:SmtpAddress from the SOAP header.
func findOperationAs(d *xml.Decoder) (string, xml.StartElement, string, error) {
	var impersonate string
	op, start, err := findOperationHeader(d, func(se xml.StartElement) error {
		var h struct {
			SMTP string `xml:"ConnectingSID>SmtpAddress"`
			UPN  string `xml:"ConnectingSID>PrincipalName"`
		}
		if se.Name.Space != nsTypes || se.Name.Local != "ExchangeImpersonation" {
			return d.Skip()
		}
		if err := d.DecodeElement(&h, &se); err != nil {
			return errors.New("malformed ExchangeImpersonation")
		}
		impersonate = strings.TrimSpace(h.SMTP + h.UPN)
		if impersonate == "" {
			return errors.New("ExchangeImpersonation without ConnectingSID/SmtpAddress")
		}
		return nil
	})
	return op, start, impersonate, err
}

func findOperationHeader(d *xml.Decoder, header func(xml.StartElement) error) (string, xml.StartElement, error) {
	var root xml.StartElement
	for {
		tok, err := d.Token()
		if err != nil {
			return "", root, errors.New("no XML document")
		}
		if se, ok := tok.(xml.StartElement); ok {
			root = se
			break
		}
	}
	if root.Name.Space != nsSOAP || root.Name.Local != "Envelope" {
		return "", root, errors.New("the root element is not a SOAP 1.1 Envelope")
	}
	for {
		tok, err := d.Token()
		if err != nil {
			return "", root, errors.New("malformed XML")
		}
		switch t := tok.(type) {
		case xml.StartElement:
			if t.Name.Space == nsSOAP && t.Name.Local == "Header" {
				if err := children(d, header); err != nil {
					return "", root, err
				}
				continue
			}
			if t.Name.Space != nsSOAP || t.Name.Local != "Body" {
				if err := d.Skip(); err != nil {
					return "", root, errors.New("malformed XML")
				}
				continue
			}
			for {
				tok, err := d.Token()
				if err != nil {
					return "", root, errors.New("malformed XML")
				}
				switch t := tok.(type) {
				case xml.StartElement:
					if t.Name.Space != nsMessages {
						return "", t, fmt.Errorf("the element %s is not in the messages namespace", t.Name.Local)
					}
					return t.Name.Local, t, nil
				case xml.EndElement:
					return "", root, errors.New("empty SOAP Body")
				}
			}
		case xml.EndElement:
			return "", root, errors.New("no SOAP Body")
		}
	}
}

// children calls fn for each child element of the element just started.
func children(d *xml.Decoder, fn func(xml.StartElement) error) error {
	for {
		tok, err := d.Token()
		if err != nil {
			return errors.New("malformed XML")
		}
		switch t := tok.(type) {
		case xml.StartElement:
			if err := fn(t); err != nil {
				return err
			}
		case xml.EndElement:
			return nil
		}
	}
}

func text(d *xml.Decoder, se xml.StartElement) (string, error) {
	var s string
	if err := d.DecodeElement(&s, &se); err != nil {
		return "", errors.New("malformed XML")
	}
	return strings.TrimSpace(s), nil
}

func attr(se xml.StartElement, name string) string {
	for _, a := range se.Attr {
		if a.Name.Space == "" && a.Name.Local == name {
			return a.Value
		}
	}
	return ""
}

type pushRequest struct {
	kind       string // the subscription element: PushSubscriptionRequest…
	folders    []string
	mailbox    string // t:Mailbox/t:EmailAddress of the folder: another user's Inbox
	eventTypes []string
	watermark  string
	freq       int
	url        string
}

// parseSubscribe reads m:Subscribe and checks what the schema checks: the
// children of PushSubscriptionRequest in order, in the types namespace,
// EventType values, and StatusFrequency within 1..1440.
func parseSubscribe(d *xml.Decoder) (*pushRequest, error) {
	req := &pushRequest{}
	err := children(d, func(se xml.StartElement) error {
		if req.kind != "" {
			return fmt.Errorf("unexpected element %s", se.Name.Local)
		}
		req.kind = se.Name.Local
		if se.Name.Space != nsMessages || req.kind != "PushSubscriptionRequest" {
			return d.Skip()
		}
		schema := []struct {
			name     string
			optional bool
		}{{"FolderIds", false}, {"EventTypes", false}, {"Watermark", true}, {"StatusFrequency", false}, {"URL", false}, {"CallerData", true}}
		i := 0
		err := children(d, func(se xml.StartElement) error {
			for i < len(schema) && schema[i].optional && schema[i].name != se.Name.Local {
				i++
			}
			if se.Name.Space != nsTypes || i == len(schema) || schema[i].name != se.Name.Local {
				return fmt.Errorf("the element %s in namespace %s is not expected here", se.Name.Local, se.Name.Space)
			}
			i++
			var err error
			switch se.Name.Local {
			case "FolderIds":
				err = children(d, func(se xml.StartElement) error {
					switch se.Name.Local {
					case "DistinguishedFolderId":
						req.folders = append(req.folders, attr(se, "Id"))
						var f struct {
							Mailbox string `xml:"Mailbox>EmailAddress"`
						}
						if err := d.DecodeElement(&f, &se); err != nil {
							return err
						}
						req.mailbox = strings.TrimSpace(f.Mailbox)
						return nil
					case "FolderId":
						req.folders = append(req.folders, attr(se, "Id"))
					default:
						return fmt.Errorf("unexpected element %s in FolderIds", se.Name.Local)
					}
					return d.Skip()
				})
			case "EventTypes":
				err = children(d, func(se xml.StartElement) error {
					t, err := text(d, se)
					if err == nil && (se.Name.Local != "EventType" || !slices.Contains(subscribableTypes, t)) {
						err = fmt.Errorf("the EventType %q is invalid", truncate(t))
					}
					req.eventTypes = append(req.eventTypes, t)
					return err
				})
				if err == nil && len(req.eventTypes) == 0 {
					err = errors.New("EventTypes is empty")
				}
			case "Watermark":
				req.watermark, err = text(d, se)
			case "StatusFrequency":
				var v string
				if v, err = text(d, se); err == nil {
					req.freq, err = strconv.Atoi(v)
					if err != nil || req.freq < 1 || req.freq > 1440 {
						err = fmt.Errorf("StatusFrequency %q is not in 1..1440", truncate(v))
					}
				}
			case "URL":
				req.url, err = text(d, se)
			default:
				err = d.Skip()
			}
			return err
		})
		if err != nil {
			return err
		}
		for ; i < len(schema); i++ {
			if !schema[i].optional {
				return fmt.Errorf("the element %s is missing", schema[i].name)
			}
		}
		if len(req.folders) == 0 {
			return errors.New("FolderIds is empty")
		}
		return nil
	})
	if err == nil && req.kind == "" {
		err = errors.New("no subscription request in Subscribe")
	}
	return req, err
}

func (s *Server) subscribe(w http.ResponseWriter, r *http.Request, d *xml.Decoder, _ xml.StartElement, mb *mailbox) {
	req, err := parseSubscribe(d)
	if err != nil {
		writeFault(w, "ErrorSchemaValidation", "The request failed schema validation: "+err.Error(), 0)
		return
	}
	if req.kind != "PushSubscriptionRequest" {
		writeResponseError(w, "Subscribe", "ErrorInvalidSubscriptionRequest", "ewsfake supports push subscriptions only.")
		return
	}
	s.mu.Lock()
	target, denied := s.openAs(mb, req.mailbox)
	s.mu.Unlock()
	if denied != "" {
		s.count("AccessDenied")
		writeResponseError(w, "Subscribe", denied, accessText(denied))
		return
	}
	mb = target
	if len(req.folders) != 1 || (req.folders[0] != "inbox" && req.folders[0] != mb.inboxID) {
		writeResponseError(w, "Subscribe", "ErrorInvalidOperation", "ewsfake supports subscriptions to the Inbox only.")
		return
	}
	if u, err := url.Parse(req.url); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		writeResponseError(w, "Subscribe", "ErrorInvalidPushSubscriptionUrl", "The push subscription URL is invalid.")
		return
	}

	s.mu.Lock()
	var backlog []event
	start := mb.current()
	if req.watermark != "" {
		var ok bool
		if backlog, ok = mb.since(req.watermark); !ok {
			s.mu.Unlock()
			writeResponseError(w, "Subscribe", "ErrorInvalidWatermark", "The watermark used for creating this subscription was not found.")
			return
		}
		start = req.watermark
	}
	s.subSeq++
	sub := &subscription{
		id:     randomID("", 48),
		seq:    s.subSeq,
		mb:     mb,
		url:    req.url,
		freq:   req.freq,
		types:  req.eventTypes,
		active: true,
		prevWM: start,
		wake:   make(chan struct{}, 1),
		done:   make(chan struct{}),
	}
	sub.ctx, sub.cancel = context.WithCancel(s.ctx)
	sub.enqueueLocked(backlog, s.queueSize)
	s.subs[sub.id] = sub
	mb.subs[sub.id] = sub
	early := s.holds[SubscribeAnswer] != nil
	s.notifyLocked()
	s.mu.Unlock()
	if early {
		// Exchange's sender runs on its own: the new subscription's first
		// notifications may reach the listener before the answer does.
		s.start(sub)
		if !s.slow(r, SubscribeAnswer) {
			return // the client gave up; the subscription stands, as on Exchange
		}
	} else {
		// Exchange sends the first notification once it has answered.
		defer s.start(sub)
	}

	writeEnvelope(w, http.StatusOK, `<m:SubscribeResponse xmlns:m="`+nsMessages+`" xmlns:t="`+nsTypes+`">`+
		`<m:ResponseMessages><m:SubscribeResponseMessage ResponseClass="Success"><m:ResponseCode>NoError</m:ResponseCode>`+
		`<m:SubscriptionId>`+esc(sub.id)+`</m:SubscriptionId><m:Watermark>`+esc(start)+`</m:Watermark>`+
		`</m:SubscribeResponseMessage></m:ResponseMessages></m:SubscribeResponse>`)
	http.NewResponseController(w).Flush()
	s.log.Info("ewsfake subscription created", "subscription", sub.id, "statusFrequency", sub.freq)
}

type idAttr struct {
	ID      string `xml:"Id,attr"`
	Mailbox string `xml:"Mailbox>EmailAddress"` // a distinguished folder of another's mailbox
}

// readableItemLocked finds an item the caller may read: in its own mailbox
// or one it is a delegate of (item IDs name their mailbox on Exchange).
func (s *Server) readableItemLocked(caller *mailbox, id string) (*item, bool) {
	if it, ok := caller.items[id]; ok {
		return it, true
	}
	for _, mb := range s.mailboxes {
		if it, ok := mb.items[id]; ok && mb.delegates[lower(caller.address)] {
			return it, true
		}
	}
	return nil, false
}

// accessText is Exchange's wording of an access refusal.
func accessText(code string) string {
	if code == "ErrorNonExistentMailbox" {
		return "The SMTP address has no mailbox associated with it."
	}
	return "Access is denied. Check credentials and try again."
}

type fieldURI struct {
	URI string `xml:"FieldURI,attr"`
}

// wants reports whether a shape asks for a property.
func wants(base string, fields []fieldURI, uri string) bool {
	if base == "Default" || base == "AllProperties" {
		return true
	}
	return slices.ContainsFunc(fields, func(f fieldURI) bool { return f.URI == uri })
}

func (s *Server) getFolder(w http.ResponseWriter, d *xml.Decoder, start xml.StartElement, mb *mailbox) {
	var req struct {
		BaseShape     string     `xml:"FolderShape>BaseShape"`
		Fields        []fieldURI `xml:"FolderShape>AdditionalProperties>FieldURI"`
		Distinguished []idAttr   `xml:"FolderIds>DistinguishedFolderId"`
		FolderIDs     []idAttr   `xml:"FolderIds>FolderId"`
	}
	if err := d.DecodeElement(&req, &start); err != nil || req.BaseShape == "" || len(req.Distinguished)+len(req.FolderIDs) == 0 {
		writeFault(w, "ErrorSchemaValidation", "The request failed schema validation: GetFolder needs FolderShape and FolderIds.", 0)
		return
	}
	var b strings.Builder
	b.WriteString(`<m:GetFolderResponse xmlns:m="` + nsMessages + `" xmlns:t="` + nsTypes + `"><m:ResponseMessages>`)
	s.mu.Lock()
	for _, id := range append(req.Distinguished, req.FolderIDs...) {
		mb, denied := s.openAs(mb, strings.TrimSpace(id.Mailbox))
		if denied != "" {
			s.requests["AccessDenied"]++ // s.mu is held: count would lock it
			b.WriteString(errorMessage("GetFolder", denied, accessText(denied)))
			continue
		}
		if id.ID != "inbox" && id.ID != mb.inboxID {
			b.WriteString(errorMessage("GetFolder", "ErrorFolderNotFound", "The specified folder could not be found in the store."))
			continue
		}
		b.WriteString(`<m:GetFolderResponseMessage ResponseClass="Success"><m:ResponseCode>NoError</m:ResponseCode><m:Folders><t:Folder>`)
		b.WriteString(`<t:FolderId Id="` + esc(mb.inboxID) + `" ChangeKey="AQAAABYAAAA="/>`)
		if wants(req.BaseShape, req.Fields, "folder:DisplayName") {
			b.WriteString(`<t:DisplayName>Inbox</t:DisplayName>`)
		}
		if wants(req.BaseShape, req.Fields, "folder:TotalCount") {
			b.WriteString(`<t:TotalCount>` + strconv.Itoa(len(mb.items)) + `</t:TotalCount>`)
		}
		if wants(req.BaseShape, req.Fields, "folder:ChildFolderCount") {
			b.WriteString(`<t:ChildFolderCount>0</t:ChildFolderCount>`)
		}
		if wants(req.BaseShape, req.Fields, "folder:UnreadCount") {
			b.WriteString(`<t:UnreadCount>` + strconv.Itoa(mb.unread) + `</t:UnreadCount>`)
		}
		b.WriteString(`</t:Folder></m:Folders></m:GetFolderResponseMessage>`)
	}
	s.mu.Unlock()
	b.WriteString(`</m:ResponseMessages></m:GetFolderResponse>`)
	writeEnvelope(w, http.StatusOK, b.String())
}

func (s *Server) getItem(w http.ResponseWriter, d *xml.Decoder, start xml.StartElement, mb *mailbox) {
	var req struct {
		BaseShape string     `xml:"ItemShape>BaseShape"`
		Fields    []fieldURI `xml:"ItemShape>AdditionalProperties>FieldURI"`
		IDs       []idAttr   `xml:"ItemIds>ItemId"`
	}
	if err := d.DecodeElement(&req, &start); err != nil || req.BaseShape == "" || len(req.IDs) == 0 {
		writeFault(w, "ErrorSchemaValidation", "The request failed schema validation: GetItem needs ItemShape and ItemIds.", 0)
		return
	}
	var b strings.Builder
	b.WriteString(`<m:GetItemResponse xmlns:m="` + nsMessages + `" xmlns:t="` + nsTypes + `"><m:ResponseMessages>`)
	s.mu.Lock()
	for _, id := range req.IDs {
		it, ok := s.readableItemLocked(mb, id.ID)
		if !ok {
			b.WriteString(errorMessage("GetItem", "ErrorItemNotFound", "The specified object was not found in the store."))
			continue
		}
		b.WriteString(`<m:GetItemResponseMessage ResponseClass="Success"><m:ResponseCode>NoError</m:ResponseCode><m:Items><t:Message>`)
		b.WriteString(`<t:ItemId Id="` + esc(it.id) + `" ChangeKey="` + esc(it.changeKey) + `"/>`)
		if wants(req.BaseShape, req.Fields, "item:Subject") {
			b.WriteString(`<t:Subject>` + esc(it.subject) + `</t:Subject>`)
		}
		if wants(req.BaseShape, req.Fields, "message:From") {
			b.WriteString(`<t:From><t:Mailbox><t:Name>` + esc(it.fromName) + `</t:Name><t:EmailAddress>` + esc(it.fromAddress) +
				`</t:EmailAddress><t:RoutingType>SMTP</t:RoutingType><t:MailboxType>OneOff</t:MailboxType></t:Mailbox></t:From>`)
		}
		if wants(req.BaseShape, req.Fields, "message:IsRead") {
			b.WriteString(`<t:IsRead>` + strconv.FormatBool(it.read) + `</t:IsRead>`)
		}
		b.WriteString(`</t:Message></m:Items></m:GetItemResponseMessage>`)
	}
	s.mu.Unlock()
	b.WriteString(`</m:ResponseMessages></m:GetItemResponse>`)
	writeEnvelope(w, http.StatusOK, b.String())
}

// writeFailure answers an injected failure.
func writeFailure(w http.ResponseWriter, op string, f failure) {
	if code, ok := strings.CutPrefix(f.code, "HTTP"); ok {
		if status, err := strconv.Atoi(code); err == nil && status >= 200 && status <= 599 {
			http.Error(w, http.StatusText(status), status)
			return
		}
	}
	if f.code == "ErrorServerBusy" {
		writeFault(w, f.code, "The server cannot service this request right now. Try again later.", f.backOff)
		return
	}
	writeResponseError(w, op, f.code, "ewsfake: injected "+f.code+".")
}

func errorMessage(op, code, text string) string {
	return `<m:` + op + `ResponseMessage ResponseClass="Error"><m:MessageText>` + esc(text) + `</m:MessageText>` +
		`<m:ResponseCode>` + esc(code) + `</m:ResponseCode><m:DescriptiveLinkKey>0</m:DescriptiveLinkKey></m:` + op + `ResponseMessage>`
}

// writeResponseError answers op with one response message of class Error.
func writeResponseError(w http.ResponseWriter, op, code, text string) {
	writeEnvelope(w, http.StatusOK, `<m:`+op+`Response xmlns:m="`+nsMessages+`" xmlns:t="`+nsTypes+`"><m:ResponseMessages>`+
		errorMessage(op, code, text)+`</m:ResponseMessages></m:`+op+`Response>`)
}

// writeFault answers HTTP 500 with a SOAP fault as Exchange words it.
func writeFault(w http.ResponseWriter, code, text string, backOff time.Duration) {
	var b strings.Builder
	b.WriteString(`<s:Fault><faultcode xmlns:a="` + nsTypes + `">a:` + esc(code) + `</faultcode>`)
	b.WriteString(`<faultstring xml:lang="en-US">` + esc(text) + `</faultstring><detail>`)
	b.WriteString(`<e:ResponseCode xmlns:e="` + nsErrors + `">` + esc(code) + `</e:ResponseCode>`)
	b.WriteString(`<e:Message xmlns:e="` + nsErrors + `">` + esc(text) + `</e:Message>`)
	if backOff > 0 {
		b.WriteString(`<t:MessageXml xmlns:t="` + nsTypes + `"><t:Value Name="BackOffMilliseconds">` +
			strconv.FormatInt(max(backOff.Milliseconds(), 1), 10) + `</t:Value></t:MessageXml>`)
	}
	b.WriteString(`</detail></s:Fault>`)
	writeEnvelope(w, http.StatusInternalServerError, b.String())
}

func writeEnvelope(w http.ResponseWriter, status int, body string) {
	doc := `<?xml version="1.0" encoding="utf-8"?><s:Envelope xmlns:s="` + nsSOAP + `"><s:Header>` +
		`<h:ServerVersionInfo MajorVersion="15" MinorVersion="1" MajorBuildNumber="2507" MinorBuildNumber="6" Version="V2017_07_11"` +
		` xmlns:h="` + nsTypes + `" xmlns="` + nsTypes + `"/></s:Header><s:Body>` + body + `</s:Body></s:Envelope>`
	w.Header().Set("Content-Type", "text/xml; charset=utf-8")
	w.Header().Set("Content-Length", strconv.Itoa(len(doc)))
	w.WriteHeader(status)
	io.WriteString(w, doc)
}

// esc escapes s for XML text and attribute values.
func esc(s string) string {
	var b strings.Builder
	xml.EscapeText(&b, []byte(s)) // a strings.Builder never fails
	return b.String()
}

// affinityCookie is the server-affinity cookie Exchange 2013+ hands out to a
// client that asks with X-PreferServerAffinity: true; sending it back pins
// the client's requests (and its subscriptions) to one mailbox server.
const affinityCookie = "X-BackEndOverrideCookie"

// affinity counts requests that carried the fake's affinity cookie under
// "AffinityCookie", and hands the cookie to those that ask for affinity.
func (s *Server) affinity(w http.ResponseWriter, r *http.Request) {
	if c, err := r.Cookie(affinityCookie); err == nil && strings.HasPrefix(c.Value, "EWSFAKE-MBX01~") {
		s.count("AffinityCookie")
		return
	}
	if strings.EqualFold(r.Header.Get("X-PreferServerAffinity"), "true") {
		http.SetCookie(w, &http.Cookie{Name: affinityCookie, Value: "EWSFAKE-MBX01~1941962752~" + randomID("", 6), Path: "/EWS/", HttpOnly: true, Secure: true})
	}
}
