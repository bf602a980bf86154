package ews

import (
	"os"
	"testing"

	"github.com/mailpush/mailpush"
)

// eventSeeds has one notification per event type, plus all of them together.
func eventSeeds() []string {
	seeds := []string{wrap(allEvents)}
	for _, typ := range []EventType{StatusEvent, NewMailEvent, CreatedEvent, DeletedEvent, ModifiedEvent, MovedEvent, CopiedEvent, FreeBusyChangedEvent} {
		seeds = append(seeds, wrap(head+`<t:`+string(typ)+`><t:Watermark>w</t:Watermark><t:TimeStamp>2025-03-14T09:26:53Z</t:TimeStamp>`+
			`<t:ItemId Id="i" ChangeKey="c"/><t:FolderId Id="f"/><t:ParentFolderId Id="p"/><t:OldItemId Id="oi"/><t:OldFolderId Id="of"/>`+
			`<t:OldParentFolderId Id="op"/><t:UnreadCount>3</t:UnreadCount></t:`+string(typ)+`>`))
	}
	return seeds
}

func FuzzParseSendNotification(f *testing.F) {
	for _, s := range eventSeeds() {
		f.Add([]byte(s))
	}
	if b, err := os.ReadFile("testdata/notification_exchange.xml"); err == nil {
		f.Add(b)
	}
	f.Add([]byte(`<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body/></s:Envelope>`))
	f.Add([]byte(`<a><b>`))
	f.Fuzz(func(t *testing.T, body []byte) {
		n, err := ParseSendNotification(body)
		if err != nil {
			if n != nil {
				t.Fatalf("notification %+v returned with error %v", n, err)
			}
			switch code := mailpush.ErrorCode(err); code {
			case mailpush.EInvalid, mailpush.ETooLarge, mailpush.EUpstream:
			default:
				t.Fatalf("error code %q for %v", code, err)
			}
			return
		}
		if n.SubscriptionID == "" {
			t.Fatal("notification without a SubscriptionId accepted")
		}
		if len(n.Events) > MaxEvents {
			t.Fatalf("%d events accepted", len(n.Events))
		}
		for _, ev := range n.Events {
			if !ev.Type.known() {
				t.Fatalf("unknown event type %q returned", ev.Type)
			}
			if ev.UnreadCount < -1 {
				t.Fatalf("UnreadCount %d", ev.UnreadCount)
			}
		}
	})
}

// FuzzParseResponse feeds the client's answer parsers: the same bytes are
// read as a Subscribe, GetFolder and GetItem answer.
func FuzzParseResponse(f *testing.F) {
	for _, s := range []string{subscribeOK, subscribeBadWatermark, getFolderOK, getItemMixed, getItemNotFound} {
		f.Add(200, []byte(s))
	}
	f.Add(500, []byte(serverBusyFault))
	f.Add(500, []byte(schemaFault))
	f.Add(503, []byte("Service Unavailable"))
	f.Fuzz(func(t *testing.T, status int, body []byte) {
		check := func(op string, err error) {
			if err == nil {
				return
			}
			switch code := mailpush.ErrorCode(err); code {
			case mailpush.EUpstream, mailpush.EUnavailable, mailpush.ENotFound:
			default:
				t.Fatalf("%s: error code %q for %v", op, code, err)
			}
		}
		sub, err := parseSubscribeResponse(status, "text/xml", body)
		check("Subscribe", err)
		if err == nil && sub.SubscriptionID == "" {
			t.Fatal("Subscribe answer without a SubscriptionId accepted")
		}
		n, err := parseGetFolderResponse(status, "text/xml", body)
		check("GetFolder", err)
		if err == nil && n < 0 {
			t.Fatalf("UnreadCount %d accepted", n)
		}
		items, err := parseGetItemResponse(status, "text/xml", body)
		check("GetItem", err)
		if err == nil && len(items) == 0 {
			t.Fatal("GetItem answer without items accepted")
		}
	})
}

func BenchmarkParseSendNotification(b *testing.B) {
	body, err := os.ReadFile("testdata/notification_exchange.xml")
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		n, err := ParseSendNotification(body)
		if err != nil || len(n.Events) != 5 {
			b.Fatalf("ParseSendNotification: %v", err)
		}
	}
}
