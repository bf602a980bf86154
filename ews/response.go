package ews

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"net/http"
	"strings"

	"github.com/mailpush/mailpush"
)

// soapEnvelope is an EWS answer whose body holds either a SOAP fault or the
// operation's response element T (whose XMLName says which one).
type soapEnvelope[T any] struct {
	XMLName xml.Name `xml:"http://schemas.xmlsoap.org/soap/envelope/ Envelope"`
	Body    struct {
		Fault *soapFault `xml:"http://schemas.xmlsoap.org/soap/envelope/ Fault"`
		Resp  *T         `xml:",any"`
	} `xml:"http://schemas.xmlsoap.org/soap/envelope/ Body"`
}

// soapFault is a SOAP 1.1 fault; Exchange puts its ResponseCode, Message and
// MessageXml in the detail (errors namespace).
type soapFault struct {
	Code   string `xml:"faultcode"`
	String string `xml:"faultstring"`
	Detail struct {
		ResponseCode string         `xml:"ResponseCode"`
		Message      string         `xml:"Message"`
		Values       []messageValue `xml:"MessageXml>Value"`
	} `xml:"detail"`
}

func (f *soapFault) responseError(op string) *ResponseError {
	code := strings.TrimSpace(f.Detail.ResponseCode)
	if code == "" {
		code = strings.TrimSpace(f.Code)
		if i := strings.LastIndexByte(code, ':'); i >= 0 {
			code = code[i+1:] // "a:ErrorSchemaValidation", "s:Client"
		}
	}
	if code == "" {
		code = "ErrorUnknown"
	}
	msg := strings.TrimSpace(f.Detail.Message)
	if msg == "" {
		msg = strings.TrimSpace(f.String)
	}
	return &ResponseError{Op: op, Code: code, Message: msg, BackOff: backOff(f.Detail.Values), Fault: true}
}

// responseMessage holds the fields every EWS response message has.
type responseMessage struct {
	Class  string         `xml:"ResponseClass,attr"`
	Text   string         `xml:"MessageText"`
	Code   string         `xml:"ResponseCode"`
	Values []messageValue `xml:"MessageXml>Value"`
}

// responseError returns the message's error, nil on success or warning.
func (m *responseMessage) responseError(op string) *ResponseError {
	if m.Class != "Error" {
		return nil
	}
	code := strings.TrimSpace(m.Code)
	if code == "" {
		code = "ErrorUnknown"
	}
	return &ResponseError{Op: op, Code: code, Message: strings.TrimSpace(m.Text), BackOff: backOff(m.Values)}
}

// decode reads an EWS answer of operation op into T, turning SOAP faults,
// unexpected statuses and non-XML bodies into errors.
func decode[T any](op string, status int, contentType string, data []byte) (*T, error) {
	var env soapEnvelope[T]
	if err := xml.Unmarshal(data, &env); err != nil {
		if !looksLikeXML(data) {
			return nil, mailpush.Errorf(mailpush.EUpstream, "ews: %s: the answer is not XML (HTTP %d, Content-Type %q)",
				op, status, truncate(contentType))
		}
		return nil, mailpush.WrapError(mailpush.EUpstream, "the mail server's answer is not a valid EWS response",
			fmt.Errorf("ews: %s: HTTP %d, Content-Type %q: %w", op, status, truncate(contentType), err))
	}
	if f := env.Body.Fault; f != nil {
		return nil, wrapResponseError(f.responseError(op))
	}
	if status != http.StatusOK {
		code := mailpush.EUpstream
		if status == http.StatusServiceUnavailable || status == http.StatusTooManyRequests {
			code = mailpush.EUnavailable
		}
		return nil, mailpush.Errorf(code, "ews: %s: HTTP %d without a SOAP fault", op, status)
	}
	if env.Body.Resp == nil {
		return nil, mailpush.Errorf(mailpush.EUpstream, "ews: %s: no %sResponse in the SOAP body", op, op)
	}
	return env.Body.Resp, nil
}

// looksLikeXML reports whether data starts like an XML document.
func looksLikeXML(data []byte) bool {
	data = bytes.TrimPrefix(data, []byte("\xef\xbb\xbf"))
	data = bytes.TrimLeft(data, " \t\r\n")
	return len(data) > 0 && data[0] == '<'
}

