package ews

import (
	"encoding/xml"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/mailpush/mailpush"
)

// wrap puts notification children into the envelope Exchange sends.
func wrap(children string) string {
	return `<?xml version="1.0" encoding="utf-8"?>
<soap11:Envelope xmlns:soap11="http://schemas.xmlsoap.org/soap/envelope/">
<soap11:Header><t:RequestServerVersion xmlns:t="http://schemas.microsoft.com/exchange/services/2006/types" Version="Exchange2013"/></soap11:Header>
<soap11:Body>
<m:SendNotification xmlns:m="http://schemas.microsoft.com/exchange/services/2006/messages" xmlns:t="http://schemas.microsoft.com/exchange/services/2006/types">
<m:ResponseMessages><m:SendNotificationResponseMessage ResponseClass="Success"><m:ResponseCode>NoError</m:ResponseCode>
<m:Notification>` + children + `</m:Notification>
</m:SendNotificationResponseMessage></m:ResponseMessages>
</m:SendNotification></soap11:Body></soap11:Envelope>`
}

const head = `<t:SubscriptionId>sub-1</t:SubscriptionId><t:PreviousWatermark>wm-0</t:PreviousWatermark><t:MoreEvents>false</t:MoreEvents>`

// allEvents has one event of every type, in an order Exchange could use.
const allEvents = head + `
<t:StatusEvent><t:Watermark>wm-0</t:Watermark></t:StatusEvent>
<t:NewMailEvent><t:Watermark>wm-1</t:Watermark><t:TimeStamp>2025-03-14T09:26:53Z</t:TimeStamp><t:ItemId Id="item-1" ChangeKey="ck"/><t:ParentFolderId Id="inbox" ChangeKey="ck"/></t:NewMailEvent>
<t:CreatedEvent><t:Watermark>wm-2</t:Watermark><t:TimeStamp>2025-03-14T09:26:53Z</t:TimeStamp><t:ItemId Id="item-1"/><t:ParentFolderId Id="inbox"/></t:CreatedEvent>
<t:ModifiedEvent><t:Watermark>wm-3</t:Watermark><t:TimeStamp>2025-03-14T09:26:54Z</t:TimeStamp><t:FolderId Id="inbox"/><t:ParentFolderId Id="root"/><t:UnreadCount>7</t:UnreadCount></t:ModifiedEvent>
<t:MovedEvent><t:Watermark>wm-4</t:Watermark><t:TimeStamp>2025-03-14T09:26:55Z</t:TimeStamp><t:ItemId Id="item-2"/><t:ParentFolderId Id="deleted"/><t:OldItemId Id="item-1"/><t:OldParentFolderId Id="inbox"/></t:MovedEvent>
<t:CopiedEvent><t:Watermark>wm-5</t:Watermark><t:TimeStamp>2025-03-14T09:26:56Z</t:TimeStamp><t:FolderId Id="f-2"/><t:ParentFolderId Id="inbox"/><t:OldFolderId Id="f-1"/><t:OldParentFolderId Id="root"/></t:CopiedEvent>
<t:DeletedEvent><t:Watermark>wm-6</t:Watermark><t:TimeStamp>2025-03-14T09:26:57Z</t:TimeStamp><t:ItemId Id="item-3"/><t:ParentFolderId Id="inbox"/></t:DeletedEvent>
<t:FreeBusyChangedEvent><t:Watermark>wm-7</t:Watermark><t:TimeStamp>2025-03-14T09:26:58Z</t:TimeStamp><t:ItemId Id="item-4"/><t:ParentFolderId Id="calendar"/></t:FreeBusyChangedEvent>`

func ts(s string) time.Time {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		panic(err)
	}
	return t
}

