package api

import (
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/mailpush/mailpush"
)

// statusOf maps an error code to its HTTP status. It is the only such mapping.
func statusOf(code string) int {
	switch code {
	case mailpush.EInvalid, mailpush.EBadSealed, mailpush.EBadPassword:
		return http.StatusBadRequest
	case mailpush.EUnauthorized:
		return http.StatusUnauthorized
	case mailpush.EForbidden, mailpush.EScope, mailpush.EMailboxDenied:
		return http.StatusForbidden
	case mailpush.ENotFound:
		return http.StatusNotFound
	case mailpush.EMethod:
		return http.StatusMethodNotAllowed
	case mailpush.EConflict:
		return http.StatusConflict
	case mailpush.ETooLarge:
		return http.StatusRequestEntityTooLarge
	case mailpush.EMediaType:
		return http.StatusUnsupportedMediaType
	case mailpush.EUnsupported, mailpush.ECredentials:
		return http.StatusUnprocessableEntity
	case mailpush.EUpstream, mailpush.ERedirect:
		return http.StatusBadGateway
	case mailpush.EUnavailable:
		return http.StatusServiceUnavailable
	case mailpush.EQuota, mailpush.ERateLimited:
		return http.StatusTooManyRequests
	}
	return http.StatusInternalServerError
}

type errorBody struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

// writeError answers with the error's status and JSON body. Server-side
// failures are logged with their cause; client errors are not (they are the
// caller's to read, and logging them would let callers fill the log).
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	code := mailpush.ErrorCode(err)
	status := statusOf(code)
	if status >= 500 {
		s.Logger.LogAttrs(r.Context(), slog.LevelError, "request failed", slog.String("route", r.Pattern), slog.String("code", code), slog.Any("err", err))
	}
	if d := mailpush.ErrorRetryAfter(err); d > 0 {
		// Whole seconds, rounded up: a client that waits that long finds
		// what was missing there.
		w.Header().Set("Retry-After", strconv.FormatInt(int64((d+time.Second-1)/time.Second), 10))
	}
	var body errorBody
	body.Error.Code, body.Error.Message = code, mailpush.ErrorMessage(err)
	writeJSON(w, status, body)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

// decodeJSON reads one JSON object into v: at most MaxBodySize bytes, no
// unknown fields, nothing after it. An empty body is allowed when optional.
func decodeJSON(w http.ResponseWriter, r *http.Request, v any, optional bool) error {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || (mt != "application/json" && !strings.HasSuffix(mt, "+json")) {
			return mailpush.Errorf(mailpush.EMediaType, "Content-Type must be application/json, not %q", ct)
		}
	}
	body := http.MaxBytesReader(w, r.Body, MaxBodySize)
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var maxErr *http.MaxBytesError
		var syntaxErr *json.SyntaxError
		var typeErr *json.UnmarshalTypeError
		switch {
		case errors.As(err, &maxErr):
			return mailpush.Errorf(mailpush.ETooLarge, "request body exceeds %d bytes", MaxBodySize)
		case errors.Is(err, io.EOF):
			if optional {
				return nil
			}
			return mailpush.Errorf(mailpush.EInvalid, "request body is empty: a JSON object is required")
		case errors.As(err, &syntaxErr):
			return mailpush.Errorf(mailpush.EInvalid, "request body is not valid JSON (at byte %d)", syntaxErr.Offset)
		case errors.As(err, &typeErr):
			return mailpush.Errorf(mailpush.EInvalid, "field %q must be a JSON %s", typeErr.Field, jsonKind(typeErr.Type.Kind().String()))
		case strings.HasPrefix(err.Error(), "json: unknown field "):
			return mailpush.Errorf(mailpush.EInvalid, "unknown field %s", strings.TrimPrefix(err.Error(), "json: unknown field "))
		case errors.Is(err, io.ErrUnexpectedEOF):
			return mailpush.Errorf(mailpush.EInvalid, "request body is truncated JSON")
		}
		return mailpush.Errorf(mailpush.EInvalid, "request body is not a valid JSON object")
	}
	if dec.More() {
		return mailpush.Errorf(mailpush.EInvalid, "request body has data after the JSON object")
	}
	if _, err := dec.Token(); err != io.EOF {
		var maxErr *http.MaxBytesError
		if errors.As(err, &maxErr) {
			return mailpush.Errorf(mailpush.ETooLarge, "request body exceeds %d bytes", MaxBodySize)
		}
		return mailpush.Errorf(mailpush.EInvalid, "request body has data after the JSON object")
	}
	return nil
}

func jsonKind(goKind string) string {
	switch goKind {
	case "string":
		return "string"
	case "struct", "map":
		return "object"
	case "slice", "array":
		return "array"
	case "bool":
		return "boolean"
	}
	return "number"
}

// JSONErrors wraps the service's mux so that a request under /api/ that no
// route takes gets the API's JSON error body (404 not_found, or 405
// method_not_allowed with its Allow header) instead of ServeMux's plain
// text, which clients of a JSON API cannot parse.
func JSONErrors(mux *http.ServeMux, log *slog.Logger) http.Handler {
	s := &Server{Logger: log}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h, pattern := mux.Handler(r)
		if pattern != "" || !strings.HasPrefix(r.URL.Path, "/api/") {
			mux.ServeHTTP(w, r)
			return
		}
		// ServeMux's own answer tells 404 from 405 and fills Allow.
		probe := &statusProbe{header: http.Header{}}
		h.ServeHTTP(probe, r)
		if probe.status == http.StatusMethodNotAllowed {
			w.Header().Set("Allow", probe.header.Get("Allow"))
			s.writeError(w, r, mailpush.Errorf(mailpush.EMethod, "%s is not allowed on %s (allowed: %s)", r.Method, r.URL.Path, probe.header.Get("Allow")))
			return
		}
		s.writeError(w, r, mailpush.Errorf(mailpush.ENotFound, "no API endpoint %s %s (see docs/openapi.yaml)", r.Method, r.URL.Path))
	})
}

// statusProbe records the status and headers a handler would send.
type statusProbe struct {
	header http.Header
	status int
}

func (p *statusProbe) Header() http.Header         { return p.header }
func (p *statusProbe) Write(b []byte) (int, error) { return len(b), nil }
func (p *statusProbe) WriteHeader(code int)        { p.status = code }
