package ews

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/mailpush/mailpush"
)

// ErrUnauthorized is in the chain of the error returned when Exchange refuses
// the credentials (HTTP 401 or 403).
var ErrUnauthorized = errors.New("ews: credentials refused")

// ResponseError is an error that Exchange reported: a response message with
// ResponseClass="Error", or a SOAP fault.
type ResponseError struct {
	Op      string        // the EWS operation, e.g. "Subscribe"
	Code    string        // the EWS ResponseCode, e.g. "ErrorInvalidWatermark", "ErrorServerBusy"
	Message string        // Exchange's MessageText or faultstring
	BackOff time.Duration // from MessageXml BackOffMilliseconds (ErrorServerBusy); 0 if none
	Fault   bool          // the error came as a SOAP fault
}

func (e *ResponseError) Error() string {
	var b strings.Builder
	b.WriteString("ews: ")
	if e.Op != "" {
		b.WriteString(e.Op + ": ")
	}
	b.WriteString(e.Code)
	if e.Message != "" {
		b.WriteString(": " + e.Message)
	}
	if e.BackOff > 0 {
		fmt.Fprintf(&b, " (back off %v)", e.BackOff)
	}
	return b.String()
}

// transient reports whether the same request may succeed later after
// Exchange answered code.
func transient(code string) bool {
	switch code {
	case "ErrorServerBusy", "ErrorTimeoutExpired", "ErrorInternalServerTransientError",
		"ErrorMailboxMoveInProgress", "ErrorMailboxStoreUnavailable", "ErrorConnectionFailed",
		"ErrorExceededConnectionCount", "ErrorTooManyObjectsOpened", "ErrorInsufficientResources",
		"ErrorBatchProcessingStopped", "ErrorNoRespondingCASInDestinationSite":
		return true
	}
	return false
}

// wrapResponseError gives re a domain code: EUnavailable when retrying later
// may help, EUpstream otherwise.
func wrapResponseError(re *ResponseError) error {
	code := mailpush.EUpstream
	if transient(re.Code) {
		code = mailpush.EUnavailable
	}
	return mailpush.WrapError(code, "Exchange answered "+re.Code, re)
}

// messageValue is a t:Value of a MessageXml element.
type messageValue struct {
	Name  string `xml:"Name,attr"`
	Value string `xml:",chardata"`
}

// backOff returns the BackOffMilliseconds among values, 0 if none or garbage.
func backOff(values []messageValue) time.Duration {
	for _, v := range values {
		if v.Name != "BackOffMilliseconds" {
			continue
		}
		ms, err := strconv.ParseInt(strings.TrimSpace(v.Value), 10, 64)
		if err != nil || ms <= 0 || ms > int64(24*time.Hour/time.Millisecond) {
			return 0
		}
		return time.Duration(ms) * time.Millisecond
	}
	return 0
}
