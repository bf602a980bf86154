package ews

import (
	"bytes"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/mailpush/mailpush"
)

// XML namespaces of SOAP and EWS.
const (
	NamespaceSOAP     = "http://schemas.xmlsoap.org/soap/envelope/"
	NamespaceMessages = "http://schemas.microsoft.com/exchange/services/2006/messages"
	NamespaceTypes    = "http://schemas.microsoft.com/exchange/services/2006/types"
	NamespaceErrors   = "http://schemas.microsoft.com/exchange/services/2006/errors"

	namespaceSOAP12 = "http://www.w3.org/2003/05/soap-envelope"
)

// MaxNotificationSize is the largest SendNotification body a listener should
// accept; callers cap the request body at this size before parsing.
const MaxNotificationSize = 1 << 20

// MaxEvents is the most events ParseSendNotification accepts in one
// notification. Exchange sends a few dozen at most.
const MaxEvents = 10_000

// EventType is the element name of an EWS notification event, also used in
// the EventTypes of a subscription.
type EventType string

// The EWS event types.
const (
	StatusEvent          EventType = "StatusEvent"
	NewMailEvent         EventType = "NewMailEvent"
	CreatedEvent         EventType = "CreatedEvent"
	DeletedEvent         EventType = "DeletedEvent"
	ModifiedEvent        EventType = "ModifiedEvent"
	MovedEvent           EventType = "MovedEvent"
	CopiedEvent          EventType = "CopiedEvent"
	FreeBusyChangedEvent EventType = "FreeBusyChangedEvent"
)

// known reports whether t is one of the event types above.
func (t EventType) known() bool {
	switch t {
	case StatusEvent, NewMailEvent, CreatedEvent, DeletedEvent, ModifiedEvent,
		MovedEvent, CopiedEvent, FreeBusyChangedEvent:
		return true
	}
	return false
}

// Notification is one SendNotification that Exchange pushed to a listener.
type Notification struct {
	SubscriptionID    string
	PreviousWatermark string
	MoreEvents        bool
	Events            []Event // in document order
}

// Event is one event of a notification. Fields that the event does not carry
// are empty; UnreadCount is -1 when absent.
type Event struct {
	Type              EventType
	Watermark         string
	TimeStamp         time.Time
	ItemID            string
	FolderID          string
	ParentFolderID    string
	OldItemID         string
	OldFolderID       string
	OldParentFolderID string
	UnreadCount       int
}

// SubscriptionStatus is a listener's answer to a notification.
type SubscriptionStatus string

// The two answers Exchange understands.
const (
	StatusOK          SubscriptionStatus = "OK"          // keep the subscription
	StatusUnsubscribe SubscriptionStatus = "Unsubscribe" // end it: the only way to end a push subscription
)

// WriteResult answers a SendNotification with HTTP 200 and a
// SendNotificationResult carrying status. Any status other than StatusOK and
// StatusUnsubscribe is a programming error; it is answered with HTTP 500 so
// that Exchange retries rather than reads a wrong answer.
func WriteResult(w http.ResponseWriter, status SubscriptionStatus) {
	if status != StatusOK && status != StatusUnsubscribe {
		http.Error(w, "invalid subscription status", http.StatusInternalServerError)
		return
	}
	body := `<?xml version="1.0" encoding="utf-8"?>` +
		`<soap:Envelope xmlns:soap="` + NamespaceSOAP + `">` +
		`<soap:Body><m:SendNotificationResult xmlns:m="` + NamespaceMessages + `">` +
		`<m:SubscriptionStatus>` + string(status) + `</m:SubscriptionStatus>` +
		`</m:SendNotificationResult></soap:Body></soap:Envelope>`
	h := w.Header()
	h.Set("Content-Type", "text/xml; charset=utf-8")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(http.StatusOK)
	io.WriteString(w, body)
}

// ParseSendNotification parses the body of a SendNotification request.
//
// It fails with an *mailpush.Error of code EInvalid when the body is not a
// SOAP envelope, holds no SendNotification or Notification, lacks the
// SubscriptionId, has more than MaxEvents events, a bad value or broken XML,
// and with code ETooLarge when the body is over MaxNotificationSize. When
// Exchange reports an error instead of a notification (ResponseClass="Error",
// e.g. ErrorReadEventsFailed) the error has code EUpstream and a
// *ResponseError in its chain. Unknown elements are skipped.
func ParseSendNotification(body []byte) (*Notification, error) {
	if len(body) > MaxNotificationSize {
		return nil, mailpush.Errorf(mailpush.ETooLarge, "ews: notification is over %d bytes", MaxNotificationSize)
	}
	body = bytes.TrimPrefix(body, []byte("\xef\xbb\xbf")) // .NET writers may start with a UTF-8 BOM
	p := parser{d: xml.NewDecoder(bytes.NewReader(body))}
	n, err := p.sendNotification()
	if err != nil {
		var me *mailpush.Error
		if errors.As(err, &me) {
			return nil, err
		}
		return nil, mailpush.WrapError(mailpush.EInvalid, "ews: malformed notification XML", err)
	}
	return n, nil
}

