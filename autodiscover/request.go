package autodiscover

import (
	"bytes"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/mailpush/mailpush"
)

// The schemas of the POX protocol (MS-OXDSCLI for Outlook, MS-ASCMD's
// Autodiscover for ActiveSync). The request's root namespace names the
// request schema; AcceptableResponseSchema names the answer wanted.
const (
	outlookRequestSchema     = requestSchema
	outlookResponseSchema    = responseSchema
	mobilesyncRequestSchema  = "http://schemas.microsoft.com/exchange/autodiscover/mobilesync/requestschema/2006"
	mobilesyncResponseSchema = "http://schemas.microsoft.com/exchange/autodiscover/mobilesync/responseschema/2006"
	// envelopeSchema is the namespace of every answer's root element.
	envelopeSchema = "http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006"
)

// Limits of the POX request parser (the request is untrusted and anonymous).
const (
	// MaxRequestSize caps a POX request body; real ones are under 1 KiB.
	MaxRequestSize = 16 << 10
	// MaxAddressLength is RFC 5321's limit on a forward path.
	MaxAddressLength = 254
	maxDepth         = 8
)

// Kind is the response schema a POX request asks for.
type Kind int

const (
	KindOutlook    Kind = iota + 1 // outlook/responseschema/2006a
	KindMobileSync                 // mobilesync/responseschema/2006
)

// Request is a parsed POX request.
type Request struct {
	Kind    Kind
	Address string // as sent; see SplitAddress
}

// ParseRequest reads a POX request. It refuses, with an invalid_request or
// unsupported *mailpush.Error saying what is wrong: anything with a DOCTYPE
// (no entity of any kind is ever expanded, internal or external), a root
// that is not Autodiscover in one of the two request schemas, an unknown
// AcceptableResponseSchema or one that does not match the request schema,
// a missing or malformed EMailAddress, nesting deeper than a request has,
// and more than MaxRequestSize bytes.
func ParseRequest(data []byte) (Request, error) {
	if len(data) > MaxRequestSize {
		return Request{}, mailpush.Errorf(mailpush.ETooLarge, "the autodiscover request exceeds %d bytes", MaxRequestSize)
	}
	dec := xml.NewDecoder(bytes.NewReader(data))
	dec.Strict = true
	// Only UTF-8 (and its US-ASCII subset): no charset tables to attack.
	dec.CharsetReader = func(label string, r io.Reader) (io.Reader, error) {
		if strings.EqualFold(label, "us-ascii") {
			return r, nil
		}
		return nil, fmt.Errorf("charset %q is not supported: send UTF-8", label)
	}
	var (
		path            []string // local names from the root
		rootNS          string
		sawRoot         bool
		address, schema strings.Builder
		cur             *strings.Builder // the one being read, if any
		sawAddress      bool
		sawSchema       bool
	)
	invalid := func(format string, args ...any) (Request, error) {
		return Request{}, mailpush.Errorf(mailpush.EInvalid, "autodiscover request: "+format, args...)
	}
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			var se *xml.SyntaxError
			if errors.As(err, &se) {
				return invalid("not well-formed XML (line %d): %s", se.Line, se.Msg)
			}
			return invalid("not well-formed XML: %v", err)
		}
		switch t := tok.(type) {
		case xml.Directive:
			return invalid("a DOCTYPE or other <!…> declaration is not allowed (no entities are expanded)")
		case xml.ProcInst:
			if t.Target != "xml" || len(path) > 0 {
				return invalid("processing instruction <?%s?> is not allowed", t.Target)
			}
		case xml.StartElement:
			if len(path) == 0 {
				if sawRoot {
					return invalid("more than one root element")
				}
				if t.Name.Local != "Autodiscover" {
					return invalid("the root element is %q, want Autodiscover", t.Name.Local)
				}
				rootNS, sawRoot = t.Name.Space, true
			}
			path = append(path, t.Name.Local)
			if len(path) > maxDepth {
				return invalid("elements nested deeper than %d", maxDepth)
			}
			if len(path) == 3 && path[1] == "Request" {
				switch t.Name.Local {
				case "EMailAddress":
					if sawAddress {
						return invalid("more than one EMailAddress")
					}
					sawAddress, cur = true, &address
				case "AcceptableResponseSchema":
					if sawSchema {
						return invalid("more than one AcceptableResponseSchema")
					}
					sawSchema, cur = true, &schema
				}
			}
		case xml.EndElement:
			if len(path) == 3 {
				cur = nil
			}
			path = path[:len(path)-1]
		case xml.CharData:
			if cur != nil && len(path) == 3 {
				cur.Write(t)
			}
		}
	}
	if !sawRoot {
		return invalid("no Autodiscover element")
	}
	var req Request
	switch rootNS {
	case outlookRequestSchema:
		req.Kind = KindOutlook
	case mobilesyncRequestSchema:
		req.Kind = KindMobileSync
	default:
		return Request{}, mailpush.Errorf(mailpush.EUnsupported, "autodiscover request schema %q is not supported: use %s or %s", rootNS, outlookRequestSchema, mobilesyncRequestSchema)
	}
	if !sawSchema {
		return invalid("Request has no AcceptableResponseSchema")
	}
	want := strings.TrimSpace(schema.String())
	switch {
	case req.Kind == KindOutlook && want == outlookResponseSchema, req.Kind == KindMobileSync && want == mobilesyncResponseSchema:
	case want == outlookResponseSchema || want == mobilesyncResponseSchema:
		return Request{}, mailpush.Errorf(mailpush.EUnsupported, "AcceptableResponseSchema %s does not belong to request schema %s", want, rootNS)
	default:
		return Request{}, mailpush.Errorf(mailpush.EUnsupported, "AcceptableResponseSchema %q is not supported: use %s or %s", want, outlookResponseSchema, mobilesyncResponseSchema)
	}
	if !sawAddress {
		return invalid("Request has no EMailAddress (LegacyDN requests are not supported)")
	}
	req.Address = strings.TrimSpace(address.String())
	if _, _, err := SplitAddress(req.Address); err != nil {
		return Request{}, err
	}
	return req, nil
}

// SplitAddress checks an e-mail address as autodiscover accepts it and
// returns its local part and its lower-cased domain.
func SplitAddress(address string) (local, domain string, err error) {
	if len(address) > MaxAddressLength {
		return "", "", mailpush.Errorf(mailpush.EInvalid, "the e-mail address is longer than %d characters", MaxAddressLength)
	}
	local, domain, ok := strings.Cut(address, "@")
	if !ok || local == "" || domain == "" || strings.Contains(domain, "@") {
		return "", "", mailpush.Errorf(mailpush.EInvalid, "%q is not an e-mail address (local@domain)", truncate(address))
	}
	for _, r := range address {
		if r <= ' ' || r == 0x7f || r == '<' || r == '>' || r == '"' || r == '\\' || r == '/' {
			return "", "", mailpush.Errorf(mailpush.EInvalid, "the e-mail address holds a character not allowed here (%q)", r)
		}
	}
	domain = strings.ToLower(strings.TrimSuffix(domain, "."))
	if domain == "" || strings.HasPrefix(domain, ".") || strings.Contains(domain, "..") {
		return "", "", mailpush.Errorf(mailpush.EInvalid, "the e-mail address has no valid domain")
	}
	return local, domain, nil
}

func truncate(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}