type subscribeResponse struct {
	XMLName  xml.Name `xml:"http://schemas.microsoft.com/exchange/services/2006/messages SubscribeResponse"`
	Messages []struct {
		responseMessage
		SubscriptionID string `xml:"SubscriptionId"`
		Watermark      string `xml:"Watermark"`
	} `xml:"ResponseMessages>SubscribeResponseMessage"`
}

func parseSubscribeResponse(status int, contentType string, data []byte) (SubscribeResult, error) {
	r, err := decode[subscribeResponse]("Subscribe", status, contentType, data)
	if err != nil {
		return SubscribeResult{}, err
	}
	if len(r.Messages) != 1 {
		return SubscribeResult{}, mailpush.Errorf(mailpush.EUpstream, "ews: Subscribe: %d response messages, want 1", len(r.Messages))
	}
	m := r.Messages[0]
	if re := m.responseError("Subscribe"); re != nil {
		return SubscribeResult{}, wrapResponseError(re)
	}
	res := SubscribeResult{SubscriptionID: strings.TrimSpace(m.SubscriptionID), Watermark: strings.TrimSpace(m.Watermark)}
	if res.SubscriptionID == "" {
		return SubscribeResult{}, mailpush.Errorf(mailpush.EUpstream, "ews: Subscribe: answer without a SubscriptionId")
	}
	return res, nil
}

type getFolderResponse struct {
	XMLName  xml.Name `xml:"http://schemas.microsoft.com/exchange/services/2006/messages GetFolderResponse"`
	Messages []struct {
		responseMessage
		Folders []struct {
			UnreadCount *int `xml:"UnreadCount"`
		} `xml:"Folders>Folder"`
	} `xml:"ResponseMessages>GetFolderResponseMessage"`
}

func parseGetFolderResponse(status int, contentType string, data []byte) (int, error) {
	r, err := decode[getFolderResponse]("GetFolder", status, contentType, data)
	if err != nil {
		return 0, err
	}
	if len(r.Messages) != 1 {
		return 0, mailpush.Errorf(mailpush.EUpstream, "ews: GetFolder: %d response messages, want 1", len(r.Messages))
	}
	m := r.Messages[0]
	if re := m.responseError("GetFolder"); re != nil {
		return 0, wrapResponseError(re)
	}
	if len(m.Folders) != 1 || m.Folders[0].UnreadCount == nil {
		return 0, mailpush.Errorf(mailpush.EUpstream, "ews: GetFolder: answer without the folder's UnreadCount")
	}
	n := *m.Folders[0].UnreadCount
	if n < 0 {
		return 0, mailpush.Errorf(mailpush.EUpstream, "ews: GetFolder: negative UnreadCount %d", n)
	}
	return n, nil
}

type getItemResponse struct {
	XMLName  xml.Name `xml:"http://schemas.microsoft.com/exchange/services/2006/messages GetItemResponse"`
	Messages []struct {
		responseMessage
		Items struct {
			// Message, MeetingRequest, MeetingCancellation, Item…: every
			// item kind has the same ItemId, Subject and From.
			Any []struct {
				ItemID struct {
					ID string `xml:"Id,attr"`
				} `xml:"ItemId"`
				Subject string `xml:"Subject"`
				From    struct {
					Name    string `xml:"Mailbox>Name"`
					Address string `xml:"Mailbox>EmailAddress"`
				} `xml:"From"`
			} `xml:",any"`
		} `xml:"Items"`
	} `xml:"ResponseMessages>GetItemResponseMessage"`
}

func parseGetItemResponse(status int, contentType string, data []byte) ([]Item, error) {
	r, err := decode[getItemResponse]("GetItem", status, contentType, data)
	if err != nil {
		return nil, err
	}
	items := make([]Item, 0, len(r.Messages))
	var notFound *ResponseError
	for _, m := range r.Messages {
		if re := m.responseError("GetItem"); re != nil {
			if re.Code != "ErrorItemNotFound" {
				return nil, wrapResponseError(re)
			}
			notFound = re
			continue
		}
		for _, it := range m.Items.Any {
			items = append(items, Item{
				ID:          it.ItemID.ID,
				Subject:     it.Subject,
				FromName:    strings.TrimSpace(it.From.Name),
				FromAddress: strings.TrimSpace(it.From.Address),
			})
		}
	}
	if len(items) == 0 {
		if notFound != nil {
			return nil, mailpush.WrapError(mailpush.ENotFound, "the items no longer exist", notFound)
		}
		return nil, mailpush.Errorf(mailpush.EUpstream, "ews: GetItem: answer without items")
	}
	return items, nil
}