// parser reads a document with a token loop: it keeps events in document
// order and skips what it does not know without building a tree.
type parser struct {
	d *xml.Decoder
}

func invalid(format string, args ...any) error {
	return mailpush.Errorf(mailpush.EInvalid, "ews: "+format, args...)
}

func (p *parser) token() (xml.Token, error) {
	tok, err := p.d.Token()
	if err == io.EOF {
		return nil, io.ErrUnexpectedEOF
	}
	return tok, err
}

// skip consumes the element whose start tag was just read.
func (p *parser) skip() error {
	if err := p.d.Skip(); err != nil {
		if err == io.EOF {
			return io.ErrUnexpectedEOF
		}
		return err
	}
	return nil
}

// root returns the document's root element, rejecting anything but
// whitespace, comments and processing instructions before it.
func (p *parser) root() (xml.StartElement, error) {
	for {
		tok, err := p.d.Token()
		if err == io.EOF {
			return xml.StartElement{}, invalid("empty document")
		}
		if err != nil {
			return xml.StartElement{}, err
		}
		switch t := tok.(type) {
		case xml.StartElement:
			return t, nil
		case xml.CharData:
			if len(bytes.TrimSpace(t)) > 0 {
				return xml.StartElement{}, invalid("not an XML document")
			}
		}
	}
}

// end checks that only whitespace, comments and processing instructions
// follow the root element.
func (p *parser) end() error {
	for {
		tok, err := p.d.Token()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		switch t := tok.(type) {
		case xml.StartElement:
			return invalid("content after the SOAP envelope")
		case xml.CharData:
			if len(bytes.TrimSpace(t)) > 0 {
				return invalid("content after the SOAP envelope")
			}
		}
	}
}