func TestParseSendNotification(t *testing.T) {
	exchange, err := os.ReadFile("testdata/notification_exchange.xml")
	if err != nil {
		t.Fatal(err)
	}
	const (
		item   = "AAMkADk0N2M3ZTg3LTg1MmQtNGJiMC1iNzNhLWRmZmQ3ZDAwYzQ5OQBGAAAAAADZ4SZbJXdbTqNVu3XJtsmGBwCT+a0qg8YPQ4s7Ue0rKRUgAAAAAAEMAACT+a0qg8YPQ4s7Ue0rKRUgAAAzfYVqAAA="
		item2  = "AAMkADk0N2M3ZTg3LTg1MmQtNGJiMC1iNzNhLWRmZmQ3ZDAwYzQ5OQBGAAAAAADZ4SZbJXdbTqNVu3XJtsmGBwCT+a0qg8YPQ4s7Ue0rKRUgAAAAAAEMAACT+a0qg8YPQ4s7Ue0rKRUgAAAzfYVpAAA="
		inbox  = "AAMkADk0N2M3ZTg3LTg1MmQtNGJiMC1iNzNhLWRmZmQ3ZDAwYzQ5OQAuAAAAAADZ4SZbJXdbTqNVu3XJtsmGAQCT+a0qg8YPQ4s7Ue0rKRUgAAAAAAEMAAA="
		parent = "AAMkADk0N2M3ZTg3LTg1MmQtNGJiMC1iNzNhLWRmZmQ3ZDAwYzQ5OQAuAAAAAADZ4SZbJXdbTqNVu3XJtsmGAQCT+a0qg8YPQ4s7Ue0rKRUgAAAAAAEIAAA="
	)
	tests := []struct {
		name string
		body string
		want *Notification
	}{
		{
			name: "Exchange 2013 new mail then read",
			body: string(exchange),
			want: &Notification{
				SubscriptionID:    "HwBleGNoMDEuY29udG9zby5jb20QAAAAfGJhA2lZuE6i1N+1rkdEZQeygpQxzbQCA==",
				PreviousWatermark: "AQAAABEyGxfwZ9dAopfl5usy5gfLCx0AAAAAAAE=",
				Events: []Event{
					{Type: NewMailEvent, Watermark: "AQAAABEyGxfwZ9dAopfl5usy5gfMCx0AAAAAAAE=", TimeStamp: ts("2025-03-14T09:26:53Z"), ItemID: item, ParentFolderID: inbox, UnreadCount: -1},
					{Type: CreatedEvent, Watermark: "AQAAABEyGxfwZ9dAopfl5usy5gfNCx0AAAAAAAE=", TimeStamp: ts("2025-03-14T09:26:53Z"), ItemID: item, ParentFolderID: inbox, UnreadCount: -1},
					{Type: ModifiedEvent, Watermark: "AQAAABEyGxfwZ9dAopfl5usy5gfOCx0AAAAAAAE=", TimeStamp: ts("2025-03-14T09:26:53Z"), FolderID: inbox, ParentFolderID: parent, UnreadCount: 4},
					{Type: ModifiedEvent, Watermark: "AQAAABEyGxfwZ9dAopfl5usy5gfPCx0AAAAAAAE=", TimeStamp: ts("2025-03-14T09:27:10Z"), ItemID: item2, ParentFolderID: inbox, UnreadCount: -1},
					{Type: ModifiedEvent, Watermark: "AQAAABEyGxfwZ9dAopfl5usy5gfQCx0AAAAAAAE=", TimeStamp: ts("2025-03-14T09:27:10Z"), FolderID: inbox, ParentFolderID: parent, UnreadCount: 3},
				},
			},
		},
		{
			name: "every event type, in document order",
			body: wrap(allEvents),
			want: &Notification{
				SubscriptionID: "sub-1", PreviousWatermark: "wm-0",
				Events: []Event{
					{Type: StatusEvent, Watermark: "wm-0", UnreadCount: -1},
					{Type: NewMailEvent, Watermark: "wm-1", TimeStamp: ts("2025-03-14T09:26:53Z"), ItemID: "item-1", ParentFolderID: "inbox", UnreadCount: -1},
					{Type: CreatedEvent, Watermark: "wm-2", TimeStamp: ts("2025-03-14T09:26:53Z"), ItemID: "item-1", ParentFolderID: "inbox", UnreadCount: -1},
					{Type: ModifiedEvent, Watermark: "wm-3", TimeStamp: ts("2025-03-14T09:26:54Z"), FolderID: "inbox", ParentFolderID: "root", UnreadCount: 7},
					{Type: MovedEvent, Watermark: "wm-4", TimeStamp: ts("2025-03-14T09:26:55Z"), ItemID: "item-2", ParentFolderID: "deleted", OldItemID: "item-1", OldParentFolderID: "inbox", UnreadCount: -1},
					{Type: CopiedEvent, Watermark: "wm-5", TimeStamp: ts("2025-03-14T09:26:56Z"), FolderID: "f-2", ParentFolderID: "inbox", OldFolderID: "f-1", OldParentFolderID: "root", UnreadCount: -1},
					{Type: DeletedEvent, Watermark: "wm-6", TimeStamp: ts("2025-03-14T09:26:57Z"), ItemID: "item-3", ParentFolderID: "inbox", UnreadCount: -1},
					{Type: FreeBusyChangedEvent, Watermark: "wm-7", TimeStamp: ts("2025-03-14T09:26:58Z"), ItemID: "item-4", ParentFolderID: "calendar", UnreadCount: -1},
				},
			},
		},
		{
			name: "default namespaces instead of prefixes, MoreEvents 1",
			body: `<Envelope xmlns="http://schemas.xmlsoap.org/soap/envelope/"><Body>
<SendNotification xmlns="http://schemas.microsoft.com/exchange/services/2006/messages"><ResponseMessages>
<SendNotificationResponseMessage ResponseClass="Success"><ResponseCode>NoError</ResponseCode><Notification>
<SubscriptionId xmlns="http://schemas.microsoft.com/exchange/services/2006/types">s</SubscriptionId>
<MoreEvents xmlns="http://schemas.microsoft.com/exchange/services/2006/types">1</MoreEvents>
<DeletedEvent xmlns="http://schemas.microsoft.com/exchange/services/2006/types"><Watermark>w</Watermark><ItemId Id="i"/></DeletedEvent>
</Notification></SendNotificationResponseMessage></ResponseMessages></SendNotification></Body></Envelope>`,
			want: &Notification{SubscriptionID: "s", MoreEvents: true,
				Events: []Event{{Type: DeletedEvent, Watermark: "w", ItemID: "i", UnreadCount: -1}}},
		},
		{
			name: "unknown events and elements are skipped",
			body: wrap(head + `
<t:FutureEvent><t:Watermark>x</t:Watermark><t:Nested><t:Deeper/></t:Nested></t:FutureEvent>
<x:NewMailEvent xmlns:x="urn:other"><t:Watermark>foreign</t:Watermark></x:NewMailEvent>
<t:NewMailEvent><t:Watermark>wm-1</t:Watermark><t:Extra a="b">text<t:Inner/></t:Extra><t:ItemId Id="i1"><t:Child/></t:ItemId></t:NewMailEvent>
<!-- a comment --><?pi data?>`),
			want: &Notification{SubscriptionID: "sub-1", PreviousWatermark: "wm-0",
				Events: []Event{{Type: NewMailEvent, Watermark: "wm-1", ItemID: "i1", UnreadCount: -1}}},
		},
		{
			name: "timestamps with fraction, offset, or no zone",
			body: wrap(head + `
<t:CreatedEvent><t:TimeStamp>2025-03-14T09:26:53.123Z</t:TimeStamp></t:CreatedEvent>
<t:CreatedEvent><t:TimeStamp>2025-03-14T10:26:53+01:00</t:TimeStamp></t:CreatedEvent>
<t:CreatedEvent><t:TimeStamp> 2025-03-14T09:26:53 </t:TimeStamp></t:CreatedEvent>
<t:ModifiedEvent><t:UnreadCount>0</t:UnreadCount></t:ModifiedEvent>`),
			want: &Notification{SubscriptionID: "sub-1", PreviousWatermark: "wm-0",
				Events: []Event{
					{Type: CreatedEvent, TimeStamp: ts("2025-03-14T09:26:53.123Z"), UnreadCount: -1},
					{Type: CreatedEvent, TimeStamp: ts("2025-03-14T10:26:53+01:00"), UnreadCount: -1},
					{Type: CreatedEvent, TimeStamp: ts("2025-03-14T09:26:53Z"), UnreadCount: -1},
					{Type: ModifiedEvent, UnreadCount: 0},
				}},
		},
		{
			name: "UTF-8 byte order mark",
			body: "\xef\xbb\xbf" + wrap(`<t:SubscriptionId>sub-1</t:SubscriptionId>`),
			want: &Notification{SubscriptionID: "sub-1"},
		},
		{
			name: "no events",
			body: wrap(`<t:SubscriptionId>sub-1</t:SubscriptionId>`),
			want: &Notification{SubscriptionID: "sub-1"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseSendNotification([]byte(tt.body))
			if err != nil {
				t.Fatalf("ParseSendNotification: %v", err)
			}
			if len(got.Events) != len(tt.want.Events) {
				t.Fatalf("got %d events, want %d: %+v", len(got.Events), len(tt.want.Events), got.Events)
			}
			for i := range got.Events {
				g, w := got.Events[i], tt.want.Events[i]
				if !g.TimeStamp.Equal(w.TimeStamp) {
					t.Errorf("event %d: TimeStamp %v, want %v", i, g.TimeStamp, w.TimeStamp)
				}
				g.TimeStamp, w.TimeStamp = time.Time{}, time.Time{}
				if g != w {
					t.Errorf("event %d:\n got %+v\nwant %+v", i, g, w)
				}
			}
			got.Events, tt.want.Events = nil, nil
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("notification:\n got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestParseSendNotificationErrors(t *testing.T) {
	tooMany := head + strings.Repeat(`<t:StatusEvent/>`, MaxEvents+1)
	tests := []struct {
		name     string
		body     string
		wantCode string
		wantText string
	}{
		{"empty", ``, mailpush.EInvalid, "empty document"},
		{"not XML", `hello`, mailpush.EInvalid, "not an XML document"},
		{"HTML", `<html><body>Bad gateway</body></html>`, mailpush.EInvalid, "not a SOAP envelope"},
		{"wrong envelope namespace", `<Envelope xmlns="urn:x"><Body/></Envelope>`, mailpush.EInvalid, "not a SOAP envelope"},
		{"no body", `<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Header/></s:Envelope>`, mailpush.EInvalid, "without a Body"},
		{"no SendNotification", `<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><m:GetEvents xmlns:m="http://schemas.microsoft.com/exchange/services/2006/messages"/></s:Body></s:Envelope>`, mailpush.EInvalid, "no SendNotification"},
		{"SendNotification without Notification", `<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><m:SendNotification xmlns:m="http://schemas.microsoft.com/exchange/services/2006/messages"><m:ResponseMessages/></m:SendNotification></s:Body></s:Envelope>`, mailpush.EInvalid, "no SendNotification"},
		{"missing SubscriptionId", wrap(`<t:PreviousWatermark>w</t:PreviousWatermark><t:StatusEvent/>`), mailpush.EInvalid, "SubscriptionId"},
		{"truncated", wrap(allEvents)[:600], mailpush.EInvalid, "malformed"},
		{"mismatched tags", wrap(head + `<t:NewMailEvent><t:Watermark>w</t:ItemId></t:NewMailEvent>`), mailpush.EInvalid, "malformed"},
		{"bad UnreadCount", wrap(head + `<t:ModifiedEvent><t:UnreadCount>many</t:UnreadCount></t:ModifiedEvent>`), mailpush.EInvalid, "UnreadCount"},
		{"negative UnreadCount", wrap(head + `<t:ModifiedEvent><t:UnreadCount>-2</t:UnreadCount></t:ModifiedEvent>`), mailpush.EInvalid, "UnreadCount"},
		{"bad TimeStamp", wrap(head + `<t:NewMailEvent><t:TimeStamp>yesterday</t:TimeStamp></t:NewMailEvent>`), mailpush.EInvalid, "TimeStamp"},
		{"bad MoreEvents", wrap(`<t:SubscriptionId>s</t:SubscriptionId><t:MoreEvents>maybe</t:MoreEvents>`), mailpush.EInvalid, "boolean"},
		{"too many events", wrap(tooMany), mailpush.EInvalid, "more than 10000 events"},
		{"content after envelope", wrap(head) + `<x/>`, mailpush.EInvalid, "after the SOAP envelope"},
		{"two notifications", wrap(head + `</m:Notification><m:Notification>` + head), mailpush.EInvalid, "more than one Notification"},
		{"too large", strings.Repeat(" ", MaxNotificationSize+1), mailpush.ETooLarge, "over"},
		{"Exchange error instead of a notification", `<soap11:Envelope xmlns:soap11="http://schemas.xmlsoap.org/soap/envelope/"><soap11:Body>
<m:SendNotification xmlns:t="http://schemas.microsoft.com/exchange/services/2006/types" xmlns:m="http://schemas.microsoft.com/exchange/services/2006/messages">
<m:ResponseMessages><m:SendNotificationResponseMessage ResponseClass="Error"><m:MessageText>Events cannot be read for this subscription.</m:MessageText>
<m:ResponseCode>ErrorReadEventsFailed</m:ResponseCode><m:DescriptiveLinkKey>0</m:DescriptiveLinkKey>
<m:MessageXml><t:Value Name="SubscriptionId">abc</t:Value></m:MessageXml></m:SendNotificationResponseMessage></m:ResponseMessages>
</m:SendNotification></soap11:Body></soap11:Envelope>`, mailpush.EUpstream, "ErrorReadEventsFailed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n, err := ParseSendNotification([]byte(tt.body))
			if err == nil {
				t.Fatalf("ParseSendNotification = %+v, want an error", n)
			}
			if n != nil {
				t.Errorf("ParseSendNotification returned a notification with the error %v", err)
			}
			if got := mailpush.ErrorCode(err); got != tt.wantCode {
				t.Errorf("code %q, want %q (error %v)", got, tt.wantCode, err)
			}
			if !strings.Contains(err.Error(), tt.wantText) {
				t.Errorf("error %q does not mention %q", err, tt.wantText)
			}
		})
	}
}

func TestParseSendNotificationResponseError(t *testing.T) {
	body := wrap(head)
	body = strings.Replace(body, `ResponseClass="Success"><m:ResponseCode>NoError`, `ResponseClass="Error"><m:ResponseCode>ErrorSubscriptionNotFound`, 1)
	_, err := ParseSendNotification([]byte(body))
	var re *ResponseError
	if !errors.As(err, &re) {
		t.Fatalf("error %v has no *ResponseError", err)
	}
	if re.Code != "ErrorSubscriptionNotFound" || re.Op != "SendNotification" {
		t.Errorf("ResponseError = %+v", re)
	}
}

func TestWriteResult(t *testing.T) {
	for _, status := range []SubscriptionStatus{StatusOK, StatusUnsubscribe} {
		rec := httptest.NewRecorder()
		WriteResult(rec, status)
		res := rec.Result()
		body, _ := io.ReadAll(res.Body)
		if res.StatusCode != http.StatusOK {
			t.Errorf("%s: HTTP %d", status, res.StatusCode)
		}
		if ct := res.Header.Get("Content-Type"); ct != "text/xml; charset=utf-8" {
			t.Errorf("%s: Content-Type %q", status, ct)
		}
		// Read it back the way Exchange does: by namespace, not prefix.
		var env struct {
			Body struct {
				Result struct {
					XMLName xml.Name `xml:"http://schemas.microsoft.com/exchange/services/2006/messages SendNotificationResult"`
					Status  string   `xml:"SubscriptionStatus"`
				} `xml:"SendNotificationResult"`
			} `xml:"http://schemas.xmlsoap.org/soap/envelope/ Body"`
		}
		if err := xml.Unmarshal(body, &env); err != nil {
			t.Fatalf("%s: %v in %s", status, err, body)
		}
		if env.Body.Result.Status != string(status) {
			t.Errorf("SubscriptionStatus %q, want %q", env.Body.Result.Status, status)
		}
		if !strings.Contains(string(body), `<m:SendNotificationResult xmlns:m="http://schemas.microsoft.com/exchange/services/2006/messages">`) {
			t.Errorf("body %s lacks m:SendNotificationResult", body)
		}
	}
	rec := httptest.NewRecorder()
	WriteResult(rec, "Maybe")
	if rec.Code != http.StatusInternalServerError {
		t.Errorf("invalid status answered HTTP %d, want 500", rec.Code)
	}
}
