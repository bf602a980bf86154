package autodiscover

import (
	"bytes"
	"encoding/xml"
	"testing"

	"github.com/mailpush/mailpush"
)

func FuzzParsePOX(f *testing.F) {
	f.Add([]byte(`<Autodiscover xmlns="http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006"><Response xmlns="http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a"><Account><Action>settings</Action><Protocol><Type>EXCH</Type><EwsUrl>https://mail.example.com/EWS/Exchange.asmx</EwsUrl></Protocol></Account></Response></Autodiscover>`))
	f.Add([]byte(`<Autodiscover><Response><Account><Action>redirectAddr</Action><RedirectAddr>a@b.c</RedirectAddr></Account></Response></Autodiscover>`))
	f.Add([]byte(`<Autodiscover><Response><Error><ErrorCode>500</ErrorCode><Message>x</Message></Error></Response></Autodiscover>`))
	f.Add([]byte(`<html>`))
	f.Fuzz(func(t *testing.T, data []byte) {
		ans, err := parsePOX(data)
		if err == nil && ans == nil {
			t.Fatal("nil answer without an error")
		}
	})
}

// FuzzParseRequest feeds the anonymous POX request parser: it never
// panics, and what it accepts is a well-formed address of a known schema
// that parses the same when sent again.
func FuzzParseRequest(f *testing.F) {
	req := func(reqNS, respNS, addr string) []byte {
		return []byte(`<?xml version="1.0" encoding="utf-8"?><Autodiscover xmlns="` + reqNS + `"><Request><EMailAddress>` + addr +
			`</EMailAddress><AcceptableResponseSchema>` + respNS + `</AcceptableResponseSchema></Request></Autodiscover>`)
	}
	f.Add(req(outlookRequestSchema, outlookResponseSchema, "alice@example.com"))
	f.Add(req(mobilesyncRequestSchema, mobilesyncResponseSchema, "bob@example.org"))
	f.Add(req(outlookRequestSchema, mobilesyncResponseSchema, "a@b"))
	f.Add([]byte(`<!DOCTYPE a [<!ENTITY b "c">]><Autodiscover/>`))
	f.Add([]byte(`<Autodiscover xmlns="x"><Request><EMailAddress>&amp;@x</EMailAddress></Request></Autodiscover>`))
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := ParseRequest(data)
		if err != nil {
			if mailpush.ErrorCode(err) == mailpush.EInternal || mailpush.ErrorMessage(err) == "" {
				t.Fatalf("error without a code or message: %v", err)
			}
			return
		}
		if _, _, err := SplitAddress(r.Address); err != nil || (r.Kind != KindOutlook && r.Kind != KindMobileSync) {
			t.Fatalf("accepted %+v: %v", r, err)
		}
		var esc bytes.Buffer
		xml.EscapeText(&esc, []byte(r.Address))
		reqNS, respNS := outlookRequestSchema, outlookResponseSchema
		if r.Kind == KindMobileSync {
			reqNS, respNS = mobilesyncRequestSchema, mobilesyncResponseSchema
		}
		again, err := ParseRequest(req(reqNS, respNS, esc.String()))
		if err != nil || again != r {
			t.Fatalf("round trip of %+v = %+v, %v", r, again, err)
		}
	})
}