// children calls fn for every child element of the element whose start tag
// was just read; fn must consume the child, e.g. with skip or text.
func (p *parser) children(fn func(xml.StartElement) error) error {
	for {
		tok, err := p.token()
		if err != nil {
			return err
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

// text returns the trimmed character data of the element whose start tag was
// just read, skipping any child elements.
func (p *parser) text() (string, error) {
	var b []byte
	for {
		tok, err := p.token()
		if err != nil {
			return "", err
		}
		switch t := tok.(type) {
		case xml.CharData:
			b = append(b, t...)
		case xml.StartElement:
			if err := p.skip(); err != nil {
				return "", err
			}
		case xml.EndElement:
			return string(bytes.TrimSpace(b)), nil
		}
	}
}

func isSOAP(space string) bool { return space == NamespaceSOAP || space == namespaceSOAP12 }

// isEWS reports whether space is one of EWS's namespaces. Exchange puts
// notification fields in the types namespace; accepting the messages one too
// costs nothing and tolerates other EWS implementations.
func isEWS(space string) bool { return space == NamespaceTypes || space == NamespaceMessages }

func attr(se xml.StartElement, local string) string {
	for _, a := range se.Attr {
		if a.Name.Local == local && a.Name.Space == "" {
			return a.Value
		}
	}
	return ""
}

func (p *parser) sendNotification() (*Notification, error) {
	root, err := p.root()
	if err != nil {
		return nil, err
	}
	if root.Name.Local != "Envelope" || !isSOAP(root.Name.Space) {
		return nil, invalid("not a SOAP envelope (root element <%s>)", root.Name.Local)
	}
	var (
		n       *Notification
		sawBody bool
		rerr    *ResponseError
	)
	err = p.children(func(se xml.StartElement) error {
		if se.Name.Local != "Body" || se.Name.Space != root.Name.Space || sawBody {
			return p.skip() // soap:Header and anything else
		}
		sawBody = true
		return p.children(func(se xml.StartElement) error {
			if se.Name.Local != "SendNotification" || se.Name.Space != NamespaceMessages || n != nil || rerr != nil {
				return p.skip()
			}
			var err error
			n, rerr, err = p.responseMessages()
			return err
		})
	})
	if err != nil {
		return nil, err
	}
	if !sawBody {
		return nil, invalid("SOAP envelope without a Body")
	}
	if rerr != nil {
		return nil, mailpush.WrapError(mailpush.EUpstream, "Exchange sent "+rerr.Code+" instead of a notification", rerr)
	}
	if n == nil {
		return nil, invalid("no SendNotification with a Notification in the SOAP body")
	}
	if n.SubscriptionID == "" {
		return nil, invalid("notification without a SubscriptionId")
	}
	if err := p.end(); err != nil {
		return nil, err
	}
	return n, nil
}

// responseMessages reads m:SendNotification's children:
// m:ResponseMessages/m:SendNotificationResponseMessage/m:Notification.
func (p *parser) responseMessages() (*Notification, *ResponseError, error) {
	var (
		n    *Notification
		rerr *ResponseError
	)
	err := p.children(func(se xml.StartElement) error {
		if se.Name.Local != "ResponseMessages" || se.Name.Space != NamespaceMessages {
			return p.skip()
		}
		return p.children(func(se xml.StartElement) error {
			if se.Name.Local != "SendNotificationResponseMessage" || se.Name.Space != NamespaceMessages {
				return p.skip()
			}
			if n != nil || rerr != nil {
				return invalid("more than one SendNotificationResponseMessage")
			}
			class := attr(se, "ResponseClass")
			var code, text string
			var got *Notification
			err := p.children(func(se xml.StartElement) error {
				if se.Name.Space != NamespaceMessages {
					return p.skip()
				}
				var err error
				switch se.Name.Local {
				case "ResponseCode":
					code, err = p.text()
				case "MessageText":
					text, err = p.text()
				case "Notification":
					if got != nil {
						return invalid("more than one Notification")
					}
					got = &Notification{}
					err = p.notification(got)
				default:
					err = p.skip()
				}
				return err
			})
			if err != nil {
				return err
			}
			if class == "Error" {
				if code == "" {
					code = "ErrorUnknown"
				}
				rerr = &ResponseError{Op: "SendNotification", Code: code, Message: text}
				return nil
			}
			n = got
			return nil
		})
	})
	return n, rerr, err
}

func (p *parser) notification(n *Notification) error {
	return p.children(func(se xml.StartElement) error {
		if !isEWS(se.Name.Space) {
			return p.skip()
		}
		var err error
		switch se.Name.Local {
		case "SubscriptionId":
			n.SubscriptionID, err = p.text()
		case "PreviousWatermark":
			n.PreviousWatermark, err = p.text()
		case "MoreEvents":
			var s string
			if s, err = p.text(); err == nil {
				n.MoreEvents, err = parseBool(s)
			}
		default:
			typ := EventType(se.Name.Local)
			if !typ.known() {
				return p.skip() // an event type of a newer server
			}
			if len(n.Events) >= MaxEvents {
				return invalid("more than %d events in one notification", MaxEvents)
			}
			var ev Event
			if ev, err = p.event(typ); err == nil {
				n.Events = append(n.Events, ev)
			}
		}
		return err
	})
}

func (p *parser) event(typ EventType) (Event, error) {
	ev := Event{Type: typ, UnreadCount: -1}
	err := p.children(func(se xml.StartElement) error {
		if !isEWS(se.Name.Space) {
			return p.skip()
		}
		var (
			id  *string
			err error
			s   string
		)
		switch se.Name.Local {
		case "Watermark":
			ev.Watermark, err = p.text()
			return err
		case "TimeStamp":
			if s, err = p.text(); err != nil {
				return err
			}
			ev.TimeStamp, err = parseDateTime(s)
			if err != nil {
				return invalid("%s: bad TimeStamp %q", typ, truncate(s))
			}
			return nil
		case "UnreadCount":
			if s, err = p.text(); err != nil {
				return err
			}
			ev.UnreadCount, err = strconv.Atoi(s)
			if err != nil || ev.UnreadCount < 0 {
				return invalid("%s: bad UnreadCount %q", typ, truncate(s))
			}
			return nil
		case "ItemId":
			id = &ev.ItemID
		case "FolderId":
			id = &ev.FolderID
		case "ParentFolderId":
			id = &ev.ParentFolderID
		case "OldItemId":
			id = &ev.OldItemID
		case "OldFolderId":
			id = &ev.OldFolderID
		case "OldParentFolderId":
			id = &ev.OldParentFolderID
		default:
			return p.skip()
		}
		*id = attr(se, "Id")
		return p.skip()
	})
	return ev, err
}

// parseBool parses an xs:boolean.
func parseBool(s string) (bool, error) {
	switch s {
	case "true", "1":
		return true, nil
	case "false", "0":
		return false, nil
	}
	return false, invalid("bad boolean %q", truncate(s))
}

// parseDateTime parses an xs:dateTime; one without a zone is taken as UTC.
func parseDateTime(s string) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	t, err := time.Parse("2006-01-02T15:04:05.999999999", s)
	if err != nil {
		return time.Time{}, fmt.Errorf("bad xs:dateTime")
	}
	return t, nil
}

// truncate keeps error messages short when a value is garbage.
func truncate(s string) string {
	const max = 40
	if len(s) <= max {
		return s
	}
	return strings.ToValidUTF8(s[:max], "") + "…"
}
