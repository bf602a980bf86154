package mailpush

import (
	"errors"
	"fmt"
	"time"
)

// Error codes are stable: apps and proxies match on them. The HTTP status for
// each is chosen in exactly one place, the api package.
const (
	EInvalid       = "invalid_request"        // malformed or semantically wrong input
	ETooLarge      = "request_too_large"      // body over the size cap
	EUnauthorized  = "unauthorized"           // missing or wrong credential
	EForbidden     = "forbidden"              // authenticated but not allowed (e.g. host not allowed)
	EScope         = "insufficient_scope"     // the token's scope does not cover the request
	ENotFound      = "not_found"              // no such object (or not the caller's)
	EConflict      = "conflict"               // state does not allow the change
	EQuota         = "quota_exceeded"         // a configured limit (registrations per tenant or mailbox) is reached
	ERateLimited   = "rate_limited"           // too many requests of a tenant for now; Error.RetryAfter says when to try again
	EMethod        = "method_not_allowed"     // the path exists, not with this method
	EUnsupported   = "unsupported"            // valid but not offered by this server or tenant
	EMediaType     = "unsupported_media_type" // body is not JSON
	EBadSealed     = "invalid_sealed_value"   // sealed credentials cannot be opened
	EUpstream      = "upstream_error"         // the mail server refused or failed
	ERedirect      = "upstream_redirect"      // the mail server redirected; credentials never follow a redirect
	ECredentials   = "credentials_refused"    // the mail server refused the user's credentials
	EMailboxDenied = "mailbox_access_denied"  // the credentials are valid but do not open the mailbox named
	EUnavailable   = "unavailable"            // a dependency is down; retry later
	EBadPassword   = "wrong_password"         // a file's password (e.g. a PKCS#12's) does not open it
	EInternal      = "internal"               // a bug or an unexpected failure
)

// Error is the domain error with a stable code and a message that is safe to
// show to the API caller. It never carries credentials or mail content.
type Error struct {
	Code    string
	Message string
	Err     error // optional cause, for logs; never shown to callers
	// RetryAfter, when positive, is how long the caller should wait before
	// trying again (the API sends it as Retry-After).
	RetryAfter time.Duration
}

func (e *Error) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("%s: %s: %v", e.Code, e.Message, e.Err)
	}
	return e.Code + ": " + e.Message
}

func (e *Error) Unwrap() error { return e.Err }

// Errorf returns an *Error with the given code and a formatted message.
func Errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// WrapError returns an *Error with code and message that keeps err as its cause.
func WrapError(code, message string, err error) *Error {
	return &Error{Code: code, Message: message, Err: err}
}

// ErrorCode returns the code of the first *Error in err's chain, EInternal for
// any other non-nil error and "" for nil.
func ErrorCode(err error) string {
	if err == nil {
		return ""
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return EInternal
}

// ErrorRetryAfter returns the RetryAfter of the first *Error in err's
// chain, zero when there is none.
func ErrorRetryAfter(err error) time.Duration {
	var e *Error
	if errors.As(err, &e) {
		return e.RetryAfter
	}
	return 0
}

// ErrorMessage returns the caller-safe message of err. Errors that are not
// *Error hide their text, which may hold internals.
func ErrorMessage(err error) string {
	if err == nil {
		return ""
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Message
	}
	return "internal error"
}
